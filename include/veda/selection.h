// Selection of key tiles per query tile from a [Tq, Tk] score matrix of one head, written into
// rows (b, h, *) of a BlockIndex. Higher score = more important; ties go to the lower tile index,
// so results are deterministic. The query tile's own tile (key tile i for query tile i, when
// i < Tk) is always kept when keep_own_tile is set and counts towards the budget.
#pragma once

#include <cstdint>
#include <span>

#include "veda/block_index.h"

namespace veda {

// Fixed budget k = ceil((1 - sparsity) * Tk), at least 1. Throws unless sparsity is in [0, 1).
std::int64_t budget_for_sparsity(double sparsity, std::int64_t k_tiles);

// The top index.budget key tiles of every row.
void select_top_k(std::span<const float> scores, bool keep_own_tile, BlockIndex& index,
                  std::int64_t b, std::int64_t h);

// Per row, the fewest highest-scoring tiles whose softmax(scores row) mass reaches threshold
// (in (0, 1]), capped at index.budget. Scores are logits (use log of a mass map for the oracle).
void select_cumulative(std::span<const float> scores, double threshold, bool keep_own_tile,
                       BlockIndex& index, std::int64_t b, std::int64_t h);

}  // namespace veda
