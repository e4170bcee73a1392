#include "veda/method/mask_evaluation.h"

#include <algorithm>
#include <cmath>

#include "veda/error.h"
#include "veda/method/multi_shape_oracle.h"
#include "veda/metrics.h"
#include "veda/selection.h"

namespace veda::method {

MaskQuality evaluate_veda_attention(const TokensView& q, const TokensView& k, const TokensView& v,
                                    const Grid& grid, const LayerProfile& layer,
                                    const VedaAttentionResult& result,
                                    std::optional<double> sparsity, bool keep_own_tile) {
  const std::int64_t batch = q.batch, n = q.tokens, heads = q.heads, dim = q.dim;
  VEDA_CHECK(static_cast<std::int64_t>(result.out.size()) == batch * n * heads * dim,
             "attention result of ", result.out.size(), " floats for q of ",
             batch * n * heads * dim);
  const std::int64_t tiles = tile_count(n);
  const float scale = 1.0f / std::sqrt(static_cast<float>(dim));
  MaskQuality quality;
  double error = 0, norm = 0, dot = 0, out_norm = 0;
  for (std::int64_t b = 0; b < batch; ++b) {
    for (std::int64_t h = 0; h < heads; ++h) {
      const HeadProfile& head = layer.heads.at(h);
      const std::vector<float> qh = load_head(q, b, h), kh = load_head(k, b, h),
                               vh = load_head(v, b, h);
      const TileShape shapes[] = {head.tile};
      const MultiShapeOracle oracle = multi_shape_oracle(qh, kh, vh, dim, scale, grid, shapes);
      const TileMaps& maps = oracle.shapes[0].maps;
      BlockIndex reference(1, 1, tiles, tiles,
                           budget_for_sparsity(sparsity.value_or(head.sparsity), tiles));
      select_top_k(maps.heat, keep_own_tile, reference, 0, 0);
      // This head's rows of the result, as a 1 x 1 index of the result's budget.
      BlockIndex selected(1, 1, tiles, tiles, result.index.budget);
      for (std::int64_t i = 0; i < tiles; ++i) {
        selected.count(0, 0, i) = result.index.view().count(b, h, i);
        std::copy_n(result.index.view().row(b, h, i), result.index.budget, selected.row(0, 0, i));
      }
      quality.tile_recall += tile_recall(selected.view(), reference.view());
      quality.mass_recall += mass_recall(selected.view(), 0, 0, maps.mass);
      for (std::int64_t t = 0; t < n; ++t) {
        const float* got = result.out.data() + ((b * n + t) * heads + h) * dim;
        const float* want = oracle.out.data() + t * dim;
        for (std::int64_t d = 0; d < dim; ++d) {
          error +=
              (static_cast<double>(got[d]) - want[d]) * (static_cast<double>(got[d]) - want[d]);
          norm += static_cast<double>(want[d]) * want[d];
          dot += static_cast<double>(got[d]) * want[d];
          out_norm += static_cast<double>(got[d]) * got[d];
        }
      }
    }
  }
  const auto rows = static_cast<double>(batch * heads);
  quality.tile_recall /= rows;
  quality.mass_recall /= rows;
  quality.rel_l2 = norm > 0 ? std::sqrt(error / norm) : 0.0;
  quality.cosine = norm > 0 && out_norm > 0 ? dot / std::sqrt(norm * out_norm) : 0.0;
  return quality;
}

}  // namespace veda::method
