"""torch custom ops over the framework-free extension veda._veda.

Two ops, each a single opaque node for torch.compile (a fake implementation gives the output
shapes without running anything):

    torch.ops.veda.attention(q, k, v, out_dtype)          dense, Nq and Nk free
    torch.ops.veda.sparse_attention(q, k, v, grid, tile, method, sparsity, out_dtype,
                                    head_index, q_projection, k_projection,
                                    text_tokens, text_position, thresholds, low_memory)
                                                          video self-attention over `grid`

q, k, v are [B, N, H, D] (diffusers' layout, D contiguous); both return (out [B, Nq, H, D] in
out_dtype or q's dtype, lse [B, Nq, H] float32, natural log). On CUDA tensors sparse_attention
also takes text tokens (text_tokens, text_position "after" or "before" the video): q, k, v, out
then hold L = N + text_tokens rows, and the plan attends the text densely both ways in the same
call (on the CPU veda.sparse_attention composes that from several op calls). Outputs are
allocated by torch (its caching allocator on the GPU), the current stream is passed down, and
nothing waits on the host.

CPU tensors run the C++ CPU reference. CUDA tensors (an extension built with VEDA_CUDA=ON) run the
kernels: dense attention through veda::attention_cuda, sparse attention through a
veda::SparseAttentionPlan that the extension builds once per (device, grid, B, H, D, dtype, tile
shapes, sparsity, thresholds, global heads, projections, text tokens and position, low_memory)
and keeps;
every call then launches on the current stream into a workspace that torch allocates here. Building a plan
uploads its order tables synchronously, so the first call of a shape must come before any CUDA
graph capture (torch's usual warm-up does that). The GPU path takes bfloat16 or float16 with head
dim 64 or 128.

Argument checking with readable messages is done by veda.sparse_attention; the ops only re-check
what the C++ side cannot see (device, dtype, head dim on the GPU).

Annotations here stay evaluated (no `from __future__ import annotations`):
torch.library.custom_op infers each op's schema from them.
"""

import functools
import math

import torch

from . import _veda

DTYPE_CODES = {
    torch.float32: _veda.DTYPE_F32,
    torch.float16: _veda.DTYPE_F16,
    torch.bfloat16: _veda.DTYPE_BF16,
}

GPU_DTYPES = (torch.bfloat16, torch.float16)
GPU_HEAD_DIMS = (64, 128)
CPU_METHODS = ("dense", "oracle", "meanpool")
GPU_METHODS = ("dense", "oracle", "meanpool", "veda")
TEXT_POSITIONS = ("after", "before")
# The GPU kernels load rows in 16-byte pieces: base and batch/token/head strides of 16 bytes.
GPU_ALIGNMENT_BYTES = 16

NO_GPU_BUILD_MESSAGE = (
    "this build of veda has no GPU path: reinstall with `VEDA_CUDA=ON pip install .` (needs "
    "nvcc), or move q, k, v to the CPU to run the CPU reference"
)
ORACLE_TEXT_MESSAGE = (
    "method 'oracle' on CUDA tensors attends video tokens only; run the text rows densely "
    "yourself or use meanpool or veda"
)
TEXT_ON_CPU_MESSAGE = (
    "torch.ops.veda.sparse_attention takes text tokens on CUDA tensors only; the CPU reference "
    "attends video rows only (veda.sparse_attention composes text tokens on the CPU)"
)

# Whether this build of veda._veda has the GPU entries (VEDA_CUDA=ON at build time); a plain
# module constant, so torch.compile traces the checks below without looking into the extension.
HAS_GPU_PATH = bool(getattr(_veda, "BUILT_WITH_CUDA", False)) and hasattr(
    _veda, "sparse_attention_cuda"
)


def has_gpu_path() -> bool:
    """Whether this build of veda._veda has the GPU entries (VEDA_CUDA=ON at build time)."""
    return HAS_GPU_PATH


def check_device(tensor: torch.Tensor, name: str = "q") -> None:
    """CPU, or CUDA with the GPU entries built; anything else raises ValueError."""
    if tensor.device.type == "cpu":
        return
    if tensor.device.type != "cuda":
        raise ValueError(f"{name} is on {tensor.device}; veda runs on CPU and CUDA tensors")
    if not HAS_GPU_PATH:
        raise ValueError(f"{name} is on {tensor.device}; {NO_GPU_BUILD_MESSAGE}")


