// Sparse attention with a Veda profile (what `veda attention --method veda` runs), per head:
// reorder tokens to the head's tile-major order, tile statistics of q and k, estimator
// descriptors and logits, selection (top-k at the sparsity, or the cumulative threshold capped at
// that budget), block-sparse attention, inverse reorder.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <vector>

#include "veda/block_index.h"
#include "veda/method/profile.h"
#include "veda/tile_layout.h"
#include "veda/tokens.h"

namespace veda::method {

// Writes the selected key tiles of one head into rows (b, h) of index. q_tiled, k_tiled: the
// head's float32 [N, D] in its tile-major order; index.budget must be the budget of `sparsity`.
void veda_select_head(std::span<const float> q_tiled, std::span<const float> k_tiled,
                      std::int64_t dim, float scale, const HeadProfile& head, bool keep_own_tile,
                      BlockIndex& index, std::int64_t b, std::int64_t h);

enum class AttentionKernel {
  kReference,  // veda::attend_head, the core's CPU reference
  kTwoPass,    // attend_head_two_pass (same result to float32 rounding, faster)
};

struct VedaAttentionResult {
  std::vector<float> out;  // [B, N, H, D] frame-major
  std::vector<float> lse;  // [B, N, H]
  BlockIndex index;        // rows in each head's own tile-major order
};

// q, k, v [B, N, H, D] over grid; layer.heads must have H entries with the profile's head dim.
// sparsity, when set, replaces every head's profile sparsity.
VedaAttentionResult veda_attention_cpu(const TokensView& q, const TokensView& k,
                                       const TokensView& v, const Grid& grid,
                                       const LayerProfile& layer,
                                       std::optional<double> sparsity = std::nullopt,
                                       AttentionKernel kernel = AttentionKernel::kReference,
                                       bool keep_own_tile = true);

}  // namespace veda::method
