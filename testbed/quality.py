"""The quality harness of issue 6: tile selection methods at equal sparsity on the testbed's attention.

    python -m testbed.quality --checkpoint DIR --out DIR [--calib-classes 1 5 9] [--calib-seeds 101]
        [--eval-classes 0 8] [--eval-seeds 202] [--layers ...] [--t 0.9 0.5 0.2]
        [--sparsity 0.8 0.9 0.95] [--calibrate-each] [--captures DIR] [--veda-cli PATH]
        [--profile PROFILE.json] [--eval-height H --eval-width W]

1. Captures q, k, v of the chosen layers (testbed.capture: one forward per t of noised data clips)
   for calibration clips and for evaluation clips; their classes and seeds must be disjoint.
2. Calibrates Veda with `veda calibrate` (the C++ CLI) on the calibration captures, once, at
   --calibration-sparsity (0.9), and uses that profile at every sparsity: the CLI's --sparsity
   only sets where the head-aware tile search measures the oracle mask's output error (and the
   sparsity written in the profile); the distillation does not depend on it. --calibrate-each
   calibrates a profile per sparsity (3x the calibration time, and more tilings to evaluate;
   on the trained testbed it moved Veda's rel-L2 by under 1%). --profile skips steps 1-2 for
   the calibration clips and evaluates a given profile instead.
3. On every evaluation capture, per clip and head, at each sparsity s (budget k = ceil((1 - s) *
   tiles) key tiles per query tile, the own tile always kept), the methods of testbed.masks:

       oracle_heat  top-k by tile heat (the paper's teacher)    } in Veda's tiling of the head
       oracle_mass  top-k by tile mass (the most mass possible) }
       veda         the distilled estimator                     } (the profile's tile shape)
       stats        untrained statistics (extrema bound)        }
       meanpool     mean-pooled scores, 4x4x8 tiles (VSA / SpargeAttn style)
       sta          a static local 3D window, 4x4x8 tiles (STA style)
       radial       Radial Attention's static mask, frame-major 128-token blocks
       svg          Sparse VideoGen: per head the spatial or the temporal mask, chosen on 64
                    sampled query rows

   and measures tile recall (|kept ∩ heat oracle| / k in the method's own tiling, mean over query
   tiles), mass recall (mean over query rows of the attention probability in kept tiles) and the
   output rel-L2 against dense attention (per head ||O - O_dense|| / ||O_dense||; for a layer,
   over all its heads). Oracles of the fixed tilings are reported too (oracle_heat@4x4x8, ...).
4. Writes DIR/quality.json (per head, per layer and step, averaged), DIR/quality.md (tables),
   DIR/quality.png (quality against sparsity per method) and prints the averaged table last.

Everything runs on the CPU in float32 (testbed.tiled_attention); at the training grid (12,288
tokens, 96 tiles) one head costs about 1 s per tiling, 3-5 tilings per head. --eval-height and
--eval-width capture the evaluation clips at another resolution (e.g. 192 x 256, the evaluation
grid of testbed.sample: 49,152 tokens, ~16x the time a head).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from . import masks
from .capture import MANIFEST, CaptureSet, capture_clips, clip_list
from .model import load_checkpoint
from .tiled_attention import TiledAttention, budget_for, keep_top, tiled_attention

METHODS = ("oracle_heat", "oracle_mass", "veda", "stats", "meanpool", "sta", "radial", "svg")
FIXED_TILING = masks.FIXED_TILING
ORACLES = ("oracle_heat", "oracle_mass")
FIXED_ORACLE_TILINGS = (FIXED_TILING, masks.FRAME_MAJOR)  # oracles reported in these tilings too
# quality.md's second table: the methods of fixed tilings beside those tilings' oracles (svg's
# temporal heads use spatial-major tiles, whose oracle is not listed)
FIXED_TILING_TABLE = tuple(
    name
    for tiling, methods in (
        (FIXED_TILING, ("meanpool", "sta")),
        (masks.FRAME_MAJOR, ("radial", "svg")),
    )
    for name in (*methods, *(f"{oracle}@{tiling}" for oracle in ORACLES))
)
REPO_ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class VedaHead:
    """A head's calibrated tile shape and estimator parameters."""

    tile: str  # "ptxphxpw"
    p_q: torch.Tensor  # [3D, D]
    p_k: torch.Tensor  # [3D, D]


