"""bench/wan_e2e.py, the end-to-end Wan2.1 benchmark, on its --tiny path (CPU, float32).

The tiny model (2 layers, 2 heads of 32) on a 4x8x16 grid = 512 tokens = 4 tiles of 128, B = 2:
- veda0 keeps every key tile, so it is dense attention computed by veda's CPU reference: the
  step output matches diffusers' SDPA within summation order (observed rel-L2 1.4e-7; bound 1e-5).
- veda95 keeps 1 of 4 key tiles: the output changes, but the gated residual stream of a
  random-weight model dominates (observed rel-L2 0.013; bounds 1e-4 .. 0.2).
- noattn replaces self-attention by v: a larger change (observed 0.11; asked > 0.02).
"""

from __future__ import annotations

import importlib.util
import inspect
import json
import sys

import pytest
from conftest import REPO_ROOT

pytest.importorskip("diffusers")


@pytest.fixture(scope="module")
def wan_e2e():
    spec = importlib.util.spec_from_file_location("wan_e2e", REPO_ROOT / "bench" / "wan_e2e.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["wan_e2e"] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


def test_configs_are_wan21_and_their_token_counts(wan_e2e):
    from diffusers import WanTransformer3DModel

    # The 14B config is diffusers' __init__ defaults (Wan2.1-T2V-14B); 1.3B differs in 3 fields.
    defaults = {
        name: p.default
        for name, p in inspect.signature(WanTransformer3DModel.__init__).parameters.items()
        if p.default is not inspect.Parameter.empty
    }
    for name, value in wan_e2e.MODELS["14b"].items():
        assert tuple(defaults[name]) == value if name == "patch_size" else defaults[name] == value
    small = wan_e2e.MODELS["1.3b"]
    assert (small["num_attention_heads"], small["ffn_dim"], small["num_layers"]) == (12, 8960, 30)
    configs = wan_e2e.CONFIGS
    assert configs["14b-720p-81f"].latent_shape(2) == (2, 16, 21, 90, 160)
    assert configs["14b-720p-81f"].tokens == 75_600
    assert configs["14b-720p-161f"].grid == (41, 45, 80)
    assert configs["14b-720p-161f"].tokens == 147_600
    assert configs["1.3b-480p-81f"].latent_shape(2) == (2, 16, 21, 60, 104)
    assert configs["1.3b-480p-81f"].tokens == 32_760


def test_tiny_run_writes_results(wan_e2e, tmp_path):
    out = tmp_path / "wan.json"
    variants = "dense,veda0,veda95,noattn"
    argv = ["--tiny", "--variants", variants, "--warmup", "1", "--out", str(out)]
    assert wan_e2e.main(argv) == 0

    document = json.loads(out.read_text())
    assert document["meta"]["device"] == "cpu"
    results = {r["variant"]: r for r in document["results"]}
    assert list(results) == variants.split(",")
    for r in results.values():
        assert r["config"] == "tiny" and r["tokens"] == 512 and r["grid"] == [4, 8, 16]
        assert r["step_ms"] > 0 and len(r["times_ms"]) == 1 and len(r["warmup_ms"]) == 1
        assert r["finite"] and r["sdpa"] == "default"
    assert results["dense"]["rel_l2_vs_dense"] == 0
    assert results["veda0"]["rel_l2_vs_dense"] < 1e-5
    assert 1e-4 < results["veda95"]["rel_l2_vs_dense"] < 0.2
    assert results["noattn"]["rel_l2_vs_dense"] > 0.02
    assert results["veda95"]["sparsity"] == pytest.approx(0.95)

    summary = {row["variant"]: row for row in document["summary"]}
    assert summary["dense"]["x_dense"] == pytest.approx(1.0)
    noattn = results["noattn"]["step_ms"]
    assert summary["veda95"]["attention_ms"] == pytest.approx(results["veda95"]["step_ms"] - noattn)
    assert summary["noattn"]["attention_share"] is None
    table = out.with_suffix(".md").read_text()
    assert table.startswith("| config | tokens | variant |")
    assert "| tiny | 512 | veda95 | default |" in table


def test_summary_arithmetic(wan_e2e):
    results = [
        {"config": "c", "tokens": 9, "variant": v, "sdpa": "cudnn", "step_ms": ms}
        for v, ms in (("dense", 1000.0), ("veda95", 400.0), ("noattn", 300.0))
    ]
    rows = {row["variant"]: row for row in wan_e2e.summary_rows(results)}
    assert rows["dense"]["attention_share"] == pytest.approx(0.7)
    assert rows["veda95"]["x_dense"] == pytest.approx(2.5)
    assert rows["veda95"]["attention_x_dense"] == pytest.approx(7.0)  # 700 ms vs 100 ms
    assert rows["noattn"]["attention_ms"] is None


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--configs", "14b-1080p"], "'14b-1080p' is not known; expected one of 14b-720p-81f"),
        (["--tiny", "--variants", "dense,sparse"], "variant 'sparse' is not known"),
        (["--tiny", "--variants", "veda100"], "variant 'veda100' is not known"),
        (["--device", "cpu", "--configs", "1.3b-480p-81f"], "need a CUDA device"),
        (["--tiny", "--variants", "profile95"], "run on CUDA only"),
    ],
)
def test_bad_arguments_are_named(wan_e2e, capsys, argv, message):
    with pytest.raises(SystemExit) as raised:
        wan_e2e.main(argv)
    assert raised.value.code == 2
    assert message in capsys.readouterr().err


def test_time_limit_skips_steps_and_says_so(wan_e2e, tmp_path):
    out = tmp_path / "wan.json"
    argv = ["--tiny", "--variants", "dense", "--warmup", "1", "--time-limit", "1e-3"]
    assert wan_e2e.main([*argv, "--out", str(out)]) == 0
    (record,) = json.loads(out.read_text())["results"]
    assert record["step_ms"] is None and record["times_ms"] == []
    assert record["skipped"].startswith("time limit")
    assert "tiny dense: not measured (time limit" in out.with_suffix(".md").read_text()


def test_refused_sdpa_backend_falls_back_and_is_recorded(wan_e2e, tmp_path):
    # On the CPU, SDPA restricted to cuDNN has no kernel: the same fallback as cuDNN -> FLASH.
    import torch

    args = wan_e2e.parse_args(["--tiny", "--out", str(tmp_path / "wan.json")])
    benchmark = wan_e2e.Benchmark(args, wan_e2e.Log())
    config = wan_e2e.CONFIGS["tiny"]
    model = wan_e2e.build_model(wan_e2e.MODELS["tiny"], torch.device("cpu"), torch.float32, 0)
    inputs = wan_e2e.make_inputs(config, 1, torch.device("cpu"), torch.float32, 1)
    with torch.inference_mode():
        backend, (ms, out) = benchmark.first_call(
            lambda: model(**inputs, return_dict=False)[0],
            ["cudnn", "default"],
            wan_e2e.parse_variant("dense"),
        )
    assert backend == "default" and ms > 0 and out.shape == (1, *config.latent_shape(1)[1:])
