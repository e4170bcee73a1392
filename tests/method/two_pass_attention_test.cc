// attend_head_two_pass against the core's attend_head on the same index: dense, sparse with
// random lists, empty lists, short last tiles.
#include "veda/method/two_pass_attention.h"

#include <gtest/gtest.h>

#include <cmath>
#include <random>

#include "veda/attention.h"
#include "veda/block_index.h"
#include "veda/metrics.h"
#include "veda/selection.h"
#include "veda/tile_layout.h"

namespace veda::method {
namespace {

std::vector<float> random_matrix(std::int64_t rows, std::int64_t dim, std::uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.0f, 1.5f);
  std::vector<float> x(rows * dim);
  for (float& value : x) value = normal(rng);
  return x;
}

void compare(std::int64_t n, std::int64_t dim, double sparsity, bool empty_rows) {
  const auto q = random_matrix(n, dim, 1), k = random_matrix(n, dim, 2),
             v = random_matrix(n, dim, 3);
  const float scale = 1.0f / std::sqrt(static_cast<float>(dim));
  const std::int64_t tiles = tile_count(n);
  BlockIndex index(1, 1, tiles, tiles, budget_for_sparsity(sparsity, tiles));
  const auto scores = random_matrix(tiles, tiles, 4);
  select_top_k(scores, true, index, 0, 0);
  if (empty_rows) {
    index.count(0, 0, 0) = 0;
    std::fill(index.row(0, 0, 0), index.row(0, 0, 0) + index.budget, kPaddedSlot);
  }

  // Outputs poisoned with NaN: every element must be written.
  std::vector<float> out(n * dim, NAN), lse(n, NAN), want(n * dim), want_lse(n);
  attend_head_two_pass(q, k, v, dim, scale, index.counts.data(), index.indices.data(), index.budget,
                       out, lse);
  attend_head(q, k, v, dim, scale, index.counts.data(), index.indices.data(), index.budget, want,
              want_lse);
  // Same float32 arithmetic in another order: 1e-5 relative over the whole output.
  EXPECT_LT(relative_l2(out, want), 1e-5);
  for (std::int64_t r = 0; r < n; ++r) {
    if (std::isinf(want_lse[r])) {
      ASSERT_TRUE(std::isinf(lse[r]) && lse[r] < 0) << r;
      ASSERT_EQ(out[r * dim], 0.0f);
    } else {
      ASSERT_NEAR(lse[r], want_lse[r], 1e-5 * std::abs(want_lse[r]) + 1e-5) << r;
    }
  }

  std::fill(out.begin(), out.end(), NAN);
  attend_head_two_pass(q, k, v, dim, scale, nullptr, nullptr, 0, out, lse);
  attend_head(q, k, v, dim, scale, nullptr, nullptr, 0, want, want_lse);
  EXPECT_LT(relative_l2(out, want), 1e-5);
}

TEST(TwoPassAttention, MatchesAttendHeadOnWholeTiles) { compare(1024, 64, 0.5, false); }
TEST(TwoPassAttention, MatchesAttendHeadWithShortLastTile) { compare(1000, 40, 0.7, false); }
TEST(TwoPassAttention, EmptyListGivesZeroAndMinusInfinity) { compare(700, 128, 0.5, true); }
TEST(TwoPassAttention, SingleShortTile) { compare(37, 16, 0.0, false); }

}  // namespace
}  // namespace veda::method
