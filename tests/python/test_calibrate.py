"""The `veda` CLI shipped in the package (veda/bin/veda): the console script, `python -m veda`, and
veda.calibrate on tiny captures, whose profile veda.sparse_attention then runs (CPU tensors).

A capture here is what veda.diffusers.capture writes: q, k, v [1, 512, 2, 32] float32 and the grid
2x16x16 (4 tiles of 128 tokens) in the metadata; two of them, the second held out. Calibration
with few Adam steps on the CPU takes well under a second each.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import veda
import veda_cli

safetensors_torch = pytest.importorskip("safetensors.torch")

GRID = (2, 16, 16)
HEADS = 2
DIM = 32
FAST = {"steps": 10, "max_shapes": 2, "device": "cpu"}  # few Adam steps, at most two tile shapes


def write_capture(path: Path, seed: int, layer: int = 0) -> dict[str, torch.Tensor]:
    """q, k, v [1, N, H, D] with some structure (a shared direction per head) so that tiles
    differ in heat; the grid and the layer in the metadata."""
    generator = torch.Generator().manual_seed(seed)
    tokens = GRID[0] * GRID[1] * GRID[2]
    base = torch.randn(1, tokens, HEADS, DIM, generator=generator)
    drift = torch.linspace(-1, 1, tokens).view(1, tokens, 1, 1)
    direction = torch.randn(1, 1, HEADS, DIM, generator=generator)
    tensors = {
        "q": (base + 2 * drift * direction).contiguous(),
        "k": (torch.randn(1, tokens, HEADS, DIM, generator=generator) + 2 * drift * direction),
        "v": torch.randn(1, tokens, HEADS, DIM, generator=generator),
    }
    tensors = {name: tensor.contiguous() for name, tensor in tensors.items()}
    metadata = {"grid": "x".join(map(str, GRID)), "layer": str(layer)}
    safetensors_torch.save_file(tensors, str(path), metadata=metadata)
    return tensors


@pytest.fixture
def captures(tmp_path):
    paths = [tmp_path / "a.safetensors", tmp_path / "b.safetensors"]
    tensors = [write_capture(path, seed) for seed, path in enumerate(paths, start=1)]
    return paths, tensors


def test_the_package_holds_the_cli():
    assert veda_cli.BINARY.is_file(), "pip install . must install veda/bin/veda"
    assert os.access(veda_cli.BINARY, os.X_OK)
    assert veda_cli.executable() == veda_cli.BINARY


def test_console_script_prints_help():
    scripts = [
        entry
        for entry in importlib.metadata.entry_points(group="console_scripts")
        if entry.name == "veda"
    ]
    assert [entry.value for entry in scripts] == ["veda_cli:main"]
    # The installed script itself, located through the distribution's RECORD.
    files = importlib.metadata.distribution("veda").files or []
    installed = [Path(f.locate()).resolve() for f in files if f.name == "veda"]
    scripts = [path for path in installed if path != veda_cli.BINARY]  # not veda/bin/veda
    assert len(scripts) == 1 and scripts[0].is_file(), installed
    script = scripts[0]
    result = subprocess.run(
        [str(script), "--help"], check=False, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert "calibrate" in result.stdout and "attention" in result.stdout


def test_python_m_veda_runs_the_cli():
    help_text = subprocess.run(
        [sys.executable, "-m", "veda", "calibrate", "--help"],
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert help_text.returncode == 0, help_text.stderr
    for option in ("--in", "--out", "--sparsity", "--max-shapes", "--structure", "--device"):
        assert option in help_text.stdout
    # The CLI's own exit status and error line come back unchanged.
    arguments = ["attention", "--method", "frobnicate"]
    wrong = subprocess.run(
        [sys.executable, "-m", "veda", *arguments],
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
    )
    direct = subprocess.run(
        [veda_cli.BINARY, *arguments], check=False, capture_output=True, text=True, timeout=60
    )
    assert wrong.returncode == direct.returncode != 0
    assert wrong.stderr == direct.stderr and wrong.stderr.startswith("veda: error:")


def test_the_console_script_imports_neither_veda_nor_torch():
    # The CLI starts in a fraction of a second: veda's import loads torch (~2 s).
    probe = "import sys, veda_cli; print(sorted({'veda', 'torch'} & set(sys.modules)))"
    result = subprocess.run(
        [sys.executable, "-c", probe], check=True, capture_output=True, text=True, timeout=60
    )
    assert result.stdout.strip() == "[]"
    assert veda_cli.BINARY == Path(veda.__file__).resolve().parent / "bin" / "veda"


def test_main_returns_the_exit_status(capfd):
    assert veda_cli.main(["inspect", "--help"]) == 0
    assert "inspect" in capfd.readouterr().out
    assert veda_cli.main(["inspect", "/nonexistent/x.safetensors"]) == 1
    assert "/nonexistent/x.safetensors" in capfd.readouterr().err


def test_main_without_the_binary_says_what_is_missing(monkeypatch, tmp_path, capfd):
    missing = tmp_path / "bin" / "veda"
    monkeypatch.setattr(veda_cli, "BINARY", missing)
    assert veda_cli.main(["--help"]) == 127
    err = capfd.readouterr().err
    assert f"expected the binary {missing}" in err and "pip install ." in err
    with pytest.raises(FileNotFoundError, match="pip install"):
        veda.calibrate(tmp_path / "a.safetensors", tmp_path / "p.json")


def test_calibrate_writes_a_profile_that_sparse_attention_runs(captures, tmp_path):
    paths, tensors = captures
    out = tmp_path / "tiny.json"
    profile = veda.calibrate(paths, out, sparsity=0.5, model="tiny", **FAST)

    assert isinstance(profile, veda.Profile)
    assert profile.source == out and out.is_file()
    assert (tmp_path / "tiny.estimator.safetensors").is_file()
    assert profile.model == "tiny" and profile.head_dim == DIM
    assert list(profile.layers) == [0]
    layer = profile.layer(0)
    assert len(layer.heads) == HEADS
    assert all(head.sparsity == 0.5 for head in layer.heads)
    assert len({head.tile for head in layer.heads}) <= 2  # max_shapes
    assert layer.has_estimator()
    p_q, p_k = layer.estimator("cpu")
    assert p_q.shape == (HEADS, 3 * DIM, DIM) and p_k.shape == p_q.shape
    document = json.loads(out.read_text())
    assert document["layers"][0]["heads"][0]["calibration"]["steps"] <= FAST["steps"]

    q, k, v = (tensors[0][name] for name in "qkv")
    result = veda.sparse_attention(q, k, v, grid=GRID, method="veda", profile=layer)
    assert result.shape == q.shape and torch.isfinite(result).all()
    # Half of the 4 key tiles per query tile: not dense attention.
    dense = veda.sparse_attention(q, k, v, grid=GRID, method="dense")
    assert not torch.allclose(result, dense)


def test_calibrate_options_reach_the_cli(captures, tmp_path):
    paths, _ = captures
    profile = veda.calibrate(
        paths[0], tmp_path / "one.json", sparsity=0.25, grid="2,16,16", threshold=0.5, **FAST
    )
    layer = profile.layer(0)
    assert all(head.sparsity == 0.25 and head.threshold == 0.5 for head in layer.heads)
    # One sample: nothing held out.
    document = json.loads((tmp_path / "one.json").read_text())
    assert "kl_heldout_before" not in document["layers"][0]["heads"][0]["calibration"]


def test_calibrate_groups_captures_by_layer(tmp_path):
    paths = [tmp_path / f"layer{layer}.safetensors" for layer in (3, 5)]
    for seed, (path, layer) in enumerate(zip(paths, (3, 5))):
        write_capture(path, seed, layer=layer)
    profile = veda.calibrate(paths, tmp_path / "layers.json", **FAST)
    assert sorted(profile.layers) == [3, 5]


def test_calibrate_missing_sample_names_it(captures, tmp_path):
    paths, _ = captures
    missing = tmp_path / "missing.safetensors"
    with pytest.raises(ValueError, match=f"sample file {missing} does not exist"):
        veda.calibrate([paths[0], missing], tmp_path / "p.json", **FAST)
    with pytest.raises(ValueError, match="is not a file"):
        veda.calibrate([tmp_path], tmp_path / "p.json", **FAST)
    with pytest.raises(ValueError, match="samples is empty"):
        veda.calibrate([], tmp_path / "p.json")
    assert not (tmp_path / "p.json").exists()


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"sparsity": 1.5}, r"--sparsity 1.5 is outside \[0, 1\)"),
        (
            {"structure": "banana"},
            "--structure 'banana' is not known; expected auto, diagonal or full",
        ),
        ({"device": "tpu"}, "--device 'tpu' is not known; expected auto, cpu or cuda"),
        ({"steps": -3}, "and --steps must not be negative"),
        ({"grid": (2, 16, 8)}, "grid 2x16x8"),  # 256 tokens, the captures have 512
    ],
)
def test_calibrate_bad_option_value_carries_the_cli_error(captures, tmp_path, options, message):
    paths, _ = captures
    out = tmp_path / "p.json"
    with pytest.raises(ValueError, match=message) as raised:
        veda.calibrate(paths, out, **options)
    assert "veda: error:" in str(raised.value) and "command:" in str(raised.value)
    assert not out.exists()


def test_calibrate_bad_input_file_and_folder(tmp_path):
    not_a_capture = tmp_path / "notes.safetensors"
    not_a_capture.write_text("not a safetensors file")
    with pytest.raises(ValueError, match="notes.safetensors"):
        veda.calibrate(not_a_capture, tmp_path / "p.json", **FAST)
    write_capture(tmp_path / "a.safetensors", 1)
    with pytest.raises(ValueError, match="does not exist"):
        veda.calibrate(tmp_path / "a.safetensors", tmp_path / "missing" / "p.json", **FAST)


def test_calibrate_rejects_wrong_types_and_unknown_options(tmp_path):
    path = tmp_path / "a.safetensors"
    write_capture(path, 1)
    with pytest.raises(TypeError, match="steps is 2.5; expected an integer"):
        veda.calibrate(path, tmp_path / "p.json", steps=2.5)
    with pytest.raises(TypeError, match="sparsity is '0.9'; expected a number"):
        veda.calibrate(path, tmp_path / "p.json", sparsity="0.9")
    with pytest.raises(TypeError, match="structure is True; expected a string"):
        veda.calibrate(path, tmp_path / "p.json", structure=True)
    with pytest.raises(TypeError, match="unexpected keyword argument 'epochs'"):
        veda.calibrate(path, tmp_path / "p.json", epochs=3)
    with pytest.raises(TypeError, match="samples is a int"):
        veda.calibrate(3, tmp_path / "p.json")
