"""How concentrated the testbed's self-attention is: the attention mass that top-k tile masks keep.

    python -m testbed.attention_stats --checkpoint DIR --out stats.json [--steps 30]
        [--capture-steps 0 15 29] [--classes 0 4] [--sparsity 0.8 0.9 0.95] [--tile 1 8 16]

Samples with dense attention while `veda.diffusers.capture` records q, k, v of every layer at the
chosen denoising steps, then, per file and head, computes full attention P = softmax(q k^T / sqrt(d))
in tiles of 128 tokens (tile-major order of `--tile`) and, at each sparsity (k = ceil((1 - s) *
tiles) key tiles per query tile, the query's own tile always kept), the mean over query rows of the
attention mass inside the kept tiles for three masks: top-k by tile heat (the paper's teacher, max
of P over the tile pair), top-k by tile mass (the best possible mass), and top-k by the mean-pooled
score mean(q_tile) . mean(k_tile) (VSA / SpargeAttn style). Real video DiTs keep most of the mass
at 90%; a diffuse testbed does not. This is the first number of issue 6's harness, not the harness.
"""

from __future__ import annotations

import argparse
import json
import math
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .model import Testbed, load_checkpoint, sampling_dtype
from .sample import euler_sample
from .tiled_attention import TILE, tiled_attention


