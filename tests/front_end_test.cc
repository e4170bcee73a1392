// The CPU references of the GPU front end against the per-head pipeline they batch.
#include <gtest/gtest.h>

#include <cmath>

#include "reference.h"
#include "veda/selection.h"
#include "veda/sparse_attention.h"
#include "veda/tile_gather.h"
#include "veda/tile_layout.h"
#include "veda/tile_selection.h"
#include "veda/tile_statistics.h"

namespace veda {
namespace {

TEST(TileGather, EachHeadUsesItsGroupsOrder) {
  const Grid grid{3, 10, 21};
  const std::int64_t tokens = grid.tokens(), heads = 3, dim = 8, tiles = tile_count(tokens);
  const std::vector<float> x = testing::random_matrix(tokens * heads, dim, 1);
  std::vector<std::int32_t> order = tile_major_order(grid, {1, 8, 16});
  const std::vector<std::int32_t> second = tile_major_order(grid, {8, 4, 4});
  order.insert(order.end(), second.begin(), second.end());
  const std::vector<std::int32_t> head_group = {1, 0, 1};
  std::vector<float> tiled(x.size(), std::nanf("")), stats(heads * tiles * 3 * dim, std::nanf(""));
  const TokensView view = TokensView::contiguous(x.data(), DType::kF32, 1, tokens, heads, dim);
  tile_gather_cpu({view, order.data(), 2, head_group.data(), tiled.data(), stats.data()});
  for (std::int64_t h = 0; h < heads; ++h) {
    const std::span<const std::int32_t> head_order(order.data() + head_group[h] * tokens, tokens);
    std::vector<float> expected(tokens * dim);
    gather_rows(load_head(view, 0, h), head_order, dim, expected);
    EXPECT_EQ(std::vector<float>(tiled.begin() + h * tokens * dim,
                                 tiled.begin() + (h + 1) * tokens * dim),
              expected);
    const std::vector<float> expected_stats = tile_statistics(expected, dim);
    EXPECT_EQ(std::vector<float>(stats.begin() + h * tiles * 3 * dim,
                                 stats.begin() + (h + 1) * tiles * 3 * dim),
              expected_stats);
  }
}

TEST(TileSelection, ZeroProjectionSelectsWhatMeanPoolingSelects) {
  const Grid grid{4, 16, 16};
  const std::int64_t tokens = grid.tokens(), heads = 2, dim = 32, tiles = tile_count(tokens);
  const auto q = testing::random_matrix(tokens * heads, dim, 2),
             k = testing::random_matrix(tokens * heads, dim, 3),
             v = testing::random_matrix(tokens * heads, dim, 4);
  const auto view = [&](const std::vector<float>& x) {
    return TokensView::contiguous(x.data(), DType::kF32, 1, tokens, heads, dim);
  };
  const SparseAttentionConfig config{MaskMethod::kMeanPool, 0.75, grid, {2, 8, 8}};
  const SparseAttentionResult meanpool = sparse_attention_cpu(view(q), view(k), view(v), config);

  const std::vector<std::int32_t> order = tile_major_order(grid, config.tile);
  std::vector<float> q_stats(heads * tiles * 3 * dim), k_stats(q_stats.size());
  tile_gather_cpu({view(q), order.data(), 1, nullptr, nullptr, q_stats.data()});
  tile_gather_cpu({view(k), order.data(), 1, nullptr, nullptr, k_stats.data()});
  TileSelectionParams params;
  params.q_stats = q_stats.data(), params.k_stats = k_stats.data();
  params.batch = 1, params.heads = heads, params.q_tiles = tiles, params.k_tiles = tiles;
  params.dim = dim, params.scale = 1.0f / std::sqrt(static_cast<float>(dim));
  params.budget = budget_for_sparsity(config.sparsity, tiles);
  std::vector<std::int32_t> counts(heads * tiles), indices(counts.size() * params.budget);
  params.counts = counts.data(), params.indices = indices.data();
  tile_selection_cpu(params);
  EXPECT_EQ(counts, meanpool.index.counts);
  EXPECT_EQ(indices, meanpool.index.indices);
}

}  // namespace
}  // namespace veda
