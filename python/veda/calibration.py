"""veda.calibrate: a Veda profile from captured q, k, v, by the bundled CLI's `calibrate`.

    paths = veda.diffusers.capture(pipe, ["a prompt"], out_dir="captures", steps=[10, 20])
    profile = veda.calibrate(paths, "wan14b.json", sparsity=0.9)
    veda.diffusers.enable(pipe, profile="wan14b.json")

The work runs in the `veda` binary inside the package (veda/bin/veda, built from tools/veda), the
same code as `veda calibrate` on the command line: the oracle work on the GPU when the package was
built with CUDA and a GPU is present, the rest on the CPU. The keyword options are the CLI's
options (`veda calibrate --help`); those left at None take the CLI's defaults, and the CLI checks
every value.
"""

from __future__ import annotations

import operator
import os
import shlex
import signal
import subprocess
import tempfile
from collections.abc import Iterable
from numbers import Real
from pathlib import Path

import veda_cli

from .attention import GridLike, parse_grid
from .profile import Profile

PathLike = str | os.PathLike


def calibrate(
    samples: PathLike | Iterable[PathLike],
    out: PathLike,
    *,
    sparsity: float | None = None,
    grid: GridLike | None = None,
    model: str | None = None,
    max_shapes: int | None = None,
    search_samples: int | None = None,
    structure: str | None = None,
    steps: int | None = None,
    learning_rate: float | None = None,
    weight_decay: float | None = None,
    temperature: float | None = None,
    search: str | None = None,
    teacher: str | None = None,
    threshold: float | None = None,
    device: str | None = None,
    verbose: bool = False,
) -> Profile:
    """Calibrates a profile on captured samples, writes it to `out` and returns it loaded.

    Args:
        samples: one .safetensors capture or several (veda.diffusers.capture writes them): q, k, v
            [B, N, H, D] of one layer, the grid and the layer in the metadata. Layers are grouped
            by their metadata "layer"; within a layer every 8th sample counted back from the
            last is held out (early stopping, the structure of P).
        out: the profile JSON to write; the estimator parameters go beside it, in
            OUT_STEM.estimator.safetensors. Its folder must exist.
        sparsity: target fraction of key tiles to skip, in [0, 1) (CLI default 0.9).
        grid: latent grid (T, H, W) or "TxHxW" for every sample, replacing the metadata's.
        model: model name recorded in the profile ("unnamed").
        max_shapes: at most this many tile shapes per layer (0: no limit).
        search_samples: samples on which the tile search measures output error (1).
        structure: trained entries of P, "diagonal", "full", or "auto": both fitted and the one
            of lower held-out KL kept per head, for captures at the grid you generate at
            ("diagonal").
        steps: most Adam steps per head (300).
        learning_rate, weight_decay: Adam learning rate (1e-2) and decoupled weight decay (1e-2).
        temperature: teacher = softmax(log heat / temperature) per row (1.0).
        search: tile search by the output error of the "oracle" mask or of the "estimator"
            distilled in each shape ("oracle").
        teacher: "heat" (oracle tile heat) or "mass" ("heat").
        threshold: select by cumulative estimated mass, capped at the budget of `sparsity`
            (0: fixed budget only).
        device: where the oracle work runs, "auto", "cpu" or "cuda" ("auto").
        verbose: print the CLI's report (per layer and head) while it runs.

    Returns:
        the written profile, read back with veda.Profile.load.

    Raises:
        TypeError: an argument of the wrong type.
        ValueError: a sample file that does not exist, or input the CLI rejected (a bad option
            value, an unreadable or malformed capture); the message carries the CLI's error.
        RuntimeError: the CLI failed otherwise (killed, an unexpected failure).
        FileNotFoundError: the package holds no CLI (not installed with `pip install .`).
    """
    binary = veda_cli.executable()
    paths = _sample_paths(samples)
    if not isinstance(out, (str, os.PathLike)):
        raise TypeError(f"out is a {type(out).__name__}; expected a path to the profile JSON")
    options = {
        "sparsity": (sparsity, _real),
        "grid": (grid, _grid),
        "model": (model, _text),
        "max-shapes": (max_shapes, _integer),
        "search-samples": (search_samples, _integer),
        "structure": (structure, _text),
        "steps": (steps, _integer),
        "learning-rate": (learning_rate, _real),
        "weight-decay": (weight_decay, _real),
        "temperature": (temperature, _real),
        "search": (search, _text),
        "teacher": (teacher, _text),
        "threshold": (threshold, _real),
        "device": (device, _text),
    }
    # "--name=value": a value that starts with '-' stays a value.
    flags = [
        f"--{name}={convert(name, value)}"
        for name, (value, convert) in options.items()
        if value is not None
    ]
    command = [str(binary), "calibrate", "--in", *paths, f"--out={os.fspath(out)}"]
    command += flags

    # stderr into a file, not a pipe: nothing can block while stdout is streamed.
    with tempfile.TemporaryFile() as errors:
        with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=errors) as process:
            assert process.stdout is not None
            report = []
            for raw in process.stdout:
                line = raw.decode(errors="replace")
                report.append(line)
                if verbose:
                    print(line, end="", flush=True)
            status = process.wait()
        errors.seek(0)
        stderr = errors.read().decode(errors="replace").strip()
    if status != 0:
        raise _failure(status, stderr, "".join(report), command)
    return Profile.load(out)


