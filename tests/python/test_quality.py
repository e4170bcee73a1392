"""CPU tests of the quality harness (testbed/capture.py, masks.py, tiled_attention.py,
quality.py): the selection rules' invariants, the tiled pass against plain softmax attention, the
oracle bounds, Sparse VideoGen's choice, and the harness end to end on a tiny model, checked
against `veda attention --method veda` of the C++ CLI."""

from __future__ import annotations

import importlib.util
import math
import re
import subprocess
from pathlib import Path

import pytest
import torch

pytest.importorskip("veda")
pytest.importorskip("skimage")
pytest.importorskip("diffusers")
pytest.importorskip("safetensors")

from conftest import veda_cli

from testbed import masks, model, quality
from testbed.capture import CaptureSet
from testbed.tiled_attention import budget_for, keep_top, tiled_attention

GRID = (8, 16, 32)  # 4,096 tokens = 32 tiles: 4 frame-major tiles per frame
RULES = ("sta", "radial", "spatial", "temporal")


def random_qkv(n: int, dim: int = 64, seed: int = 0) -> tuple[torch.Tensor, ...]:
    generator = torch.Generator().manual_seed(seed)
    return tuple(torch.randn(n, dim, generator=generator) * 2 for _ in range(3))  # [N, D] each


def assert_valid_index(index: torch.Tensor, tiles: int, budget: int) -> None:
    assert index.shape == (tiles, budget)
    assert ((index >= 0) & (index < tiles)).all()
    assert (index[:, 1:] > index[:, :-1]).all()  # ascending, no duplicate
    assert (index == torch.arange(tiles)[:, None]).any(-1).all()  # own tile kept


