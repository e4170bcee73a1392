// The method's attention: with P = 0 it is the core's mean-pooling pipeline exactly; both
// kernels agree; calibration produces a usable profile end to end.
#include "veda/method/veda_attention.h"

#include <gtest/gtest.h>

#include <cmath>

#include "veda/error.h"
#include "veda/method/calibration.h"
#include "veda/method/synthetic_video.h"
#include "veda/metrics.h"
#include "veda/sparse_attention.h"

namespace veda::method {
namespace {

SyntheticVideo small_video(std::uint64_t seed) {
  SyntheticVideoConfig config;
  config.grid = {4, 16, 32};  // 2,048 tokens, 16 tiles
  const auto all = default_heads();
  config.heads = {all[0], all[2], all[5]};
  config.seed = seed;
  return generate_synthetic_video(config);
}

LayerProfile zero_profile(std::int64_t heads, const TileShape& tile, double sparsity) {
  LayerProfile layer;
  for (std::int64_t h = 0; h < heads; ++h) {
    HeadProfile head;
    head.tile = tile;
    head.sparsity = sparsity;
    head.estimator = EstimatorParams::zeros(128);
    layer.heads.push_back(head);
  }
  return layer;
}

TEST(VedaAttention, ZeroProjectionEqualsCoreMeanPooling) {
  const SyntheticVideo video = small_video(3);
  const TileShape tile{2, 8, 8};
  const VedaAttentionResult got = veda_attention_cpu(video.q_view(), video.k_view(), video.v_view(),
                                                     video.grid, zero_profile(3, tile, 0.75));
  SparseAttentionConfig config;
  config.method = MaskMethod::kMeanPool;
  config.sparsity = 0.75;
  config.grid = video.grid;
  config.tile = tile;
  const SparseAttentionResult want =
      sparse_attention_cpu(video.q_view(), video.k_view(), video.v_view(), config);
  EXPECT_EQ(got.index.counts, want.index.counts);
  EXPECT_EQ(got.index.indices, want.index.indices);
  EXPECT_EQ(got.out, want.out);
  EXPECT_EQ(got.lse, want.lse);
}

TEST(VedaAttention, TwoPassKernelAgreesWithReference) {
  const SyntheticVideo video = small_video(4);
  const LayerProfile layer = zero_profile(3, {1, 8, 16}, 0.5);
  const auto reference = veda_attention_cpu(video.q_view(), video.k_view(), video.v_view(),
                                            video.grid, layer, 0.8, AttentionKernel::kReference);
  const auto two_pass = veda_attention_cpu(video.q_view(), video.k_view(), video.v_view(),
                                           video.grid, layer, 0.8, AttentionKernel::kTwoPass);
  EXPECT_EQ(reference.index.counts, two_pass.index.counts);
  EXPECT_LT(relative_l2(two_pass.out, reference.out), 1e-5);
  EXPECT_NEAR(reference.index.sparsity(), 1.0 - 4.0 / 16.0, 1e-12);  // budget ceil(0.2*16) = 4
}

TEST(VedaAttention, CumulativeThresholdStaysWithinTheBudget) {
  const SyntheticVideo video = small_video(6);
  LayerProfile layer = zero_profile(3, {2, 8, 8}, 0.5);  // budget 8 of 16 tiles
  for (HeadProfile& head : layer.heads) head.threshold = 0.6;
  const VedaAttentionResult result =
      veda_attention_cpu(video.q_view(), video.k_view(), video.v_view(), video.grid, layer);
  result.index.validate();
  std::int64_t total = 0;
  for (std::int32_t count : result.index.counts) {
    EXPECT_GE(count, 1);
    EXPECT_LE(count, 8);
    total += count;
  }
  // A mass threshold of 0.6 needs fewer tiles than the cap on these peaked heads.
  EXPECT_LT(total, 3 * 16 * 8);
}

TEST(VedaAttention, RejectsMismatchedProfileAndGrid) {
  const SyntheticVideo video = small_video(5);
  EXPECT_THROW(veda_attention_cpu(video.q_view(), video.k_view(), video.v_view(), video.grid,
                                  zero_profile(2, {1, 8, 16}, 0.5)),
               Error);
  EXPECT_THROW(veda_attention_cpu(video.q_view(), video.k_view(), video.v_view(), Grid{4, 16, 16},
                                  zero_profile(3, {1, 8, 16}, 0.5)),
               Error);
}

TEST(Calibration, FitsEveryHeadAndLowersHeldOutLoss) {
  const SyntheticVideo a = small_video(21), b = small_video(22), c = small_video(23);
  const std::vector<CalibrationSample> samples = {{a.grid, a.q_view(), a.k_view(), a.v_view()},
                                                  {b.grid, b.q_view(), b.k_view(), b.v_view()},
                                                  {c.grid, c.q_view(), c.k_view(), c.v_view()}};
  CalibrationConfig config;
  config.sparsity = 0.75;
  config.max_shapes_per_layer = 2;
  config.distill.structures = {ProjectionStructure::kDiagonal};
  config.distill.learning_rate = 1e-2;
  config.distill.weight_decay = 0;
  std::int64_t reports = 0;
  const LayerProfile layer = calibrate_layer(
      samples, config, [&](std::string_view, std::int64_t, std::int64_t) { ++reports; });
  ASSERT_EQ(layer.heads.size(), 3u);
  EXPECT_EQ(reports, 3 * 1 + 3);  // search per (head, search sample), distill per head
  std::vector<std::string> shapes;
  for (const HeadProfile& head : layer.heads) {
    head.tile.validate();
    if (std::find(shapes.begin(), shapes.end(), head.tile.str()) == shapes.end()) {
      shapes.push_back(head.tile.str());
    }
    EXPECT_LT(head.calibration.at("kl_heldout_after"), head.calibration.at("kl_heldout_before"));
    EXPECT_EQ(head.calibration.count("err_" + head.tile.str()), 1u);
  }
  EXPECT_LE(shapes.size(), 2u);
}

TEST(Calibration, EstimatorMaskSearchKeepsTheFittedShape) {
  const SyntheticVideo a = small_video(31), b = small_video(32);
  const std::vector<CalibrationSample> samples = {{a.grid, a.q_view(), a.k_view(), a.v_view()},
                                                  {b.grid, b.q_view(), b.k_view(), b.v_view()}};
  CalibrationConfig config;
  config.sparsity = 0.75;
  config.search = CalibrationConfig::Search::kEstimatorMask;
  const LayerProfile layer = calibrate_layer(samples, config);
  ASSERT_EQ(layer.heads.size(), 3u);
  for (const HeadProfile& head : layer.heads) {
    // The chosen shape has the least estimator-mask error of all candidates.
    const double chosen = head.calibration.at("err_" + head.tile.str());
    for (const TileShape& shape : config.shapes) {
      EXPECT_LE(chosen, head.calibration.at("err_" + shape.str()));
    }
    EXPECT_EQ(head.calibration.at("search_estimator_mask"), 1.0);
    EXPECT_LT(head.calibration.at("kl_heldout_after"), head.calibration.at("kl_heldout_before"));
  }
  // One sample is not enough: nothing would be held out to measure on.
  EXPECT_THROW(calibrate_layer(std::span(samples).first(1), config), Error);
}

}  // namespace
}  // namespace veda::method
