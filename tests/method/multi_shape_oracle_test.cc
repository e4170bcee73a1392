// The multi-shape oracle against the core's per-shape oracle (row_lse + tile_heat_and_mass on
// tokens reordered with gather_rows) and the dense output against attend_head.
#include "veda/method/multi_shape_oracle.h"

#include <gtest/gtest.h>

#include <cmath>
#include <random>

#include "veda/attention.h"
#include "veda/error.h"
#include "veda/metrics.h"
#include "veda/oracle.h"

namespace veda::method {
namespace {

std::vector<float> random_matrix(std::int64_t rows, std::int64_t dim, float sigma,
                                 std::uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.0f, sigma);
  std::vector<float> x(rows * dim);
  for (float& value : x) value = normal(rng);
  return x;
}

// Float32 exp and sums against the core's float64 lse: 1e-4 relative covers 2-ulp exp and
// 10^4-term float sums.
void expect_close(std::span<const float> got, std::span<const float> want, double rel,
                  const char* what) {
  ASSERT_EQ(got.size(), want.size()) << what;
  for (std::size_t i = 0; i < got.size(); ++i) {
    ASSERT_NEAR(got[i], want[i], rel * std::abs(want[i]) + 1e-7) << what << " at " << i;
  }
}

void check_grid(const Grid& grid, std::int64_t dim, float sigma, std::int64_t max_atoms = 8192) {
  const std::int64_t n = grid.tokens();
  const auto q = random_matrix(n, dim, sigma, 1), k = random_matrix(n, dim, sigma, 2),
             v = random_matrix(n, dim, 1.0f, 3);
  const float scale = 1.0f / std::sqrt(static_cast<float>(dim));
  const std::vector<TileShape> shapes = standard_tile_shapes();
  const MultiShapeOracle oracle = multi_shape_oracle(q, k, v, dim, scale, grid, shapes, max_atoms);
  if (max_atoms < 8192) {
    EXPECT_GT(oracle.passes, 1);
    EXPECT_LE(oracle.atoms, std::max(max_atoms, tile_count(grid.tokens())));
  }

  expect_close(oracle.lse, row_lse(q, k, dim, scale), 1e-5, "lse");
  std::vector<float> out(n * dim), lse(n);
  attend_head(q, k, v, dim, scale, nullptr, nullptr, 0, out, lse);
  // Outputs are averages of v that cancel to ~1e-4: compare as a whole (float32 sums of N terms).
  EXPECT_LT(relative_l2(oracle.out, out), 1e-5);

  ASSERT_EQ(oracle.shapes.size(), shapes.size());
  for (const ShapeOracle& shape : oracle.shapes) {
    SCOPED_TRACE(shape.shape.str());
    EXPECT_EQ(shape.order, tile_major_order(grid, shape.shape));
    std::vector<float> q_tiled(n * dim), k_tiled(n * dim), lse_tiled(n);
    gather_rows(q, shape.order, dim, q_tiled);
    gather_rows(k, shape.order, dim, k_tiled);
    gather_rows(oracle.lse, shape.order, 1, lse_tiled);
    const TileMaps want = tile_heat_and_mass(q_tiled, k_tiled, dim, scale, lse_tiled);
    EXPECT_EQ(shape.maps.q_tiles, want.q_tiles);
    EXPECT_EQ(shape.maps.k_tiles, want.k_tiles);
    expect_close(shape.maps.heat, want.heat, 1e-4, "heat");
    expect_close(shape.maps.mass, want.mass, 1e-4, "mass");
  }
}

TEST(MultiShapeOracle, MatchesCoreOracleOnDivisibleGrid) { check_grid({8, 16, 16}, 64, 1.0f); }

TEST(MultiShapeOracle, MatchesCoreOracleOnPackedOddGrid) { check_grid({3, 10, 21}, 40, 1.5f); }

TEST(MultiShapeOracle, MatchesCoreOracleOnSingleShortTile) { check_grid({1, 5, 7}, 16, 2.0f); }

TEST(MultiShapeOracle, MatchesCoreOracleOverSeveralPasses) {
  check_grid({3, 10, 21}, 24, 1.5f, 30);
}

TEST(MultiShapeOracle, AtomsOfDivisibleGridAreOneByFourByFour) {
  const Grid grid{8, 16, 32};
  const auto q = random_matrix(grid.tokens(), 16, 1.0f, 4);
  const MultiShapeOracle oracle =
      multi_shape_oracle(q, q, {}, 16, 0.25f, grid, standard_tile_shapes());
  EXPECT_EQ(oracle.atoms, grid.tokens() / 16);
  EXPECT_TRUE(oracle.out.empty());
}

TEST(MultiShapeOracle, RejectsMismatchedSizes) {
  const auto q = random_matrix(100, 16, 1.0f, 5);
  const std::vector<TileShape> shapes = {{1, 8, 16}};
  EXPECT_THROW(multi_shape_oracle(q, q, {}, 16, 0.25f, Grid{1, 10, 11}, shapes), Error);
  EXPECT_THROW(multi_shape_oracle(q, q, {}, 16, 0.25f, Grid{1, 10, 10}, {}), Error);
}

}  // namespace
}  // namespace veda::method
