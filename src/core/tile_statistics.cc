#include "veda/tile_statistics.h"

#include <algorithm>
#include <limits>

#include "veda/error.h"
#include "veda/tile_layout.h"

namespace veda {
namespace {

// Tile `tile` of one head: rows [128 tile, min(N, 128 tile + 128)) of x -> out [3, D].
template <typename RowLoader>
void reduce_tile(std::int64_t tokens, std::int64_t dim, std::int64_t tile, RowLoader&& load_row,
                 float* out) {
  float* mean = out + kTileMean * dim;
  float* max = out + kTileMax * dim;
  float* min = out + kTileMin * dim;
  std::fill_n(mean, dim, 0.0f);
  std::fill_n(max, dim, -std::numeric_limits<float>::infinity());
  std::fill_n(min, dim, std::numeric_limits<float>::infinity());
  const std::int64_t begin = tile * kTileTokens;
  const std::int64_t end = std::min(tokens, begin + kTileTokens);
  std::vector<float> row(static_cast<std::size_t>(dim));
  for (std::int64_t n = begin; n < end; ++n) {
    load_row(n, row.data());
    for (std::int64_t d = 0; d < dim; ++d) {
      mean[d] += row[static_cast<std::size_t>(d)];
      max[d] = std::max(max[d], row[static_cast<std::size_t>(d)]);
      min[d] = std::min(min[d], row[static_cast<std::size_t>(d)]);
    }
  }
  const float inverse_count = 1.0f / static_cast<float>(end - begin);
  for (std::int64_t d = 0; d < dim; ++d) mean[d] *= inverse_count;
}

}  // namespace

void tile_statistics_cpu(const TileStatisticsParams& params) {
  const TokensView& x = params.x;
  x.validate("x");
  VEDA_CHECK(params.out != nullptr, "tile statistics output is null");
  const std::int64_t tiles = tile_count(x.tokens);
#pragma omp parallel for collapse(3) schedule(static)
  for (std::int64_t b = 0; b < x.batch; ++b) {
    for (std::int64_t h = 0; h < x.heads; ++h) {
      for (std::int64_t tile = 0; tile < tiles; ++tile) {
        float* out = params.out + ((b * x.heads + h) * tiles + tile) * 3 * x.dim;
        reduce_tile(
            x.tokens, x.dim, tile,
            [&](std::int64_t n, float* row) {
              const std::int64_t base = x.offset(b, n, h);
              for (std::int64_t d = 0; d < x.dim; ++d)
                row[d] = load_as_float(x.data, x.dtype, base + d);
            },
            out);
      }
    }
  }
}

std::vector<float> tile_statistics(std::span<const float> x, std::int64_t dim) {
  VEDA_CHECK(dim > 0 && !x.empty() && x.size() % static_cast<std::size_t>(dim) == 0,
             "tile statistics of ", x.size(), " floats with head dim ", dim,
             "; expected a non-empty [N, D] matrix");
  const auto tokens = static_cast<std::int64_t>(x.size()) / dim;
  const std::int64_t tiles = tile_count(tokens);
  std::vector<float> stats(static_cast<std::size_t>(tiles * 3 * dim));
#pragma omp parallel for schedule(static)
  for (std::int64_t tile = 0; tile < tiles; ++tile) {
    reduce_tile(
        tokens, dim, tile,
        [&](std::int64_t n, float* row) { std::copy_n(x.data() + n * dim, dim, row); },
        stats.data() + tile * 3 * dim);
  }
  return stats;
}

}  // namespace veda
