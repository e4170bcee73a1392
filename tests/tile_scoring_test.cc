#include "veda/tile_scoring.h"

#include <gtest/gtest.h>

#include "reference.h"
#include "veda/error.h"
#include "veda/tile_statistics.h"

namespace veda {
namespace {

TEST(TileScoring, ZeroProjectionIsMeanPooling) {
  const std::int64_t dim = 32;
  const auto q = testing::random_matrix(300, dim, 1), k = testing::random_matrix(500, dim, 2);
  const auto q_stats = tile_statistics(q, dim), k_stats = tile_statistics(k, dim);
  const std::vector<float> zero(3 * dim * dim, 0.0f);
  const auto logits =
      tile_logits(project_tiles(q_stats, dim, zero), project_tiles(k_stats, dim, {}), dim, 0.5f);
  ASSERT_EQ(logits.size(), 3u * 4u);
  for (int i = 0; i < 3; ++i) {
    for (int j = 0; j < 4; ++j) {
      double dot = 0.0;
      for (int d = 0; d < dim; ++d) {
        dot += double(q_stats[i * 3 * dim + kTileMean * dim + d]) *
               double(k_stats[j * 3 * dim + kTileMean * dim + d]);
      }
      EXPECT_NEAR(logits[i * 4 + j], 0.5 * dot, 1e-5);
    }
  }
}

TEST(TileScoring, ProjectionAddsFeaturesTimesP) {
  const std::int64_t dim = 8;
  const auto stats = tile_statistics(testing::random_matrix(200, dim, 3), dim);
  const auto projection = testing::random_matrix(3 * dim, dim, 4);
  const auto descriptors = project_tiles(stats, dim, projection);
  for (int i = 0; i < 2; ++i) {
    for (int e = 0; e < dim; ++e) {
      double expected = stats[i * 3 * dim + kTileMean * dim + e];
      for (int f = 0; f < 3 * dim; ++f)
        expected += double(stats[i * 3 * dim + f]) * projection[f * dim + e];
      EXPECT_NEAR(descriptors[i * dim + e], expected, 1e-5);
    }
  }
  EXPECT_THROW(project_tiles(stats, dim, std::vector<float>(5)), Error);
}

TEST(TileScoring, DiagonalProjectionEqualsTheFullMatrixWithZerosOffTheDiagonal) {
  const std::int64_t dim = 8;
  const auto stats = tile_statistics(testing::random_matrix(300, dim, 5), dim);
  const auto diagonal = testing::random_matrix(3, dim, 6);  // [3, D]: P[c D + d, d]
  const auto full = testing::full_from_diagonal(diagonal, dim);
  // Bitwise: the elementwise path adds the same products in the full sum's order.
  EXPECT_EQ(project_tiles(stats, dim, diagonal), project_tiles(stats, dim, full));
  EXPECT_NE(project_tiles(stats, dim, diagonal), project_tiles(stats, dim, {}));
}

}  // namespace
}  // namespace veda
