#include "veda/tile_statistics.h"

#include <gtest/gtest.h>

#include <cmath>

#include "reference.h"
#include "veda/tile_layout.h"

namespace veda {
namespace {

class TileStatistics : public ::testing::TestWithParam<std::int64_t> {};

TEST_P(TileStatistics, MatchesFloat64MeanMaxMinIncludingTheShortLastTile) {
  const std::int64_t tokens = GetParam(), dim = 24;
  const std::vector<float> x = testing::random_matrix(tokens, dim, 3);
  const std::vector<float> stats = tile_statistics(x, dim);
  ASSERT_EQ(static_cast<std::int64_t>(stats.size()), tile_count(tokens) * 3 * dim);
  for (std::int64_t tile = 0; tile < tile_count(tokens); ++tile) {
    const std::int64_t begin = tile * kTileTokens, end = std::min(tokens, begin + kTileTokens);
    for (std::int64_t d = 0; d < dim; ++d) {
      double sum = 0.0, max = -INFINITY, min = INFINITY;
      for (std::int64_t n = begin; n < end; ++n) {
        sum += x[n * dim + d];
        max = std::max<double>(max, x[n * dim + d]);
        min = std::min<double>(min, x[n * dim + d]);
      }
      const float* s = stats.data() + tile * 3 * dim;
      EXPECT_NEAR(s[kTileMean * dim + d], sum / double(end - begin), 1e-6);
      EXPECT_EQ(s[kTileMax * dim + d], max);
      EXPECT_EQ(s[kTileMin * dim + d], min);
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Tokens, TileStatistics, ::testing::Values(1, 127, 128, 129, 1000));

TEST(TileStatistics, StridedBf16ParamsMatchPerHeadStatistics) {
  const std::int64_t batch = 2, tokens = 300, heads = 3, dim = 16;
  std::vector<float> values = testing::random_matrix(batch * tokens * heads, dim, 5);
  std::vector<std::uint16_t> encoded(values.size());
  for (std::size_t n = 0; n < values.size(); ++n) {
    encoded[n] = float_to_bf16(values[n]);
    values[n] = bf16_to_float(encoded[n]);
  }
  const std::int64_t tiles = tile_count(tokens);
  std::vector<float> out(static_cast<std::size_t>(batch * heads * tiles * 3 * dim), std::nanf(""));
  tile_statistics_cpu(
      {TokensView::contiguous(encoded.data(), DType::kBF16, batch, tokens, heads, dim),
       out.data()});
  const TokensView view =
      TokensView::contiguous(values.data(), DType::kF32, batch, tokens, heads, dim);
  for (std::int64_t b = 0; b < batch; ++b) {
    for (std::int64_t h = 0; h < heads; ++h) {
      const std::vector<float> expected = tile_statistics(load_head(view, b, h), dim);
      const std::vector<float> got(out.begin() + (b * heads + h) * tiles * 3 * dim,
                                   out.begin() + (b * heads + h + 1) * tiles * 3 * dim);
      EXPECT_EQ(got, expected) << "batch " << b << " head " << h;
    }
  }
}

}  // namespace
}  // namespace veda
