// Head-aware tiling (DESIGN.md section 2): per head, the tile shape whose oracle mask at the target
// sparsity reconstructs the dense output best,
//   err(shape) = ||O_full - O_sparse(shape, oracle top-k by heat)||_F^2 / ||O_full||_F^2,
// optionally with at most `max_shapes` distinct shapes per layer (one gather per shape group).
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "veda/block_index.h"
#include "veda/method/multi_shape_oracle.h"
#include "veda/method/profile.h"

namespace veda::method {

struct SquaredError {
  double error = 0;  // ||O_full - O_sparse||^2
  double norm = 0;   // ||O_full||^2
  double relative() const { return norm > 0 ? error / norm : 0.0; }
};

// One head, any mask: q, k, v and dense_out frame-major [N, D]; order the tile-major order the
// index refers to. Sparse output by attend_head_two_pass.
SquaredError mask_output_error(std::span<const float> q, std::span<const float> k,
                               std::span<const float> v, std::int64_t dim, float scale,
                               std::span<const std::int32_t> order, const BlockIndex& index,
                               std::span<const float> dense_out);

// One head, one candidate: q, k, v frame-major [N, D]; dense_out frame-major [N, D] (the
// oracle's out). Sparse output by attend_head_two_pass on the shape's tile-major order.
SquaredError oracle_mask_error(std::span<const float> q, std::span<const float> k,
                               std::span<const float> v, std::int64_t dim, float scale,
                               const ShapeOracle& shape, std::span<const float> dense_out,
                               double sparsity, bool keep_own_tile);

// errors[h][s]: relative error of head h with candidate s (all rows the same length). Returns
// per head the candidate index minimising the sum over heads, using at most max_shapes distinct
// candidates (0 or >= candidates: no limit, each head its own best). Exhaustive over subsets of
// size max_shapes (35 subsets for 7 candidates and 3 shapes).
std::vector<int> choose_tile_shapes(const std::vector<std::vector<double>>& errors, int max_shapes);

// Mean over a calibrated layer's heads of the search error (rel-MSE, from the heads'
// calibration["err_<shape>"]): with each head's chosen shape, and with the best single shape for
// all heads (the paper's comparison: 0.0532 head-aware vs 0.0567 best single shape).
struct TilingSummary {
  double head_aware = 0;
  double best_single = 0;
  std::string best_single_shape;
};
// Throws when a head lacks the err_ entries (a profile calibrated without search samples).
TilingSummary summarize_tiling(const LayerProfile& layer);

}  // namespace veda::method
