"""veda.sparse_attention: the Python entry point over q, k, v in [B, L, H_local, D].

L = T*H*W video tokens of the latent grid (frame-major: index = t*H*W + h*W + w) plus
`text_tokens` text tokens after or before them (joint-attention models). Text is dense in both
directions and top-k selection only touches video->video pairs, computed exactly as:

    video rows:  sparse attention over video keys          -> (O_vv, lse_vv)
                 dense attention over text keys            -> (O_vt, lse_vt)
                 lse = logaddexp(lse_vv, lse_vt)
                 O   = exp(lse_vv - lse) O_vv + exp(lse_vt - lse) O_vt        (float32, then q's dtype)
    text rows:   dense attention over all L keys           -> (O_t, lse_t)

which is softmax attention over the union of the kept video keys and all text keys (the merge is
the standard split-softmax identity; a row with no key at all gets O = 0, lse = -inf).
On CUDA tensors all of it is one torch.ops.veda.sparse_attention call per group of heads (the
SparseAttentionPlan runs the four parts on one stream; O_vv passes through q's dtype before its
merge). On CPU tensors it is composed here: torch.ops.veda.sparse_attention over the video rows,
torch.ops.veda.attention for the two dense parts, and merge_attention in float32.

CPU tensors run the C++ reference (any head dim up to 256; methods dense, oracle, meanpool), one
op call per group of heads sharing tile shape and sparsity. CUDA tensors run the kernels
(bfloat16 or float16, head dim 64 or 128; methods dense, meanpool, veda (the profile's
estimator) and oracle (video tokens only)), one op call per group of heads sharing a sparsity,
each head in its own tile shape.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import torch

from . import ops
from .profile import HeadSettings, LayerProfile, parse_tile

METHODS = ("dense", "oracle", "meanpool", "veda")
TEXT_POSITIONS = ("after", "before")
# The CPU reference takes any head dim; the bound keeps its per-tile panels (128 x D floats) small.
CPU_MAX_HEAD_DIM = 256

GridLike = str | Sequence[int]
TileLike = str | Sequence[int]
ProfileLike = LayerProfile | Sequence[HeadSettings] | None


def sparse_attention(
    q: torch.Tensor,  # [B, L, H_local, D]
    k: torch.Tensor,  # [B, L, H_local, D]
    v: torch.Tensor,  # [B, L, H_local, D]
    *,
    grid: GridLike,
    sparsity: float = 0.9,
    method: str = "meanpool",
    tile: TileLike = (1, 8, 16),
    text_tokens: int = 0,
    text_position: str = "after",
    head_index: Sequence[int] | None = None,
    profile: ProfileLike = None,
    return_lse: bool = False,
    low_memory: bool = True,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Block-sparse self-attention of a video DiT layer.

    Args:
        q, k, v: [B, L, H_local, D], float32, float16 or bfloat16, on one device; L equals
            grid tokens + text_tokens. CUDA tensors: bfloat16 or float16, D = 64 or 128.
        grid: latent grid after patchify, (T, H, W) or "TxHxW".
        sparsity: fraction of key tiles skipped per query tile, in [0, 1); the budget is
            ceil((1 - sparsity) * tiles) and a query tile always keeps its own tile.
        method: tile scoring: "meanpool" (mean-pooled tile logits, the estimator at P = 0),
            "veda" (the profile's estimator p_q, p_k), "oracle" (full attention's
            tile heat: two dense passes, for measurements; on CUDA tensors without text
            tokens) or "dense".
        tile: tile shape (pt, ph, pw) with pt*ph*pw = 128, or "ptxphxpw".
        text_tokens: number of text tokens in L, attended densely both ways.
        text_position: "after" (video first, then text) or "before".
        head_index: global head of each local head (length H_local); under Ulysses sequence
            parallelism rank r holds heads [r*H/P, (r+1)*H/P). Default: 0..H_local-1.
        profile: per-global-head settings (a LayerProfile of veda.Profile, or a sequence of
            HeadSettings); each head then uses its own tile shape and sparsity instead of `tile`
            and `sparsity`, and its cumulative threshold where it has one (methods meanpool and
            veda: the fewest best key tiles holding that share of the estimated mass, at most
            the budget). method "veda" needs a LayerProfile with estimator parameters.
        return_lse: also return lse [B, L, H_local] (float32, natural log).
        low_memory: CUDA: True (default): no tile-major copies of k and v (the attention kernel
            reads their tiles itself, a full box of the grid as one TMA box, as it does q's);
            False: copies of k and v in the call's workspace (2 x the size of k, 1.5 GB at
            Wan2.1-14B 720p), which attention loads by TMA: no faster at Wan 480p or 81-frame
            720p, 2-5% faster at 161 frames (147,600 tokens, 3.0 GB more). Nothing changes on
            the CPU.

    Returns:
        out [B, L, H_local, D] in q's dtype, and lse [B, L, H_local] when return_lse.

    Raises:
        TypeError, ValueError: with a message naming what was given and what is expected.
    """
    _check_qkv(q, k, v)
    _batch, length, heads, dim = q.shape
    ops.check_device(q)
    on_gpu = q.device.type == "cuda"
    if on_gpu:
        ops.check_gpu_operand("q", q)
    elif not 1 <= dim <= CPU_MAX_HEAD_DIM:
        raise ValueError(
            f"q has head dim {dim}; the CPU reference supports head dims 1 to {CPU_MAX_HEAD_DIM} "
            "(the GPU path supports 64 and 128)"
        )
    grid_sides = parse_grid(grid)
    text_tokens = _check_int("text_tokens", text_tokens, minimum=0)
    video_tokens = grid_sides[0] * grid_sides[1] * grid_sides[2]
    if video_tokens + text_tokens != length:
        raise ValueError(
            f"grid {_grid_str(grid_sides)} has {video_tokens} tokens but L = {length} "
            f"(text_tokens = {text_tokens})"
        )
    sparsity = _check_sparsity(sparsity)
    if method not in METHODS:
        raise ValueError(
            f"method {method!r} is not known; expected dense, oracle, meanpool or veda"
        )
    tile_sides = parse_tile(tile)
    if text_position not in TEXT_POSITIONS:
        raise ValueError(
            f"text_position {text_position!r} is not known; expected 'after' or 'before'"
        )
    if not isinstance(low_memory, bool):
        raise TypeError(f"low_memory is a {type(low_memory).__name__}; expected True or False")
    settings, global_heads = _head_settings(
        heads, head_index, profile, HeadSettings(tile_sides, sparsity)
    )
    projections = _estimator(profile, dim, q.device) if method == "veda" else None
    video_attention = functools.partial(
        _video_attention,
        grid=grid_sides,
        settings=settings,
        global_heads=global_heads,
        method=method,
        projections=projections,
        low_memory=low_memory,
    )

    if text_tokens == 0 or on_gpu:
        # CUDA: the plan attends the text rows and keys itself, all L rows in one op call.
        out, lse = video_attention(
            q, k, v, out_dtype=None, text_tokens=text_tokens, text_position=text_position
        )
        return (out, lse) if return_lse else out

    # CPU: the reference takes video rows only; compose the text parts around it.
    if text_position == "after":
        video, text = slice(0, video_tokens), slice(video_tokens, length)
    else:
        text, video = slice(0, text_tokens), slice(text_tokens, length)
    q_video, k_video, v_video = q[:, video], k[:, video], v[:, video]
    k_text, v_text = k[:, text], v[:, text]
    out_vv, lse_vv = video_attention(q_video, k_video, v_video, out_dtype=torch.float32)
    out_vt, lse_vt = torch.ops.veda.attention(q_video, k_text, v_text, torch.float32)
    out_video, lse_video = merge_attention(out_vv, lse_vv, out_vt, lse_vt)
    out_text, lse_text = torch.ops.veda.attention(q[:, text], k, v, None)
    parts = [(out_video.to(q.dtype), lse_video), (out_text, lse_text)]
    if text_position == "before":
        parts.reverse()
    out = torch.cat([parts[0][0], parts[1][0]], dim=1)
    lse = torch.cat([parts[0][1], parts[1][1]], dim=1)
    return (out, lse) if return_lse else out


