"""Dense attention of one head measured in 128-token tiles, and block-sparse outputs from it.

One pass over the query tiles of a tiling (a token order, each 128 consecutive positions one tile)
gives the oracle's maps, the dense output and the output of any key-tile mask at once. Per query
row r and key tile j it keeps the row's largest logit in the tile m[r, j], the sum of
exp(logit - m[r, j]) over the tile Z[r, j] and the same sum of exp(...) v, U[r, j] [D]; then for
a kept set K of key tiles

    O_K(r) = sum_{j in K} exp(m[r, j] - M) U[r, j] / sum_{j in K} exp(m[r, j] - M) Z[r, j]

(M = max_{j in K} m[r, j]) is exactly softmax attention over the keys of K: block-sparse attention
with no extra pass per mask. Dense attention is K = all tiles. All in float32, on q's device.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

TILE = 128


@dataclass
class MaskOutcome:
    """What a mask kept and how far its output is from dense, summed over the head's rows."""

    kept_mass: float  # sum over query rows of the attention probability in kept tiles
    error2: float  # ||O_sparse - O_dense||_F^2


@dataclass
class TiledAttention:
    """One head in one tiling: the oracle's maps and every mask's outcome."""

    heat: torch.Tensor  # [T, T] max over the tile pair of P (the paper's teacher)
    mass: torch.Tensor  # [T, T] sum of P over the pair / rows of query tile i (rows sum to 1)
    dense_norm2: float  # ||O_dense||_F^2
    rows: int  # real query rows (N)
    outcomes: dict[str, MaskOutcome]


def keep_top(scores: torch.Tensor, budget: int, first: int = 0) -> torch.Tensor:
    """Per query tile the `budget` key tiles of highest score, its own tile always among them:
    index [Tq, budget], ascending. scores [Tq, Tk] are the rows of query tiles first, first + 1,
    ... (self-attention: query tile i's own key tile is i). Ties go to the lower key tile (a
    stable sort), so static rankings given as scores are deterministic."""
    scores = scores.float().clone()
    rows = torch.arange(scores.shape[0], device=scores.device)
    scores[rows, rows + first] = float("inf")
    order = torch.sort(scores, dim=-1, descending=True, stable=True).indices
    return order[:, :budget].sort(dim=-1).values


def budget_for(sparsity: float, tiles: int) -> int:
    """ceil((1 - sparsity) * tiles) key tiles per query tile, at least 1 (veda::budget_for_sparsity,
    with its epsilon: (1 - 0.9) * 10 must give 1, not 2)."""
    return min(tiles, max(1, math.ceil((1.0 - sparsity) * tiles - 1e-9)))


