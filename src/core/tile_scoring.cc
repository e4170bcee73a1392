#include "veda/tile_scoring.h"

#include "veda/error.h"
#include "veda/tile_statistics.h"

namespace veda {

std::vector<float> project_tiles(std::span<const float> stats, std::int64_t dim,
                                 std::span<const float> projection) {
  const auto features = static_cast<std::size_t>(3 * dim);
  VEDA_CHECK(dim > 0 && !stats.empty() && stats.size() % features == 0, "tile statistics of ",
             stats.size(), " floats with head dim ", dim, "; expected [T, 3, D]");
  const bool full = projection.size() == features * static_cast<std::size_t>(dim);
  VEDA_CHECK(projection.empty() || full || projection.size() == features, "projection has ",
             projection.size(),
             " floats; expected [3D, D] = ", features * static_cast<std::size_t>(dim),
             ", its diagonal [3, D] = ", features, ", or none for P = 0");
  const auto tiles = static_cast<std::int64_t>(stats.size() / features);
  std::vector<float> descriptors(static_cast<std::size_t>(tiles * dim));
#pragma omp parallel for schedule(static)
  for (std::int64_t i = 0; i < tiles; ++i) {
    const float* feature = stats.data() + i * 3 * dim;
    float* out = descriptors.data() + i * dim;
    for (std::int64_t d = 0; d < dim; ++d) out[d] = feature[kTileMean * dim + d];
    if (projection.empty()) continue;
    if (!full) {  // out[d] += sum_c feature[c D + d] * P[c D + d, d], in the full sum's order
      for (std::int64_t f = 0; f < 3 * dim; ++f) out[f % dim] += feature[f] * projection[f];
      continue;
    }
    // out[e] += sum_f feature[f] * P[f, e]: rows of P stream contiguously.
    for (std::int64_t f = 0; f < 3 * dim; ++f) {
      const float weight = feature[f];
      const float* p_row = projection.data() + f * dim;
      for (std::int64_t e = 0; e < dim; ++e) out[e] += weight * p_row[e];
    }
  }
  return descriptors;
}

std::vector<float> tile_logits(std::span<const float> q_hat, std::span<const float> k_hat,
                               std::int64_t dim, float scale) {
  const auto row = static_cast<std::size_t>(dim);
  VEDA_CHECK(dim > 0 && !q_hat.empty() && !k_hat.empty() && q_hat.size() % row == 0 &&
                 k_hat.size() % row == 0,
             "tile logits of ", q_hat.size(), " and ", k_hat.size(), " floats with head dim ", dim,
             "; expected [Tq, D] and [Tk, D]");
  const auto q_tiles = static_cast<std::int64_t>(q_hat.size() / row);
  const auto k_tiles = static_cast<std::int64_t>(k_hat.size() / row);
  std::vector<float> logits(static_cast<std::size_t>(q_tiles * k_tiles));
#pragma omp parallel for schedule(static)
  for (std::int64_t i = 0; i < q_tiles; ++i) {
    for (std::int64_t j = 0; j < k_tiles; ++j) {
      float dot = 0.0f;
      for (std::int64_t d = 0; d < dim; ++d) dot += q_hat[i * dim + d] * k_hat[j * dim + d];
      logits[i * k_tiles + j] = scale * dot;
    }
  }
  return logits;
}

}  // namespace veda
