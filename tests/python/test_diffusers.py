"""veda.diffusers on a tiny random-weight WanTransformer3DModel (see conftest.py), on the CPU.

Tolerances:
- sparsity 0 against diffusers' own processor (SDPA): the model output [1, 4, 4, 16, 32] has
  |x| ~ 2; the CPU reference and SDPA sum in different orders in float32 (observed max difference
  5e-7 after 2 layers), so atol 1e-5.
- sparsity 0.95: each query tile keeps 1 of 4 key tiles, so self-attention changes a lot, but the
  gated residual stream dominates a random-weight model's output: observed relative L2 difference
  0.013; the test asks for more than 1e-4 (it did change) and less than 0.1.
"""

from __future__ import annotations

import json
import subprocess
import types

import pytest
import torch
import veda
import veda.diffusers as vd
from conftest import GRID, make_wan_inputs, make_wan_transformer, veda_cli

ATOL_DENSE = 1e-5
MAX_REL_L2_AT_95 = 0.1
MIN_REL_L2_AT_95 = 1e-4


def run(model, inputs, timestep=None):
    if timestep is not None:
        inputs = dict(inputs, timestep=torch.tensor([timestep]))
    with torch.no_grad():
        return model(**inputs, return_dict=False)[0]


def rel_l2(a, b):
    return ((a - b).norm() / b.norm()).item()


def test_sparsity_zero_gives_the_dense_output(wan_transformer, wan_inputs):
    dense = run(wan_transformer, wan_inputs)
    vd.enable(wan_transformer, sparsity=0.0)
    torch.testing.assert_close(run(wan_transformer, wan_inputs), dense, atol=ATOL_DENSE, rtol=0)


def test_sparsity_95_runs_and_differs_within_bound(wan_transformer, wan_inputs):
    dense = run(wan_transformer, wan_inputs)
    vd.enable(wan_transformer, sparsity=0.95)
    sparse = run(wan_transformer, wan_inputs)
    assert torch.isfinite(sparse).all()
    assert MIN_REL_L2_AT_95 < rel_l2(sparse, dense) < MAX_REL_L2_AT_95


def test_disable_restores_dense_exactly(wan_transformer, wan_inputs):
    dense = run(wan_transformer, wan_inputs)
    self_processors = [block.attn1.processor for block in wan_transformer.blocks]
    cross_processors = [block.attn2.processor for block in wan_transformer.blocks]
    vd.enable(wan_transformer, sparsity=0.95)
    assert vd.is_enabled(wan_transformer)
    assert all(
        isinstance(b.attn1.processor, vd.VedaWanAttnProcessor) for b in wan_transformer.blocks
    )
    assert [b.attn2.processor for b in wan_transformer.blocks] == cross_processors  # attn2 dense
    run(wan_transformer, wan_inputs)
    vd.disable(wan_transformer)
    assert not vd.is_enabled(wan_transformer)
    assert all(b.attn1.processor is p for b, p in zip(wan_transformer.blocks, self_processors))
    assert not wan_transformer._forward_pre_hooks
    assert torch.equal(run(wan_transformer, wan_inputs), dense)


def test_fused_projections_are_mirrored(wan_transformer, wan_inputs):
    dense = run(wan_transformer, wan_inputs)
    for block in wan_transformer.blocks:
        block.attn1.fuse_projections()
    vd.enable(wan_transformer, sparsity=0.0)
    torch.testing.assert_close(run(wan_transformer, wan_inputs), dense, atol=ATOL_DENSE, rtol=0)


def test_dense_layers_stay_dense(wan_transformer, wan_inputs):
    dense = run(wan_transformer, wan_inputs)
    vd.enable(wan_transformer, sparsity=0.95, dense_layers=(0, 1))
    assert torch.equal(run(wan_transformer, wan_inputs), dense)
    vd.enable(wan_transformer, sparsity=0.95, dense_layers=(1,))
    assert not torch.equal(run(wan_transformer, wan_inputs), dense)


def test_dense_steps_count_distinct_timesteps(wan_transformer, wan_inputs):
    # Two calls per timestep (as classifier-free guidance makes), dense_steps = 2: the calls at
    # 900 and 800 are dense, 700 is sparse; a larger timestep starts a new generation (dense).
    dense = {t: run(wan_transformer, wan_inputs, t) for t in (900, 800, 700)}
    vd.enable(wan_transformer, sparsity=0.95, dense_steps=2)
    for timestep, expect_dense in [
        (900, True),
        (900, True),
        (800, True),
        (800, True),
        (700, False),
        (700, False),
        (900, True),
    ]:
        out = run(wan_transformer, wan_inputs, timestep)
        assert torch.equal(out, dense[timestep]) == expect_dense, f"timestep {timestep}"