def check_gpu_operand(name: str, tensor: torch.Tensor) -> None:
    """dtype and head dim of a CUDA operand [B, N, H, D]: what the kernels are built for."""
    if tensor.dtype not in GPU_DTYPES:
        raise ValueError(
            f"{name} has dtype {tensor.dtype}; the GPU path supports bfloat16 and float16"
        )
    if tensor.shape[-1] not in GPU_HEAD_DIMS:
        raise ValueError(
            f"{name} has head dim {tensor.shape[-1]}; the GPU path supports 64 and 128"
        )


def _tensor_spec(tensor: torch.Tensor) -> tuple[int, int, tuple[int, ...], tuple[int, ...]]:
    """(data pointer, dtype code, shape, strides in elements) of a [B, N, H, D] tensor."""
    return (
        tensor.data_ptr(),
        DTYPE_CODES[tensor.dtype],
        tuple(tensor.shape),
        tuple(tensor.stride()),
    )


def _lse_spec(lse: torch.Tensor) -> tuple[int, tuple[int, ...]]:
    return (lse.data_ptr(), tuple(lse.stride()))


def _stream_handle(device: torch.device) -> int:
    """The current stream of `device` as an integer handle (0 on the CPU)."""
    if device.type == "cuda":
        return torch.cuda.current_stream(device).cuda_stream
    return 0


def _device_index(device: torch.device) -> int:
    return device.index if device.index is not None else torch.cuda.current_device()