@torch.no_grad()
def tiled_attention(
    q: torch.Tensor,  # [N, D] one head, frame-major tokens
    k: torch.Tensor,  # [N, D]
    v: torch.Tensor | None,  # [N, D]; None: maps and kept mass only (no outputs)
    order: torch.Tensor,  # [N] long: frame-major index of the token at each tiling position
    masks: dict[str, torch.Tensor],  # name -> index [T, budget] of kept key tiles per query tile
    oracle_budgets: tuple[int, ...] = (),
    chunk_tiles: int = 16,
) -> TiledAttention:
    """Measures `masks` (and, for each budget in oracle_budgets, the oracles "heat@k" and
    "mass@k": top-k by tile heat and by tile mass, own tile kept) against dense attention."""
    n, dim = q.shape
    tiles = -(-n // TILE)
    padded = tiles * TILE
    scale = 1.0 / math.sqrt(dim)
    # [N', D] in the tiling's order; a short last tile gets zero keys whose logits are set to
    # -inf below.
    qt, kt = q.float()[order], _padded(k.float()[order], padded)
    v_tiles = None if v is None else _padded(v.float()[order], padded).view(tiles, TILE, dim)
    k_transposed = (kt * scale).T.contiguous()  # [D, N'], scale folded in
    device = q.device
    heat = torch.zeros(tiles, tiles, device=device)
    mass = torch.zeros(tiles, tiles, device=device)
    kept = dict.fromkeys(
        [*masks, *(f"{kind}@{b}" for b in oracle_budgets for kind in ("heat", "mass"))], 0.0
    )
    error2 = dict(kept)
    dense_norm2 = 0.0
    for first in range(0, tiles, chunk_tiles):
        last = min(tiles, first + chunk_tiles)
        rows = min(n, last * TILE) - first * TILE
        logits = qt[first * TILE : first * TILE + rows] @ k_transposed  # [R, N']
        if padded > n:
            logits[:, n:] = float("-inf")
        logits = logits.view(rows, tiles, TILE)
        top = logits.amax(-1)  # m [R, T]
        weights = logits.sub_(top.unsqueeze(-1)).exp_()  # exp(logit - m) [R, T, 128]
        sums = weights.sum(-1)  # Z [R, T]
        lse = torch.logsumexp(top + sums.log(), dim=-1, keepdim=True)  # [R, 1]
        peak = torch.exp(top - lse)  # [R, T]: max of P over the row's keys in tile j
        row_mass = peak * sums  # [R, T]: P mass of the row in tile j (rows sum to 1)

        # The chunk's query tiles: rows padded with zeros to whole tiles (zeros change no max
        # of probabilities and no sum).
        tile_rows = torch.zeros((last - first) * TILE, tiles, device=device)
        tile_rows[:rows] = peak
        heat[first:last] = tile_rows.view(-1, TILE, tiles).amax(1)
        tile_rows[:rows] = row_mass
        counts = torch.full((last - first,), float(TILE), device=device)
        counts[-1] = rows - (last - first - 1) * TILE
        mass[first:last] = tile_rows.view(-1, TILE, tiles).sum(1) / counts[:, None]

        chunk_masks = {name: index[first:last] for name, index in masks.items()}
        for budget in oracle_budgets:
            chunk_masks[f"heat@{budget}"] = keep_top(heat[first:last], budget, first)
            chunk_masks[f"mass@{budget}"] = keep_top(mass[first:last], budget, first)
        row_tile = torch.arange(rows, device=device) // TILE
        names = list(chunk_masks)
        # Row r's output under mask i is sum_j combine[r, i, j] U[r, j] / norm[r, i], with
        # combine = exp(m - max of m over the kept tiles) on kept tiles, 0 elsewhere; the last
        # slot is dense attention (every tile weighted exp(m - lse), norm 1).
        combine = torch.zeros(rows, len(names) + 1, tiles, device=device)  # [R, M + 1, T]
        norm = torch.ones(rows, len(names) + 1, device=device)
        combine[:, -1] = peak
        for slot, name in enumerate(names):
            chosen = chunk_masks[name][row_tile]  # [R, budget]
            kept[name] += float(row_mass.gather(1, chosen).sum())
            chosen_top = top.gather(1, chosen)  # [R, budget]
            shift = torch.exp(chosen_top - chosen_top.amax(1, keepdim=True))
            combine[:, slot].scatter_(1, chosen, shift)
            norm[:, slot] = (shift * sums.gather(1, chosen)).sum(1)
        if v_tiles is None:
            continue
        values = torch.einsum("rtc,tcd->rtd", weights, v_tiles)  # U [R, T, D]
        outs = torch.bmm(combine, values) / norm.unsqueeze(-1)  # [R, M + 1, D]
        dense = outs[:, -1]
        dense_norm2 += float(dense.square().sum())
        errors = (outs[:, :-1] - dense.unsqueeze(1)).square().sum((0, 2))  # [M]
        for slot, name in enumerate(names):
            error2[name] += float(errors[slot])
    outcomes = {name: MaskOutcome(kept[name], error2[name]) for name in kept}
    return TiledAttention(heat, mass, dense_norm2, n, outcomes)


def _padded(x: torch.Tensor, rows: int) -> torch.Tensor:
    """x [N, D] with zero rows appended up to `rows`."""
    return x if x.shape[0] == rows else torch.cat([x, x.new_zeros(rows - x.shape[0], x.shape[1])])
