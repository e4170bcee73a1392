"""The GPU path of veda.sparse_attention and torch.ops.veda.* against the CPU reference.

Skipped unless torch sees a CUDA device and veda._veda was built with the GPU entries
(`VEDA_CUDA=ON pip install .`).

Inputs are bfloat16, the same values on both devices: Gaussian noise plus a smooth function of the
grid position, so tiles differ and mean pooling ranks key tiles by clear margins (the GPU and the
CPU then select the same tiles; pure noise would leave near-ties that float32 summation order can
flip). Tolerances: the CPU reference computes in float32 and rounds out to bfloat16 once; the
kernels round the probabilities to bfloat16 before P V, as flash attention does, which gives a
relative L2 error of a few 1e-3: bound 1e-2. lse is float32 on both sides and differs only by
summation order and exp2 approximations: bound 1e-2 absolute.
"""

from __future__ import annotations

import math

import pytest
import torch
import veda
from veda import _veda
from veda.profile import HeadSettings, LayerProfile

pytestmark = pytest.mark.skipif(
    not (torch.cuda.is_available() and veda.ops.has_gpu_path()),
    reason="needs a CUDA device and veda built with VEDA_CUDA=ON",
)

REL_L2 = 1e-2
ATOL_LSE = 1e-2
GRID = (4, 16, 16)  # 1024 tokens, 8 tiles