def _key(sparsity: float) -> str:
    return f"{sparsity:g}"


Plan = dict[str, dict[str, torch.Tensor]]  # tiling -> "method@sparsity" -> index [T, budget]


def plan_masks(
    q: torch.Tensor,  # [N, D] one head, frame-major, float32
    k: torch.Tensor,  # [N, D]
    v: torch.Tensor,  # [N, D]
    grid: tuple[int, int, int],
    veda_heads: dict[float, VedaHead],  # the profile used at each sparsity
    seed: int = 0,
) -> tuple[Plan, dict[str, dict[str, str]], dict[str, str]]:
    """The masks of every non-oracle method at every sparsity, grouped by tiling; the tiling of
    every method (oracles included) per sparsity; Sparse VideoGen's choice per sparsity."""
    tiles = masks.make_tiling(grid, masks.FRAME_MAJOR).tiles
    statistics: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}

    def stats_of(name: str) -> tuple[torch.Tensor, torch.Tensor]:  # ([T, 3, D] of q, of k)
        if name not in statistics:
            order = masks.make_tiling(grid, name).order
            statistics[name] = (masks.tile_statistics(q[order]), masks.tile_statistics(k[order]))
        return statistics[name]

    plans: Plan = defaultdict(dict)
    tiling_of: dict[str, dict[str, str]] = defaultdict(dict)  # method -> sparsity -> tiling
    svg_kind: dict[str, str] = {}
    for sparsity, head in veda_heads.items():
        key, budget = _key(sparsity), budget_for(sparsity, tiles)
        q_stats, k_stats = stats_of(head.tile)
        fixed_q, fixed_k = stats_of(FIXED_TILING)
        svg_kind[key] = masks.svg_choice(q, k, v, grid, budget, seed=seed)
        scores = {  # method -> (tiling, scores [T, T])
            "veda": (head.tile, masks.estimator_scores(q_stats, k_stats, head.p_q, head.p_k)),
            "stats": (head.tile, masks.extrema_scores(q_stats, k_stats)),
            "meanpool": (FIXED_TILING, masks.meanpool_scores(fixed_q, fixed_k)),
            **{
                method: (masks.STATIC_TILINGS[rule], masks.static_scores(grid, rule))
                for method, rule in (("sta", "sta"), ("radial", "radial"), ("svg", svg_kind[key]))
            },
        }
        for method, (tiling, method_scores) in scores.items():
            plans[tiling][f"{method}@{key}"] = keep_top(method_scores, budget)
            tiling_of[method][key] = tiling
        for oracle in ORACLES:
            tiling_of[oracle][key] = head.tile
            for name in FIXED_ORACLE_TILINGS:  # planned above: meanpool, radial
                tiling_of[f"{oracle}@{name}"][key] = name
    return plans, tiling_of, svg_kind


