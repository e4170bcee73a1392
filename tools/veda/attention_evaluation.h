// Shared by `veda attention` and `veda demo`: timed runs of sparse_attention_cpu and the quality
// of a selection against dense attention and against the oracle (DESIGN.md section 3,
// "Evaluation").
#pragma once

#include <cstdint>
#include <vector>

#include "veda/block_index.h"
#include "veda/sparse_attention.h"
#include "veda/tokens.h"

namespace veda::cli {

struct TimedResult {
  SparseAttentionResult result;
  double seconds = 0.0;  // wall time of the sparse_attention_cpu call
};

TimedResult run_timed(const TokensView& q, const TokensView& k, const TokensView& v,
                      const SparseAttentionConfig& config);

// The oracle's tile mass [Tq, Tk] of every head, indexed [b * H + h], in the tile-major order of
// (config.grid, config.tile), i.e. the order of SparseAttentionResult::index. Costs two dense
// passes over Q K^T per head, like the oracle selection itself.
std::vector<std::vector<float>> oracle_tile_mass(const TokensView& q, const TokensView& k,
                                                 const SparseAttentionConfig& config);

// Mean over heads of mass_recall: the share of the oracle's attention mass that the selected
// tiles cover (1 for the dense mask).
double mean_mass_recall(const BlockIndex& selected, const std::vector<std::vector<float>>& mass);

}  // namespace veda::cli
