// Tile selection of every (batch, head) from per-tile statistics: the estimator's descriptors
//   q^_i = [mean, max, min](Q_i) P_q + mean(Q_i),  k^_j likewise with P_k,
// logits z[i, j] = scale q^_i . k^_j, then the top `budget` key tiles per query tile (own tile
// kept), or per head the cumulative threshold capped at the budget, written as the block index
// (block_index.h). The GPU path's selection, with this CPU
// reference; the per-head building blocks are in tile_scoring.h and selection.h.
#pragma once

#include <cstdint>
#include <vector>

namespace veda {

// Row length of projected descriptors as the GPU path stores them: D rounded up to 16, zeros
// past D (so the logits read whole 16-channel slices).
constexpr std::int64_t descriptor_width(std::int64_t dim) { return (dim + 15) / 16 * 16; }

struct TileSelectionParams {
  const float* q_stats = nullptr;  // [B, H, Tq, 3, D]
  const float* k_stats = nullptr;  // [B, H, Tk, 3, D]
  // Or the descriptors already projected, [B, H, T, descriptor_width(D)] (tile_gather_cuda makes
  // them for diagonal or no projections); the statistics and that projection are then not read.
  const float* q_descriptors = nullptr;
  const float* k_descriptors = nullptr;
  // Estimator parameters per global head, [H_global, 3D, D]; nullptr = 0 (mean pooling).
  const float* q_projection = nullptr;
  const float* k_projection = nullptr;
  // The projections hold only P's diagonal blocks' diagonals, [H_global, 3, D] (P[c D + d, d]:
  // the estimator's default structure); the projection is then elementwise.
  bool diagonal_projection = false;
  // [H]: global head of each local head (sequence-parallel head splits); nullptr = identity.
  const std::int32_t* global_head = nullptr;
  std::int64_t batch = 0, heads = 0, q_tiles = 0, k_tiles = 0, dim = 0;
  float scale = 0.0f;
  bool keep_own_tile = true;
  std::int64_t budget = 0;  // key tiles per query tile, 1..Tk
  // [H] per local head, or nullptr: a value in (0, 1] selects the fewest best tiles whose softmax
  // mass reaches it, capped at `budget` (select_cumulative, selection.h); 0 the fixed budget.
  const double* thresholds = nullptr;
  std::int32_t* counts = nullptr;   // [B, H, Tq]
  std::int32_t* indices = nullptr;  // [B, H, Tq, budget], ascending, padded with kPaddedSlot
  // GPU only: scratch of tile_selection_workspace_bytes(params) bytes for the descriptors it
  // projects (none when both are given).
  void* workspace = nullptr;

  void validate() const;
};

// Pointers are host memory here (thresholds are checked to be 0 or in (0, 1]). Ties rank the
// lower tile index first.
void tile_selection_cpu(const TileSelectionParams& params);

// The logits tile_selection_cpu ranks for (batch b, local head h): [Tq, Tk], host memory.
std::vector<float> tile_selection_logits(const TileSelectionParams& params, std::int64_t b,
                                         std::int64_t h);

}  // namespace veda
