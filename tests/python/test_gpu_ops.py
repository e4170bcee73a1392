"""The GPU path of veda.sparse_attention and torch.ops.veda.* against the CPU reference.

Skipped unless torch sees a CUDA device and veda._veda was built with the GPU entries
(`VEDA_CUDA=ON pip install .`).

Inputs are bfloat16, the same values on both devices: Gaussian noise plus a smooth function of the
grid position, so tiles differ and mean pooling ranks key tiles by clear margins (the GPU and the
CPU then select the same tiles; pure noise would leave near-ties that float32 summation order can
flip). Tolerances: the CPU reference computes in float32 and rounds out to bfloat16 once; the
kernels round the probabilities to bfloat16 before P V, as flash attention does, which gives a
relative L2 error of a few 1e-3: bound 1e-2. lse is float32 on both sides and differs only by
summation order and exp2 approximations: bound 1e-2 absolute. With text tokens the GPU rounds the
video rows' sparse part to bfloat16 once more before the lse merge (<= 2^-8 relative on that
share of each row), which stays well inside 1e-2.

On CUDA tensors text tokens go to the SparseAttentionPlan in one torch.ops.veda.sparse_attention
call per group of heads (no torch.ops.veda.attention, no torch merge): VedaOpCalls records the
veda ops a call dispatches, to check that.
"""

from __future__ import annotations

import functools
import math

import pytest
import torch
import veda
from conftest import diagonal_profile
from torch.utils._python_dispatch import TorchDispatchMode
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


def with_text(
    qkv: tuple[torch.Tensor, ...], text: int, position: str, seed: int
) -> tuple[torch.Tensor, ...]:
    """q, k, v [B, N, H, D] -> [B, N + text, H, D]: `text` noise rows after or before the video."""
    if text == 0:
        return qkv
    generator = torch.Generator().manual_seed(seed)
    joined = []
    for video in qkv:
        batch, _, heads, dim = video.shape
        rows = torch.randn(batch, text, heads, dim, generator=generator).to(video.dtype)
        joined.append(torch.cat([video, rows] if position == "after" else [rows, video], dim=1))
    return tuple(joined)


class VedaOpCalls(TorchDispatchMode):
    """Records the torch.ops.veda.* calls made while active ("veda::sparse_attention", ...); the
    ops' own internals run with the mode off, so each op call counts once."""

    def __init__(self) -> None:
        super().__init__()
        self.names: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func.namespace == "veda":
            self.names.append(func.name())
        return func(*args, **(kwargs or {}))


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


def poison_allocator_cache(megabytes: int = 256) -> None:
    """Frees a block of NaN into torch's CUDA caching allocator, so that the next torch.empty
    calls (the ops' outputs and buffers) start as NaN instead of stale finite values."""
    block = torch.full((megabytes << 18,), float("nan"), device="cuda")
    del block


@pytest.mark.parametrize("sparsity", [0.5, 0.75])  # 2-4 of 5 or 8 key tiles: a real choice
@pytest.mark.parametrize("dim", [64, 128])
@pytest.mark.parametrize("grid, batch, heads", [((4, 16, 16), 2, 2), ((3, 10, 21), 1, 3)])
def test_oracle_on_the_gpu_matches_the_cpu_reference(grid, batch, heads, dim, sparsity):
    qkv = structured_qkv(grid, batch, heads, dim, seed=3 * dim + heads)
    cpu = veda.sparse_attention(
        *qkv, grid=grid, sparsity=sparsity, method="oracle", return_lse=True
    )
    poison_allocator_cache()
    gpu = veda.sparse_attention(
        *(t.cuda() for t in qkv), grid=grid, sparsity=sparsity, method="oracle", return_lse=True
    )
    assert_matches_cpu(gpu, cpu)


def test_oracle_heads_with_their_own_tile_shapes_in_one_call():
    # Heads 0 and 2 share 2x8x8, head 1 has 1x8x16: two oracle groups, one attention launch that
    # reads each head through its group's order.
    settings = (
        HeadSettings((2, 8, 8), 0.8),
        HeadSettings((1, 8, 16), 0.8),
        HeadSettings((2, 8, 8), 0.8),
    )
    profile = LayerProfile(layer=0, heads=settings)
    qkv = structured_qkv((3, 10, 21), 1, 3, 128, seed=21)
    kwargs = {"grid": (3, 10, 21), "profile": profile, "method": "oracle", "return_lse": True}
    cpu = veda.sparse_attention(*qkv, **kwargs)
    poison_allocator_cache()
    with VedaOpCalls() as calls:
        gpu = veda.sparse_attention(*(t.cuda() for t in qkv), **kwargs)
    assert calls.names == ["veda::sparse_attention"]
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