def test_step_sparsity_sets_each_steps_sparsity(wan_transformer, wan_inputs):
    # Step 0 (timestep 900) at sparsity 0 gives the dense output; step 1 (800) and the steps past
    # the schedule's end (700) run at its last value, 0.95, as enable(sparsity=0.95) does.
    dense = run(wan_transformer, wan_inputs, 900)
    vd.enable(wan_transformer, sparsity=0.95)
    uniform = {t: run(wan_transformer, wan_inputs, t) for t in (900, 800, 700)}
    vd.enable(wan_transformer, step_sparsity=[0.0, 0.95])
    torch.testing.assert_close(
        run(wan_transformer, wan_inputs, 900), dense, atol=ATOL_DENSE, rtol=0
    )
    assert torch.equal(run(wan_transformer, wan_inputs, 800), uniform[800])
    assert torch.equal(run(wan_transformer, wan_inputs, 700), uniform[700])
    assert not torch.equal(uniform[800], run(wan_transformer, wan_inputs, 900))


def test_front_loaded_sparsity_keeps_the_mean_budget():
    schedule = vd.front_loaded_sparsity(30, 0.95, 6, 2.0)
    assert schedule[:6] == pytest.approx([0.9] * 6)
    assert schedule[6:] == pytest.approx([0.9625] * 24)
    assert sum(1 - s for s in schedule) / 30 == pytest.approx(0.05)
    # early_budget past all tiles keeps them all (sparsity 0) early; no early steps: uniform
    assert vd.front_loaded_sparsity(10, 0.5, 2, 4.0)[:2] == [0.0, 0.0]
    assert vd.front_loaded_sparsity(4, 0.9, 0) == pytest.approx([0.9] * 4)


@pytest.mark.parametrize(
    "args, message",
    [
        ((30, 0.95, 16, 2.0), "16 early steps keeping 0.1 of the key tiles spend the whole budget"),
        ((30, 0.95, 30, 2.0), "early_steps 30 is outside [0, steps = 30)"),
        ((30, 1.0, 6, 2.0), "sparsity is 1.0; expected a float in [0, 1)"),
        ((30, 0.95, 6, 0.5), "early_budget is 0.5; expected a number >= 1"),
        ((30, 0.95, -1, 2.0), "early_steps is -1; expected a non-negative integer"),
    ],
)
def test_front_loaded_sparsity_rejects_what_cannot_be_spent(args, message):
    with pytest.raises(ValueError) as raised:
        vd.front_loaded_sparsity(*args)
    assert message in str(raised.value)


def test_calls_off_the_grid_fall_back_to_dense(wan_transformer, wan_inputs):
    vd.enable(wan_transformer, sparsity=0.95)
    run(wan_transformer, wan_inputs)  # the pre-hook records the 4x8x16 grid
    attn = wan_transformer.blocks[0].attn1
    processor = attn.processor
    short = torch.randn(1, 100, 64)  # 100 tokens, not the grid's 512
    with torch.no_grad():
        assert not processor.uses_veda(attn, short, None, None)
        assert torch.equal(attn(short), processor.original(attn, short))


def test_torch_compile_aot_eager_matches_eager_without_recompiling_per_step(
    wan_transformer, wan_inputs
):
    graphs = []

    def counting_backend(graph_module, example_inputs):
        graphs.append(graph_module)
        return graph_module.forward

    vd.enable(wan_transformer, sparsity=0.95, dense_steps=1)
    eager = {t: run(wan_transformer, wan_inputs, t) for t in (900, 800, 700)}
    compiled = torch.compile(wan_transformer, backend=counting_backend)
    torch._dynamo.reset()
    torch.testing.assert_close(run(compiled, wan_inputs, 900), eager[900], atol=ATOL_DENSE, rtol=0)
    torch.testing.assert_close(run(compiled, wan_inputs, 800), eager[800], atol=ATOL_DENSE, rtol=0)
    graphs_after_switch = len(graphs)  # one dense and one sparse variant
    torch.testing.assert_close(run(compiled, wan_inputs, 700), eager[700], atol=ATOL_DENSE, rtol=0)
    assert len(graphs) == graphs_after_switch


