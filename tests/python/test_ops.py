"""veda.sparse_attention and the torch ops torch.ops.veda.* on the CPU.

Tolerances, float32 against torch's float32 SDPA on the same inputs: both accumulate in float32
in different orders, so outputs agree to a few ulps of their magnitude (|O| <= max |v| ~ 4);
atol 1e-5 leaves ~40x margin over the 2e-7 to 5e-7 observed. lse agrees to 2e-6 (observed 1e-6).
bfloat16 inputs: the reference computes in float32 and rounds the output once, so the error
against float32 SDPA on the same (rounded) inputs is at most half a bf16 ulp of |O| < 4: 1.6e-2.
"""

from __future__ import annotations

import json
import math
import re

import pytest
import torch
import torch.nn.functional as F
import veda
from conftest import diagonal_profile
from veda.profile import HeadSettings, LayerProfile

GRID = (4, 8, 16)  # 512 tokens, 4 tiles
ATOL_F32 = 1e-5
ATOL_LSE = 2e-6
ATOL_BF16 = 1.6e-2


def random_qkv(batch=2, tokens=512, heads=3, dim=32, seed=0, dtype=torch.float32):
    generator = torch.Generator().manual_seed(seed)
    return tuple(
        torch.randn(batch, tokens, heads, dim, generator=generator).to(dtype) for _ in range(3)
    )


def dense_reference(q, k, v):
    """SDPA in float32 over [B, L, H, D]: (out [B, L, H, D], lse [B, L, H])."""
    q, k, v = (t.float().transpose(1, 2) for t in (q, k, v))  # [B, H, L, D]
    out = F.scaled_dot_product_attention(q, k, v).transpose(1, 2)
    scores = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])
    return out, torch.logsumexp(scores, dim=-1).transpose(1, 2)


def masked_reference(q, k, v, allowed):
    """Attention where allowed[Lq, Lk] (bool) says which keys each query sees, float32."""
    q, k, v = (t.float().transpose(1, 2) for t in (q, k, v))
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed)
    return out.transpose(1, 2)


@pytest.mark.parametrize("method", ["dense", "meanpool", "oracle"])
def test_sparsity_zero_is_dense_attention(method):
    q, k, v = random_qkv()
    out, lse = veda.sparse_attention(
        q, k, v, grid=GRID, sparsity=0.0, method=method, return_lse=True
    )
    ref_out, ref_lse = dense_reference(q, k, v)
    assert out.shape == q.shape and out.dtype == q.dtype
    assert lse.shape == q.shape[:3] and lse.dtype == torch.float32
    torch.testing.assert_close(out, ref_out, atol=ATOL_F32, rtol=0)
    torch.testing.assert_close(lse, ref_lse, atol=ATOL_LSE, rtol=0)


def test_bf16_output_within_half_an_ulp():
    q, k, v = random_qkv(dtype=torch.bfloat16)
    out = veda.sparse_attention(q, k, v, grid=GRID, sparsity=0.0)
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out.float(), dense_reference(q, k, v)[0], atol=ATOL_BF16, rtol=0)


def test_dense_op_with_unequal_lengths():
    q = random_qkv(tokens=100, seed=1)[0]
    _, k, v = random_qkv(tokens=300, seed=2)
    out, lse = torch.ops.veda.attention(q, k, v, None)
    ref_out, ref_lse = dense_reference(q, k, v)
    torch.testing.assert_close(out, ref_out, atol=ATOL_F32, rtol=0)
    torch.testing.assert_close(lse, ref_lse, atol=ATOL_LSE, rtol=0)


def test_strided_inputs_give_the_same_result():
    q, k, v = random_qkv()
    q_strided = q.transpose(1, 2).contiguous().transpose(1, 2)  # [B, L, H, D] with heads outer
    expected = veda.sparse_attention(q, k, v, grid=GRID, sparsity=0.5)
    assert torch.equal(veda.sparse_attention(q_strided, k, v, grid=GRID, sparsity=0.5), expected)


def test_sparse_output_matches_the_kept_tiles():
    # On the 4x8x16 grid the tile 1x8x16 is one whole frame, so tile-major order is the identity
    # and tile i is frame i. At sparsity 0.95 the budget is ceil(0.05 * 4) = 1 key tile, the
    # query's own: the output is block-diagonal attention within frames.
    q, k, v = random_qkv(batch=1, heads=2)
    out = veda.sparse_attention(q, k, v, grid=GRID, sparsity=0.95, tile=(1, 8, 16))
    frame = torch.arange(512) // 128
    allowed = frame[:, None] == frame[None, :]
    torch.testing.assert_close(out, masked_reference(q, k, v, allowed), atol=ATOL_F32, rtol=0)
    assert (out - dense_reference(q, k, v)[0]).abs().max() > 1e-2