@pytest.mark.parametrize("method", ["meanpool", "dense"])
@pytest.mark.parametrize("text_position", ["after", "before"])
def test_text_tokens_on_the_gpu(text_position, method):
    text = 20
    q, k, v = structured_qkv((1, 1, 1024 + text), 1, 2, 128, seed=4)
    kwargs = {
        "grid": GRID,
        "sparsity": 0.9,
        "method": method,
        "text_tokens": text,
        "text_position": text_position,
    }
    cpu = veda.sparse_attention(q, k, v, return_lse=True, **kwargs)
    with VedaOpCalls() as calls:
        gpu = veda.sparse_attention(q.cuda(), k.cuda(), v.cuda(), return_lse=True, **kwargs)
    assert calls.names == ["veda::sparse_attention"]  # the plan's text path, no composition
    assert_matches_cpu(gpu, cpu)


@pytest.mark.parametrize("text_position", ["after", "before"])
@pytest.mark.parametrize("text", [1, 77])
def test_text_tokens_on_a_grid_with_a_short_last_tile(text, text_position):
    # 3x10x21 = 630 video tokens: 5 tiles, the last one of 118 tokens; L = 631 or 707.
    grid, batch, heads, dim = (3, 10, 21), 2, 2, 64
    q, k, v = with_text(structured_qkv(grid, batch, heads, dim, seed=20), text, text_position, 21)
    kwargs = {"grid": grid, "sparsity": 0.75, "text_tokens": text, "text_position": text_position}
    cpu = veda.sparse_attention(q, k, v, return_lse=True, **kwargs)
    q, k, v = q.cuda(), k.cuda(), v.cuda()
    with VedaOpCalls() as calls:
        gpu = veda.sparse_attention(q, k, v, return_lse=True, **kwargs)
    assert calls.names == ["veda::sparse_attention"]
    length = 630 + text
    assert gpu[0].shape == (batch, length, heads, dim) and gpu[1].shape == (batch, length, heads)
    assert_matches_cpu(gpu, cpu)
    # The op itself, text arguments last: the same plan, the same result.
    args = (list(grid), [1, 8, 16], "meanpool", 0.75, None, None, None, None)
    op = torch.ops.veda.sparse_attention(q, k, v, *args, text, text_position)
    assert torch.equal(op[0], gpu[0]) and torch.equal(op[1], gpu[1])
    # Text adds the video rows' float32 partial over the text keys, 4 B*N*H*D bytes (with
    # low_memory=False it reuses the copies of k and v), and two float32 lse partials, 8 B*N*H
    # bytes (each piece rounded up to 256 bytes).
    # tiles, sparsity, thresholds, global heads, projections, their heads, diagonal
    plan = ([[1, 8, 16]], 0.75, [], [], 0, 0, 0, False)
    device, code = q.device.index or 0, veda.ops.DTYPE_CODES[q.dtype]
    bytes_of = functools.partial(_veda.plan_workspace_bytes, device, list(grid), batch, heads, dim)
    for low_memory, partial in ((True, 4 * batch * 630 * heads * dim), (False, 0)):
        extra = bytes_of(code, *plan, text, text_position, low_memory) - bytes_of(
            code, *plan, 0, "after", low_memory
        )
        expected = partial + 8 * batch * 630 * heads
        assert expected <= extra <= expected + 768


@pytest.mark.parametrize("text", [0, 20])
def test_low_memory_mode_gives_the_same_result_with_less_workspace(text):
    # No tile-major copies (the default): the attention kernel reads k and v, like q, through
    # the tile-major order. The same statistics, selection and arithmetic, so the same bits as
    # with the copies; 2 copies of 2 B*N*H*D bytes less workspace (with text they come back as
    # the video rows' text part).
    grid, batch, heads, dim = (3, 10, 21), 2, 2, 128
    q, k, v = with_text(structured_qkv(grid, batch, heads, dim, seed=30), text, "after", 31)
    kwargs = {"grid": grid, "sparsity": 0.75, "text_tokens": text}
    cpu = veda.sparse_attention(q, k, v, return_lse=True, **kwargs)
    q, k, v = q.cuda(), k.cuda(), v.cuda()
    low = veda.sparse_attention(q, k, v, return_lse=True, **kwargs)
    copies = veda.sparse_attention(q, k, v, return_lse=True, low_memory=False, **kwargs)
    assert_matches_cpu(low, cpu)
    assert torch.equal(low[0], copies[0]) and torch.equal(low[1], copies[1])
    plan = ([[1, 8, 16]], 0.75, [], [], 0, 0, 0, False, text, "after")
    code = veda.ops.DTYPE_CODES[q.dtype]
    bytes_of = functools.partial(
        _veda.plan_workspace_bytes, q.device.index or 0, list(grid), batch, heads, dim, code, *plan
    )
    elements = batch * 630 * heads * dim
    saved = bytes_of(False) - bytes_of(True)
    expected = 4 * elements if text == 0 else 0
    assert abs(saved - expected) <= 3 * 256  # each workspace piece is rounded up to 256 bytes


