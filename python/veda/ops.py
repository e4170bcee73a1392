"""torch custom ops over the framework-free extension veda._veda.

Two ops, each a single opaque node for torch.compile (a fake implementation gives the output
shapes without running anything):

    torch.ops.veda.attention(q, k, v, out_dtype)          dense, Nq and Nk free
    torch.ops.veda.sparse_attention(q, k, v, grid, tile, method, sparsity, out_dtype)
                                                          video self-attention over `grid`

q, k, v are [B, N, H, D] (diffusers' layout, D contiguous); both return (out [B, Nq, H, D] in
out_dtype or q's dtype, lse [B, Nq, H] float32, natural log). Outputs are allocated by torch (its
caching allocator on the GPU), the current stream is passed down, and nothing waits on the host.

CPU tensors run the C++ CPU reference; CUDA tensors raise ValueError until the GPU path lands
(issue 5). Argument checking with readable messages is done by veda.sparse_attention; the ops
only re-check what the C++ side cannot see (device, dtype).

Annotations here stay evaluated (no `from __future__ import annotations`):
torch.library.custom_op infers each op's schema from them.
"""

import torch

from . import _veda

DTYPE_CODES = {
    torch.float32: _veda.DTYPE_F32,
    torch.float16: _veda.DTYPE_F16,
    torch.bfloat16: _veda.DTYPE_BF16,
}

GPU_PATH_MESSAGE = (
    "veda has no GPU path in this build: the Hopper kernels land with issue 5; "
    "move q, k, v to the CPU to run the CPU reference"
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


def _check_operands(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> None:
    for name, tensor in (("q", q), ("k", k), ("v", v)):
        if tensor.dtype not in DTYPE_CODES:
            raise TypeError(
                f"{name} has dtype {tensor.dtype}; expected float32, float16 or bfloat16"
            )
        if tensor.device != q.device:
            raise ValueError(f"{name} is on {tensor.device} but q is on {q.device}")
    if q.device.type != "cpu":
        raise ValueError(f"q is on {q.device}; {GPU_PATH_MESSAGE}")


def _head_dim_contiguous(tensor: torch.Tensor) -> torch.Tensor:
    # The C++ views take any batch/token/head strides but need the head dim contiguous.
    return tensor if tensor.stride(-1) == 1 else tensor.contiguous()


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
) -> tuple[torch.Tensor, torch.Tensor]:
    """Sparse self-attention over a T x H x W grid: q, k, v [B, N, H, D] with N = T*H*W.

    Per (batch, head): reorder tokens to tile-major order for `tile`, score 128-token tiles by
    `method` ("dense", "oracle", "meanpool"), keep ceil((1 - sparsity) * tiles) key tiles per
    query tile (its own tile always kept), attend, restore frame-major order.
    Returns (out [B, N, H, D], lse [B, N, H] float32).
    """
    _check_operands(q, k, v)
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
        _stream_handle(q.device),
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
) -> tuple[torch.Tensor, torch.Tensor]:
    return _new_outputs(q, out_dtype)
