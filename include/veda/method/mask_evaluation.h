// Quality of a Veda attention result against the oracle and dense attention of the same input:
// per head, one multi-shape oracle pass in the head's tile shape (lse, heat, mass, dense output).
#pragma once

#include <cstdint>
#include <optional>

#include "veda/method/profile.h"
#include "veda/method/veda_attention.h"
#include "veda/tokens.h"

namespace veda::method {

struct MaskQuality {
  double tile_recall = 0;  // mean over (b, h) of tile_recall vs top-k by heat at the same budget
  double mass_recall = 0;  // mean over (b, h) of mass_recall
  double rel_l2 = 0;       // of the whole output [B, N, H, D] against dense
  double cosine = 0;
};

MaskQuality evaluate_veda_attention(const TokensView& q, const TokensView& k, const TokensView& v,
                                    const Grid& grid, const LayerProfile& layer,
                                    const VedaAttentionResult& result,
                                    std::optional<double> sparsity = std::nullopt,
                                    bool keep_own_tile = true);

}  // namespace veda::method