@pytest.mark.parametrize("text", [0, 20])
def test_profile_heads_with_their_own_tile_shapes(text):
    # Heads 0, 2 share sparsity 0.9 with different tile shapes: one plan with a shape per head;
    # head 1 (0.5) another. Two op calls, each over all L rows with text tokens.
    settings = (
        HeadSettings((1, 8, 16), 0.9),
        HeadSettings((4, 4, 8), 0.5),
        HeadSettings((2, 8, 8), 0.9),
    )
    profile = LayerProfile(layer=0, heads=settings)
    qkv = with_text(structured_qkv(GRID, 1, 3, 64, seed=5), text, "after", seed=15)
    head_index = [2, 0, 1]
    kwargs = {"grid": GRID, "profile": profile, "head_index": head_index, "text_tokens": text}
    cpu = veda.sparse_attention(*qkv, return_lse=True, **kwargs)
    with VedaOpCalls() as calls:
        gpu = veda.sparse_attention(*(t.cuda() for t in qkv), return_lse=True, **kwargs)
    assert calls.names == ["veda::sparse_attention"] * 2
    assert_matches_cpu(gpu, cpu)


def test_cumulative_thresholds_per_head_in_one_call():
    # One sparsity: one plan with a threshold per head (head 1 none: the fixed budget); the CPU
    # runs each head setting in its own call. Low thresholds, so that fewer tiles than the
    # budget (3 of 5 at 0.5) hold that share of the estimated mass.
    settings = (
        HeadSettings((1, 8, 16), 0.5, 0.05),
        HeadSettings((1, 8, 16), 0.5),
        HeadSettings((2, 8, 8), 0.5, 0.1),
    )
    profile = LayerProfile(layer=0, heads=settings)
    qkv = structured_qkv((3, 10, 21), 2, 3, 64, seed=9)
    kwargs = {"grid": (3, 10, 21), "profile": profile}
    cpu = veda.sparse_attention(*qkv, return_lse=True, **kwargs)
    with VedaOpCalls() as calls:
        gpu = veda.sparse_attention(*(t.cuda() for t in qkv), return_lse=True, **kwargs)
    assert calls.names == ["veda::sparse_attention"]
    assert_matches_cpu(gpu, cpu)
    # The thresholds change heads 0 and 2 only: against the same shapes at the fixed budget.
    fixed_profile = LayerProfile(layer=0, heads=tuple(HeadSettings(s.tile, 0.5) for s in settings))
    fixed = veda.sparse_attention(*(t.cuda() for t in qkv), grid=(3, 10, 21), profile=fixed_profile)
    changed = [rel_l2(gpu[0][:, :, h], fixed[:, :, h]) for h in range(3)]
    assert changed[0] > REL_L2 and changed[2] > REL_L2 and changed[1] == 0.0, changed


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


def test_diagonal_estimator_runs_elementwise_and_matches_the_cpu_reference():
    heads, dim = 3, 64
    qkv = structured_qkv((3, 10, 21), 1, heads, dim, seed=10)
    profile, _ = diagonal_profile(heads, dim, seed=11)
    kwargs = {"grid": (3, 10, 21), "profile": profile, "method": "veda", "return_lse": True}
    gpu = veda.sparse_attention(*(t.cuda() for t in qkv), **kwargs)
    assert profile.estimator("cuda", compact=True)[0].shape == (heads, 3, dim)  # what ran
    assert_matches_cpu(gpu, veda.sparse_attention(*qkv, **kwargs))
    meanpool = veda.sparse_attention(*(t.cuda() for t in qkv), grid=(3, 10, 21), sparsity=0.75)
    assert not torch.equal(gpu[0], meanpool)