def structured_qkv(
    grid: tuple[int, int, int], batch: int, heads: int, dim: int, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """q, k, v [B, N, H, D] bfloat16 on the CPU: noise + random Fourier features of (t, h, w)."""
    generator = torch.Generator().manual_seed(seed)
    t, h, w = torch.meshgrid(*(torch.arange(s) for s in grid), indexing="ij")
    position = torch.stack([t.flatten() / 4, h.flatten() / 8, w.flatten() / 8], dim=-1)  # [N, 3]
    tensors = []
    for _ in range(3):
        frequency = torch.randn(3, heads * dim, generator=generator) * 2
        phase = torch.rand(heads * dim, generator=generator) * 2 * math.pi
        smooth = torch.sin(position @ frequency + phase).reshape(-1, heads, dim)  # [N, H, D]
        noise = torch.randn(batch, smooth.shape[0], heads, dim, generator=generator)
        tensors.append((1.5 * smooth + noise).to(torch.bfloat16))
    return tuple(tensors)  # type: ignore[return-value]


def rel_l2(actual: torch.Tensor, expected: torch.Tensor) -> float:
    actual, expected = actual.float().cpu(), expected.float().cpu()
    return ((actual - expected).norm() / expected.norm()).item()


def assert_matches_cpu(gpu: tuple[torch.Tensor, torch.Tensor], cpu: tuple[torch.Tensor, ...]):
    out, lse = gpu
    assert out.is_cuda and out.dtype == cpu[0].dtype and out.shape == cpu[0].shape
    assert lse.dtype == torch.float32 and lse.shape == cpu[1].shape
    assert rel_l2(out, cpu[0]) < REL_L2
    torch.testing.assert_close(lse.cpu(), cpu[1], atol=ATOL_LSE, rtol=0)


@pytest.mark.parametrize("sparsity", [0.0, 0.75, 0.95])
@pytest.mark.parametrize("dim", [64, 128])
@pytest.mark.parametrize("grid, batch, heads", [((4, 16, 16), 2, 2), ((3, 10, 21), 1, 3)])
def test_gpu_matches_the_cpu_reference(grid, batch, heads, dim, sparsity):
    # 3x10x21 = 630 tokens: edge boxes packed, a short last tile.
    qkv = structured_qkv(grid, batch, heads, dim, seed=dim + heads)
    cpu = veda.sparse_attention(*qkv, grid=grid, sparsity=sparsity, return_lse=True)
    gpu = veda.sparse_attention(
        *(t.cuda() for t in qkv), grid=grid, sparsity=sparsity, return_lse=True
    )
    assert_matches_cpu(gpu, cpu)


def test_gpu_op_matches_the_cpu_op_and_dense_method():
    q, k, v = structured_qkv(GRID, 1, 2, 128, seed=1)
    args = (list(GRID), [2, 8, 8], "meanpool", 0.9, None)
    cpu = torch.ops.veda.sparse_attention(q, k, v, *args)
    assert_matches_cpu(torch.ops.veda.sparse_attention(q.cuda(), k.cuda(), v.cuda(), *args), cpu)
    dense = torch.ops.veda.attention(q, k, v, None)
    gpu_dense = torch.ops.veda.sparse_attention(
        q.cuda(), k.cuda(), v.cuda(), list(GRID), [1, 8, 16], "dense", 0.0, None
    )
    assert_matches_cpu(gpu_dense, dense)


def test_dense_op_with_unequal_lengths_and_float32_output():
    q = structured_qkv((1, 1, 100), 1, 2, 64, seed=2)[0]
    _, k, v = structured_qkv((1, 1, 300), 1, 2, 64, seed=3)
    cpu = torch.ops.veda.attention(q, k, v, torch.float32)
    gpu = torch.ops.veda.attention(q.cuda(), k.cuda(), v.cuda(), torch.float32)
    assert gpu[0].dtype == torch.float32
    assert_matches_cpu(gpu, cpu)


@pytest.mark.parametrize("text_position", ["after", "before"])
def test_text_tokens_on_the_gpu(text_position):
    text = 20
    q, k, v = structured_qkv((1, 1, 1024 + text), 1, 2, 128, seed=4)
    kwargs = {"grid": GRID, "sparsity": 0.9, "text_tokens": text, "text_position": text_position}
    cpu = veda.sparse_attention(q, k, v, return_lse=True, **kwargs)
    gpu = veda.sparse_attention(q.cuda(), k.cuda(), v.cuda(), return_lse=True, **kwargs)
    assert_matches_cpu(gpu, cpu)


def test_profile_heads_with_their_own_tile_shapes():
    # Heads 0, 2 share sparsity 0.9 with different tile shapes: one plan with a shape per head.
    settings = (
        HeadSettings((1, 8, 16), 0.9),
        HeadSettings((4, 4, 8), 0.5),
        HeadSettings((2, 8, 8), 0.9),
    )
    profile = LayerProfile(layer=0, heads=settings)
    qkv = structured_qkv(GRID, 1, 3, 64, seed=5)
    head_index = [2, 0, 1]
    cpu = veda.sparse_attention(
        *qkv, grid=GRID, profile=profile, head_index=head_index, return_lse=True
    )
    gpu = veda.sparse_attention(
        *(t.cuda() for t in qkv),
        grid=GRID,
        profile=profile,
        head_index=head_index,
        return_lse=True,
    )
    assert_matches_cpu(gpu, cpu)


def test_estimator_at_zero_is_mean_pooling_and_parameters_change_the_selection():
    heads, dim = 2, 64
    qkv = [t.cuda() for t in structured_qkv(GRID, 1, heads, dim, seed=6)]
    # At 0.75 of 8 tiles each query tile keeps its own and 1 chosen key tile.
    settings = (HeadSettings((1, 8, 16), 0.75),) * heads
    zeros = torch.zeros(heads + 1, 3 * dim, dim)
    at_zero = LayerProfile(layer=0, heads=settings + settings[:1], p_q=zeros, p_k=zeros)
    meanpool = veda.sparse_attention(*qkv, grid=GRID, sparsity=0.75)
    estimated = veda.sparse_attention(
        *qkv, grid=GRID, profile=at_zero, method="veda", head_index=[2, 0]
    )
    assert torch.equal(estimated, meanpool)
    p_q, _ = at_zero.estimator(qkv[0].device)
    assert at_zero.estimator(qkv[0].device)[0] is p_q  # uploaded once
    assert p_q.is_cuda and p_q.shape == (heads + 1, 3 * dim, dim)

    generator = torch.Generator().manual_seed(7)
    random = LayerProfile(
        layer=0,
        heads=settings,
        p_q=torch.randn(heads, 3 * dim, dim, generator=generator),
        p_k=torch.randn(heads, 3 * dim, dim, generator=generator),
    )
    out = veda.sparse_attention(*qkv, grid=GRID, profile=random, method="veda")
    assert torch.isfinite(out.float()).all()
    assert not torch.equal(out, meanpool)


def test_plans_are_built_once_per_shape():
    qkv = [t.cuda() for t in structured_qkv((2, 8, 16), 1, 2, 64, seed=8)]
    veda.sparse_attention(*qkv, grid=(2, 8, 16), sparsity=0.6)
    plans = _veda.plan_count()
    for _ in range(3):
        veda.sparse_attention(*qkv, grid=(2, 8, 16), sparsity=0.6)
    assert _veda.plan_count() == plans
    veda.sparse_attention(*qkv, grid=(2, 8, 16), sparsity=0.7)
    assert _veda.plan_count() == plans + 1


def test_unaligned_and_strided_inputs_give_the_same_result():
    q, k, v = (t.cuda() for t in structured_qkv(GRID, 1, 2, 64, seed=9))
    expected = veda.sparse_attention(q, k, v, grid=GRID, sparsity=0.75)
    storage = torch.empty(q.numel() + 1, dtype=q.dtype, device=q.device)
    shifted = storage[1:].view(q.shape)  # base 2 bytes past a 16-byte boundary
    shifted.copy_(q)
    heads_outer = q.transpose(1, 2).contiguous().transpose(1, 2)
    for variant in (shifted, heads_outer):
        assert torch.equal(veda.sparse_attention(variant, k, v, grid=GRID, sparsity=0.75), expected)


def test_cuda_graph_capture_replays():
    shape = (1, 2, 128)
    static = [t.cuda() for t in structured_qkv(GRID, *shape, seed=10)]

    def layer() -> tuple[torch.Tensor, torch.Tensor]:
        return veda.sparse_attention(*static, grid=GRID, sparsity=0.75, return_lse=True)

    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):  # warm-up: builds the plan outside the capture
        layer()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out, lse = layer()

    fresh = [t.cuda() for t in structured_qkv(GRID, *shape, seed=11)]
    for target, source in zip(static, fresh):
        target.copy_(source)
    graph.replay()
    torch.cuda.synchronize()
    expected_out, expected_lse = veda.sparse_attention(
        *fresh, grid=GRID, sparsity=0.75, return_lse=True
    )
    assert torch.equal(out, expected_out)
    assert torch.equal(lse, expected_lse)


