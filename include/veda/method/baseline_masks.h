// The two untrained baselines of the demo beside mean pooling (the core's P = 0 estimator).
//
// Extrema score ("stats", TripPool untrained): the mean query of tile i against the per-channel
// range of key tile j, z[i, j] = s sum_d max(qbar_d kmax_d, qbar_d kmin_d). It is the exact upper
// bound of s qbar_i . k_c over the keys c of tile j (Quest's bound with the tile-mean query), so a
// single large key (a sink) raises its tile's score where the mean would dilute it 128-fold.
//
// Static window ("window", STA-style): per query tile the `budget` key tiles whose token-centroids
// are nearest to its own in the grid (Euclidean, ties to the lower tile index): a fixed local 3D
// neighbourhood that uses no q or k at all.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "veda/block_index.h"
#include "veda/tile_layout.h"

namespace veda::method {

// q_stats [Tq, 3, D], k_stats [Tk, 3, D] from tile_statistics. Returns [Tq, Tk].
std::vector<float> extrema_bound_logits(std::span<const float> q_stats,
                                        std::span<const float> k_stats, std::int64_t dim,
                                        float scale);

// Centroid (t, y, x) of each tile of `shape` on `grid` (packed edge tiles included): [T, 3].
std::vector<double> tile_centroids(const Grid& grid, const TileShape& shape);

// Fills rows (b, h) of index with the index.budget nearest key tiles per query tile (self
// attention: query and key tiles are the same tiles).
void select_window(const Grid& grid, const TileShape& shape, BlockIndex& index, std::int64_t b,
                   std::int64_t h);

}  // namespace veda::method