def test_torch_compile_with_step_sparsity_compiles_once_per_value(wan_transformer, wan_inputs):
    graphs = []

    def counting_backend(graph_module, example_inputs):
        graphs.append(graph_module)
        return graph_module.forward

    vd.enable(wan_transformer, step_sparsity=[0.5, 0.5, 0.95])
    timesteps = (900, 800, 700, 600, 500)
    eager = {t: run(wan_transformer, wan_inputs, t) for t in timesteps}
    vd.enable(wan_transformer, step_sparsity=[0.5, 0.5, 0.95])  # the step counter from 0 again
    compiled = torch.compile(wan_transformer, backend=counting_backend)
    torch._dynamo.reset()
    for timestep in timesteps:
        out = run(compiled, wan_inputs, timestep)
        torch.testing.assert_close(out, eager[timestep], atol=ATOL_DENSE, rtol=0)
    assert len(graphs) <= 2  # one sparse variant per scheduled value, none per step


def test_torch_compile_inductor(wan_transformer, wan_inputs):
    # Inductor compiles C++ for the CPU, which needs a C++ compiler (g++ in CI).
    vd.enable(wan_transformer, sparsity=0.95)
    eager = run(wan_transformer, wan_inputs)
    compiled = torch.compile(wan_transformer, backend="inductor")
    torch.testing.assert_close(run(compiled, wan_inputs), eager, atol=ATOL_DENSE, rtol=0)


def write_profile(path, layers, heads, tiles, sparsity):
    document = {
        "format": "veda-profile",
        "version": 1,
        "model": "tiny-wan",
        "head_dim": 32,
        "estimator_file": "tiny-wan.estimator.safetensors",
        "layers": [
            {
                "layer": layer,
                "heads": [
                    {"head": h, "tile": tiles[h], "sparsity": sparsity} for h in range(heads)
                ],
            }
            for layer in range(layers)
        ],
    }
    path.write_text(json.dumps(document))
    return path


def test_profile_sets_tiles_and_sparsity_per_head(wan_transformer, wan_inputs, tmp_path):
    dense = run(wan_transformer, wan_inputs)
    path = write_profile(tmp_path / "p.json", 2, 2, ["1x8x16", "4x4x8"], 0.0)
    vd.enable(wan_transformer, profile=path)  # sparsity None: the profile's 0.0
    processor = wan_transformer.blocks[1].attn1.processor
    assert [h.tile for h in processor.layer_profile.heads] == [(1, 8, 16), (4, 4, 8)]
    torch.testing.assert_close(run(wan_transformer, wan_inputs), dense, atol=ATOL_DENSE, rtol=0)


def test_explicit_sparsity_replaces_the_profiles(wan_transformer, wan_inputs, tmp_path):
    path = write_profile(tmp_path / "p.json", 2, 2, ["1x8x16", "4x4x8"], 0.0)
    vd.enable(wan_transformer, profile=path, sparsity=0.95)
    processor = wan_transformer.blocks[0].attn1.processor
    assert [h.tile for h in processor.layer_profile.heads] == [(1, 8, 16), (4, 4, 8)]
    assert [h.sparsity for h in processor.layer_profile.heads] == [0.95, 0.95]
    sparse = run(wan_transformer, wan_inputs)
    vd.enable(wan_transformer, sparsity=0.95, tile="4x4x8")  # no profile: one shape for all heads
    assert not torch.allclose(sparse, run(wan_transformer, wan_inputs))  # the profile's shapes ran
    vd.disable(wan_transformer)
    assert not torch.allclose(sparse, run(wan_transformer, wan_inputs), atol=ATOL_DENSE)


def test_step_sparsity_replaces_the_profiles(wan_transformer, wan_inputs, tmp_path):
    # The profile's shapes at each scheduled sparsity: a one-value schedule runs as `sparsity`.
    path = write_profile(tmp_path / "p.json", 2, 2, ["1x8x16", "4x4x8"], 0.0)
    vd.enable(wan_transformer, profile=path, sparsity=0.95)
    uniform = run(wan_transformer, wan_inputs)
    vd.enable(wan_transformer, profile=path, step_sparsity=[0.95])
    assert torch.equal(run(wan_transformer, wan_inputs), uniform)


