// Sparse attention of a whole layer on the CPU, per head: reorder tokens to tile-major order,
// score tiles, select, run block-sparse attention, restore frame-major order.
#pragma once

#include <cstdint>
#include <span>
#include <string_view>
#include <vector>

#include "veda/block_index.h"
#include "veda/tile_layout.h"
#include "veda/tokens.h"

namespace veda {

enum class MaskMethod {
  kDense,      // every tile
  kOracle,     // top-k by the oracle's tile heat (two dense passes)
  kMeanPool,   // top-k by mean-pooled tile logits (P = 0)
  kEstimator,  // "veda": top-k by the distilled estimator's logits (P_q, P_k per head)
};
std::string_view mask_method_name(MaskMethod method);
// "dense", "oracle", "meanpool", "veda"; throws naming the text and the choices otherwise.
MaskMethod parse_mask_method(std::string_view text);

struct SparseAttentionConfig {
  MaskMethod method = MaskMethod::kDense;
  double sparsity = 0.0;  // target fraction of skipped key tiles, in [0, 1)
  Grid grid;              // must hold N tokens; 1 x 1 x N is a plain sequence
  TileShape tile;
  bool keep_own_tile = true;
  // In (0, 1]: per row the fewest best tiles whose softmax(score) mass reaches it, capped at the
  // sparsity's budget (select_cumulative); 0: the fixed budget.
  double threshold = 0.0;
  // Method veda: P_q and P_k of every head of q, float32 [H, 3D, D] each (tile_scoring.h).
  std::span<const float> q_projection{}, k_projection{};
};

struct SparseAttentionResult {
  std::vector<float> out;  // [B, N, H, D], frame-major like the input
  std::vector<float> lse;  // [B, N, H]
  BlockIndex index;        // tiles in each head's tile-major order
};

// q, k, v: [B, N, H, D] with the same N (self-attention over the video grid).
SparseAttentionResult sparse_attention_cpu(const TokensView& q, const TokensView& k,
                                           const TokensView& v,
                                           const SparseAttentionConfig& config);

}  // namespace veda