def evaluate_head(
    q: torch.Tensor,  # [N, D] one head, frame-major
    k: torch.Tensor,  # [N, D]
    v: torch.Tensor,  # [N, D]
    grid: tuple[int, int, int],
    veda_heads: dict[float, VedaHead],  # the profile used at each sparsity
    seed: int = 0,
) -> dict[str, Any]:
    """Every method at every sparsity of veda_heads on one head: {"metrics": {method: {s: {
    tile_recall, mass_recall, tiling_mass_recall, error2, norm2}}}, "tiling": {method: {s: name}},
    "svg": {s: kind}}. Methods are METHODS then the oracles of the fixed tilings
    (oracle_heat@4x4x8, oracle_mass@frame-major, ...). One tiled_attention pass per tiling."""
    q, k, v = q.float(), k.float(), v.float()
    plans, tiling_of, svg_kind = plan_masks(q, k, v, grid, veda_heads, seed)
    tiles = masks.make_tiling(grid, masks.FRAME_MAJOR).tiles
    budgets = tuple(sorted({budget_for(s, tiles) for s in veda_heads}))
    passes: dict[str, TiledAttention] = {
        name: tiled_attention(q, k, v, masks.make_tiling(grid, name).order, chosen, budgets)
        for name, chosen in plans.items()
    }
    metrics: dict[str, dict[str, dict[str, float]]] = {}
    for method, per_sparsity in tiling_of.items():
        metrics[method] = {}
        for key, name in per_sparsity.items():
            result, budget = passes[name], budget_for(float(key), tiles)
            if method.startswith("oracle_"):  # oracle_heat, oracle_mass, oracle_mass@4x4x8, ...
                kind = method.split("@")[0].removeprefix("oracle_")
                chosen = keep_top(result.heat if kind == "heat" else result.mass, budget)
                outcome = result.outcomes[f"{kind}@{budget}"]
            else:
                chosen, outcome = plans[name][f"{method}@{key}"], result.outcomes[f"{method}@{key}"]
            heat_oracle = keep_top(result.heat, budget)  # [T, budget]
            overlap = (chosen[:, :, None] == heat_oracle[:, None, :]).any(-1).sum(-1)  # [T]
            metrics[method][key] = {
                "tile_recall": float(overlap.float().mean()) / budget,
                "mass_recall": outcome.kept_mass / result.rows,
                # the most mass any mask of this tiling keeps: recalls compare within a tiling
                "tiling_mass_recall": result.outcomes[f"mass@{budget}"].kept_mass / result.rows,
                "error2": outcome.error2,
                "norm2": result.dense_norm2,
            }
    return {"metrics": metrics, "tiling": dict(tiling_of), "svg": svg_kind}


def summarize(heads: list[dict[str, Any]]) -> dict[str, dict[str, dict[str, float]]]:
    """Per method and sparsity: tile and mass recall averaged over heads, rel-L2 of the layer
    (over all heads of a capture item: one clip at one layer and t) averaged over items, and the
    per-head rel-L2 averaged over heads."""
    items: dict[tuple, list[dict[str, Any]]] = defaultdict(list)
    for head in heads:
        items[(head["layer"], head["step"], tuple(head["clip"]))].append(head)
    summary: dict[str, dict[str, dict[str, float]]] = {}
    for method in heads[0]["metrics"]:
        summary[method] = {}
        for key in heads[0]["metrics"][method]:
            entries = [h["metrics"][method][key] for h in heads]
            layer_errors = [
                math.sqrt(
                    sum(h["metrics"][method][key]["error2"] for h in group)
                    / sum(h["metrics"][method][key]["norm2"] for h in group)
                )
                for group in items.values()
            ]
            summary[method][key] = {
                "tile_recall": _mean(e["tile_recall"] for e in entries),
                "mass_recall": _mean(e["mass_recall"] for e in entries),
                "rel_l2": _mean(layer_errors),
                "rel_l2_head": _mean(math.sqrt(e["error2"] / e["norm2"]) for e in entries),
            }
    return summary


def _mean(values: Any) -> float:
    values = list(values)
    return sum(values) / len(values)


def markdown_table(summary: dict[str, dict[str, dict[str, float]]], methods=METHODS) -> str:
    """Rows sparsity x method: tile recall, mass recall, layer rel-L2 and its ratio to the better
    oracle (heat or mass, in Veda's tiling)."""
    lines = [
        "| sparsity | method | tile recall | mass recall | rel-L2 | rel-L2 / best oracle |",
        "|---|---|---|---|---|---|",
    ]
    for key in summary[methods[0]]:
        best = min(summary[o][key]["rel_l2"] for o in ("oracle_heat", "oracle_mass"))
        for index, method in enumerate(m for m in methods if m in summary):
            row = summary[method][key]
            label = f"{float(key):.0%}" if index == 0 else ""
            lines.append(
                f"| {label} | {method} | {row['tile_recall']:.3f} | {row['mass_recall']:.3f} | "
                f"{row['rel_l2']:.4f} | {row['rel_l2'] / best:.2f} |"
            )
    return "\n".join(lines)


