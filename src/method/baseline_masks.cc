#include "veda/method/baseline_masks.h"

#include <algorithm>
#include <numeric>

#include "veda/error.h"

namespace veda::method {

std::vector<float> extrema_bound_logits(std::span<const float> q_stats,
                                        std::span<const float> k_stats, std::int64_t dim,
                                        float scale) {
  const auto block = static_cast<std::size_t>(3 * dim);
  VEDA_CHECK(dim > 0 && !q_stats.empty() && !k_stats.empty() && q_stats.size() % block == 0 &&
                 k_stats.size() % block == 0,
             "extrema score of statistics with ", q_stats.size(), " and ", k_stats.size(),
             " floats; expected [T, 3, ", dim, "]");
  const auto tq = static_cast<std::int64_t>(q_stats.size() / block);
  const auto tk = static_cast<std::int64_t>(k_stats.size() / block);
  std::vector<float> z(tq * tk);
#pragma omp parallel for schedule(static)
  for (std::int64_t i = 0; i < tq; ++i) {
    const float* q_mean = q_stats.data() + i * 3 * dim;
    for (std::int64_t j = 0; j < tk; ++j) {
      const float* k_max = k_stats.data() + j * 3 * dim + dim;
      const float* k_min = k_max + dim;
      float sum = 0;
      for (std::int64_t d = 0; d < dim; ++d) {
        sum += std::max(q_mean[d] * k_max[d], q_mean[d] * k_min[d]);
      }
      z[i * tk + j] = scale * sum;
    }
  }
  return z;
}

std::vector<double> tile_centroids(const Grid& grid, const TileShape& shape) {
  const std::vector<std::int32_t> order = tile_major_order(grid, shape);
  const std::int64_t n = grid.tokens(), tiles = tile_count(n);
  std::vector<double> centroids(tiles * 3, 0.0);
  for (std::int64_t i = 0; i < n; ++i) {
    const std::int64_t token = order[i], tile = i / kTileTokens;
    centroids[tile * 3 + 0] += static_cast<double>(token / (grid.h * grid.w));
    centroids[tile * 3 + 1] += static_cast<double>((token / grid.w) % grid.h);
    centroids[tile * 3 + 2] += static_cast<double>(token % grid.w);
  }
  for (std::int64_t tile = 0; tile < tiles; ++tile) {
    const auto size = static_cast<double>(std::min(kTileTokens, n - tile * kTileTokens));
    for (int axis = 0; axis < 3; ++axis) centroids[tile * 3 + axis] /= size;
  }
  return centroids;
}

void select_window(const Grid& grid, const TileShape& shape, BlockIndex& index, std::int64_t b,
                   std::int64_t h) {
  const std::vector<double> centroids = tile_centroids(grid, shape);
  const std::int64_t tiles = tile_count(grid.tokens());
  VEDA_CHECK(index.q_tiles == tiles && index.k_tiles == tiles, "window selection on grid ",
             grid.str(), " (", tiles, " tiles) got an index of ", index.q_tiles, " x ",
             index.k_tiles, " tiles");
  std::vector<std::int32_t> keys(tiles);
  std::vector<double> distance(tiles);
  for (std::int64_t i = 0; i < tiles; ++i) {
    for (std::int64_t j = 0; j < tiles; ++j) {
      double d2 = 0;
      for (int axis = 0; axis < 3; ++axis) {
        const double delta = centroids[i * 3 + axis] - centroids[j * 3 + axis];
        d2 += delta * delta;
      }
      distance[j] = d2;
    }
    std::iota(keys.begin(), keys.end(), 0);
    const std::int64_t count = std::min(index.budget, tiles);
    std::partial_sort(keys.begin(), keys.begin() + count, keys.end(),
                      [&](std::int32_t a, std::int32_t c) {
                        return distance[a] != distance[c] ? distance[a] < distance[c] : a < c;
                      });
    std::sort(keys.begin(), keys.begin() + count);
    std::int32_t* row = index.row(b, h, i);
    std::fill(row, row + index.budget, kPaddedSlot);
    std::copy_n(keys.begin(), count, row);
    index.count(b, h, i) = static_cast<std::int32_t>(count);
  }
}

}  // namespace veda::method