def _sample_paths(samples: object) -> list[str]:
    """The sample files as CLI arguments; each must exist."""
    if isinstance(samples, (str, os.PathLike)):
        given = [samples]
    elif isinstance(samples, Iterable):
        given = list(samples)
    else:
        raise TypeError(
            f"samples is a {type(samples).__name__}; expected a path or an iterable of paths to "
            "captured .safetensors files"
        )
    if not given:
        raise ValueError("samples is empty; expected at least one captured .safetensors file")
    paths = []
    for index, sample in enumerate(given):
        if not isinstance(sample, (str, os.PathLike)):
            raise TypeError(f"samples[{index}] is a {type(sample).__name__}; expected a path")
        path = os.fspath(sample)
        if not Path(path).is_file():
            state = "is not a file" if Path(path).exists() else "does not exist"
            raise ValueError(f"sample file {path} {state}; expected a captured .safetensors file")
        # A relative name that starts with '-' would read as an option.
        paths.append(os.path.join(os.curdir, path) if path.startswith("-") else path)
    return paths


def _real(name: str, value: object) -> str:
    if isinstance(value, bool) or not isinstance(value, Real):
        raise TypeError(f"{name.replace('-', '_')} is {value!r}; expected a number")
    return repr(float(value))


def _integer(name: str, value: object) -> str:
    try:
        if isinstance(value, bool):
            raise TypeError
        return str(operator.index(value))
    except TypeError:
        raise TypeError(f"{name.replace('-', '_')} is {value!r}; expected an integer") from None


def _text(name: str, value: object) -> str:
    if not isinstance(value, str):
        raise TypeError(f"{name.replace('-', '_')} is {value!r}; expected a string")
    return value


def _grid(name: str, value: object) -> str:
    return "x".join(str(side) for side in parse_grid(value))  # type: ignore[arg-type]


def _failure(status: int, stderr: str, report: str, command: list[str]) -> Exception:
    """ValueError for input the CLI rejected ("veda: error: ..."), RuntimeError otherwise."""
    where = f"\ncommand: {shlex.join(command)}"
    if status < 0:
        try:
            name = signal.Signals(-status).name
        except ValueError:
            name = f"signal {-status}"
        tail = "".join(report.splitlines(keepends=True)[-5:])
        return RuntimeError(f"veda calibrate was ended by {name}; its last output:\n{tail}{where}")
    if stderr.startswith("veda: error: ") and "unexpected failure" not in stderr:
        return ValueError(f"veda calibrate failed (exit status {status}): {stderr}{where}")
    detail = stderr or "nothing on stderr"
    return RuntimeError(f"veda calibrate failed (exit status {status}): {detail}{where}")