@pytest.mark.parametrize("text_position", ["after", "before"])
@pytest.mark.parametrize("sparsity", [0.0, 0.95])
def test_text_tokens_are_dense_both_ways(text_position, sparsity):
    text = 20
    q, k, v = random_qkv(batch=1, tokens=512 + text, heads=2)
    out, lse = veda.sparse_attention(
        q,
        k,
        v,
        grid=GRID,
        sparsity=sparsity,
        text_tokens=text,
        text_position=text_position,
        tile=(1, 8, 16),
        return_lse=True,
    )
    # Video token i sees: the video keys its tile keeps, and every text key. Text sees everything.
    is_text = torch.zeros(512 + text, dtype=torch.bool)
    if text_position == "after":
        is_text[512:] = True
    else:
        is_text[:text] = True
    frame = torch.full((512 + text,), -1)
    frame[~is_text] = torch.arange(512) // 128
    video_video = (
        frame[:, None] == frame[None, :]
        if sparsity > 0
        else torch.ones(512 + text, 512 + text, dtype=torch.bool)
    )
    allowed = is_text[None, :] | is_text[:, None] | video_video
    torch.testing.assert_close(out, masked_reference(q, k, v, allowed), atol=ATOL_F32, rtol=0)
    if sparsity == 0.0:
        torch.testing.assert_close(lse, dense_reference(q, k, v)[1], atol=ATOL_LSE, rtol=0)


def test_merge_of_two_empty_sets_is_zero_not_nan():
    out = torch.ones(1, 2, 1, 4)
    lse = torch.full((1, 2, 1), -math.inf)
    merged, merged_lse = veda.merge_attention(out, lse, out, lse)
    assert torch.equal(merged, torch.zeros_like(merged))
    assert torch.isneginf(merged_lse).all()


def test_profile_gives_each_head_its_tile_shape_and_sparsity():
    q, k, v = random_qkv(batch=1, heads=4)
    settings = [
        HeadSettings((1, 8, 16), 0.95),
        HeadSettings((4, 4, 8), 0.5),
        HeadSettings((1, 8, 16), 0.95),
        HeadSettings((2, 8, 8), 0.0),
    ]
    profile = LayerProfile(layer=0, heads=tuple(settings))
    # Local heads 0..3 hold global heads 3, 1, 0, 2 (as a Ulysses rank would, permuted).
    head_index = [3, 1, 0, 2]
    out = veda.sparse_attention(q, k, v, grid=GRID, profile=profile, head_index=head_index)
    for local, global_head in enumerate(head_index):
        s = settings[global_head]
        alone = veda.sparse_attention(
            q[:, :, local : local + 1],
            k[:, :, local : local + 1],
            v[:, :, local : local + 1],
            grid=GRID,
            sparsity=s.sparsity,
            tile=s.tile,
        )
        assert torch.equal(out[:, :, local : local + 1], alone), f"local head {local}"


def test_low_memory_changes_nothing_on_the_cpu():
    # The CPU reference makes no tile-major copies either way; low_memory is a GPU workspace mode.
    q, k, v = random_qkv(batch=1, heads=2)
    default = veda.sparse_attention(q, k, v, grid=GRID, sparsity=0.75, return_lse=True)
    low = veda.sparse_attention(q, k, v, grid=GRID, sparsity=0.75, return_lse=True, low_memory=True)
    assert torch.equal(low[0], default[0]) and torch.equal(low[1], default[1])


def test_cumulative_thresholds_keep_fewer_tiles():
    grid = (4, 16, 16)  # 8 tiles: budgets 8 (sparsity 0) and 4 (0.5)
    q, k, v = random_qkv(batch=1, tokens=1024, heads=2, dim=32, seed=4)
    op = torch.ops.veda.sparse_attention
    args = (list(grid), [1, 8, 16], "meanpool")
    # Threshold 1: every tile of positive weight, i.e. all of them at sparsity 0: dense.
    dense = op(q, k, v, *args, 0.0)
    full = op(q, k, v, *args, 0.0, None, None, None, None, 0, "after", [1.0, 1.0])
    torch.testing.assert_close(full[0], dense[0], atol=0, rtol=0)
    # A low threshold keeps fewer tiles than the budget of 0.5: another output.
    fixed = op(q, k, v, *args, 0.5)
    low = op(q, k, v, *args, 0.5, None, None, None, None, 0, "after", [0.2, 0.2])
    assert (low[0] - fixed[0]).abs().max() > 1e-3
    # Through a profile: each head with its own threshold (the CPU runs them in separate calls).
    settings = (HeadSettings((1, 8, 16), 0.5, 0.2), HeadSettings((1, 8, 16), 0.5))
    out = veda.sparse_attention(q, k, v, grid=grid, profile=LayerProfile(0, settings))
    torch.testing.assert_close(out[:, :, :1], low[0][:, :, :1], atol=0, rtol=0)
    torch.testing.assert_close(out[:, :, 1:], fixed[0][:, :, 1:], atol=0, rtol=0)


