#include "veda/method/synthetic_video.h"

#include <gtest/gtest.h>

#include <cmath>

#include "veda/error.h"

namespace veda::method {
namespace {

SyntheticVideoConfig small_config(std::uint64_t seed) {
  SyntheticVideoConfig config;
  config.grid = {4, 16, 16};
  config.seed = seed;
  return config;
}

TEST(SyntheticVideo, ShapesAndKinds) {
  const SyntheticVideo video = generate_synthetic_video(small_config(1));
  const std::int64_t n = 4 * 16 * 16, heads = 8;
  EXPECT_EQ(video.heads, heads);
  EXPECT_EQ(video.dim, 128);
  EXPECT_EQ(video.kinds.size(), 8u);
  EXPECT_EQ(static_cast<std::int64_t>(video.q.size()), n * heads * 128);
  EXPECT_EQ(video.k.size(), video.q.size());
  EXPECT_EQ(video.v.size(), video.q.size());
  for (float x : video.q) ASSERT_TRUE(std::isfinite(x));
}

TEST(SyntheticVideo, DeterministicFromSeed) {
  const SyntheticVideo a = generate_synthetic_video(small_config(7));
  const SyntheticVideo b = generate_synthetic_video(small_config(7));
  const SyntheticVideo c = generate_synthetic_video(small_config(8));
  EXPECT_EQ(a.q, b.q);
  EXPECT_EQ(a.k, b.k);
  EXPECT_EQ(a.v, b.v);
  EXPECT_NE(a.q, c.q);
}

TEST(SyntheticVideo, RejectsOtherHeadDims) {
  SyntheticVideoConfig config = small_config(1);
  config.dim = 64;
  EXPECT_THROW(generate_synthetic_video(config), Error);
}

}  // namespace
}  // namespace veda::method
