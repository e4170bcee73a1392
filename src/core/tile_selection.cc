#include "veda/tile_selection.h"

#include <algorithm>
#include <cmath>
#include <span>
#include <vector>

#include "veda/block_index.h"
#include "veda/error.h"
#include "veda/selection.h"
#include "veda/tile_scoring.h"

namespace veda {

void TileSelectionParams::validate() const {
  VEDA_CHECK((q_stats != nullptr || q_descriptors != nullptr) &&
                 (k_stats != nullptr || k_descriptors != nullptr) && counts != nullptr &&
                 indices != nullptr,
             "tile selection needs q and k statistics (or descriptors) and the counts and indices "
             "outputs");
  VEDA_CHECK(batch > 0 && heads > 0 && q_tiles > 0 && k_tiles > 0 && dim > 0,
             "tile selection over ", batch, " batches, ", heads, " heads, ", q_tiles, " x ",
             k_tiles, " tiles, head dim ", dim, "; expected every size positive");
  VEDA_CHECK(budget >= 1 && budget <= k_tiles, "tile selection budget ", budget, " is outside [1, ",
             k_tiles, "] (the number of key tiles)");
  VEDA_CHECK(std::isfinite(scale) && scale != 0.0f, "softmax scale ", scale,
             " is not a finite non-zero number");
}

std::vector<float> tile_selection_logits(const TileSelectionParams& params, std::int64_t b,
                                         std::int64_t h) {
  const std::int64_t dim = params.dim, head = b * params.heads + h;
  const std::int64_t features = params.diagonal_projection ? 3 * dim : 3 * dim * dim;
  const std::int64_t global = params.global_head ? params.global_head[h] : h;
  const auto projection = [&](const float* all) {
    return all ? std::span<const float>(all + global * features, features)
               : std::span<const float>();
  };
  const auto stats = [&](const float* all, std::int64_t tiles) {
    return std::span<const float>(all + head * tiles * 3 * dim, tiles * 3 * dim);
  };
  // Descriptors given: [tiles, descriptor_width(D)] rows of this head, cut to [tiles, D].
  const auto given = [&](const float* all, std::int64_t tiles) {
    const std::int64_t width = descriptor_width(dim);
    std::vector<float> rows(static_cast<std::size_t>(tiles * dim));
    for (std::int64_t t = 0; t < tiles; ++t) {
      std::copy_n(all + (head * tiles + t) * width, dim, rows.begin() + t * dim);
    }
    return rows;
  };
  const std::vector<float> q_hat = params.q_descriptors
                                       ? given(params.q_descriptors, params.q_tiles)
                                       : project_tiles(stats(params.q_stats, params.q_tiles), dim,
                                                       projection(params.q_projection));
  const std::vector<float> k_hat = params.k_descriptors
                                       ? given(params.k_descriptors, params.k_tiles)
                                       : project_tiles(stats(params.k_stats, params.k_tiles), dim,
                                                       projection(params.k_projection));
  return tile_logits(q_hat, k_hat, dim, params.scale);
}

void tile_selection_cpu(const TileSelectionParams& params) {
  params.validate();
  BlockIndex index(1, 1, params.q_tiles, params.k_tiles, params.budget);
  for (std::int64_t b = 0; b < params.batch; ++b) {
    for (std::int64_t h = 0; h < params.heads; ++h) {
      const std::int64_t head = b * params.heads + h;
      const std::vector<float> logits = tile_selection_logits(params, b, h);
      const double threshold = params.thresholds ? params.thresholds[h] : 0.0;
      VEDA_CHECK(threshold == 0.0 || (threshold > 0.0 && threshold <= 1.0), "head ", h,
                 " has cumulative threshold ", threshold, "; expected 0 (fixed budget) or (0, 1]");
      if (threshold > 0.0) {
        select_cumulative(logits, threshold, params.keep_own_tile, index, 0, 0);
      } else {
        select_top_k(logits, params.keep_own_tile, index, 0, 0);
      }
      std::copy(index.counts.begin(), index.counts.end(), params.counts + head * params.q_tiles);
      std::copy(index.indices.begin(), index.indices.end(),
                params.indices + head * params.q_tiles * params.budget);
    }
  }
}

}  // namespace veda