@pytest.mark.parametrize(
    "thresholds, method, message",
    [
        ([0.5], "meanpool", "thresholds has 1 entries; expected one per head (2)"),
        ([0.5, 1.5], "meanpool", "hold 1.5; expected 0 (fixed budget) or (0, 1]"),
        ([0.5, 0.7], "meanpool", "differ between heads; the CPU reference takes one value"),
        ([0.5, 0.5], "oracle", "thresholds apply to methods meanpool and veda, not 'oracle'"),
    ],
)
def test_bad_thresholds_raise_with_clear_messages(thresholds, method, message):
    q, k, v = random_qkv(batch=1, heads=2)
    with pytest.raises(ValueError, match=re.escape(message)):
        torch.ops.veda.sparse_attention(
            q,
            k,
            v,
            list(GRID),
            [1, 8, 16],
            method,
            0.5,
            None,
            None,
            None,
            None,
            0,
            "after",
            thresholds,
        )


def test_opcheck_sparse_attention():
    q, k, v = random_qkv(batch=1, heads=2)
    torch.library.opcheck(
        torch.ops.veda.sparse_attention.default,
        (q, k, v, list(GRID), [1, 8, 16], "meanpool", 0.9, None),
    )
    # The text arguments come last, with defaults (0, "after"): video rows only on the CPU.
    torch.library.opcheck(
        torch.ops.veda.sparse_attention.default,
        (q, k, v, list(GRID), [1, 8, 16], "meanpool", 0.9, None, None, None, None, 0, "after"),
    )


def test_opcheck_attention():
    q = random_qkv(tokens=64, heads=2)[0]
    _, k, v = random_qkv(tokens=96, heads=2, seed=3)
    torch.library.opcheck(torch.ops.veda.attention.default, (q, k, v, torch.float32))


def test_fake_tensors_give_shapes_without_running():
    from torch._subclasses.fake_tensor import FakeTensorMode

    with FakeTensorMode():
        q = torch.empty(2, 512 + 7, 3, 64, dtype=torch.bfloat16)
        out, lse = veda.sparse_attention(q, q, q, grid=GRID, text_tokens=7, return_lse=True)
    assert out.shape == (2, 519, 3, 64) and out.dtype == torch.bfloat16
    assert lse.shape == (2, 519, 3) and lse.dtype == torch.float32
    # The op with text tokens (one call on CUDA tensors): out [B, L, H, D], lse [B, L, H].
    with FakeTensorMode():
        q = torch.empty(2, 512 + 77, 3, 64, dtype=torch.bfloat16)
        args = (list(GRID), [1, 8, 16], "meanpool", 0.9, None, None, None, None)
        out, lse = torch.ops.veda.sparse_attention(q, q, q, *args, 77, "before")
    assert out.shape == (2, 589, 3, 64) and out.dtype == torch.bfloat16
    assert lse.shape == (2, 589, 3) and lse.dtype == torch.float32


