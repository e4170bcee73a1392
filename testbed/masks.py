"""Tilings and the key-tile selection rules that the quality harness compares.

A tiling is a token order (order[i] = frame-major index of the token at position i) whose 128
consecutive positions form one tile: a tile shape "ptxphxpw" (veda's tile-major order, edge boxes
packed as in the C++ core), "frame-major" (the identity: 128-token blocks of the raster order, as
Radial Attention and Sparse VideoGen's spatial heads use) or "spatial-major" (tokens ordered by
spatial position, then frame: a block holds 128 / T neighbouring positions in every frame, Sparse
VideoGen's layout for temporal heads).

Every rule gives per query tile a score for each key tile; keep_top turns scores into a fixed
budget of key tiles with the query's own tile always kept, so all methods spend the same budget:

    estimated  veda      the profile's distilled estimator: q^ = [mean, max, min](Q_i) P_q + mean(Q_i)
               stats     untrained statistics: s sum_d max(qbar_d kmax_d, qbar_d kmin_d)
               meanpool  s mean(Q_i) . mean(K_j) (VSA / SpargeAttn style; 4x4x8 tiles)
    static     sta       the nearest tiles of a 3D window in tile-grid units (STA style)
               radial    window shrinking with temporal distance (Radial Attention style)
               spatial   same frame first, then neighbouring frames (Sparse VideoGen spatial head)
               temporal  same spatial position in every frame first (Sparse VideoGen temporal head)

The estimated scores are the formulas of veda's C++ core (tile_scoring.cc, baseline_masks.cc,
veda_attention.cc) in torch: the harness needs every index list for tile recall.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import torch

from .tiled_attention import TILE, keep_top

FRAME_MAJOR = "frame-major"
SPATIAL_MAJOR = "spatial-major"
FIXED_TILING = "4x4x8"  # meanpool and sta: VSA's and STA's cube-like tiles
# The tiling of each static rule (sta, radial, and Sparse VideoGen's spatial and temporal masks).
STATIC_TILINGS = {
    "sta": FIXED_TILING,
    "radial": FRAME_MAJOR,
    "spatial": FRAME_MAJOR,
    "temporal": SPATIAL_MAJOR,
}
SVG_SAMPLED_ROWS = 64  # query rows per head on which the spatial/temporal choice is made


@dataclass(frozen=True)
class Tiling:
    name: str
    grid: tuple[int, int, int]
    order: torch.Tensor  # [N] long: frame-major token at each position
    position: torch.Tensor  # [N] long: position of each frame-major token (order's inverse)
    centroid: torch.Tensor  # [T, 3] float64: mean (t, y, x) of each tile's tokens

    @property
    def tiles(self) -> int:
        return self.centroid.shape[0]

    def offset_centroid(self) -> torch.Tensor:
        """[T] mean within-frame raster offset y * W + x of each tile's tokens."""
        return self.centroid[:, 1] * self.grid[2] + self.centroid[:, 2]


