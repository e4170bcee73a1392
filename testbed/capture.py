"""q, k, v of the testbed's self-attention, captured to .safetensors (the input of `veda calibrate`).

    python -m testbed.capture --checkpoint DIR --out CAPTURES [--classes 1 5 9] [--seeds 101]
        [--t 0.9 0.5 0.2] [--layers 0 1 ...] [--frames F --height H --width W]

Cheap on the CPU: instead of running a sampler (30 transformer calls per clip), each data clip
x0 (testbed.data.ClipGenerator: a class and a seed) is noised to x_t = (1 - t) x0 + t noise at the
chosen t (the exact distribution the model saw in training) and the transformer runs once per t,
all clips in one batch, under `veda.diffusers.capture`. The files hold q, k, v [B, N, H, D] (after
qk-norm and rotary embedding, in the model's dtype) with metadata grid, layer and step, one file per
(layer, t): step s is the s-th largest t. The noise of clip (class, seed) at t comes from class, seed
and the index of t, so captures are reproducible. `manifest.json` beside them lists the clips (batch
order), the t of every step and the files.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

from .data import NUM_CLASSES, ClipGenerator, class_name
from .model import Testbed, load_checkpoint

MANIFEST = "manifest.json"


@dataclass(frozen=True)
class CaptureFile:
    path: Path
    layer: int
    step: int
    t: float


@dataclass(frozen=True)
class CaptureSet:
    """A folder of captures: clips [(class, seed)] in batch order, t per step, files."""

    folder: Path
    grid: tuple[int, int, int]
    clips: list[tuple[int, int]]
    times: list[float]
    files: list[CaptureFile]

    @classmethod
    def load(cls, folder: str | Path) -> CaptureSet:
        folder = Path(folder)
        manifest = json.loads((folder / MANIFEST).read_text())
        files = [
            CaptureFile(folder / f["file"], f["layer"], f["step"], f["t"])
            for f in manifest["files"]
        ]
        clips = [(c["class"], c["seed"]) for c in manifest["clips"]]
        return cls(folder, tuple(manifest["grid"]), clips, manifest["times"], files)

    def layers(self) -> set[int]:
        return {f.layer for f in self.files}

    def only_layers(self, layers: set[int]) -> CaptureSet:
        """The same captures restricted to the files of `layers`."""
        return replace(self, files=[f for f in self.files if f.layer in layers])


def noisy_clips(
    clips: torch.Tensor,  # [B, C, F, H, W] x0 in [-1, 1]
    t: float,
    noise_seeds: list[int],
) -> torch.Tensor:
    """x_t = (1 - t) x0 + t noise, the noise of item b drawn from noise_seeds[b]."""
    noise = torch.stack(
        [
            torch.randn(clips.shape[1:], generator=torch.Generator().manual_seed(seed))
            for seed in noise_seeds
        ]
    ).to(clips.device, clips.dtype)
    return (1.0 - t) * clips + t * noise


@torch.no_grad()
def capture_clips(
    model: Testbed,
    out_dir: str | Path,
    *,
    clips: list[tuple[int, int]],
    times: list[float],
    layers: list[int] | None = None,
    frames: int | None = None,
    height: int | None = None,
    width: int | None = None,
) -> CaptureSet:
    """Captures q, k, v of `layers` (default all) for every clip (class, seed) at every t (one
    batched forward per t, largest t first) into out_dir; returns the set (manifest written)."""
    import veda.diffusers
    from safetensors import safe_open

    config = model.config
    frames, height, width = frames or config.frames, height or config.height, width or config.width
    device = next(model.parameters()).device
    dtype = next(model.parameters()).dtype
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    generator = ClipGenerator(frames, height, width, device=device)
    x0, ids = generator.batch([seed for _, seed in clips], class_ids=[c for c, _ in clips])
    times = sorted(times, reverse=True)  # one step per t, in the order capture counts steps

    def run() -> None:
        for index, t in enumerate(times):
            # one noise per clip and t: distinct for every (class, seed, t index)
            seeds = [(seed * NUM_CLASSES + c) * 1000 + index for c, seed in clips]
            x_t = noisy_clips(x0, t, seeds).to(dtype)
            model(x_t, torch.full((len(clips),), t, device=device, dtype=dtype), ids)

    paths = veda.diffusers.capture(model.transformer, run, out_dir=out, layers=layers)
    files = []
    for path in paths:
        with safe_open(str(path), framework="pt") as tensors:
            metadata = tensors.metadata()  # written by veda.diffusers.capture
        step = int(metadata["step"])
        files.append(
            {"file": path.name, "layer": int(metadata["layer"]), "step": step, "t": times[step]}
        )
    manifest: dict[str, Any] = {
        "grid": list(config.grid(frames, height, width)),
        "clips": [{"class": c, "name": class_name(c), "seed": s} for c, s in clips],
        "times": times,
        "files": sorted(files, key=lambda f: (f["layer"], f["step"])),
    }
    (out / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    return CaptureSet.load(out)


def clip_list(classes: list[int], seeds: list[int]) -> list[tuple[int, int]]:
    """Every (class, seed) pair, classes outer."""
    return [(c, s) for c in classes for s in seeds]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--out", required=True, help="folder for the files and manifest.json")
    p.add_argument("--device", default="cpu")
    p.add_argument("--classes", type=int, nargs="+", default=[1, 5, 9])
    p.add_argument("--seeds", type=int, nargs="+", default=[101])
    p.add_argument("--t", type=float, nargs="+", default=[0.9, 0.5, 0.2])
    p.add_argument("--layers", type=int, nargs="+", default=None, help="default: all")
    p.add_argument("--frames", type=int, default=None, help="default: the training clip's")
    p.add_argument("--height", type=int, default=None)
    p.add_argument("--width", type=int, default=None)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> CaptureSet:
    args = parse_args(argv)
    model, _ = load_checkpoint(args.checkpoint, device=args.device)
    captured = capture_clips(
        model,
        args.out,
        clips=clip_list(args.classes, args.seeds),
        times=args.t,
        layers=args.layers,
        frames=args.frames,
        height=args.height,
        width=args.width,
    )
    print(f"captured {len(captured.files)} files into {captured.folder}")
    return captured


if __name__ == "__main__":
    main()