def test_compiled_function_is_one_graph_with_opaque_ops():
    q, k, v = random_qkv(batch=1, heads=2)

    def layer(q, k, v):
        return veda.sparse_attention(q * 2, k, v, grid=GRID, sparsity=0.9, text_tokens=0)

    compiled = torch.compile(layer, backend="aot_eager", fullgraph=True)
    torch.testing.assert_close(compiled(q, k, v), layer(q, k, v), atol=0, rtol=0)


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        (
            {"grid": (4, 16, 16)},
            ValueError,
            "grid 4x16x16 has 1024 tokens but L = 512 (text_tokens = 0)",
        ),
        (
            {"grid": (4, 8, 16), "text_tokens": 3},
            ValueError,
            "has 512 tokens but L = 512 (text_tokens = 3)",
        ),
        ({"grid": (4, 8)}, ValueError, "expected 3 positive integers (T, H, W)"),
        ({"grid": "4x8xq"}, ValueError, "grid '4x8xq' is not a grid"),
        ({"grid": GRID, "sparsity": 1.0}, ValueError, "sparsity 1.0 is outside [0, 1)"),
        ({"grid": GRID, "method": "topk"}, ValueError, "method 'topk' is not known"),
        ({"grid": GRID, "tile": (2, 8, 16)}, ValueError, "tile 2x8x16 has 256 tokens"),
        ({"grid": GRID, "text_position": "middle"}, ValueError, "text_position 'middle'"),
        (
            {"grid": GRID, "head_index": [0, 1, 2]},
            ValueError,
            "head_index has 3 entries but q has 2 heads",
        ),
        ({"grid": GRID, "head_index": [1, 1]}, ValueError, "distinct"),
        (
            {"grid": GRID, "head_index": [0, 5], "profile": [HeadSettings()] * 2},
            ValueError,
            "global head 5, but the profile has 2 heads",
        ),
        ({"grid": GRID, "profile": {"tile": "1x8x16"}}, TypeError, "profile is a dict"),
        ({"grid": GRID, "low_memory": "yes"}, TypeError, "low_memory is a str"),
    ],
)
def test_bad_arguments_raise_with_clear_messages(kwargs, error, message):
    q, k, v = random_qkv(batch=1, heads=2)
    with pytest.raises(error) as raised:
        veda.sparse_attention(q, k, v, **kwargs)
    assert message in str(raised.value)


def test_bad_tensors_raise_with_clear_messages():
    q, k, v = random_qkv(batch=1, heads=2)
    with pytest.raises(ValueError, match=r"q has shape \[512, 2, 32\]; expected \[B, L, H, D\]"):
        veda.sparse_attention(q[0], k[0], v[0], grid=GRID)
    with pytest.raises(
        ValueError, match=r"k has shape \[1, 256, 2, 32\] but q has \[1, 512, 2, 32\]"
    ):
        veda.sparse_attention(q, k[:, :256], v, grid=GRID)
    with pytest.raises(TypeError, match="v has dtype torch.float16 but q has torch.float32"):
        veda.sparse_attention(q, k, v.half(), grid=GRID)
    with pytest.raises(TypeError, match="q has dtype torch.float64"):
        veda.sparse_attention(q.double(), k.double(), v.double(), grid=GRID)
    with pytest.raises(TypeError, match="q is a list"):
        veda.sparse_attention([1.0], k, v, grid=GRID)
    wide = torch.zeros(1, 512, 1, 300)
    with pytest.raises(
        ValueError, match="q has head dim 300; the CPU reference supports head dims 1 to 256"
    ):
        veda.sparse_attention(wide, wide, wide, grid=GRID)


def test_other_devices_raise_with_clear_messages():
    q = torch.empty(1, 512, 2, 32, device="meta")
    with pytest.raises(ValueError, match="q is on meta; veda runs on CPU and CUDA tensors"):
        veda.sparse_attention(q, q, q, grid=GRID)


def estimator_profile(heads, dim, scale, seed=7):
    """A LayerProfile of `heads` global heads (1x8x16, 75%) with random P_q, P_k * scale."""
    generator = torch.Generator().manual_seed(seed)
    p_q, p_k = (scale * torch.randn(heads, 3 * dim, dim, generator=generator) for _ in range(2))
    settings = tuple(HeadSettings((1, 8, 16), 0.75) for _ in range(heads))
    return LayerProfile(layer=0, heads=settings, p_q=p_q, p_k=p_k)


ESTIMATOR_GRID = (4, 16, 16)  # 1024 tokens, 8 tiles: 2 kept per query tile at 75%


def test_estimator_with_zero_projections_is_mean_pooling():
    q, k, v = random_qkv(batch=1, tokens=1024, heads=2)
    profile = estimator_profile(2, 32, scale=0.0)
    out = veda.sparse_attention(q, k, v, grid=ESTIMATOR_GRID, method="veda", profile=profile)
    meanpool = veda.sparse_attention(q, k, v, grid=ESTIMATOR_GRID, sparsity=0.75, method="meanpool")
    assert torch.equal(out, meanpool)


