#include "veda/oracle.h"

#include <gtest/gtest.h>

#include <cmath>
#include <numeric>

#include "reference.h"
#include "veda/sparse_attention.h"
#include "veda/tile_layout.h"

namespace veda {
namespace {

TEST(Oracle, LseHeatAndMassMatchFloat64) {
  const std::int64_t nq = 200, nk = 300, dim = 16;
  const double scale = 0.25;
  const auto q = testing::random_matrix(nq, dim, 1, 2.0f), k = testing::random_matrix(nk, dim, 2);
  const std::vector<float> lse = row_lse(q, k, dim, static_cast<float>(scale));
  const TileMaps maps = tile_heat_and_mass(q, k, dim, static_cast<float>(scale), lse);
  ASSERT_EQ(maps.q_tiles, 2);
  ASSERT_EQ(maps.k_tiles, 3);
  std::vector<double> heat(6, 0.0), mass(6, 0.0);
  for (std::int64_t r = 0; r < nq; ++r) {
    std::vector<double> logits(nk);
    for (std::int64_t c = 0; c < nk; ++c) {
      double dot = 0.0;
      for (std::int64_t d = 0; d < dim; ++d) dot += double(q[r * dim + d]) * k[c * dim + d];
      logits[c] = scale * dot;
    }
    const double peak = *std::max_element(logits.begin(), logits.end());
    double sum = 0.0;
    for (double logit : logits) sum += std::exp(logit - peak);
    const double expected_lse = peak + std::log(sum);
    ASSERT_NEAR(lse[r], expected_lse, 1e-5 * std::abs(expected_lse) + 1e-6);
    for (std::int64_t c = 0; c < nk; ++c) {
      const std::int64_t cell = (r / kTileTokens) * 3 + c / kTileTokens;
      const double p = std::exp(logits[c] - expected_lse);
      heat[cell] = std::max(heat[cell], p);
      mass[cell] +=
          p / double(std::min<std::int64_t>(kTileTokens, nq - r / kTileTokens * kTileTokens));
    }
  }
  for (int cell = 0; cell < 6; ++cell) {
    EXPECT_NEAR(maps.heat[cell], heat[cell], 1e-5 * heat[cell] + 1e-7) << "cell " << cell;
    EXPECT_NEAR(maps.mass[cell], mass[cell], 1e-5 * mass[cell] + 1e-7) << "cell " << cell;
  }
  for (int i = 0; i < 2; ++i) {
    EXPECT_NEAR(std::accumulate(&maps.mass[i * 3], &maps.mass[i * 3 + 3], 0.0), 1.0, 1e-5);
  }
}

TEST(Oracle, AtSparsityZeroEqualsDense) {
  const std::int64_t tokens = 3 * 10 * 10, heads = 2, dim = 32;
  const auto q = testing::random_matrix(tokens * heads, dim, 3),
             k = testing::random_matrix(tokens * heads, dim, 4),
             v = testing::random_matrix(tokens * heads, dim, 5);
  const auto view = [&](const std::vector<float>& x) {
    return TokensView::contiguous(x.data(), DType::kF32, 1, tokens, heads, dim);
  };
  SparseAttentionConfig config{MaskMethod::kDense, 0.0, {3, 10, 10}, {1, 8, 16}};
  const auto dense = sparse_attention_cpu(view(q), view(k), view(v), config);
  config.method = MaskMethod::kOracle;
  const auto oracle = sparse_attention_cpu(view(q), view(k), view(v), config);
  EXPECT_EQ(oracle.index.sparsity(), 0.0);
  EXPECT_EQ(oracle.out, dense.out);
  EXPECT_EQ(oracle.lse, dense.lse);
  config.sparsity = 0.5;
  const auto half = sparse_attention_cpu(view(q), view(k), view(v), config);
  EXPECT_NEAR(half.index.sparsity(), 1.0 / 3.0, 1e-12);  // 3 tiles, budget ceil(1.5) = 2
}

}  // namespace
}  // namespace veda