def _check_operands(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> None:
    for name, tensor in (("q", q), ("k", k), ("v", v)):
        if tensor.dtype not in DTYPE_CODES:
            raise TypeError(
                f"{name} has dtype {tensor.dtype}; expected float32, float16 or bfloat16"
            )
        if tensor.device != q.device:
            raise ValueError(f"{name} is on {tensor.device} but q is on {q.device}")
    check_device(q)
    if q.device.type == "cuda":
        for name, tensor in (("q", q), ("k", k), ("v", v)):
            check_gpu_operand(name, tensor)
            if tensor.dtype != q.dtype:
                raise ValueError(
                    f"{name} has dtype {tensor.dtype} but q has {q.dtype}; the GPU path takes "
                    "one dtype"
                )


def _head_dim_contiguous(tensor: torch.Tensor) -> torch.Tensor:
    # The C++ views take any batch/token/head strides but need the head dim contiguous.
    return tensor if tensor.stride(-1) == 1 else tensor.contiguous()


def _gpu_aligned(tensor: torch.Tensor) -> torch.Tensor:
    """tensor [B, N, H, D] itself when its rows are 16-byte aligned (D contiguous), else a copy."""
    element = tensor.element_size()
    aligned = (
        tensor.stride(-1) == 1
        and tensor.data_ptr() % GPU_ALIGNMENT_BYTES == 0
        and all(stride * element % GPU_ALIGNMENT_BYTES == 0 for stride in tensor.stride()[:-1])
    )
    return tensor if aligned else tensor.clone(memory_format=torch.contiguous_format)


def _new_outputs(
    q: torch.Tensor, out_dtype: torch.dtype | None
) -> tuple[torch.Tensor, torch.Tensor]:
    batch, tokens, heads, _ = q.shape
    out = q.new_empty(q.shape, dtype=out_dtype or q.dtype)  # [B, Nq, H, D]
    lse = q.new_empty((batch, tokens, heads), dtype=torch.float32)  # [B, Nq, H]
    return out, lse


@torch.library.custom_op("veda::attention", mutates_args=())
def attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, out_dtype: torch.dtype | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Dense attention: q [B, Nq, H, D], k, v [B, Nk, H, D] -> (out [B, Nq, H, D], lse [B, Nq, H])."""
    _check_operands(q, k, v)
    if q.device.type == "cuda":
        return _attention_cuda(q, k, v, out_dtype)
    q, k, v = (_head_dim_contiguous(t) for t in (q, k, v))
    out, lse = _new_outputs(q, out_dtype)
    _veda.attention(
        _tensor_spec(q),
        _tensor_spec(k),
        _tensor_spec(v),
        _tensor_spec(out),
        _lse_spec(lse),
        _stream_handle(q.device),
    )
    return out, lse


def _attention_cuda(
    q: torch.Tensor,  # [B, Nq, H, D]
    k: torch.Tensor,  # [B, Nk, H, D]
    v: torch.Tensor,  # [B, Nk, H, D]
    out_dtype: torch.dtype | None,
) -> tuple[torch.Tensor, torch.Tensor]:
    q, k, v = (_gpu_aligned(t) for t in (q, k, v))
    out, lse = _new_outputs(q, out_dtype)  # the kernel writes out in float32, float16 or bf16
    _veda.attention_cuda(
        _tensor_spec(q),
        _tensor_spec(k),
        _tensor_spec(v),
        _tensor_spec(out),
        _lse_spec(lse),
        _device_index(q.device),
        _stream_handle(q.device),
    )
    return out, lse


@attention.register_fake
def _attention_fake(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, out_dtype: torch.dtype | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    return _new_outputs(q, out_dtype)


@torch.library.custom_op("veda::sparse_attention", mutates_args=())
def sparse_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    grid: list[int],
    tile: list[int],
    method: str,
    sparsity: float,
    out_dtype: torch.dtype | None = None,
    head_index: list[int] | None = None,
    q_projection: torch.Tensor | None = None,
    k_projection: torch.Tensor | None = None,
    text_tokens: int = 0,
    text_position: str = "after",
    thresholds: list[float] | None = None,
    low_memory: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Sparse self-attention over a T x H x W grid: q, k, v [B, N, H, D] with N = T*H*W.

    Per (batch, head): reorder tokens to tile-major order for its tile shape, score 128-token
    tiles by `method`, keep ceil((1 - sparsity) * tiles) key tiles per query tile (its own tile
    always kept), attend, restore frame-major order.
    Returns (out [B, N, H, D], lse [B, N, H] float32).

    Method "veda" is the estimator: q_projection, k_projection float32 [H_global, 3D, D] on q's
    device, or only their diagonals [H_global, 3, D] (P[c D + d, d]: the estimator's default
    structure, which the GPU projects elementwise); head_index the global head of each of q's H
    heads (default 0..H-1).
    CPU: method "dense", "oracle", "meanpool" or "veda"; `tile` is one shape (3 ints).
    CUDA: method "dense", "meanpool", "veda" or "oracle" (no text tokens: two dense passes and a
    block-sparse one, for measurements); `tile` is one shape for all heads (3 ints) or one
    per head (3 * H ints).

    Text tokens (CUDA only): q, k, v [B, L, H, D] with L = N + text_tokens, the text rows "after"
    or "before" the N video rows. The plan runs the video rows sparse over the video keys and
    dense over the text keys, merges the two by their lse, and runs the text rows dense over all
    L keys, in one call. Returns (out [B, L, H, D], lse [B, L, H] float32).

    thresholds (methods meanpool and veda): one per head of q, each 0 (the fixed budget) or in
    (0, 1]: per query tile the fewest best key tiles whose estimated softmax mass reaches it,
    capped at the budget of `sparsity` (a profile's "threshold"). The CPU reference takes one
    value for all heads of a call.

    low_memory (CUDA): True (default): no tile-major copies of k and v in the workspace, the
    attention kernel reads their tiles itself, as it does q's; False: the copies (1.5 GB more at
    Wan2.1-14B 720p, no faster there; 2-5% faster at 147,600 tokens). The CPU reference makes no
    copies either way.
    """
    _check_operands(q, k, v)
    if q.device.type == "cuda":
        return _sparse_attention_cuda(
            q,
            k,
            v,
            grid,
            tile,
            method,
            sparsity,
            out_dtype,
            head_index,
            q_projection,
            k_projection,
            text_tokens,
            text_position,
            _check_thresholds(thresholds, q.shape[2], method),
            low_memory,
        )
    if text_tokens != 0:
        raise ValueError(f"text_tokens is {text_tokens}; {TEXT_ON_CPU_MESSAGE}")
    projections = (0, 0, 0)  # pointers and values per projection for the C++ call
    if method == "veda":
        p_q, p_k = _check_projections(q, q_projection, k_projection)
        heads = list(range(q.shape[2])) if head_index is None else list(head_index)
        if max(heads) >= p_q.shape[0]:
            raise ValueError(
                f"head_index {heads} names head {max(heads)} but the projections hold "
                f"{p_q.shape[0]} heads"
            )
        rows = torch.tensor(heads)
        p_q, p_k = (_full_projection(p.index_select(0, rows)).contiguous() for p in (p_q, p_k))
        projections = (p_q.data_ptr(), p_k.data_ptr(), p_q.numel())
    elif q_projection is not None or k_projection is not None:
        raise ValueError(f"q_projection and k_projection apply to method 'veda', not {method!r}")
    if len(tile) != 3:
        raise ValueError(
            f"tile has {len(tile)} entries; the CPU reference takes one tile shape (3 ints), "
            "per-head shapes run on CUDA tensors"
        )
    head_thresholds = _check_thresholds(thresholds, q.shape[2], method)
    if len(set(head_thresholds)) > 1:
        raise ValueError(
            f"thresholds {head_thresholds} differ between heads; the CPU reference takes one "
            "value per call (per-head thresholds run on CUDA tensors)"
        )
    q, k, v = (_head_dim_contiguous(t) for t in (q, k, v))
    out, lse = _new_outputs(q, out_dtype)
    _veda.sparse_attention(
        _tensor_spec(q),
        _tensor_spec(k),
        _tensor_spec(v),
        _tensor_spec(out),
        _lse_spec(lse),
        method,
        float(sparsity),
        tuple(grid),
        tuple(tile),
        *projections,
        head_thresholds[0] if head_thresholds else 0.0,
        _stream_handle(q.device),
    )
    return out, lse


def _check_thresholds(thresholds: list[float] | None, heads: int, method: str) -> list[float]:
    """One cumulative threshold per head (0: the fixed budget), or [] for none."""
    if thresholds is None:
        return []
    values = [float(t) for t in thresholds]
    if len(values) != heads:
        raise ValueError(f"thresholds has {len(values)} entries; expected one per head ({heads})")
    bad = [t for t in values if not (t == 0.0 or 0.0 < t <= 1.0)]
    if bad:
        raise ValueError(f"thresholds {values} hold {bad[0]}; expected 0 (fixed budget) or (0, 1]")
    if any(values) and method not in ("meanpool", "veda"):
        raise ValueError(f"thresholds apply to methods meanpool and veda, not {method!r}")
    return values


def _is_diagonal(projection: torch.Tensor) -> bool:
    """Whether a checked projection is given as P's diagonals [H, 3, D] (D = 1: either form)."""
    return projection.shape[1] == 3 and projection.shape[2] > 1


def _full_projection(projection: torch.Tensor) -> torch.Tensor:
    """[H, 3D, D] from either form: P[h, c D + d, d] = diagonal[h, c, d], zeros elsewhere."""
    if not _is_diagonal(projection):
        return projection
    heads, _, dim = projection.shape
    return torch.diag_embed(projection).reshape(heads, 3 * dim, dim)


def _check_projections(
    q: torch.Tensor, q_projection: torch.Tensor | None, k_projection: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor]:
    if q_projection is None or k_projection is None:
        raise ValueError(
            "method 'veda' needs the estimator parameters q_projection and k_projection (a "
            "profile with an estimator file); without them use meanpool"
        )
    dim = q.shape[-1]
    for name, projection in (("q_projection", q_projection), ("k_projection", k_projection)):
        if (
            projection.dim() != 3
            or tuple(projection.shape[1:]) not in ((3 * dim, dim), (3, dim))
            or projection.dtype != torch.float32
            or projection.device != q.device
            or not projection.is_contiguous()
        ):
            raise ValueError(
                f"{name} is {projection.dtype} {list(projection.shape)} on {projection.device}; "
                f"expected contiguous float32 [H_global, {3 * dim}, {dim}] (or its diagonal "
                f"[H_global, 3, {dim}]) on {q.device}"
            )
    if q_projection.shape != k_projection.shape:
        raise ValueError(
            f"q_projection has shape {list(q_projection.shape)} but k_projection has "
            f"{list(k_projection.shape)}"
        )
    return q_projection, k_projection


def _sparse_attention_cuda(
    q: torch.Tensor,  # [B, N, H, D]
    k: torch.Tensor,  # [B, N, H, D]
    v: torch.Tensor,  # [B, N, H, D]
    grid: list[int],
    tile: list[int],
    method: str,
    sparsity: float,
    out_dtype: torch.dtype | None,
    head_index: list[int] | None,
    q_projection: torch.Tensor | None,
    k_projection: torch.Tensor | None,
    text_tokens: int,
    text_position: str,
    thresholds: list[float],  # per head, or [] for none
    low_memory: bool,  # no tile-major copies (SparseLayerSettings::reordered_copies = false)
) -> tuple[torch.Tensor, torch.Tensor]:
    if method not in GPU_METHODS:
        raise ValueError(
            f"method {method!r} is not known; expected dense, oracle, meanpool or veda"
        )
    if text_tokens < 0:
        raise ValueError(f"text_tokens is {text_tokens}; expected at least 0")
    if text_position not in TEXT_POSITIONS:
        raise ValueError(
            f"text_position {text_position!r} is not known; expected 'after' or 'before'"
        )
    batch, length, heads, dim = q.shape  # length L = N + text_tokens
    if len(grid) != 3 or grid[0] * grid[1] * grid[2] + text_tokens != length:
        grid_text = f"grid {'x'.join(str(side) for side in grid)} has {math.prod(grid)} tokens"
        if text_tokens == 0:
            raise ValueError(f"{grid_text} but q has N = {length}")
        raise ValueError(f"{grid_text} but q has L = {length} (text_tokens = {text_tokens})")
    if method == "dense":
        # Dense both ways everywhere: plain attention over all L rows, text or not.
        return _attention_cuda(q, k, v, out_dtype)
    if len(tile) not in (3, 3 * heads):
        raise ValueError(
            f"tile has {len(tile)} entries; expected 3 (one shape) or 3 * {heads} (one per head)"
        )
    tiles = [tuple(tile[i : i + 3]) for i in range(0, len(tile), 3)]
    if method == "oracle":
        if text_tokens:
            raise ValueError(f"text_tokens is {text_tokens}; {ORACLE_TEXT_MESSAGE}")
        out, lse = _oracle_attention_cuda(q, k, v, grid, tiles * (heads // len(tiles)), sparsity)
        return (out if out_dtype is None else out.to(out_dtype)), lse
    q_pointer = k_pointer = projection_heads = 0
    diagonal = False
    global_head: list[int] = []
    if method == "veda":
        q_projection, k_projection = _check_projections(q, q_projection, k_projection)
        q_pointer, k_pointer = q_projection.data_ptr(), k_projection.data_ptr()
        projection_heads = q_projection.shape[0]
        diagonal = _is_diagonal(q_projection)
        global_head = [int(h) for h in head_index] if head_index is not None else []
    q, k, v = (_gpu_aligned(t) for t in (q, k, v))
    out, lse = _new_outputs(q, None)  # the plan writes out [B, L, H, D] in q's dtype, lse [B, L, H]
    device = _device_index(q.device)
    # What the plan is built for; the extension looks its cached plan up by these.
    plan = (
        list(grid),
        tiles,
        float(sparsity),
        thresholds,
        global_head,
        q_pointer,
        k_pointer,
        projection_heads,
        diagonal,
        int(text_tokens),
        text_position,
        bool(low_memory),
    )
    # Tile-major copies (unless low_memory), statistics, index; with text 8 * B*N*H bytes more.
    workspace_bytes = _veda.plan_workspace_bytes(
        device, plan[0], batch, heads, dim, DTYPE_CODES[q.dtype], *plan[1:]
    )
    workspace = torch.empty(workspace_bytes, dtype=torch.uint8, device=q.device)
    _veda.sparse_attention_cuda(
        _tensor_spec(q),
        _tensor_spec(k),
        _tensor_spec(v),
        _tensor_spec(out),
        _lse_spec(lse),
        *plan,
        workspace.data_ptr(),
        workspace_bytes,
        device,
        _stream_handle(q.device),
    )
    if out_dtype is not None and out_dtype != out.dtype:
        out = out.to(out_dtype)
    return out, lse


@functools.lru_cache(maxsize=64)
def _tile_order(grid: tuple[int, ...], shape: tuple[int, ...]) -> torch.Tensor:
    """int32 [N] on the CPU: the frame-major row of each tile-major position (built once)."""
    return torch.tensor(_veda.tile_major_order(list(grid), list(shape)), dtype=torch.int32)


def _oracle_attention_cuda(
    q: torch.Tensor,  # [B, N, H, D]
    k: torch.Tensor,
    v: torch.Tensor,
    grid: list[int],
    tiles: list[tuple[int, ...]],  # one per head
    sparsity: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Method "oracle" on the GPU, for evaluation (two dense passes per head: not a fast path).
    Per group of heads sharing a tile shape: tile-major copies of their q and k, the tile heat of
    full attention (veda::oracle_cuda), per query tile the `budget` key tiles of highest heat with
    its own tile kept (torch.topk); then one block-sparse attention over all heads that reads q,
    k, v through the groups' orders and writes out [B, N, H, D] and lse [B, N, H] frame-major.
    Memory beyond the outputs: a group's q and k copies, its heat and mass [B, H_g, T, T] and
    lse [B, H_g, N] float32, the lists [B, H, T, budget] int32."""
    batch, tokens, heads, _ = q.shape
    device, stream = _device_index(q.device), _stream_handle(q.device)
    shapes = sorted(set(tiles))
    orders = torch.stack([_tile_order(tuple(grid), shape) for shape in shapes]).to(q.device)
    head_group = torch.tensor(
        [shapes.index(shape) for shape in tiles], dtype=torch.int32, device=q.device
    )
    count = math.ceil(tokens / _veda.TILE_TOKENS)
    budget = _veda.budget_for_sparsity(float(sparsity), count)
    indices = torch.empty(batch, heads, count, budget, dtype=torch.int32, device=q.device)
    own = torch.arange(count, device=q.device)
    q, k, v = (_gpu_aligned(t) for t in (q, k, v))
    for group, shape in enumerate(shapes):
        members = torch.tensor([h for h in range(heads) if tiles[h] == shape], device=q.device)
        rows = orders[group].long()
        q_tiled, k_tiled = (t.index_select(2, members)[:, rows] for t in (q, k))  # [B, N, H_g, D]
        maps = torch.empty(2, batch, len(members), count, count, device=q.device)  # heat, mass
        row_lse = torch.empty(batch, len(members), tokens, device=q.device)
        _veda.oracle_tile_maps_cuda(
            _tensor_spec(q_tiled),
            _tensor_spec(k_tiled),
            row_lse.data_ptr(),
            maps[0].data_ptr(),
            maps[1].data_ptr(),
            device,
            stream,
        )
        heat = maps[0]
        heat[..., own, own] = float("inf")
        chosen = heat.topk(budget, dim=-1).indices.sort(dim=-1).values  # [B, H_g, T, budget]
        indices[:, members] = chosen.to(torch.int32)
    counts = torch.full((batch, heads, count), budget, dtype=torch.int32, device=q.device)
    out, lse = _new_outputs(q, None)
    _veda.block_sparse_attention_cuda(
        _tensor_spec(q),
        _tensor_spec(k),
        _tensor_spec(v),
        _tensor_spec(out),
        _lse_spec(lse),
        counts.data_ptr(),
        indices.data_ptr(),
        budget,
        orders.data_ptr(),
        head_group.data_ptr(),
        device,
        stream,
    )
    return out, lse


@sparse_attention.register_fake
def _sparse_attention_fake(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    grid: list[int],
    tile: list[int],
    method: str,
    sparsity: float,
    out_dtype: torch.dtype | None = None,
    head_index: list[int] | None = None,
    q_projection: torch.Tensor | None = None,
    k_projection: torch.Tensor | None = None,
    text_tokens: int = 0,
    text_position: str = "after",
    thresholds: list[float] | None = None,
    low_memory: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    # q's rows are all L = N + text_tokens rows: out [B, L, H, D], lse [B, L, H].
    return _new_outputs(q, out_dtype)