@functools.lru_cache(maxsize=32)
def make_tiling(grid: tuple[int, int, int], name: str) -> Tiling:
    t, h, w = grid
    n = t * h * w
    if name == FRAME_MAJOR:
        order = torch.arange(n)
    elif name == SPATIAL_MAJOR:
        position = torch.arange(n)
        order = (position % t) * (h * w) + position // t  # position = spatial * T + frame
    else:
        from veda import parse_tile
        from veda._veda import tile_major_order

        order = torch.tensor(tile_major_order(grid, parse_tile(name)), dtype=torch.long)
    position = torch.empty_like(order)
    position[order] = torch.arange(n)
    coords = torch.stack((order // (h * w), order // w % h, order % w), -1).double()  # [N, 3]
    tile = torch.arange(n) // TILE
    tiles = -(-n // TILE)
    centroid = torch.zeros(tiles, 3, dtype=torch.float64).index_add_(0, tile, coords)
    centroid /= torch.bincount(tile, minlength=tiles).double()[:, None]
    return Tiling(name, grid, order, position, centroid)


# ----- estimated scores: q, k [N, D] of one head in the tiling's order --------------------------


def tile_statistics(x: torch.Tensor) -> torch.Tensor:
    """[T, 3, D]: per tile of 128 rows (the last may be short) the mean, max and min per channel
    (the layout of veda's tile_statistics: kTileMean, kTileMax, kTileMin)."""
    n, dim = x.shape
    tile = torch.arange(n) // TILE
    tiles = -(-n // TILE)
    index = tile[:, None].expand(-1, dim)
    x = x.float()
    total = x.new_zeros(tiles, dim).index_add_(0, tile, x)
    mean = total / torch.bincount(tile, minlength=tiles)[:, None]
    top = x.new_full((tiles, dim), float("-inf")).scatter_reduce_(0, index, x, "amax")
    bottom = x.new_full((tiles, dim), float("inf")).scatter_reduce_(0, index, x, "amin")
    return torch.stack((mean, top, bottom), 1)


def meanpool_scores(q_stats: torch.Tensor, k_stats: torch.Tensor) -> torch.Tensor:
    """[Tq, Tk] s mean(Q_i) . mean(K_j): the estimator at P = 0."""
    scale = 1.0 / math.sqrt(q_stats.shape[-1])
    return scale * q_stats[:, 0] @ k_stats[:, 0].T


def extrema_scores(q_stats: torch.Tensor, k_stats: torch.Tensor) -> torch.Tensor:
    """[Tq, Tk] s sum_d max(qbar_d kmax_d, qbar_d kmin_d), the bound of s qbar . k over the tile's
    keys (veda::method::extrema_bound_logits): the max is qbar_d kmax_d where qbar_d >= 0."""
    scale = 1.0 / math.sqrt(q_stats.shape[-1])
    mean = q_stats[:, 0]
    return scale * (mean.clamp(min=0) @ k_stats[:, 1].T + mean.clamp(max=0) @ k_stats[:, 2].T)


def estimator_scores(
    q_stats: torch.Tensor,  # [Tq, 3, D]
    k_stats: torch.Tensor,  # [Tk, 3, D]
    p_q: torch.Tensor,  # [3D, D]
    p_k: torch.Tensor,  # [3D, D]
) -> torch.Tensor:
    """[Tq, Tk] Veda's distilled logits s q^ . k^ with x^ = feat(X) P + mean(X), feat = the
    statistics flattened to 3D (veda::project_tiles, veda::tile_logits)."""
    scale = 1.0 / math.sqrt(q_stats.shape[-1])
    q_hat = q_stats.flatten(1) @ p_q.float() + q_stats[:, 0]
    k_hat = k_stats.flatten(1) @ p_k.float() + k_stats[:, 0]
    return scale * q_hat @ k_hat.T


# ----- static scores: from the tiling's geometry alone ------------------------------------------


def _ranking(primary: torch.Tensor, secondary: torch.Tensor) -> torch.Tensor:
    """Scores ordering key tiles by an integer primary cost, then a secondary one (lower first)."""
    primary = primary.round()
    return -(primary * (secondary.max() + 1) + secondary)


def sta_scores(tiling: Tiling) -> torch.Tensor:
    """STA-style window: key tiles by Chebyshev distance in tile-grid units (a 3D box around the
    query tile, growing one tile per side), then Euclidean; near the border the box shifts inward
    because the nearest remaining tiles are inside. tiling: a tile shape."""
    from veda import parse_tile

    sides = torch.tensor(parse_tile(tiling.name), dtype=torch.float64)
    cells = tiling.centroid / sides  # [T, 3] tile-grid units
    delta = (cells[:, None] - cells[None]).abs()  # [T, T, 3]
    return _ranking(delta.amax(-1), delta.square().sum(-1))


def radial_scores(tiling: Tiling) -> torch.Tensor:
    """Radial Attention's static rule, at a given budget: at temporal distance d the spatial
    window halves each time d doubles (group g = bit_length(d)), so the cost of key tile j is
    (1 + spatial distance in tiles) * 2^g, where spatial distance is along the raster order
    within a frame, as Radial's band |col - row| <= window; ties go to the nearer frame. The
    density of kept tiles thus decays with temporal distance. Radial's dense first frame
    (attention sink) is left out: at 90-95% its tiles alone would exceed the budget."""
    frame = tiling.centroid[:, 0]
    offset = tiling.offset_centroid()
    distance = (frame[:, None] - frame[None]).abs().round()  # [T, T] frames
    group = torch.where(distance > 0, torch.floor(torch.log2(distance.clamp(min=1))) + 1, 0)
    spatial = ((offset[:, None] - offset[None]).abs() / TILE).round()
    return _ranking((1 + spatial) * torch.pow(2.0, group), distance)


def spatial_scores(tiling: Tiling) -> torch.Tensor:
    """Sparse VideoGen's spatial head: the query's own frame first, then the nearest frames;
    within a frame, the nearest raster offsets."""
    frame = tiling.centroid[:, 0]
    offset = tiling.offset_centroid()
    return _ranking((frame[:, None] - frame[None]).abs(), (offset[:, None] - offset[None]).abs())


def temporal_scores(tiling: Tiling) -> torch.Tensor:
    """Sparse VideoGen's temporal head: in spatial-major order (a block holds the same 128 / T
    raster positions in every frame) the blocks of the nearest positions first, a band around
    the diagonal; ties go to the nearer frames."""
    frame = tiling.centroid[:, 0]
    offset = tiling.offset_centroid()
    return _ranking((offset[:, None] - offset[None]).abs(), (frame[:, None] - frame[None]).abs())


_STATIC_RULES = {
    "sta": sta_scores,
    "radial": radial_scores,
    "spatial": spatial_scores,
    "temporal": temporal_scores,
}


@functools.lru_cache(maxsize=32)
def static_scores(grid: tuple[int, int, int], rule: str) -> torch.Tensor:
    """Scores [T, T] of a static rule (sta, radial, spatial, temporal) in its STATIC_TILINGS
    tiling of `grid`: they depend on the grid alone (read-only: keep_top copies)."""
    return _STATIC_RULES[rule](make_tiling(grid, STATIC_TILINGS[rule]))


def svg_choice(
    q: torch.Tensor,  # [N, D] one head, frame-major
    k: torch.Tensor,  # [N, D]
    v: torch.Tensor,  # [N, D]
    grid: tuple[int, int, int],
    budget: int,
    rows: int = SVG_SAMPLED_ROWS,
    seed: int = 0,
) -> str:
    """Sparse VideoGen's online profiling: on `rows` randomly sampled query rows, the output error
    of the spatial and of the temporal mask (at `budget` tiles) against dense attention; returns
    the better kind ("spatial" on a tie)."""
    n, dim = q.shape
    sample = torch.randperm(n, generator=torch.Generator().manual_seed(seed))[: min(rows, n)]
    logits = q[sample].float() @ k.float().T / math.sqrt(dim)  # [R, N]
    dense = torch.softmax(logits, -1) @ v.float()  # [R, D]
    errors = {}
    for kind in ("spatial", "temporal"):
        tiling = make_tiling(grid, STATIC_TILINGS[kind])
        index = keep_top(static_scores(grid, kind), budget)  # [T, budget]
        kept = torch.zeros(tiling.tiles, tiling.tiles, dtype=torch.bool)
        kept.scatter_(1, index, True)
        tile_of = tiling.position // TILE  # [N] tile of each frame-major token
        allowed = kept[tile_of[sample]][:, tile_of]  # [R, N]
        out = torch.softmax(logits.masked_fill(~allowed, float("-inf")), -1) @ v.float()
        errors[kind] = float((out - dense).square().sum())
    return min(errors, key=lambda kind: (errors[kind], kind != "spatial"))