def merge_attention(
    out_a: torch.Tensor,  # [B, N, H, D]
    lse_a: torch.Tensor,  # [B, N, H]
    out_b: torch.Tensor,  # [B, N, H, D]
    lse_b: torch.Tensor,  # [B, N, H]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Attention over the union of two disjoint key sets from each set's (out, lse), in float32."""
    lse = torch.logaddexp(lse_a, lse_b)
    # Rows with no key in either set (lse = -inf) get weights exp(-inf - 0) = 0, never NaN.
    finite = torch.where(torch.isneginf(lse), torch.zeros_like(lse), lse)
    weight_a = torch.exp(lse_a - finite).unsqueeze(-1)
    weight_b = torch.exp(lse_b - finite).unsqueeze(-1)
    out = out_a.float() * weight_a + out_b.float() * weight_b
    return out, lse


def parse_grid(grid: GridLike) -> tuple[int, int, int]:
    """(T, H, W) from "TxHxW", "T,H,W" or a 3-sequence of positive integers."""
    if isinstance(grid, str):
        try:
            sides = tuple(int(part) for part in grid.replace(",", "x").split("x"))
        except ValueError:
            raise ValueError(
                f"grid '{grid}' is not a grid; expected 'TxHxW' or (T, H, W)"
            ) from None
    elif isinstance(grid, Sequence):
        sides = tuple(grid)
    else:
        raise TypeError(f"grid is a {type(grid).__name__}; expected (T, H, W) or 'TxHxW'")
    if len(sides) != 3 or not all(_is_int(s) for s in sides) or min(sides) < 1:
        raise ValueError(f"grid {grid!r} is not a grid; expected 3 positive integers (T, H, W)")
    return tuple(int(s) for s in sides)  # type: ignore[return-value]


def _video_attention(
    q: torch.Tensor,  # [B, N, H, D]
    k: torch.Tensor,  # [B, N, H, D]
    v: torch.Tensor,  # [B, N, H, D]
    *,
    grid: tuple[int, int, int],
    settings: list[HeadSettings],  # per local head
    global_heads: list[int],  # per local head
    method: str,
    # p_q, p_k [H_global, 3D, D] or their diagonals [H_global, 3, D]
    projections: tuple[torch.Tensor, torch.Tensor] | None,
    out_dtype: torch.dtype | None,
    low_memory: bool = True,
    text_tokens: int = 0,
    text_position: str = "after",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Sparse video self-attention, one op call per group of heads: on the CPU heads sharing tile
    shape and sparsity, on the GPU heads sharing sparsity (the plan takes a tile shape per head).
    With text_tokens (GPU only) q, k, v hold L = N + text_tokens rows and each call covers all of
    them: out [B, L, H, D], lse [B, L, H]."""
    on_gpu = q.device.type == "cuda"
    groups: dict[object, list[int]] = {}
    for local, head in enumerate(settings):
        groups.setdefault(head.sparsity if on_gpu else head, []).append(local)

    def call(
        members: list[int], q_part: torch.Tensor, k_part: torch.Tensor, v_part: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        tiles = [settings[m].tile for m in members]
        if all(t == tiles[0] for t in tiles):
            tiles = tiles[:1]
        head_index = [global_heads[m] for m in members] if projections is not None else None
        p_q, p_k = projections if projections is not None else (None, None)
        thresholds = [settings[m].threshold or 0.0 for m in members]
        if method not in ("meanpool", "veda") or not any(thresholds):
            thresholds = None
        return torch.ops.veda.sparse_attention(
            q_part,
            k_part,
            v_part,
            list(grid),
            [side for t in tiles for side in t],
            method,
            settings[members[0]].sparsity,
            out_dtype,
            head_index,
            p_q,
            p_k,
            text_tokens,
            text_position,
            thresholds,
            low_memory,
        )

    if len(groups) == 1:
        return call(next(iter(groups.values())), q, k, v)
    outs, lses, order = [], [], []
    for members in groups.values():
        index = torch.tensor(members, device=q.device)
        out, lse = call(
            members, q.index_select(2, index), k.index_select(2, index), v.index_select(2, index)
        )
        outs.append(out)
        lses.append(lse)
        order.extend(members)
    inverse = torch.empty(len(order), dtype=torch.long)
    inverse[torch.tensor(order)] = torch.arange(len(order))
    inverse = inverse.to(q.device)
    return torch.cat(outs, dim=2).index_select(2, inverse), torch.cat(lses, dim=2).index_select(
        2, inverse
    )


def _estimator(
    profile: ProfileLike, dim: int, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """The profile's estimator parameters (p_q, p_k) float32 on `device`: [H_global, 3D, D], or
    P's diagonals [H_global, 3, D] where the profile's P is diagonal (LayerProfile.estimator)."""
    projections = (
        profile.estimator(device, compact=True) if isinstance(profile, LayerProfile) else None
    )
    if projections is None:
        raise ValueError(
            "method 'veda' needs a veda.LayerProfile with estimator parameters (p_q, p_k: a "
            "profile JSON with an estimator file); without them use meanpool"
        )
    if projections[0].shape[2] != dim:
        raise ValueError(
            f"the profile's estimator is [H, {projections[0].shape[1]}, {projections[0].shape[2]}]"
            f" per head but q has head dim {dim}; expected [H, {3 * dim}, {dim}]"
        )
    return projections


def _head_settings(
    heads: int,
    head_index: Sequence[int] | None,
    profile: ProfileLike,
    default: HeadSettings,
) -> tuple[list[HeadSettings], list[int]]:
    """The settings and the global head of each local head."""
    if profile is None:
        per_global: Sequence[HeadSettings] | None = None
    elif isinstance(profile, LayerProfile):
        per_global = profile.heads
    elif isinstance(profile, Sequence) and all(isinstance(h, HeadSettings) for h in profile):
        per_global = profile
    else:
        raise TypeError(
            f"profile is a {type(profile).__name__}; expected a veda.LayerProfile, a sequence of "
            "veda.HeadSettings, or None"
        )
    if head_index is None:
        global_heads = list(range(heads))
    else:
        if isinstance(head_index, torch.Tensor):
            head_index = head_index.tolist()
        if not isinstance(head_index, Sequence) or not all(_is_int(h) for h in head_index):
            raise TypeError(
                "head_index must be a sequence of integers (the global head of each local head)"
            )
        if len(head_index) != heads:
            raise ValueError(
                f"head_index has {len(head_index)} entries but q has {heads} heads (H_local)"
            )
        if len(set(head_index)) != heads or min(head_index) < 0:
            raise ValueError(f"head_index {list(head_index)} must list distinct non-negative heads")
        global_heads = [int(h) for h in head_index]
    settings: list[HeadSettings] = []
    for local, global_head in enumerate(global_heads):
        if per_global is None:
            settings.append(default)
            continue
        if global_head >= len(per_global):
            raise ValueError(
                f"head_index maps local head {local} to global head {global_head}, but the "
                f"profile has {len(per_global)} heads"
            )
        settings.append(per_global[global_head])
    return settings, global_heads


def _check_qkv(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> None:
    for name, tensor in (("q", q), ("k", k), ("v", v)):
        if not isinstance(tensor, torch.Tensor):
            raise TypeError(
                f"{name} is a {type(tensor).__name__}; expected a torch.Tensor [B, L, H, D]"
            )
        if tensor.dim() != 4:
            raise ValueError(
                f"{name} has shape {list(tensor.shape)}; expected [B, L, H, D] (4 dims, the "
                "diffusers layout)"
            )
        if tensor.dtype not in ops.DTYPE_CODES:
            raise TypeError(
                f"{name} has dtype {tensor.dtype}; expected float32, float16 or bfloat16"
            )
    for name, tensor in (("k", k), ("v", v)):
        if tensor.shape != q.shape:
            raise ValueError(
                f"{name} has shape {list(tensor.shape)} but q has {list(q.shape)}; self-attention "
                "needs q, k, v of one shape [B, L, H, D]"
            )
        if tensor.dtype != q.dtype:
            raise TypeError(
                f"{name} has dtype {tensor.dtype} but q has {q.dtype}; expected one dtype"
            )
        if tensor.device != q.device:
            raise ValueError(f"{name} is on {tensor.device} but q is on {q.device}")
    if q.numel() == 0:
        raise ValueError(f"q has shape {list(q.shape)}; expected every size positive")


def _check_sparsity(sparsity: float) -> float:
    if not isinstance(sparsity, (int, float)) or isinstance(sparsity, bool):
        raise TypeError(f"sparsity is a {type(sparsity).__name__}; expected a float in [0, 1)")
    if not 0.0 <= sparsity < 1.0:
        raise ValueError(f"sparsity {sparsity} is outside [0, 1)")
    return float(sparsity)


def _check_int(name: str, value: int, minimum: int) -> int:
    if not _is_int(value):
        raise TypeError(f"{name} is a {type(value).__name__}; expected an integer")
    if value < minimum:
        raise ValueError(f"{name} is {value}; expected at least {minimum}")
    return int(value)


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _grid_str(grid: tuple[int, int, int]) -> str:
    return "x".join(str(side) for side in grid)