def test_profile_that_does_not_fit_the_model_is_rejected(wan_transformer, tmp_path):
    path = write_profile(tmp_path / "p.json", 2, 3, ["1x8x16"] * 3, 0.9)
    with pytest.raises(ValueError, match="layer 0 has 3 heads but transformer has 2"):
        vd.enable(wan_transformer, profile=path)
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"format": "veda-profile", "version": 7, "layers": []}))
    with pytest.raises(ValueError, match="version 7; expected 'veda-profile' version 1"):
        vd.enable(wan_transformer, profile=bad)


def test_two_expert_pipeline(wan_inputs):
    # A Wan 2.2 pipeline has `transformer` and `transformer_2`; both are switched, one step
    # counter spans both.
    first, second = make_wan_transformer(seed=0), make_wan_transformer(seed=5)
    pipe = types.SimpleNamespace(transformer=first, transformer_2=second)
    dense = run(second, wan_inputs, 700)
    vd.enable(pipe, sparsity=0.95, dense_steps=2)
    assert all(
        isinstance(b.attn1.processor, vd.VedaWanAttnProcessor)
        for model in (first, second)
        for b in model.blocks
    )
    run(first, wan_inputs, 900)
    run(first, wan_inputs, 800)
    assert not torch.equal(run(second, wan_inputs, 700), dense)  # step 2: sparse
    vd.disable(pipe)
    assert torch.equal(run(second, wan_inputs, 700), dense)
    with pytest.raises(ValueError, match="one profile for 2 transformers"):
        vd.enable(pipe, profile=veda.Profile("m", 32, {}))


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        ({"sparsity": 1.5}, ValueError, "sparsity 1.5 is outside [0, 1)"),
        ({"method": "magic"}, ValueError, "method 'magic' is not known"),
        ({"dense_layers": (5,)}, ValueError, "dense_layers holds 5; transformer has layers 0..1"),
        ({"dense_steps": -1}, ValueError, "dense_steps is -1"),
        ({"tile": (3, 3, 3)}, ValueError, "tile 3x3x3 has 27 tokens"),
        ({"low_memory": 1}, TypeError, "low_memory is a int; expected True or False"),
        (
            {"sparsity": 0.9, "step_sparsity": [0.9]},
            ValueError,
            "sparsity 0.9 and step_sparsity were both given",
        ),
        ({"step_sparsity": [0.9, 1.2]}, ValueError, "step_sparsity[1] is 1.2; expected a float"),
        ({"step_sparsity": []}, ValueError, "step_sparsity is empty"),
        ({"step_sparsity": "0.9"}, TypeError, "step_sparsity is a str; expected a sequence"),
    ],
)
def test_enable_rejects_bad_arguments(wan_transformer, kwargs, error, message):
    with pytest.raises(error) as raised:
        vd.enable(wan_transformer, **kwargs)
    assert message in str(raised.value)
    assert not vd.is_enabled(wan_transformer)


def test_enable_rejects_what_is_not_wan():
    with pytest.raises(TypeError, match="expects a Wan pipeline or a WanTransformer3DModel"):
        vd.enable(torch.nn.Linear(2, 2))
    with pytest.raises(TypeError, match="neither `transformer` nor `transformer_2`"):
        vd.enable(object())


def test_capture_writes_files_veda_reads(wan_transformer, wan_inputs, tmp_path):
    from safetensors import safe_open

    seen = []  # the input of blocks[1].attn1 at each call, to recompute q, k, v
    wan_transformer.blocks[1].attn1.register_forward_pre_hook(
        lambda module, args: seen.append(args[0].clone())
    )
    processors = [b.attn1.processor for b in wan_transformer.blocks]

    def generate():
        for timestep in (900, 900, 800, 800, 700):
            run(wan_transformer, wan_inputs, timestep)

    paths = vd.capture(wan_transformer, generate, out_dir=tmp_path, layers=[1], steps=[1])
    assert [p.name for p in paths] == [
        "transformer.sample000.step001.layer01.call0.safetensors",
        "transformer.sample000.step001.layer01.call1.safetensors",
    ]
    assert all(b.attn1.processor is p for b, p in zip(wan_transformer.blocks, processors))
    attn = wan_transformer.blocks[1].attn1
    rotary = wan_transformer.rope(wan_inputs["hidden_states"])
    with torch.no_grad():
        expected = vd.wan_self_attention_qkv(attn, seen[2], rotary)
    with safe_open(str(paths[0]), "pt") as file:
        assert file.metadata()["grid"] == "x".join(map(str, GRID))
        assert file.metadata()["layer"] == "1"
        assert file.metadata()["step"] == "1"
        for name, tensor in zip("qkv", expected):
            assert file.get_tensor(name).shape == (1, 512, 2, 32)  # [B, N, H, D]
            assert torch.equal(file.get_tensor(name), tensor)

    cli = veda_cli()
    if cli is None:
        pytest.skip("no `veda` binary built (make build); set VEDA_CLI to check `veda inspect`")
    printed = subprocess.run(
        [str(cli), "inspect", str(paths[0])], capture_output=True, text=True, check=True
    ).stdout
    assert "F32" in printed and "[1, 512, 2, 32]" in printed
    assert "grid = 4x8x16" in printed and "layer = 1" in printed and "step = 1" in printed


