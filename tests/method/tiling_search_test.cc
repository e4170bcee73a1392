// Head-aware tiling: the subset search, and that the best tile shape really differs between the
// generator's head kinds (spatial heads flat tiles, the temporal head tall ones).
#include "veda/method/tiling_search.h"

#include <gtest/gtest.h>

#include <cmath>

#include "veda/error.h"
#include "veda/method/synthetic_video.h"

namespace veda::method {
namespace {

TEST(ChooseTileShapes, UnlimitedTakesEachHeadsBest) {
  const std::vector<std::vector<double>> errors = {
      {0.3, 0.1, 0.2}, {0.1, 0.5, 0.4}, {0.9, 0.8, 0.1}};
  EXPECT_EQ(choose_tile_shapes(errors, 0), (std::vector<int>{1, 0, 2}));
  EXPECT_EQ(choose_tile_shapes(errors, 3), (std::vector<int>{1, 0, 2}));
}

TEST(ChooseTileShapes, AtMostTwoShapesMinimisesTheSum) {
  // Pair {0, 2}: 0.2 + 0.1 + 0.1 = 0.4; {1, 2}: 0.1 + 0.4 + 0.1 = 0.6; {0, 1}: 0.1 + 0.1 + 0.8.
  const std::vector<std::vector<double>> errors = {
      {0.3, 0.1, 0.2}, {0.1, 0.5, 0.4}, {0.9, 0.8, 0.1}};
  EXPECT_EQ(choose_tile_shapes(errors, 2), (std::vector<int>{2, 0, 2}));
  EXPECT_EQ(choose_tile_shapes(errors, 1), (std::vector<int>{2, 2, 2}));
}

TEST(ChooseTileShapes, RejectsRaggedRows) {
  EXPECT_THROW(choose_tile_shapes({{0.1, 0.2}, {0.1}}, 0), Error);
  EXPECT_THROW(choose_tile_shapes({}, 0), Error);
}

TEST(TilingSummary, HeadAwareAgainstBestSingleShape) {
  LayerProfile layer;
  layer.heads.resize(2);
  layer.heads[0].tile = {1, 8, 16};
  layer.heads[0].calibration = {{"err_1x8x16", 0.1}, {"err_8x4x4", 0.4}};
  layer.heads[1].tile = {8, 4, 4};
  layer.heads[1].calibration = {{"err_1x8x16", 0.5}, {"err_8x4x4", 0.2}};
  const TilingSummary summary = summarize_tiling(layer);
  EXPECT_DOUBLE_EQ(summary.head_aware, 0.15);
  EXPECT_DOUBLE_EQ(summary.best_single, 0.3);
  EXPECT_EQ(summary.best_single_shape, "1x8x16");
  layer.heads[1].calibration.clear();
  EXPECT_THROW(summarize_tiling(layer), Error);
}

TEST(TilingSearch, BestShapeDiffersBetweenHeadKinds) {
  SyntheticVideoConfig config;
  config.grid = {8, 16, 32};  // 4,096 tokens, 32 tiles
  const auto all = default_heads();
  config.heads = {all[0], all[2]};  // spatial-wide, temporal
  config.seed = 11;
  const SyntheticVideo video = generate_synthetic_video(config);
  const std::vector<TileShape> shapes = standard_tile_shapes();
  const float scale = 1.0f / std::sqrt(128.0f);
  std::vector<std::vector<double>> errors(2);
  for (std::int64_t h = 0; h < 2; ++h) {
    const auto q = load_head(video.q_view(), 0, h), k = load_head(video.k_view(), 0, h),
               v = load_head(video.v_view(), 0, h);
    const MultiShapeOracle oracle = multi_shape_oracle(q, k, v, 128, scale, video.grid, shapes);
    for (const ShapeOracle& shape : oracle.shapes) {
      errors[h].push_back(
          oracle_mask_error(q, k, v, 128, scale, shape, oracle.out, 0.875, true).relative());
    }
  }
  const std::vector<int> best = choose_tile_shapes(errors, 0);
  EXPECT_EQ(shapes[best[0]].pt, 1) << "spatial head chose " << shapes[best[0]].str();
  EXPECT_GE(shapes[best[1]].pt, 4) << "temporal head chose " << shapes[best[1]].str();
  // And the difference matters: each head's best shape beats the other's by a margin.
  EXPECT_LT(errors[0][best[0]], 0.8 * errors[0][best[1]]);
  EXPECT_LT(errors[1][best[1]], 0.8 * errors[1][best[0]]);
}

}  // namespace
}  // namespace veda::method