def test_plans_are_built_once_per_shape():
    qkv = [t.cuda() for t in structured_qkv((2, 8, 16), 1, 2, 64, seed=8)]
    veda.sparse_attention(*qkv, grid=(2, 8, 16), sparsity=0.6)
    plans = _veda.plan_count()
    for _ in range(3):
        veda.sparse_attention(*qkv, grid=(2, 8, 16), sparsity=0.6)
    assert _veda.plan_count() == plans
    veda.sparse_attention(*qkv, grid=(2, 8, 16), sparsity=0.7)
    assert _veda.plan_count() == plans + 1
    # Text tokens and their position are part of the plan's key.
    for position in ("after", "before", "after"):
        joined = [t.cuda() for t in with_text([t.cpu() for t in qkv], 5, position, seed=8)]
        veda.sparse_attention(
            *joined, grid=(2, 8, 16), sparsity=0.7, text_tokens=5, text_position=position
        )
    assert _veda.plan_count() == plans + 3


def test_unaligned_and_strided_inputs_give_the_same_result():
    q, k, v = (t.cuda() for t in structured_qkv(GRID, 1, 2, 64, seed=9))
    expected = veda.sparse_attention(q, k, v, grid=GRID, sparsity=0.75)
    storage = torch.empty(q.numel() + 1, dtype=q.dtype, device=q.device)
    shifted = storage[1:].view(q.shape)  # base 2 bytes past a 16-byte boundary
    shifted.copy_(q)
    heads_outer = q.transpose(1, 2).contiguous().transpose(1, 2)
    for variant in (shifted, heads_outer):
        assert torch.equal(veda.sparse_attention(variant, k, v, grid=GRID, sparsity=0.75), expected)


@pytest.mark.parametrize("text, text_position", [(0, "after"), (77, "before")])
def test_cuda_graph_capture_replays(text, text_position):
    shape = (1, 2, 128)
    kwargs = {"grid": GRID, "sparsity": 0.75, "text_tokens": text, "text_position": text_position}

    def inputs(seed: int) -> list[torch.Tensor]:
        qkv = with_text(structured_qkv(GRID, *shape, seed=seed), text, text_position, seed + 100)
        return [t.cuda() for t in qkv]

    static = inputs(10)

    def layer() -> tuple[torch.Tensor, torch.Tensor]:
        return veda.sparse_attention(*static, return_lse=True, **kwargs)

    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):  # warm-up: builds the plan outside the capture
        layer()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out, lse = layer()

    fresh = inputs(11)
    for target, source in zip(static, fresh):
        target.copy_(source)
    graph.replay()
    torch.cuda.synchronize()
    expected_out, expected_lse = veda.sparse_attention(*fresh, return_lse=True, **kwargs)
    assert torch.equal(out, expected_out)
    assert torch.equal(lse, expected_lse)


@pytest.mark.parametrize("text", [0, 77])
def test_torch_compile_fullgraph_on_cuda(text):
    qkv = with_text(structured_qkv(GRID, 1, 2, 64, seed=12), text, "after", seed=13)
    q, k, v = (t.cuda() for t in qkv)

    def layer(q, k, v):
        return veda.sparse_attention(q * 2, k, v, grid=GRID, sparsity=0.9, text_tokens=text)

    compiled = torch.compile(layer, fullgraph=True)
    torch.testing.assert_close(compiled(q, k, v), layer(q, k, v), atol=0, rtol=0)


@pytest.mark.parametrize(
    "dim, dtype, kwargs, message",
    [
        (96, torch.bfloat16, {}, "q has head dim 96; the GPU path supports 64 and 128"),
        (64, torch.float32, {}, "q has dtype torch.float32; the GPU path supports bfloat16"),
        (
            64,
            torch.bfloat16,
            {"method": "oracle", "text_tokens": 8},
            "text_tokens is 8; method 'oracle' on CUDA tensors attends video tokens only",
        ),
        (64, torch.bfloat16, {"method": "veda"}, "method 'veda' needs a veda.LayerProfile"),
    ],
)
def test_unsupported_gpu_calls_raise_value_error(dim, dtype, kwargs, message):
    rows = 1024 + kwargs.get("text_tokens", 0)
    q = torch.zeros(1, rows, 2, dim, dtype=dtype, device="cuda")
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
    args = ([4, 8, 16], [1, 8, 16], "meanpool", 0.9, None, None, None, None)
    with pytest.raises(
        ValueError, match=r"grid 4x8x16 has 512 tokens but q has L = 256 \(text_tokens = 3\)"
    ):
        torch.ops.veda.sparse_attention(q, q, q, *args, 3, "after")
    with pytest.raises(ValueError, match="text_position 'middle' is not known"):
        torch.ops.veda.sparse_attention(q, q, q, *args, 0, "middle")