def per_layer_table(rows: list[dict[str, Any]], sparsity: str, methods=METHODS) -> str:
    """Layer rel-L2 per (layer, t) row at one sparsity, one column per method."""
    lines = [
        "| layer | t | " + " | ".join(methods) + " |",
        "|---|---|" + "---|" * len(methods),
    ]
    for row in rows:
        values = " | ".join(f"{row['methods'][m][sparsity]['rel_l2']:.3f}" for m in methods)
        lines.append(f"| {row['layer']} | {row['t']:g} | {values} |")
    return "\n".join(lines)


def plot(summary: dict[str, dict[str, dict[str, float]]], path: Path, methods=METHODS) -> Path:
    """quality.png: layer rel-L2, mass recall and tile recall against sparsity, one line a
    method."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, 3, figsize=(15, 4.5))
    panels = (
        ("rel_l2", "output rel-L2 vs dense"),
        ("mass_recall", "mass recall"),
        ("tile_recall", "tile recall vs heat oracle"),
    )
    for axis, (field, title) in zip(axes, panels):
        for method in methods:
            keys = list(summary[method])
            style = "--" if method.startswith("oracle") else "-"
            axis.plot(
                [100 * float(s) for s in keys],
                [summary[method][s][field] for s in keys],
                style,
                marker="o",
                label=method,
            )
        axis.set_xlabel("sparsity (%)")
        axis.set_title(title)
        axis.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path


# ----- calibration through the C++ CLI -----------------------------------------------------------


def find_veda_cli(explicit: str | None = None) -> Path:
    """The `veda` binary: explicit, $VEDA_CLI, `veda` on PATH, or a build folder of this checkout."""
    candidates = [explicit, os.environ.get("VEDA_CLI"), shutil.which("veda")]
    candidates += [str(p) for p in sorted(REPO_ROOT.glob("build*/tools/veda/veda"))]
    for candidate in candidates:
        if candidate and Path(candidate).is_file():
            return Path(candidate)
    raise FileNotFoundError(
        "no veda CLI: pass --veda-cli or set VEDA_CLI (build it with `cmake -S . -B build -G "
        "Ninja -DVEDA_CUDA=OFF && cmake --build build --target veda`)"
    )


def calibrate(cli: Path, captures: CaptureSet, sparsity: float, out: Path) -> Path:
    """Runs `veda calibrate` on every capture file; returns the profile path (log beside it)."""
    profile = out / f"profile-{round(100 * sparsity)}.json"
    files = [str(f.path) for f in captures.files]  # by layer, then step: the last is held out
    command = [
        str(cli),
        "calibrate",
        "--in",
        *files,
        "--sparsity",
        f"{sparsity:g}",
        "--out",
        str(profile),
        "--model",
        "testbed",
    ]
    done = subprocess.run(command, check=False, capture_output=True, text=True)
    profile.with_suffix(".log").write_text(done.stdout + done.stderr)
    if done.returncode != 0:
        raise RuntimeError(f"veda calibrate failed ({done.returncode}): {done.stderr[-2000:]}")
    return profile


def veda_heads_of(profiles: dict[float, Path], layer: int) -> dict[float, list[VedaHead]]:
    """Per sparsity, the VedaHead of every head of `layer`."""
    import veda

    result = {}
    for sparsity, path in profiles.items():
        layer_profile = veda.Profile.load(path).layer(layer)
        p_q, p_k = layer_profile.estimator("cpu")  # [H, 3D, D] each
        result[sparsity] = [
            VedaHead("x".join(map(str, head.tile)), p_q[h], p_k[h])
            for h, head in enumerate(layer_profile.heads)
        ]
    return result


# ----- the whole harness -------------------------------------------------------------------------


def evaluate(captures: CaptureSet, profiles: dict[float, Path], log=print) -> list[dict[str, Any]]:
    """evaluate_head on every clip and head of every evaluation capture; one record per head."""
    from safetensors import safe_open

    heads = []
    for file in captures.files:
        start = time.time()
        with safe_open(str(file.path), framework="pt") as tensors:
            q, k, v = (tensors.get_tensor(name).float() for name in ("q", "k", "v"))  # [B, N, H, D]
        per_sparsity = veda_heads_of(profiles, file.layer)
        for b, clip in enumerate(captures.clips):
            for h in range(q.shape[2]):
                result = evaluate_head(
                    q[b, :, h],
                    k[b, :, h],
                    v[b, :, h],
                    captures.grid,
                    {s: per_sparsity[s][h] for s in per_sparsity},
                    seed=h,
                )
                heads.append(
                    {
                        "layer": file.layer,
                        "step": file.step,
                        "t": file.t,
                        "clip": list(clip),
                        "head": h,
                        **result,
                    }
                )
        log(f"  layer {file.layer} t {file.t:g}: {time.time() - start:.1f} s")
    return heads


def capture_sets(args: argparse.Namespace, work: Path) -> dict[str, CaptureSet]:
    """The calibration (unless a --profile is given) and evaluation captures in work/calibration
    and work/evaluation (work/evaluation-HxW at another resolution); captures already there of the
    same clips, t and grid are reused when they hold every layer asked for (only those layers'
    files are used)."""
    model = None
    sets = {}
    resized = args.eval_height is not None
    wanted_sets = [("evaluation", args.eval_classes, args.eval_seeds, resized)]
    if args.profile is None:
        wanted_sets.insert(0, ("calibration", args.calib_classes, args.calib_seeds, False))
    for name, classes, seeds, at_eval_size in wanted_sets:
        height, width = (args.eval_height, args.eval_width) if at_eval_size else (None, None)
        folder = work / (f"{name}-{height}x{width}" if at_eval_size else name)
        clips = clip_list(classes, seeds)
        if (folder / MANIFEST).exists():
            existing = CaptureSet.load(folder)
            wanted = existing.layers() if args.layers is None else set(args.layers)
            if (
                existing.clips == clips
                and existing.times == sorted(args.t, reverse=True)
                and wanted <= existing.layers()
            ):
                sets[name] = existing.only_layers(wanted)
                continue
        if model is None:
            model, _ = load_checkpoint(args.checkpoint, device=args.device)
        print(f"capturing {name}: {len(clips)} clip(s) x {len(args.t)} t", flush=True)
        sets[name] = capture_clips(
            model, folder, clips=clips, times=args.t, layers=args.layers, height=height, width=width
        )
    return sets


def report(
    heads: list[dict[str, Any]], out: Path, header: dict[str, Any]
) -> tuple[dict[str, Any], str]:
    """Writes quality.json, quality.md and quality.png; returns the result and the main table."""
    per_layer_step = []
    for layer, step in sorted({(h["layer"], h["step"]) for h in heads}):
        group = [h for h in heads if (h["layer"], h["step"]) == (layer, step)]
        per_layer_step.append(
            {"layer": layer, "step": step, "t": group[0]["t"], "methods": summarize(group)}
        )
    summary = summarize(heads)
    result = {**header, "mean": summary, "per_layer_step": per_layer_step, "heads": heads}
    (out / "quality.json").write_text(json.dumps(result, indent=1) + "\n")
    table = markdown_table(summary)
    sections = [
        table,
        "The static and pooled methods beside the oracles of their own tilings:\n\n"
        + markdown_table(summary, FIXED_TILING_TABLE),
        *(
            f"Layer rel-L2 at {float(key):.0%}:\n\n" + per_layer_table(per_layer_step, key)
            for key in summary["veda"]
        ),
    ]
    (out / "quality.md").write_text("\n\n".join(sections) + "\n")
    try:
        plot(summary, out / "quality.png")
    except ImportError:
        print("matplotlib is not installed: no quality.png", file=sys.stderr)
    return result, table


def run(args: argparse.Namespace) -> dict[str, Any]:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if set(args.calib_classes) & set(args.eval_classes) or set(args.calib_seeds) & set(
        args.eval_seeds
    ):
        raise ValueError(
            f"calibration and evaluation must not share classes or seeds: classes "
            f"{args.calib_classes} / {args.eval_classes}, seeds {args.calib_seeds} / "
            f"{args.eval_seeds}"
        )
    if (args.eval_height is None) != (args.eval_width is None):
        raise ValueError(
            f"--eval-height {args.eval_height} and --eval-width {args.eval_width}: give both or "
            "neither"
        )
    if args.profile is not None and not Path(args.profile).is_file():
        raise ValueError(f"--profile {args.profile} does not exist")
    cli = None if args.profile is not None else find_veda_cli(args.veda_cli)
    seconds: dict[str, float] = {}
    work = Path(args.captures) if args.captures else Path(tempfile.mkdtemp(prefix="veda-captures-"))
    try:
        start = time.time()
        sets = capture_sets(args, work)
        seconds["capture"] = time.time() - start

        start = time.time()
        calibrated_at = {
            s: s if args.calibrate_each else args.calibration_sparsity for s in args.sparsity
        }
        profiles_at = {}
        for target in sorted(set(calibrated_at.values())):
            if args.profile is not None:
                profiles_at[target] = Path(args.profile)
                continue
            print(f"calibrating at {target:g} ({cli})", flush=True)
            profiles_at[target] = calibrate(cli, sets["calibration"], target, out)
        profiles = {s: profiles_at[calibrated_at[s]] for s in args.sparsity}
        seconds["calibrate"] = time.time() - start

        start = time.time()
        print("evaluating", flush=True)
        heads = evaluate(sets["evaluation"], profiles)
        seconds["evaluate"] = time.time() - start
    finally:
        if not args.captures:
            shutil.rmtree(work, ignore_errors=True)

    evaluation = sets["evaluation"]
    header = {
        "checkpoint": str(args.checkpoint),
        "grid": list(evaluation.grid),
        "sparsities": args.sparsity,
        "methods": list(METHODS),
        "calibration": {
            "clips": sets["calibration"].clips if "calibration" in sets else None,
            "times": sets["calibration"].times if "calibration" in sets else None,
            "calibrated_at": {_key(s): t for s, t in calibrated_at.items()},
            "profiles": {_key(s): str(p) for s, p in profiles.items()},
        },
        "evaluation": {
            "clips": evaluation.clips,
            "times": evaluation.times,
            "layers": sorted({f.layer for f in evaluation.files}),
        },
        "seconds": seconds,
    }
    result, table = report(heads, out, header)
    print(f"seconds: {', '.join(f'{k} {v:.0f}' for k, v in seconds.items())}")
    print(table)
    return result


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--out", required=True, help="folder for quality.json/.md/.png and profiles")
    p.add_argument("--device", default="cpu", help="device of the capture forwards")
    p.add_argument("--calib-classes", type=int, nargs="+", default=[1, 5, 9])
    p.add_argument("--calib-seeds", type=int, nargs="+", default=[101])
    p.add_argument("--eval-classes", type=int, nargs="+", default=[0, 8])
    p.add_argument("--eval-seeds", type=int, nargs="+", default=[202])
    p.add_argument("--layers", type=int, nargs="+", default=None, help="default: all")
    p.add_argument("--t", type=float, nargs="+", default=[0.9, 0.5, 0.2])
    p.add_argument("--sparsity", type=float, nargs="+", default=[0.8, 0.9, 0.95])
    p.add_argument("--calibration-sparsity", type=float, default=0.9)
    p.add_argument("--calibrate-each", action="store_true", help="a profile per sparsity")
    p.add_argument("--captures", default=None, help="keep (and reuse) captures in this folder")
    p.add_argument("--veda-cli", default=None, help="the veda binary (default: see find_veda_cli)")
    p.add_argument("--profile", default=None, help="evaluate this profile instead of calibrating")
    p.add_argument("--eval-height", type=int, default=None, help="evaluation clips' height")
    p.add_argument("--eval-width", type=int, default=None, help="evaluation clips' width")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    return run(parse_args(argv))


if __name__ == "__main__":
    main()
