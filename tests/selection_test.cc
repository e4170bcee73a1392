#include "veda/selection.h"

#include <gtest/gtest.h>

#include <cmath>

#include "veda/error.h"

namespace veda {
namespace {

std::vector<std::int32_t> row_of(const BlockIndex& index, std::int64_t i) {
  const auto view = index.view();
  return {view.row(0, 0, i), view.row(0, 0, i) + view.count(0, 0, i)};
}

TEST(Budget, IsTheCeilingOfTheKeptFractionAndAtLeastOne) {
  EXPECT_EQ(budget_for_sparsity(0.0, 96), 96);
  EXPECT_EQ(budget_for_sparsity(0.9, 96), 10);
  EXPECT_EQ(budget_for_sparsity(0.95, 96), 5);
  EXPECT_EQ(budget_for_sparsity(0.9, 10), 1);
  EXPECT_EQ(budget_for_sparsity(0.95, 384), 20);
  EXPECT_EQ(budget_for_sparsity(0.999, 3), 1);
  EXPECT_THROW(budget_for_sparsity(1.0, 10), Error);
  EXPECT_THROW(budget_for_sparsity(-0.1, 10), Error);
}

TEST(SelectTopK, KeepsTheHighestScoresAscendingWithTheOwnTileAndPadding) {
  // 3 query tiles x 5 key tiles.
  const std::vector<float> scores = {9, 1, 8,  7, 0,  //
                                     5, 0, 5,  9, 5,  // ties between 0, 2, 4 go to the lower index
                                     1, 2, -3, 4, 3};
  BlockIndex index(1, 1, 3, 5, 3);
  select_top_k(scores, /*keep_own_tile=*/true, index, 0, 0);
  index.validate();
  EXPECT_EQ(row_of(index, 0), (std::vector<std::int32_t>{0, 2, 3}));
  EXPECT_EQ(row_of(index, 1), (std::vector<std::int32_t>{0, 1, 3}));  // own tile 1 kept
  EXPECT_EQ(row_of(index, 2), (std::vector<std::int32_t>{2, 3, 4}));  // own tile 2 despite -3
  select_top_k(scores, /*keep_own_tile=*/false, index, 0, 0);
  EXPECT_EQ(row_of(index, 1), (std::vector<std::int32_t>{0, 2, 3}));
  EXPECT_EQ(row_of(index, 2), (std::vector<std::int32_t>{1, 3, 4}));

  BlockIndex wide(1, 1, 1, 5, 5);
  select_top_k(std::vector<float>{0, 1, 2, 3, 4}, true, wide, 0, 0);
  EXPECT_EQ(row_of(wide, 0), (std::vector<std::int32_t>{0, 1, 2, 3, 4}));
}

TEST(SelectTopK, RejectsNanAndWrongSizes) {
  BlockIndex index(1, 1, 1, 2, 1);
  EXPECT_THROW(select_top_k(std::vector<float>{0.0f, std::nanf("")}, true, index, 0, 0), Error);
  EXPECT_THROW(select_top_k(std::vector<float>{0.0f}, true, index, 0, 0), Error);
  EXPECT_THROW(select_top_k(std::vector<float>{0.0f, 1.0f}, true, index, 0, 1), Error);
}

TEST(SelectCumulative, StopsOnceTheSoftmaxMassReachesTheThreshold) {
  // softmax of {log 0.5, log 0.3, log 0.15, log 0.05}
  const std::vector<float> scores = {std::log(0.5f), std::log(0.3f), std::log(0.15f),
                                     std::log(0.05f)};
  BlockIndex index(1, 1, 1, 4, 4);
  select_cumulative(scores, 0.75, false, index, 0, 0);
  EXPECT_EQ(row_of(index, 0), (std::vector<std::int32_t>{0, 1}));
  select_cumulative(scores, 0.9, false, index, 0, 0);
  EXPECT_EQ(row_of(index, 0), (std::vector<std::int32_t>{0, 1, 2}));
  select_cumulative(scores, 1.0, false, index, 0, 0);
  EXPECT_EQ(row_of(index, 0), (std::vector<std::int32_t>{0, 1, 2, 3}));
  BlockIndex capped(1, 1, 1, 4, 2);
  select_cumulative(scores, 1.0, false, capped, 0, 0);
  EXPECT_EQ(row_of(capped, 0), (std::vector<std::int32_t>{0, 1}));
  // The own tile 0 is kept and counts towards the mass.
  const std::vector<float> own_low = {std::log(0.05f), std::log(0.9f), std::log(0.05f), -INFINITY};
  select_cumulative(own_low, 0.9, true, index, 0, 0);
  EXPECT_EQ(row_of(index, 0), (std::vector<std::int32_t>{0, 1}));
  EXPECT_THROW(select_cumulative(scores, 0.0, false, index, 0, 0), Error);
}

}  // namespace
}  // namespace veda
