"""Euler sampling of the testbed's flow, dense and with Veda's sparse self-attention, from the
same noise; PSNR / SSIM of every sparse clip against the dense one; an image strip.

    python -m testbed.sample --checkpoint DIR --out OUT [--sparsity 0.8 0.9 0.95]
        [--frames 16 --height 192 --width 256] [--steps 30] [--classes 0 5 7] [--seed 0]
        [--method meanpool] [--dense-steps 0] [--dense-layers 0 5] [--cfg 1.0]
        [--early-steps 6 --early-budget 2]

Time runs from t = 1 (noise) to t = 0 (clip): x_{t'} = x_t + (t' - t) v(x_t, t) on a grid of
--steps times, shifted by --shift (t -> shift t / (1 + (shift - 1) t), as SD3 / Wan do at high
resolution; 1 = uniform). Cross-attention stays dense; veda.diffusers.enable replaces
self-attention on the bare transformer (cuda: bf16 weights, the GPU path; cpu: float32, the CPU
reference). Methods: meanpool, oracle (both devices; --profile for its tile shapes), veda (CUDA,
needs --profile).
--early-steps K: each sparsity s as veda.diffusers.front_loaded_sparsity(steps, s, K,
--early-budget): the first K steps keep early-budget times the key tiles, the rest fewer, the
same mean kept tiles as s at every step.
Writes OUT/metrics.json and OUT/strip.png (rows: dense, then each sparsity; columns: frames of the
first clip), and prints one line per setting.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .data import class_name
from .model import Testbed, load_checkpoint, sampling_dtype


def time_grid(steps: int, shift: float = 1.0) -> torch.Tensor:
    """Times [steps + 1] from 1 down to 0."""
    t = torch.linspace(1.0, 0.0, steps + 1, dtype=torch.float64)
    return shift * t / (1 + (shift - 1) * t)


@torch.no_grad()
def euler_sample(
    model: Testbed,
    noise: torch.Tensor,  # [B, C, F, H, W] float32
    class_ids: torch.Tensor,  # [B] long
    steps: int = 30,
    shift: float = 1.0,
    cfg: float = 1.0,
) -> torch.Tensor:
    """The clip [B, C, F, H, W] (float32, clamped to [-1, 1]) integrated from noise."""
    dtype = next(model.parameters()).dtype
    x = noise.float()
    times = time_grid(steps, shift)
    null = torch.full_like(class_ids, model.null_class)
    for i in range(steps):
        t, t_next = float(times[i]), float(times[i + 1])
        if cfg == 1.0:
            inputs, ids = x, class_ids
        else:  # one call with the conditional and unconditional halves
            inputs, ids = torch.cat((x, x)), torch.cat((class_ids, null))
        tt = torch.full((inputs.shape[0],), t, device=x.device)  # float32: exact timesteps
        v = model(inputs.to(dtype), tt, ids).float()  # [B or 2B, C, F, H, W]
        if cfg != 1.0:
            cond, uncond = v.chunk(2)
            v = uncond + cfg * (cond - uncond)
        x = x + (t_next - t) * v
    return x.clamp(-1, 1)


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    """PSNR in dB of clips in [-1, 1] (data range 2, i.e. [0, 1] after rescaling)."""
    mse = ((a.float() - b.float()) / 2).pow(2).mean().item()
    return float("inf") if mse == 0 else 10 * math.log10(1.0 / mse)


def ssim(a: torch.Tensor, b: torch.Tensor) -> float:
    """Mean SSIM over frames of clips [C, F, H, W] in [-1, 1] (scikit-image, data range 1)."""
    from skimage.metrics import structural_similarity

    x = ((a.float().cpu() + 1) / 2).permute(1, 2, 3, 0).numpy()  # [F, H, W, C]
    y = ((b.float().cpu() + 1) / 2).permute(1, 2, 3, 0).numpy()
    side = min(x.shape[1], x.shape[2])
    win = min(7, side if side % 2 else side - 1)
    values = [
        structural_similarity(x[f], y[f], channel_axis=-1, data_range=1.0, win_size=win)
        for f in range(x.shape[0])
    ]
    return float(np.mean(values))


def write_strip(
    rows: list[tuple[str, torch.Tensor]],  # (label, clip [C, F, H, W] in [-1, 1])
    path: str | Path,
    frames: int = 6,
) -> Path:
    """PNG: one row per clip, `frames` evenly spaced frames each, labels on the left."""
    from PIL import Image, ImageDraw

    count = rows[0][1].shape[1]
    picks = np.linspace(0, count - 1, min(frames, count)).round().astype(int)
    label_width = 96
    h, w = rows[0][1].shape[2:]
    canvas = Image.new("RGB", (label_width + w * len(picks), h * len(rows)), "white")
    draw = ImageDraw.Draw(canvas)
    for r, (label, clip) in enumerate(rows):
        pixels = ((clip.float().cpu() + 1) * 127.5).round().clamp(0, 255).byte()  # [C, F, H, W]
        for c, f in enumerate(picks):
            frame = pixels[:, f].permute(1, 2, 0).numpy()  # [H, W, C]
            canvas.paste(Image.fromarray(frame), (label_width + c * w, r * h))
        draw.text((4, r * h + 4), label, fill="black")
    path = Path(path)
    canvas.save(path)
    return path


def compare(
    model: Testbed,
    *,
    frames: int,
    height: int,
    width: int,
    class_ids: list[int],
    sparsities: list[float],
    seed: int = 0,
    steps: int = 30,
    shift: float = 1.0,
    cfg: float = 1.0,
    method: str = "meanpool",
    profile: str | list[str] | None = None,
    dense_steps: int = 0,
    dense_layers: tuple[int, ...] = (),
    tile: tuple[int, int, int] = (1, 8, 16),
    early_steps: int = 0,
    early_budget: float = 2.0,
) -> tuple[dict[str, Any], list[tuple[str, torch.Tensor]]]:
    """Dense and sparse clips from the same noise; metrics and the (label, clip) rows. `profile`:
    one profile for every sparsity, or one per sparsity (each calibrated at its own)."""
    import veda.diffusers

    profiles = profile if isinstance(profile, list) else [profile] * len(sparsities)
    if len(profiles) == 1:
        profiles = profiles * len(sparsities)
    if len(profiles) != len(sparsities):
        raise ValueError(
            f"{len(profiles)} profiles for {len(sparsities)} sparsities; expected 1 or one each"
        )

    device = next(model.parameters()).device
    generator = torch.Generator().manual_seed(seed)
    shape = (len(class_ids), model.config.in_channels, frames, height, width)
    noise = torch.randn(shape, generator=generator).to(device)  # [B, C, F, H, W]
    ids = torch.tensor(class_ids, dtype=torch.long, device=device)
    grid = model.config.grid(frames, height, width)

    start = time.time()
    dense = euler_sample(model, noise, ids, steps, shift, cfg)
    results: dict[str, Any] = {
        "grid": list(grid),
        "tokens": grid[0] * grid[1] * grid[2],
        "classes": class_ids,
        "class_names": [class_name(c) for c in class_ids],
        "seed": seed,
        "steps": steps,
        "shift": shift,
        "cfg": cfg,
        "method": method,
        "dense_steps": dense_steps,
        "dense_layers": list(dense_layers),
        "early_steps": early_steps,
        "early_budget": early_budget,
        "tile": list(tile),
        "dense_seconds": round(time.time() - start, 2),
        "sparse": [],
    }
    rows = [("dense", dense[0])]
    for sparsity, sparsity_profile in zip(sparsities, profiles):
        schedule = None
        if early_steps:
            schedule = veda.diffusers.front_loaded_sparsity(
                steps, sparsity, early_steps, early_budget
            )
        veda.diffusers.enable(
            model.transformer,
            profile=sparsity_profile,
            sparsity=None if schedule else sparsity,
            method=method,
            dense_steps=dense_steps,
            dense_layers=dense_layers,
            tile=tile,
            step_sparsity=schedule,
        )
        try:
            start = time.time()
            sparse = euler_sample(model, noise, ids, steps, shift, cfg)
            seconds = time.time() - start
        finally:
            veda.diffusers.disable(model.transformer)
        per_clip = [
            {"psnr": psnr(sparse[b], dense[b]), "ssim": ssim(sparse[b], dense[b])}
            for b in range(len(class_ids))
        ]
        results["sparse"].append(
            {
                "sparsity": sparsity,
                "psnr": float(np.mean([p["psnr"] for p in per_clip])),
                "ssim": float(np.mean([p["ssim"] for p in per_clip])),
                "per_clip": per_clip,
                "step_sparsity": schedule,
                "seconds": round(seconds, 2),
                "profile": None if sparsity_profile is None else str(sparsity_profile),
            }
        )
        rows.append((f"{method} {sparsity:.0%}", sparse[0]))
    return results, rows


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--frames", type=int, default=None, help="default: the training clip's")
    p.add_argument("--height", type=int, default=None)
    p.add_argument("--width", type=int, default=None)
    p.add_argument("--classes", type=int, nargs="+", default=[0])
    p.add_argument("--sparsity", type=float, nargs="+", default=[0.8, 0.9, 0.95])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--shift", type=float, default=1.0)
    p.add_argument("--cfg", type=float, default=1.0)
    p.add_argument("--method", default="meanpool")
    p.add_argument(
        "--profile", nargs="+", default=None, help="one profile, or one per --sparsity value"
    )
    p.add_argument("--dense-steps", type=int, default=0)
    p.add_argument("--dense-layers", type=int, nargs="*", default=[])
    p.add_argument("--tile", type=int, nargs=3, default=[1, 8, 16])
    p.add_argument("--early-steps", type=int, default=0)
    p.add_argument("--early-budget", type=float, default=2.0)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    device = torch.device(args.device)
    model, info = load_checkpoint(args.checkpoint, device=device, dtype=sampling_dtype(device))
    config = model.config
    frames = args.frames or config.frames
    height = args.height or config.height
    width = args.width or config.width
    results, rows = compare(
        model,
        frames=frames,
        height=height,
        width=width,
        class_ids=args.classes,
        sparsities=args.sparsity,
        seed=args.seed,
        steps=args.steps,
        shift=args.shift,
        cfg=args.cfg,
        method=args.method,
        profile=args.profile,
        dense_steps=args.dense_steps,
        dense_layers=tuple(args.dense_layers),
        tile=tuple(args.tile),
        early_steps=args.early_steps,
        early_budget=args.early_budget,
    )
    results["checkpoint"] = str(args.checkpoint)
    results["checkpoint_steps"] = info.get("steps")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "metrics.json").write_text(json.dumps(results, indent=2) + "\n")
    write_strip(rows, out / "strip.png")
    grid = results["grid"]
    print(
        f"grid {grid[0]}x{grid[1]}x{grid[2]} ({results['tokens']} tokens), {args.steps} steps, "
        f"dense {results['dense_seconds']} s"
    )
    for entry in results["sparse"]:
        print(
            f"{args.method} {entry['sparsity']:.0%}: PSNR {entry['psnr']:.2f} dB  "
            f"SSIM {entry['ssim']:.4f}  {entry['seconds']} s"
        )
    return results


if __name__ == "__main__":
    main()
