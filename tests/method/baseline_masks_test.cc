// The untrained baselines: the extrema score bounds every key of the tile, and the window
// keeps the nearest tiles, the query tile's own first.
#include "veda/method/baseline_masks.h"

#include <gtest/gtest.h>

#include <random>

#include "veda/tile_statistics.h"

namespace veda::method {
namespace {

TEST(ExtremaScore, BoundsTheMeanQueryAgainstEveryKeyOfTheTile) {
  const std::int64_t n = 300, dim = 16;
  std::mt19937 rng(5);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<float> q(n * dim), k(n * dim);
  for (float& x : q) x = normal(rng);
  for (float& x : k) x = normal(rng);
  const float scale = 0.25f;
  const std::vector<float> q_stats = tile_statistics(q, dim), k_stats = tile_statistics(k, dim);
  const std::vector<float> z = extrema_bound_logits(q_stats, k_stats, dim, scale);
  const std::int64_t tiles = tile_count(n);
  ASSERT_EQ(static_cast<std::int64_t>(z.size()), tiles * tiles);
  for (std::int64_t i = 0; i < tiles; ++i) {
    for (std::int64_t j = 0; j < tiles; ++j) {
      float best = -1e30f;
      for (std::int64_t c = j * 128; c < std::min(n, (j + 1) * 128); ++c) {
        float dot = 0;
        for (std::int64_t d = 0; d < dim; ++d) dot += q_stats[i * 3 * dim + d] * k[c * dim + d];
        best = std::max(best, scale * dot);
      }
      EXPECT_GE(z[i * tiles + j], best - 1e-5f);
    }
  }
}

TEST(WindowSelection, KeepsNearestTilesOwnFirst) {
  const Grid grid{8, 16, 32};  // 1x8x16 tiles: 8 frames x 2 x 2 boxes = 32 tiles
  const TileShape shape{1, 8, 16};
  BlockIndex index(1, 1, 32, 32, 5);
  select_window(grid, shape, index, 0, 0);
  index.validate();
  const std::vector<double> centroids = tile_centroids(grid, shape);
  for (std::int64_t i = 0; i < 32; ++i) {
    ASSERT_EQ(index.count(0, 0, i), 5);
    const std::int32_t* row = index.row(0, 0, i);
    EXPECT_NE(std::find(row, row + 5, i), row + 5) << "own tile of " << i;
    // Every kept tile is at least as near as every dropped one.
    auto distance = [&](std::int64_t j) {
      double d2 = 0;
      for (int a = 0; a < 3; ++a) {
        const double delta = centroids[i * 3 + a] - centroids[j * 3 + a];
        d2 += delta * delta;
      }
      return d2;
    };
    double kept_max = 0;
    for (int s = 0; s < 5; ++s) kept_max = std::max(kept_max, distance(row[s]));
    for (std::int64_t j = 0; j < 32; ++j) {
      if (std::find(row, row + 5, j) == row + 5) {
        EXPECT_GE(distance(j), kept_max);
      }
    }
  }
  // Tile 0 is the box t = 0, y 0..7, x 0..15: centroid (0, 3.5, 7.5).
  EXPECT_DOUBLE_EQ(centroids[0], 0.0);
  EXPECT_DOUBLE_EQ(centroids[1], 3.5);
  EXPECT_DOUBLE_EQ(centroids[2], 7.5);
}

}  // namespace
}  // namespace veda::method