def test_estimator_uses_each_local_heads_global_projections():
    q, k, v = random_qkv(batch=1, tokens=1024, heads=2, seed=3)
    profile = estimator_profile(3, 32, scale=0.5)
    out = veda.sparse_attention(q, k, v, grid=ESTIMATOR_GRID, method="veda", profile=profile,
                                head_index=[2, 0])  # fmt: skip
    for local, global_head in enumerate([2, 0]):
        one = slice(local, local + 1)
        alone = veda.sparse_attention(q[:, :, one], k[:, :, one], v[:, :, one], grid=ESTIMATOR_GRID,
                                      method="veda", profile=profile, head_index=[global_head])  # fmt: skip
        assert torch.equal(out[:, :, one], alone)
    meanpool = veda.sparse_attention(q, k, v, grid=ESTIMATOR_GRID, sparsity=0.75, method="meanpool")
    assert not torch.equal(out, meanpool)  # the projections changed which tiles were kept
    with pytest.raises(ValueError, match="method 'veda' needs a veda.LayerProfile"):
        veda.sparse_attention(q, k, v, grid=ESTIMATOR_GRID, method="veda")


def test_diagonal_projections_are_compacted_and_select_what_the_full_matrices_select():
    profile, (diagonal_q, diagonal_k) = diagonal_profile(2, 32)
    p_q, p_k = profile.estimator("cpu", compact=True)
    assert torch.equal(p_q, diagonal_q) and torch.equal(p_k, diagonal_k)
    assert profile.estimator("cpu")[0].shape == (2, 96, 32)  # the full form unless asked
    assert estimator_profile(2, 32, scale=0.5).estimator("cpu", compact=True)[0].shape == (
        2,
        96,
        32,
    )
    q, k, v = random_qkv(batch=1, tokens=1024, heads=2, seed=4)
    args = (list(ESTIMATOR_GRID), [1, 8, 16], "veda", 0.75, None, None)
    full = profile.estimator("cpu")
    out = torch.ops.veda.sparse_attention(q, k, v, *args, *full)[0]
    assert torch.equal(torch.ops.veda.sparse_attention(q, k, v, *args, p_q, p_k)[0], out)
    meanpool = veda.sparse_attention(q, k, v, grid=ESTIMATOR_GRID, sparsity=0.75, method="meanpool")
    assert not torch.equal(out, meanpool)


def test_profile_reads_the_estimator_file(tmp_path):
    safetensors_torch = pytest.importorskip("safetensors.torch")
    dim = 32
    generator = torch.Generator().manual_seed(5)
    tensors = {
        f"layer3.head{h}.{which}": torch.randn(3 * dim, dim, generator=generator)
        for h in range(2)
        for which in ("p_q", "p_k")
    }
    safetensors_torch.save_file(tensors, str(tmp_path / "m.estimator.safetensors"))
    heads = [
        {"head": h, "tile": "1x8x16", "sparsity": 0.9, "p_q": f"layer3.head{h}.p_q",
         "p_k": f"layer3.head{h}.p_k"}
        for h in range(2)
    ]  # fmt: skip
    document = {
        "format": "veda-profile",
        "version": 1,
        "head_dim": dim,
        "estimator_file": "m.estimator.safetensors",
        "layers": [{"layer": 3, "heads": heads}],
    }
    (tmp_path / "m.json").write_text(json.dumps(document))
    layer = veda.Profile.load(tmp_path / "m.json").layer(3)
    assert layer.has_estimator()
    p_q, p_k = layer.estimator("cpu")
    assert p_q.shape == (2, 3 * dim, dim) and p_q.dtype == torch.float32
    assert torch.equal(p_q[1], tensors["layer3.head1.p_q"])
    assert torch.equal(p_k[0], tensors["layer3.head0.p_k"])
    assert layer.estimator("cpu")[0] is p_q  # read and converted once per device
    document.pop("estimator_file")
    assert not veda.Profile.from_dict(document).layer(3).has_estimator()


def test_cpp_errors_arrive_as_value_error():
    q, k, v = random_qkv(batch=1, heads=2)
    with pytest.raises(ValueError, match="grid 4x8x8 has 256 tokens but q has N = 512"):
        torch.ops.veda.sparse_attention(q, k, v, [4, 8, 8], [1, 8, 16], "meanpool", 0.9, None)
    with pytest.raises(ValueError, match="method 'top' is not known"):
        torch.ops.veda.sparse_attention(q, k, v, list(GRID), [1, 8, 16], "top", 0.9, None)


def test_cpu_op_takes_no_text_tokens():
    # The CPU reference attends video rows only; veda.sparse_attention composes text around it.
    q, k, v = random_qkv(batch=1, tokens=512 + 7, heads=2)
    args = (list(GRID), [1, 8, 16], "meanpool", 0.9, None, None, None, None)
    with pytest.raises(ValueError, match="text_tokens is 7; .* takes text tokens on CUDA tensors"):
        torch.ops.veda.sparse_attention(q, k, v, *args, 7, "after")