def tile_major(
    x: torch.Tensor,  # [B, N, H, D], frame-major tokens
    grid: tuple[int, int, int],
    tile: tuple[int, int, int],
) -> torch.Tensor:
    """The same tokens in tile-major order [B, N, H, D]: each 128 consecutive rows one box."""
    (t, h, w), (pt, ph, pw) = grid, tile
    if t % pt or h % ph or w % pw:
        raise ValueError(f"grid {grid} is not a multiple of tile {tile}")
    b, n, heads, d = x.shape
    x = x.view(b, t // pt, pt, h // ph, ph, w // pw, pw, heads, d)
    return x.permute(0, 1, 3, 5, 2, 4, 6, 7, 8).reshape(b, n, heads, d)


def tile_statistics(
    q: torch.Tensor,  # [N, D] one head, tile-major
    k: torch.Tensor,  # [N, D]
    tile_tokens: int = TILE,
    chunk_tiles: int = 16,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Tile mass [T, T] (sum of P over the pair / tile_tokens: rows sum to 1) and heat [T, T]."""
    if tile_tokens != TILE:
        raise ValueError(f"tile_tokens {tile_tokens}; tiles have {TILE} tokens")
    order = torch.arange(q.shape[0], device=q.device)  # q, k are already tile-major
    result = tiled_attention(q, k, None, order, {}, chunk_tiles=chunk_tiles)
    return result.mass, result.heat


def kept_mass(mass: torch.Tensor, score: torch.Tensor, keep: int) -> float:
    """Mean over query tiles of the mass in the top-`keep` key tiles by score (diagonal kept)."""
    score = score.clone().float()
    score.fill_diagonal_(float("inf"))
    index = score.topk(keep, dim=-1).indices  # [T, keep]
    return float(mass.gather(1, index).sum(-1).mean())


def head_report(
    q: torch.Tensor,  # [N, D] tile-major
    k: torch.Tensor,  # [N, D]
    sparsities: list[float],
) -> dict[str, dict[str, float]]:
    mass, heat = tile_statistics(q, k)
    tiles = mass.shape[0]
    pooled_q = q.float().view(tiles, -1, q.shape[-1]).mean(1)  # [T, D]
    pooled_k = k.float().view(tiles, -1, k.shape[-1]).mean(1)
    meanpool = pooled_q @ pooled_k.T  # [T, T]
    report = {}
    for s in sparsities:
        keep = max(1, math.ceil((1 - s) * tiles))
        report[f"{s:g}"] = {
            "oracle_heat": kept_mass(mass, heat, keep),
            "oracle_mass": kept_mass(mass, mass, keep),
            "meanpool": kept_mass(mass, meanpool, keep),
        }
    return report


def analyse(
    model: Testbed,
    *,
    frames: int,
    height: int,
    width: int,
    class_ids: list[int],
    steps: int,
    capture_steps: list[int],
    sparsities: list[float],
    tile: tuple[int, int, int] = (1, 8, 16),
    seed: int = 0,
    work_dir: str | Path | None = None,
) -> dict[str, Any]:
    """Captures q, k, v while sampling densely, returns mass kept per layer and step (averaged
    over heads and clips) and the overall mean."""
    import veda.diffusers
    from safetensors import safe_open

    device = next(model.parameters()).device
    grid = model.config.grid(frames, height, width)
    generator = torch.Generator().manual_seed(seed)
    shape = (len(class_ids), model.config.in_channels, frames, height, width)
    noise = torch.randn(shape, generator=generator).to(device)  # [B, C, F, H, W]
    ids = torch.tensor(class_ids, dtype=torch.long, device=device)
    with tempfile.TemporaryDirectory(dir=work_dir) as folder:
        paths = veda.diffusers.capture(
            model.transformer,
            lambda: euler_sample(model, noise, ids, steps),
            out_dir=folder,
            steps=capture_steps,
        )
        per: dict[tuple[int, int], list[dict[str, dict[str, float]]]] = {}
        for path in paths:
            with safe_open(str(path), framework="pt") as f:
                meta = f.metadata()
                q = tile_major(f.get_tensor("q").to(device), grid, tile)  # [B, N, H, D]
                k = tile_major(f.get_tensor("k").to(device), grid, tile)
            key = (int(meta["layer"]), int(meta["step"]))
            for b in range(q.shape[0]):
                for h in range(q.shape[2]):
                    per.setdefault(key, []).append(head_report(q[b, :, h], k[b, :, h], sparsities))
    methods = ("oracle_heat", "oracle_mass", "meanpool")

    def average(reports: list[dict[str, dict[str, float]]]) -> dict[str, dict[str, float]]:
        return {
            f"{s:g}": {m: float(np.mean([r[f"{s:g}"][m] for r in reports])) for m in methods}
            for s in sparsities
        }

    everything = [r for reports in per.values() for r in reports]
    return {
        "grid": list(grid),
        "tile": list(tile),
        "classes": class_ids,
        "steps": steps,
        "capture_steps": capture_steps,
        "mean": average(everything),
        "per_layer_step": [
            {"layer": layer, "step": step, **average(reports)}
            for (layer, step), reports in sorted(per.items())
        ],
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--out", required=True, help="JSON file")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--frames", type=int, default=None)
    p.add_argument("--height", type=int, default=None)
    p.add_argument("--width", type=int, default=None)
    p.add_argument("--classes", type=int, nargs="+", default=[0, 4])
    p.add_argument("--steps", type=int, default=30)
    p.add_argument(
        "--capture-steps", type=int, nargs="+", default=None, help="default 0, mid, last"
    )
    p.add_argument("--sparsity", type=float, nargs="+", default=[0.8, 0.9, 0.95])
    p.add_argument("--tile", type=int, nargs=3, default=[1, 8, 16])
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    device = torch.device(args.device)
    model, _ = load_checkpoint(args.checkpoint, device=device, dtype=sampling_dtype(device))
    config = model.config
    capture_steps = args.capture_steps or sorted({0, args.steps // 2, args.steps - 1})
    result = analyse(
        model,
        frames=args.frames or config.frames,
        height=args.height or config.height,
        width=args.width or config.width,
        class_ids=args.classes,
        steps=args.steps,
        capture_steps=capture_steps,
        sparsities=args.sparsity,
        tile=tuple(args.tile),
        seed=args.seed,
    )
    result["checkpoint"] = str(args.checkpoint)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    for s, values in result["mean"].items():
        print(
            f"sparsity {s}: mass kept by oracle (heat) {values['oracle_heat']:.3f}, "
            f"oracle (mass) {values['oracle_mass']:.3f}, meanpool {values['meanpool']:.3f}"
        )
    return result


if __name__ == "__main__":
    main()