def test_torch_compile_fullgraph_on_cuda():
    q, k, v = (t.cuda() for t in structured_qkv(GRID, 1, 2, 64, seed=12))

    def layer(q, k, v):
        return veda.sparse_attention(q * 2, k, v, grid=GRID, sparsity=0.9, text_tokens=0)

    compiled = torch.compile(layer, fullgraph=True)
    torch.testing.assert_close(compiled(q, k, v), layer(q, k, v), atol=0, rtol=0)


@pytest.mark.parametrize(
    "dim, dtype, kwargs, message",
    [
        (96, torch.bfloat16, {}, "q has head dim 96; the GPU path supports 64 and 128"),
        (64, torch.float32, {}, "q has dtype torch.float32; the GPU path supports bfloat16"),
        (64, torch.bfloat16, {"method": "oracle"}, "method 'oracle' is CPU-only for now"),
        (64, torch.bfloat16, {"method": "veda"}, "method 'veda' needs a veda.LayerProfile"),
    ],
)
def test_unsupported_gpu_calls_raise_value_error(dim, dtype, kwargs, message):
    q = torch.zeros(1, 1024, 2, dim, dtype=dtype, device="cuda")
    with pytest.raises(ValueError) as raised:
        veda.sparse_attention(q, q, q, grid=GRID, **kwargs)
    assert message in str(raised.value)


def test_unsupported_op_calls_raise_value_error():
    q = torch.zeros(1, 256, 2, 32, dtype=torch.bfloat16, device="cuda")
    with pytest.raises(ValueError, match="q has head dim 32; the GPU path supports 64 and 128"):
        torch.ops.veda.attention(q, q, q, None)
    q = torch.zeros(1, 256, 2, 64, dtype=torch.float16, device="cuda")
    with pytest.raises(ValueError, match="k has dtype torch.bfloat16 but q has torch.float16"):
        torch.ops.veda.attention(q, q.bfloat16(), q, None)
    with pytest.raises(ValueError, match="grid 4x8x16 has 512 tokens but q has N = 256"):
        torch.ops.veda.sparse_attention(q, q, q, [4, 8, 16], [1, 8, 16], "meanpool", 0.9, None)