def test_capture_with_prompts_needs_a_pipeline(wan_transformer, tmp_path):
    with pytest.raises(TypeError, match="prompts need a pipeline"):
        vd.capture(wan_transformer, ["a cat"], out_dir=tmp_path)


def test_capture_calls_the_pipeline_per_prompt(wan_transformer, wan_inputs, tmp_path):
    class TinyPipeline:
        transformer = wan_transformer

        def __call__(self, prompt):
            for timestep in (900, 800):
                run(self.transformer, wan_inputs, timestep)

    paths = vd.capture(TinyPipeline(), ["a", "b"], out_dir=tmp_path, layers=[0], steps=[0])
    assert [p.name for p in paths] == [
        "transformer.sample000.step000.layer00.call0.safetensors",
        "transformer.sample001.step000.layer00.call0.safetensors",
    ]


def test_make_inputs_grid_matches():
    assert make_wan_inputs()["hidden_states"].shape[2:] == (GRID[0], 2 * GRID[1], 2 * GRID[2])


def test_bf16_model_at_sparsity_zero_matches_dense(wan_transformer, wan_inputs):
    # bf16 activations: SDPA and the CPU reference both round their output to bf16 (relative
    # step 2^-8 = 0.4%) and the two layers feed it forward; observed rel-L2 2e-3, bound 1e-2.
    model = wan_transformer.to(torch.bfloat16)
    inputs = {
        name: t.to(torch.bfloat16) if t.is_floating_point() else t for name, t in wan_inputs.items()
    }
    dense = run(model, inputs)
    vd.enable(model, sparsity=0.0)
    out = run(model, inputs)
    assert out.dtype == torch.bfloat16
    assert rel_l2(out.float(), dense.float()) < 1e-2


def test_attention_backend_setting_reaches_the_original_processor(wan_transformer):
    vd.enable(wan_transformer, sparsity=0.9)
    wan_transformer.set_attention_backend("native")
    processor = wan_transformer.blocks[0].attn1.processor
    assert processor._attention_backend is not None
    assert processor.original._attention_backend == processor._attention_backend


def test_regional_compile_fullgraph_blocks(wan_transformer, wan_inputs):
    # diffusers' compile_repeated_blocks compiles each WanTransformerBlock with fullgraph=True:
    # the Veda processor and both ops must trace without a graph break.
    vd.enable(wan_transformer, sparsity=0.95, dense_steps=1)
    eager = {t: run(wan_transformer, wan_inputs, t) for t in (900, 800)}
    wan_transformer.compile_repeated_blocks(fullgraph=True, backend="aot_eager")
    for timestep in (900, 800):
        torch.testing.assert_close(
            run(wan_transformer, wan_inputs, timestep), eager[timestep], atol=ATOL_DENSE, rtol=0
        )


def test_enable_after_compile(wan_transformer, wan_inputs):
    compiled = torch.compile(wan_transformer, backend="aot_eager")
    dense = run(compiled, wan_inputs)
    vd.enable(compiled, sparsity=0.95)
    sparse = run(compiled, wan_inputs)
    vd.disable(compiled)
    torch.testing.assert_close(run(compiled, wan_inputs), dense, atol=0, rtol=0)
    vd.enable(wan_transformer, sparsity=0.95)
    torch.testing.assert_close(sparse, run(wan_transformer, wan_inputs), atol=ATOL_DENSE, rtol=0)
