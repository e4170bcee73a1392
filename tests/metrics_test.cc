#include "veda/metrics.h"

#include <gtest/gtest.h>

#include <cmath>

#include "veda/error.h"

namespace veda {
namespace {

TEST(Metrics, RelativeL2AndCosine) {
  const std::vector<float> ref = {3, 4}, x = {3, 5}, opposite = {-3, -4};
  EXPECT_DOUBLE_EQ(relative_l2(x, ref), 0.2);
  EXPECT_DOUBLE_EQ(relative_l2(ref, ref), 0.0);
  EXPECT_DOUBLE_EQ(cosine_similarity(ref, opposite), -1.0);
  EXPECT_NEAR(cosine_similarity(x, ref), 29.0 / (5.0 * std::sqrt(34.0)), 1e-15);
  EXPECT_THROW(relative_l2(x, std::vector<float>{1}), Error);
}

TEST(Metrics, TileRecallAndMassRecall) {
  BlockIndex oracle(1, 1, 2, 4, 2), selected(1, 1, 2, 4, 2);
  oracle.count(0, 0, 0) = 2, oracle.row(0, 0, 0)[0] = 0, oracle.row(0, 0, 0)[1] = 3;
  oracle.count(0, 0, 1) = 2, oracle.row(0, 0, 1)[0] = 1, oracle.row(0, 0, 1)[1] = 2;
  selected.count(0, 0, 0) = 2, selected.row(0, 0, 0)[0] = 0, selected.row(0, 0, 0)[1] = 1;
  selected.count(0, 0, 1) = 1, selected.row(0, 0, 1)[0] = 3;
  EXPECT_DOUBLE_EQ(tile_recall(selected.view(), oracle.view()), (0.5 + 0.0) / 2);
  EXPECT_DOUBLE_EQ(tile_recall(oracle.view(), oracle.view()), 1.0);
  const std::vector<float> mass = {0.5f, 0.25f, 0.0f, 0.25f,  //
                                   0.1f, 0.4f,  0.4f, 0.1f};
  EXPECT_NEAR(mass_recall(selected.view(), 0, 0, mass), (0.75 + 0.1) / 2, 1e-7);
  EXPECT_THROW(tile_recall(selected.view(), BlockIndex(1, 1, 3, 4, 2).view()), Error);
}

}  // namespace
}  // namespace veda