@pytest.mark.parametrize(
    "name", ["1x8x16", "4x4x8", "8x4x4", masks.FRAME_MAJOR, masks.SPATIAL_MAJOR]
)
def test_tilings_are_permutations_of_boxes(name):
    tiling = masks.make_tiling(GRID, name)
    n = GRID[0] * GRID[1] * GRID[2]
    assert torch.equal(tiling.order.sort().values, torch.arange(n))
    assert torch.equal(tiling.order[tiling.position], torch.arange(n))
    _, h, w = GRID
    coords = torch.stack((tiling.order // (h * w), tiling.order // w % h, tiling.order % w), -1)
    extent = (coords.view(-1, 128, 3).amax(1) - coords.view(-1, 128, 3).amin(1) + 1).unique(dim=0)
    expected = {masks.FRAME_MAJOR: [1, 4, 32], masks.SPATIAL_MAJOR: [8, 1, 16]}
    sides = expected.get(name) or [int(side) for side in name.split("x")]
    assert extent.tolist() == [sides]  # every tile the same box


@pytest.mark.parametrize("sparsity", [0.0, 0.8, 0.9, 0.95])
def test_every_rule_keeps_the_budget_and_the_own_tile(sparsity):
    q, k, _ = random_qkv(4096)
    tiles = 32
    budget = budget_for(sparsity, tiles)
    assert budget == math.ceil((1 - sparsity) * tiles - 1e-9)
    order = masks.make_tiling(GRID, "1x8x16").order
    q_stats, k_stats = masks.tile_statistics(q[order]), masks.tile_statistics(k[order])
    p = torch.randn(3 * 64, 64) * 0.01
    scores = [masks.static_scores(GRID, rule) for rule in RULES] + [
        masks.meanpool_scores(q_stats, k_stats),
        masks.extrema_scores(q_stats, k_stats),
        masks.estimator_scores(q_stats, k_stats, p, p),
    ]
    for score in scores:
        assert_valid_index(keep_top(score, budget), tiles, budget)


def test_static_rules_keep_what_they_promise():
    tiles_per_frame = 4  # frame-major tiles of 4 rows x 32
    # spatial: a budget of one frame keeps exactly the query's frame
    spatial = keep_top(masks.static_scores(GRID, "spatial"), tiles_per_frame)
    assert torch.equal(spatial, (torch.arange(32) // 4 * 4)[:, None] + torch.arange(4))
    # temporal: spatial-major tiles hold 16 positions x 8 frames; the nearest positions first
    temporal = keep_top(masks.static_scores(GRID, "temporal"), 3)
    assert torch.equal(temporal[10], torch.tensor([9, 10, 11]))
    # sta: the 6 face neighbours of an interior 4x4x8 tile (tile grid 2 x 4 x 4) come first
    tiling = masks.make_tiling((12, 16, 32), "4x4x8")  # tile grid 3 x 4 x 4
    sta = keep_top(masks.static_scores((12, 16, 32), "sta"), 7)
    cells = (tiling.centroid / torch.tensor([4.0, 4.0, 8.0], dtype=torch.float64)).floor()
    centre = cells.tolist().index([1.0, 1.0, 1.0])
    distance = (cells[sta[centre]] - cells[centre]).abs().sum(-1)
    assert sorted(distance.tolist()) == [0] + [1] * 6
    # radial: for the middle frame's query, fewer kept tiles at larger temporal distance
    frames = masks.make_tiling(GRID, masks.FRAME_MAJOR).centroid[:, 0]
    radial = keep_top(masks.static_scores(GRID, "radial"), 12)
    query = 4 * 4  # first tile of frame 4
    per_distance = torch.bincount((frames[radial[query]] - 4).abs().long(), minlength=5)
    assert per_distance[0] == 4 and per_distance[0] >= per_distance[1] >= per_distance[2] > 0
    assert (per_distance[1:].diff() <= 0).all()


def test_estimator_at_zero_is_meanpool_and_extrema_bound_the_logits():
    q, k, _ = random_qkv(1024)
    q_stats, k_stats = masks.tile_statistics(q), masks.tile_statistics(k)
    zero = torch.zeros(3 * 64, 64)
    torch.testing.assert_close(
        masks.estimator_scores(q_stats, k_stats, zero, zero),
        masks.meanpool_scores(q_stats, k_stats),
    )
    # s qbar_i . k_c <= extrema[i, j] for every key c of tile j, with equality approached
    exact = (q_stats[:, 0] @ k.T / 8).view(8, 8, 128).amax(-1)  # [Tq, Tk]
    bound = masks.extrema_scores(q_stats, k_stats)
    assert (exact <= bound + 1e-5).all()


def test_tiled_attention_matches_masked_softmax_with_a_short_last_tile():
    n, dim = 1000, 32  # 8 tiles, the last of 104 tokens
    q, k, v = random_qkv(n, dim, seed=3)
    order = torch.randperm(n, generator=torch.Generator().manual_seed(1))
    chosen = keep_top(torch.rand(8, 8, generator=torch.Generator().manual_seed(2)), 3)
    full = keep_top(torch.zeros(8, 8), 8)
    result = tiled_attention(q, k, v, order, {"random": chosen, "full": full}, (3,), chunk_tiles=3)

    p = torch.softmax(q @ k.T / math.sqrt(dim), -1)  # [N, N] frame-major
    dense = p @ v
    assert abs(result.dense_norm2 - float(dense.square().sum())) < 1e-3 * result.dense_norm2
    tile = torch.empty(n, dtype=torch.long)
    tile[order] = torch.arange(n) // 128  # tile of each frame-major token
    kept = torch.zeros(8, 8, dtype=torch.bool).scatter_(1, chosen, True)[tile][:, tile]  # [N, N]
    logits = (q @ k.T / math.sqrt(dim)).masked_fill(~kept, float("-inf"))
    sparse = torch.softmax(logits, -1) @ v
    error2 = float((sparse - dense).square().sum())
    assert abs(result.outcomes["random"].error2 - error2) < 1e-4 * error2
    assert abs(result.outcomes["random"].kept_mass / n - float((p * kept).sum()) / n) < 1e-5
    assert result.outcomes["full"].error2 < 1e-10 * result.dense_norm2  # rel-L2 0 at full budget
    assert abs(result.outcomes["full"].kept_mass - n) < 1e-3
    # maps: rows of mass sum to 1; heat is the max probability of the tile pair
    torch.testing.assert_close(result.mass.sum(-1), torch.ones(8))
    blocks = [[p[tile == i][:, tile == j] for j in range(8)] for i in range(8)]
    heat = torch.tensor([[float(block.max()) for block in row] for row in blocks])
    torch.testing.assert_close(result.heat, heat)


def structured_head(grid, kind: str, seed: int = 0) -> tuple[torch.Tensor, ...]:
    """q = k = 6 x a random unit code of the token's frame ("spatial": attention stays in the
    frame) or of its spatial position ("temporal": the same position in every frame), plus
    noise; v random."""
    t, h, w = grid
    generator = torch.Generator().manual_seed(seed)
    token = torch.arange(t * h * w)
    group = token // (h * w) if kind == "spatial" else token % (h * w)
    codes = torch.randn(int(group.max()) + 1, 64, generator=generator)
    codes = torch.nn.functional.normalize(codes, dim=-1)
    q = 6 * 8 * codes[group] + 0.3 * torch.randn(len(token), 64, generator=generator)
    return q, q.clone(), torch.randn(len(token), 64, generator=generator)


@pytest.mark.parametrize("kind", ["spatial", "temporal"])
def test_svg_chooses_the_mask_that_matches_the_head(kind):
    q, k, v = structured_head(GRID, kind)
    assert masks.svg_choice(q, k, v, GRID, budget=4) == kind


def test_oracle_mass_bounds_every_method_and_heat_oracle_has_full_recall():
    q, k, v = structured_head(GRID, "spatial", seed=5)
    q = q + 2 * torch.randn_like(q)  # less clean: methods differ
    dim = q.shape[1]
    p_q, p_k = torch.randn(3 * dim, dim) * 0.05, torch.zeros(3 * dim, dim)
    veda_head = quality.VedaHead("2x8x8", p_q, p_k)
    result = quality.evaluate_head(q, k, v, GRID, {0.8: veda_head, 0.9: veda_head})
    metrics = result["metrics"]
    assert set(quality.METHODS) <= set(metrics)
    for method, per_sparsity in metrics.items():
        for key, entry in per_sparsity.items():
            assert entry["mass_recall"] <= entry["tiling_mass_recall"] + 1e-6, (method, key)
            assert 0 <= entry["tile_recall"] <= 1 and entry["error2"] >= 0
    for key in ("0.8", "0.9"):
        assert metrics["oracle_heat"][key]["tile_recall"] == 1
        own = metrics["oracle_mass"][key]
        assert abs(own["mass_recall"] - own["tiling_mass_recall"]) < 1e-9
        for method in ("veda", "stats"):  # same tiling as the oracles
            assert metrics[method][key]["mass_recall"] <= own["mass_recall"] + 1e-6
        fixed = metrics["oracle_mass@4x4x8"][key]["mass_recall"]
        assert max(metrics[m][key]["mass_recall"] for m in ("meanpool", "sta")) <= fixed + 1e-6
    assert result["tiling"]["veda"]["0.8"] == "2x8x8"
    assert result["tiling"]["meanpool"]["0.9"] == "4x4x8"
    assert result["svg"] == {"0.8": "spatial", "0.9": "spatial"}


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory) -> Path:
    """A random tiny testbed (2 layers x 1 head x 128) whose clip is 8 x 64 x 64: grid 8x16x16 =
    2,048 tokens, 16 tiles (budgets 4, 2, 1 at 80, 90, 95%)."""
    folder = tmp_path_factory.mktemp("tiny")
    config = model.ModelConfig.tiny()
    config.frames = 8
    torch.manual_seed(0)
    model.save_checkpoint(model.Testbed(config), folder, {"steps": 0})
    return folder


def test_harness_end_to_end_matches_the_cli(tiny_checkpoint, tmp_path):
    cli = veda_cli()
    if cli is None:
        pytest.skip("no veda CLI built (cmake --build BUILD --target veda)")
    out, captures = tmp_path / "out", tmp_path / "captures"
    result = quality.main(
        ["--checkpoint", str(tiny_checkpoint), "--out", str(out), "--captures", str(captures),
         "--veda-cli", str(cli), "--calib-classes", "1", "--calib-seeds", "101",
         "--eval-classes", "0", "4", "--eval-seeds", "202", "--t", "0.9", "0.5",
         "--calibrate-each"]
    )  # fmt: skip
    assert result["grid"] == [8, 16, 16]
    assert len(result["per_layer_step"]) == 2 * 2  # layers x t
    assert len(result["heads"]) == 2 * 2 * 2  # layers x t x clips (1 head)
    assert set(result["calibration"]["calibrated_at"].values()) == {0.8, 0.9, 0.95}
    for method in quality.METHODS:
        for key in ("0.8", "0.9", "0.95"):
            entry = result["mean"][method][key]
            assert 0 < entry["mass_recall"] <= 1 and 0 <= entry["tile_recall"] <= 1
            assert math.isfinite(entry["rel_l2"]) and entry["rel_l2"] > 0
    assert result["mean"]["oracle_heat"]["0.9"]["tile_recall"] == 1
    table = (out / "quality.md").read_text()
    assert "| 95% | oracle_heat |" in table and "oracle_mass@4x4x8" in table
    if importlib.util.find_spec("matplotlib"):
        assert (out / "quality.png").stat().st_size > 0
    evaluation = CaptureSet.load(captures / "evaluation")
    assert evaluation.times == [0.9, 0.5] and evaluation.clips == [(0, 202), (4, 202)]
    assert {(f.layer, f.step, f.t) for f in evaluation.files} == {
        (layer, step, t) for layer in (0, 1) for step, t in enumerate((0.9, 0.5))
    }

    # Veda's masks and numbers are those of the C++ pipeline on the same capture and profile.
    capture = next(captures.glob("evaluation/*step001.layer01*.safetensors"))
    shown = subprocess.run(
        [str(cli), "attention", "--method", "veda", "--profile", str(out / "profile-90.json"),
         "--in", str(capture), "--out", str(tmp_path / "veda_out.safetensors"),
         "--sparsity", "0.9"],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    rel_l2 = float(re.search(r"rel-L2 ([0-9.e+-]+)", shown).group(1))
    tile_recall = float(re.search(r"tile recall ([0-9.e+-]+)", shown).group(1))
    mass_recall = float(re.search(r"mass recall ([0-9.e+-]+)", shown).group(1))
    row = next(r for r in result["per_layer_step"] if (r["layer"], r["step"]) == (1, 1))
    heads = [h for h in result["heads"] if (h["layer"], h["step"]) == (1, 1)]
    ours = [h["metrics"]["veda"]["0.9"] for h in heads]
    pooled = math.sqrt(sum(e["error2"] for e in ours) / sum(e["norm2"] for e in ours))
    assert abs(pooled - rel_l2) < 1e-4 * rel_l2
    assert abs(row["methods"]["veda"]["0.9"]["tile_recall"] - tile_recall) < 1e-5
    assert abs(row["methods"]["veda"]["0.9"]["mass_recall"] - mass_recall) < 1e-5


def test_captures_of_more_layers_are_reused_for_fewer(tiny_checkpoint, tmp_path, monkeypatch):
    def capture_args(*layers: int) -> list[str]:
        return ["--checkpoint", str(tiny_checkpoint), "--out", str(tmp_path),
                "--calib-classes", "1", "--eval-classes", "0", "--t", "0.5",
                *(["--layers", *map(str, layers)] if layers else [])]  # fmt: skip

    every = quality.capture_sets(quality.parse_args(capture_args()), tmp_path)
    assert every["evaluation"].layers() == {0, 1}

    def no_capture(*args, **kwargs):
        raise AssertionError("captured again")

    monkeypatch.setattr(quality, "capture_clips", no_capture)
    reused = quality.capture_sets(quality.parse_args(capture_args(1)), tmp_path)
    for name in ("calibration", "evaluation"):
        assert [f.layer for f in reused[name].files] == [1]
        assert reused[name].files == [f for f in every[name].files if f.layer == 1]
    with pytest.raises(AssertionError, match="captured again"):
        quality.capture_sets(quality.parse_args(capture_args(0, 2)), tmp_path)


def test_a_given_profile_is_evaluated_at_another_resolution(tiny_checkpoint, tmp_path, monkeypatch):
    cli = veda_cli()
    if cli is None:
        pytest.skip("no veda CLI built (cmake --build BUILD --target veda)")
    common = ["--checkpoint", str(tiny_checkpoint), "--calib-classes", "1", "--eval-classes", "0",
              "--t", "0.5", "--layers", "1"]  # fmt: skip
    calibrated = tmp_path / "calibrated"
    quality.main([*common, "--out", str(calibrated), "--veda-cli", str(cli)])
    profile = calibrated / "profile-90.json"

    def no_cli(*args, **kwargs):
        raise AssertionError("calibrated although a profile was given")

    monkeypatch.setattr(quality, "find_veda_cli", no_cli)
    captures = tmp_path / "captures"
    result = quality.main(
        [*common, "--out", str(tmp_path / "larger"), "--profile", str(profile),
         "--eval-height", "128", "--eval-width", "96", "--captures", str(captures)]
    )  # fmt: skip
    assert result["grid"] == [8, 32, 24]  # the tiny model's patch is 1x4x4
    assert set(result["calibration"]["profiles"].values()) == {str(profile)}
    assert sorted(p.name for p in captures.iterdir()) == ["evaluation-128x96"]
    assert 0 < result["mean"]["veda"]["0.9"]["tile_recall"] <= 1

    with pytest.raises(ValueError, match="give both or neither"):
        quality.main([*common, "--out", str(tmp_path / "x"), "--eval-height", "128"])
    with pytest.raises(ValueError, match="--profile .*missing.json does not exist"):
        quality.main(
            [*common, "--out", str(tmp_path / "x"), "--profile", str(tmp_path / "missing.json")]
        )
