"""CPU smoke tests of the testbed (testbed/): clip synthesis, a few training steps of the tiny
model, checkpoint round trip, dense and Veda sampling. Needs scikit-image (the photographs)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

pytest.importorskip("skimage")
pytest.importorskip("diffusers")
pytest.importorskip("safetensors")

from conftest import REPO_ROOT

from testbed import attention_stats, data, model, sample, train

SMALL = (4, 32, 48)  # frames, height, width of the data tests


def test_same_seed_gives_the_same_clip_and_other_seeds_differ():
    generator = data.ClipGenerator(*SMALL)
    clip, cid = generator.clip(seed=3)
    again, cid_again = data.ClipGenerator(*SMALL).clip(seed=3)
    assert cid == cid_again
    assert torch.equal(clip, again)
    other, _ = generator.clip(seed=4, cid=cid)
    assert not torch.equal(clip, other)


def test_clip_shape_range_and_classes():
    generator = data.ClipGenerator(*SMALL)
    clips, ids = generator.batch([0, 1, 2], class_ids=[0, data.class_id("coffee", "zoom"), None])
    assert clips.shape == (3, 3, *SMALL)  # [B, C, F, H, W]
    assert clips.dtype == torch.float32
    assert clips.min() >= -1 and clips.max() <= 1
    assert clips.std() > 0.1  # real image content, not a flat colour
    assert ids[:2].tolist() == [0, data.class_id("coffee", "zoom")]
    assert 0 <= int(ids[2]) < data.NUM_CLASSES
    assert data.NUM_CLASSES == len(data.PHOTOS) * len(data.MOTIONS)
    # the camera moves: consecutive frames differ
    assert (clips[:, :, 1:] - clips[:, :, :-1]).abs().mean() > 1e-3


def test_default_config_grids():
    config = model.ModelConfig()
    assert config.head_dim == 128
    train_grid = config.grid(config.frames, config.height, config.width)
    assert train_grid == (16, 24, 32)  # 12,288 tokens, 96 tiles
    assert config.grid(16, 192, 256) == (16, 48, 64)  # evaluation, 49,152 tokens


def test_checkpoint_shards_round_trip(tmp_path):
    torch.manual_seed(0)
    net = model.Testbed(model.ModelConfig.tiny())
    written = model.save_checkpoint(
        net, tmp_path, {"steps": 0}, dtype=torch.float32, shard_bytes=512 * 1024
    )
    assert (tmp_path / model.INDEX_NAME).exists()
    assert sum(p.suffix == ".safetensors" for p in written) > 1
    loaded, info = model.load_checkpoint(tmp_path)
    assert info["steps"] == 0
    for (name, a), (_, b) in zip(net.state_dict().items(), loaded.state_dict().items()):
        assert torch.equal(a, b), name


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("testbed")
    train.main(
        [
            "--device",
            "cpu",
            "--tiny",
            "--max-steps",
            "2",
            "--batch",
            "2",
            "--log-every",
            "1",
            "--out",
            str(out),
        ]
    )
    return out


def test_tiny_training_writes_a_checkpoint_that_loads(tiny_checkpoint):
    info = json.loads((tiny_checkpoint / model.CONFIG_NAME).read_text())
    assert info["steps"] == 2 and info["final"]
    assert all(torch.isfinite(torch.tensor(h["loss"])) for h in info["history"])
    net, loaded_info = model.load_checkpoint(tiny_checkpoint)
    assert loaded_info["model"]["num_layers"] == 2
    config = net.config
    x = torch.zeros(1, 3, config.frames, config.height, config.width)  # [B, C, F, H, W]
    with torch.no_grad():
        v = net(x, torch.tensor([0.5]), torch.tensor([1]))
    assert v.shape == x.shape and torch.isfinite(v).all()


def test_training_is_deterministic(tiny_checkpoint, tmp_path):
    train.main(["--device", "cpu", "--tiny", "--max-steps", "2", "--batch", "2",
                "--out", str(tmp_path)])  # fmt: skip
    first, _ = model.load_checkpoint(tiny_checkpoint)
    second, _ = model.load_checkpoint(tmp_path)
    for (name, a), (_, b) in zip(first.state_dict().items(), second.state_dict().items()):
        assert torch.equal(a, b), name


def test_progressive_resolution_trains_on_half_size_clips_first(tiny_checkpoint, tmp_path):
    train.main(["--device", "cpu", "--tiny", "--max-steps", "2", "--batch", "2",
                "--low-res-steps", "1", "--log-every", "1", "--out", str(tmp_path)])  # fmt: skip
    info = json.loads((tmp_path / model.CONFIG_NAME).read_text())
    assert info["steps"] == 2 and info["args"]["low_res_steps"] == 1
    plain = json.loads((tiny_checkpoint / model.CONFIG_NAME).read_text())
    first = info["history"][0]["loss"]
    # Step 0 saw other clips (half-size ones) than the plain run's step 0.
    assert math.isfinite(first) and first != plain["history"][0]["loss"]
    net, _ = model.load_checkpoint(tmp_path)
    config = net.config
    x = torch.zeros(1, 3, config.frames, config.height, config.width)
    with torch.no_grad():
        assert torch.isfinite(net(x, torch.tensor([0.5]), torch.tensor([1]))).all()


def test_progressive_resolution_by_minutes_records_its_steps(tmp_path):
    # Both steps inside the minutes: recorded as 2 half-size steps, and the same weights as a
    # run given --low-res-steps 2.
    common = ["--device", "cpu", "--tiny", "--max-steps", "2", "--batch", "2"]
    train.main([*common, "--low-res-minutes", "1000", "--out", str(tmp_path / "minutes")])
    train.main([*common, "--low-res-steps", "2", "--out", str(tmp_path / "steps")])
    info = json.loads((tmp_path / "minutes" / model.CONFIG_NAME).read_text())
    assert info["args"]["low_res_steps"] == 2
    by_minutes, _ = model.load_checkpoint(tmp_path / "minutes")
    by_steps, _ = model.load_checkpoint(tmp_path / "steps")
    for (name, a), (_, b) in zip(by_minutes.state_dict().items(), by_steps.state_dict().items()):
        assert torch.equal(a, b), name


def test_progressive_resolution_takes_its_own_batch(tmp_path):
    common = ["--device", "cpu", "--tiny", "--max-steps", "1", "--batch", "2", "--log-every", "1",
              "--low-res-steps", "1"]  # fmt: skip
    losses = []
    for low_res_batch in ("2", "4"):
        out = tmp_path / low_res_batch
        train.main([*common, "--low-res-batch", low_res_batch, "--out", str(out)])
        info = json.loads((out / model.CONFIG_NAME).read_text())
        assert info["args"]["low_res_batch"] == int(low_res_batch)
        losses.append(info["history"][0]["loss"])
    assert losses[0] != losses[1]  # step 0 saw 4 clips, not 2
    with pytest.raises(ValueError, match="expected >= 1"):
        train.main([*common, "--low-res-batch", "0", "--out", str(tmp_path / "bad")])


def test_progressive_resolution_rejects_a_half_size_off_the_patch(tmp_path):
    with pytest.raises(ValueError, match="not a multiple of patch"):
        train.main(["--device", "cpu", "--tiny", "--max-steps", "1", "--width", "68",
                    "--low-res-steps", "1", "--out", str(tmp_path)])  # fmt: skip


def test_dense_and_veda_sampling(tiny_checkpoint, tmp_path):
    pytest.importorskip("veda")
    net, _ = model.load_checkpoint(tiny_checkpoint)
    config = net.config
    results, rows = sample.compare(
        net,
        frames=config.frames,
        height=config.height,
        width=config.width,
        class_ids=[0],
        sparsities=[0.9],
        steps=2,
    )
    assert results["grid"] == [4, 16, 16]
    (entry,) = results["sparse"]
    assert math.isfinite(entry["psnr"])  # finite: sparse attention changed the clip
    assert entry["psnr"] > 10 and 0 < entry["ssim"] <= 1
    assert [label for label, _ in rows] == ["dense", "meanpool 90%"]
    path = sample.write_strip(rows, tmp_path / "strip.png", frames=3)
    assert path.stat().st_size > 0


def test_front_loaded_sampling_records_its_schedule(tiny_checkpoint):
    pytest.importorskip("veda")
    net, _ = model.load_checkpoint(tiny_checkpoint)
    config = net.config
    kwargs = {
        "frames": config.frames,
        "height": config.height,
        "width": config.width,
        "class_ids": [0],
        "sparsities": [0.5],
        "steps": 2,
    }
    uniform = sample.compare(net, **kwargs)[0]["sparse"][0]
    # step 0 keeps 1.5 x 0.5 of the key tiles, step 1 the 0.25 that restores the mean
    (entry,) = sample.compare(net, **kwargs, early_steps=1, early_budget=1.5)[0]["sparse"]
    assert entry["step_sparsity"] == pytest.approx([0.25, 0.75])
    assert math.isfinite(entry["psnr"]) and entry["psnr"] != uniform["psnr"]
    with pytest.raises(ValueError, match="spend the whole budget"):
        sample.compare(net, **kwargs, early_steps=1, early_budget=2.0)


COMMITTED_CHECKPOINT = REPO_ROOT / "testbed" / "checkpoint"


def test_committed_checkpoint_denoises_with_dense_and_veda_attention():
    """The trained checkpoint (H200, bench/RESULTS.md) loads and one denoising step runs with dense
    and with Veda self-attention on a small grid (4 x 16 x 16 tokens: the rotary embedding takes
    any grid). Trained weights predict the clean clip far better than the noisy input does."""
    veda_diffusers = pytest.importorskip("veda.diffusers")
    net, info = model.load_checkpoint(COMMITTED_CHECKPOINT)
    assert info["final"] and info["steps"] > 1000
    assert info["model"]["num_heads"] * info["model"]["head_dim"] == 384
    x0, ids = data.ClipGenerator(4, 64, 64).batch([11], class_ids=[5])  # [1, 3, 4, 64, 64]
    noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(0))
    t = 0.5
    xt = (1 - t) * x0 + t * noise
    with torch.no_grad():
        dense = net(xt, torch.tensor([t]), ids)  # velocity noise - x0
        veda_diffusers.enable(net.transformer, sparsity=0.5)
        try:
            sparse = net(xt, torch.tensor([t]), ids)
        finally:
            veda_diffusers.disable(net.transformer)
    assert torch.isfinite(dense).all() and torch.isfinite(sparse).all()
    x0_error = ((xt - t * dense - x0) ** 2).mean()
    assert x0_error < 0.25 * ((xt - x0) ** 2).mean()  # 0.07x measured; 1.3x untrained
    difference = float((sparse - dense).norm() / dense.norm())
    assert 0 < difference < 0.3  # 0.05 measured; 4 of 8 key tiles kept per query tile


def test_psnr_and_time_grid():
    a = torch.zeros(3, 2, 8, 8)
    assert sample.psnr(a, a) == float("inf")
    assert abs(sample.psnr(a, a + 0.2) - 20.0) < 1e-4  # mse of (0.1)^2 in [0, 1] units
    times = sample.time_grid(4, shift=3.0)
    assert times[0] == 1 and times[-1] == 0 and (times[1:] < times[:-1]).all()


def test_tile_major_makes_each_128_rows_one_box():
    grid, tile = (2, 16, 16), (1, 8, 16)
    t, h, w = torch.meshgrid(*(torch.arange(n) for n in grid), indexing="ij")
    coords = torch.stack((t, h, w), -1).reshape(1, -1, 1, 3).float()  # [B, N, H, D]
    tiles = attention_stats.tile_major(coords, grid, tile)[0, :, 0].view(-1, 128, 3)  # [T, 128, 3]
    assert tiles.shape[0] == 4
    for box in tiles:
        extent = box.amax(0) - box.amin(0) + 1
        assert extent.tolist() == [1.0, 8.0, 16.0]


def test_oracle_mass_bounds():
    generator = torch.Generator().manual_seed(0)
    q = torch.randn(512, 32, generator=generator) * 3  # [N, D], 4 tiles
    k = torch.randn(512, 32, generator=generator) * 3
    mass, heat = attention_stats.tile_statistics(q, k, chunk_tiles=3)
    torch.testing.assert_close(mass.sum(-1), torch.ones(4))
    assert (heat <= 1).all() and (heat > 0).all()
    report = attention_stats.head_report(q, k, [0.0, 0.5])
    assert abs(report["0"]["oracle_mass"] - 1) < 1e-5
    half = report["0.5"]
    assert half["oracle_mass"] >= max(half["oracle_heat"], half["meanpool"]) - 1e-6


def test_attention_stats_on_the_tiny_model(tiny_checkpoint):
    pytest.importorskip("veda")
    net, _ = model.load_checkpoint(tiny_checkpoint)
    config = net.config
    result = attention_stats.analyse(
        net, frames=config.frames, height=config.height, width=config.width, class_ids=[0],
        steps=2, capture_steps=[1], sparsities=[0.9],
    )  # fmt: skip
    assert len(result["per_layer_step"]) == config.num_layers
    kept = result["mean"]["0.9"]
    assert 0 < kept["oracle_heat"] <= kept["oracle_mass"] + 1e-6 <= 1 + 1e-6
