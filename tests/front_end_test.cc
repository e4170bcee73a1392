// The CPU references of the GPU front end against the per-head pipeline they batch.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <span>
#include <string>

#include "expect_error.h"
#include "reference.h"
#include "veda/block_index.h"
#include "veda/error.h"
#include "veda/selection.h"
#include "veda/sparse_attention.h"
#include "veda/tile_gather.h"
#include "veda/tile_layout.h"
#include "veda/tile_scoring.h"
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

// sparse_attention_cpu's index for `config` against tile_selection_cpu over the same statistics
// (projections: [H, 3D, D] each, or empty for P = 0).
void expect_batched_selection_matches(const SparseAttentionConfig& config,
                                      std::span<const float> q_projection,
                                      std::span<const float> k_projection) {
  const Grid grid = config.grid;
  const std::int64_t tokens = grid.tokens(), heads = 2, dim = 32, tiles = tile_count(tokens);
  const auto q = testing::random_matrix(tokens * heads, dim, 2),
             k = testing::random_matrix(tokens * heads, dim, 3),
             v = testing::random_matrix(tokens * heads, dim, 4);
  const auto view = [&](const std::vector<float>& x) {
    return TokensView::contiguous(x.data(), DType::kF32, 1, tokens, heads, dim);
  };
  const SparseAttentionResult result = sparse_attention_cpu(view(q), view(k), view(v), config);

  const std::vector<std::int32_t> order = tile_major_order(grid, config.tile);
  std::vector<float> q_stats(heads * tiles * 3 * dim), k_stats(q_stats.size());
  tile_gather_cpu({view(q), order.data(), 1, nullptr, nullptr, q_stats.data()});
  tile_gather_cpu({view(k), order.data(), 1, nullptr, nullptr, k_stats.data()});
  TileSelectionParams params;
  params.q_stats = q_stats.data(), params.k_stats = k_stats.data();
  params.q_projection = q_projection.empty() ? nullptr : q_projection.data();
  params.k_projection = k_projection.empty() ? nullptr : k_projection.data();
  params.batch = 1, params.heads = heads, params.q_tiles = tiles, params.k_tiles = tiles;
  params.dim = dim, params.scale = 1.0f / std::sqrt(static_cast<float>(dim));
  params.budget = budget_for_sparsity(config.sparsity, tiles);
  const std::vector<double> thresholds(heads, config.threshold);
  params.thresholds = config.threshold > 0.0 ? thresholds.data() : nullptr;
  std::vector<std::int32_t> counts(heads * tiles), indices(counts.size() * params.budget);
  params.counts = counts.data(), params.indices = indices.data();
  tile_selection_cpu(params);
  EXPECT_EQ(counts, result.index.counts);
  EXPECT_EQ(indices, result.index.indices);
}

TEST(TileSelection, ZeroProjectionSelectsWhatMeanPoolingSelects) {
  expect_batched_selection_matches({MaskMethod::kMeanPool, 0.75, {4, 16, 16}, {2, 8, 8}}, {}, {});
}

TEST(TileSelection, CumulativeThresholdSelectsWhatTheBatchedSelectionSelects) {
  SparseAttentionConfig config{MaskMethod::kMeanPool, 0.5, {4, 16, 16}, {2, 8, 8}};
  config.threshold = 0.3;
  expect_batched_selection_matches(config, {}, {});
  const auto x = testing::random_matrix(1024 * 2, 32, 2);
  const TokensView view = TokensView::contiguous(x.data(), DType::kF32, 1, 1024, 2, 32);
  const BlockIndex index = sparse_attention_cpu(view, view, view, config).index;
  EXPECT_LT(*std::min_element(index.counts.begin(), index.counts.end()), index.budget);
  config.method = MaskMethod::kOracle;
  testing::expect_error_naming([&] { sparse_attention_cpu(view, view, view, config); },
                               "logit-scored methods meanpool and veda, not oracle");
}

TEST(TileSelection, EstimatorMethodSelectsWhatTheBatchedSelectionSelects) {
  const std::int64_t heads = 2, dim = 32;
  const std::vector<float> p_q = testing::random_matrix(heads * 3 * dim, dim, 5),
                           p_k = testing::random_matrix(heads * 3 * dim, dim, 6);
  SparseAttentionConfig config{MaskMethod::kEstimator, 0.75, {3, 10, 21}, {1, 8, 16}};
  config.q_projection = p_q, config.k_projection = p_k;
  expect_batched_selection_matches(config, p_q, p_k);
  // The random projections change the choice (so the comparison above is not mean pooling's).
  const auto q = testing::random_matrix(630 * heads, dim, 2),
             k = testing::random_matrix(630 * heads, dim, 3);
  const auto view = [&](const std::vector<float>& x) {
    return TokensView::contiguous(x.data(), DType::kF32, 1, 630, heads, dim);
  };
  const BlockIndex estimated = sparse_attention_cpu(view(q), view(k), view(k), config).index;
  config.method = MaskMethod::kMeanPool;
  EXPECT_NE(sparse_attention_cpu(view(q), view(k), view(k), config).index.indices,
            estimated.indices);
}

TEST(TileSelection, EstimatorMethodNeedsEveryHeadsProjections) {
  const auto x = testing::random_matrix(256 * 2, 16, 7);
  const TokensView view = TokensView::contiguous(x.data(), DType::kF32, 1, 256, 2, 16);
  const std::vector<float> one_head(3 * 16 * 16, 0.0f);
  SparseAttentionConfig config{MaskMethod::kEstimator, 0.5, {1, 16, 16}, {1, 8, 16}};
  config.q_projection = one_head, config.k_projection = one_head;
  testing::expect_error_naming([&] { sparse_attention_cpu(view, view, view, config); },
                               "[H, 3D, D] = [2, 48, 16] each; got 768 and 768");
  EXPECT_EQ(parse_mask_method("veda"), MaskMethod::kEstimator);
}

// tile_selection_cpu's indices [B*H*Tq, budget] for params (its outputs set here).
std::vector<std::int32_t> selected_indices(TileSelectionParams params) {
  std::vector<std::int32_t> counts(params.batch * params.heads * params.q_tiles);
  std::vector<std::int32_t> indices(counts.size() * params.budget);
  params.counts = counts.data(), params.indices = indices.data();
  tile_selection_cpu(params);
  return indices;
}

TEST(TileSelection, DiagonalProjectionSelectsWhatItsFullMatrixSelects) {
  const std::int64_t heads = 2, tiles = 30, dim = 16, budget = 6;
  const auto q_stats = testing::random_matrix(heads * tiles * 3, dim, 10),
             k_stats = testing::random_matrix(heads * tiles * 3, dim, 11);
  // Per head [3, D] weights, and the same as full [3D, D] matrices (zeros off the diagonal).
  const auto q_diagonal = testing::random_matrix(heads * 3, dim, 12),
             k_diagonal = testing::random_matrix(heads * 3, dim, 13);
  const auto q_full = testing::full_from_diagonal(q_diagonal, dim),
             k_full = testing::full_from_diagonal(k_diagonal, dim);
  const auto select = [&](const float* p_q, const float* p_k, bool diagonal) {
    TileSelectionParams params;
    params.q_stats = q_stats.data(), params.k_stats = k_stats.data();
    params.q_projection = p_q, params.k_projection = p_k;
    params.diagonal_projection = diagonal;
    params.batch = 1, params.heads = heads, params.q_tiles = tiles, params.k_tiles = tiles;
    params.dim = dim, params.scale = 0.25f, params.budget = budget;
    return selected_indices(params);
  };
  const auto diagonal = select(q_diagonal.data(), k_diagonal.data(), true);
  EXPECT_EQ(diagonal, select(q_full.data(), k_full.data(), false));
  EXPECT_NE(diagonal, select(nullptr, nullptr, false));  // not mean pooling's choice
}

// The gather's descriptors (diagonal P, local heads mapped to global ones; or none) are the
// projection of its statistics, padded to descriptor_width, and select what the statistics do.
TEST(TileSelection, DescriptorsFromTheGatherSelectWhatTheirStatisticsSelect) {
  const Grid grid{3, 10, 21};
  const std::int64_t tokens = grid.tokens(), heads = 2, dim = 20, tiles = tile_count(tokens);
  const std::int64_t width = descriptor_width(dim), budget = 2;
  ASSERT_EQ(width, 32);
  const auto q = testing::random_matrix(tokens * heads, dim, 14),
             k = testing::random_matrix(tokens * heads, dim, 15);
  const auto diagonal = testing::random_matrix(3 * 3, dim, 16);  // 3 global heads
  const std::vector<std::int32_t> global_head = {2, 0};
  const std::vector<std::int32_t> order = tile_major_order(grid, {1, 8, 16});
  for (const bool projected : {true, false}) {
    const float* projection = projected ? diagonal.data() : nullptr;
    std::vector<float> stats[2], descriptors[2];
    for (int x = 0; x < 2; ++x) {
      stats[x].assign(heads * tiles * 3 * dim, std::nanf(""));
      descriptors[x].assign(heads * tiles * width, std::nanf(""));
      TileGatherParams gather{
          TokensView::contiguous((x == 0 ? q : k).data(), DType::kF32, 1, tokens, heads, dim),
          order.data(),
          1,
          nullptr,
          nullptr,
          stats[x].data(),
          descriptors[x].data()};
      gather.diagonal_projection = projection, gather.global_head = global_head.data();
      tile_gather_cpu(gather);
    }
    for (std::int64_t h = 0; h < heads; ++h) {
      const std::span<const float> head_stats(stats[0].data() + h * tiles * 3 * dim,
                                              tiles * 3 * dim);
      const std::vector<float> expected = project_tiles(
          head_stats, dim,
          projected ? std::span<const float>(diagonal.data() + global_head[h] * 3 * dim, 3 * dim)
                    : std::span<const float>());
      for (std::int64_t t = 0; t < tiles; ++t) {
        const float* row = descriptors[0].data() + (h * tiles + t) * width;
        EXPECT_EQ(std::vector<float>(row, row + dim),
                  std::vector<float>(expected.begin() + t * dim, expected.begin() + (t + 1) * dim));
        EXPECT_EQ(std::vector<float>(row + dim, row + width),
                  std::vector<float>(width - dim, 0.0f));
      }
    }
    const auto select = [&](bool given) {
      TileSelectionParams params;
      params.q_stats = stats[0].data(), params.k_stats = stats[1].data();
      if (given) params.q_descriptors = descriptors[0].data();
      if (given) params.k_descriptors = descriptors[1].data();
      params.q_projection = params.k_projection = projection;
      params.diagonal_projection = true, params.global_head = global_head.data();
      params.batch = 1, params.heads = heads, params.q_tiles = tiles, params.k_tiles = tiles;
      params.dim = dim, params.scale = 0.2f, params.budget = budget;
      return selected_indices(params);
    };
    EXPECT_EQ(select(true), select(false));
  }
}

TEST(TileSelection, CumulativeThresholdPerHead) {
  const std::int64_t heads = 2, tiles = 24, dim = 16, budget = 8;
  const auto q_stats = testing::random_matrix(heads * tiles * 3, dim, 8),
             k_stats = testing::random_matrix(heads * tiles * 3, dim, 9);
  const std::vector<double> thresholds = {0.6, 0.0};  // head 1: the fixed budget
  TileSelectionParams params;
  params.q_stats = q_stats.data(), params.k_stats = k_stats.data();
  params.batch = 1, params.heads = heads, params.q_tiles = tiles, params.k_tiles = tiles;
  params.dim = dim, params.scale = 1.0f, params.budget = budget;
  params.thresholds = thresholds.data();
  std::vector<std::int32_t> counts(heads * tiles), indices(counts.size() * budget);
  params.counts = counts.data(), params.indices = indices.data();
  tile_selection_cpu(params);
  for (std::int64_t h = 0; h < heads; ++h) {
    const auto stats = [&](const std::vector<float>& all) {
      return std::span<const float>(all.data() + h * tiles * 3 * dim, tiles * 3 * dim);
    };
    const std::vector<float> logits = tile_logits(
        project_tiles(stats(q_stats), dim, {}), project_tiles(stats(k_stats), dim, {}), dim, 1.0f);
    BlockIndex expected(1, 1, tiles, tiles, budget);
    if (thresholds[h] > 0.0) {
      select_cumulative(logits, thresholds[h], true, expected, 0, 0);
    } else {
      select_top_k(logits, true, expected, 0, 0);
    }
    EXPECT_EQ(
        std::vector<std::int32_t>(counts.begin() + h * tiles, counts.begin() + (h + 1) * tiles),
        expected.counts);
    EXPECT_EQ(std::vector<std::int32_t>(indices.begin() + h * tiles * budget,
                                        indices.begin() + (h + 1) * tiles * budget),
              expected.indices);
  }
  // The threshold really shortens rows of head 0 (and only there).
  EXPECT_LT(*std::min_element(counts.begin(), counts.begin() + tiles), budget);
  EXPECT_EQ(*std::min_element(counts.begin() + tiles, counts.end()), budget);

  const std::vector<double> bad = {1.5, 0.0};
  params.thresholds = bad.data();
  testing::expect_error_naming([&] { tile_selection_cpu(params); },
                               "head 0 has cumulative threshold 1.5");
}

}  // namespace
}  // namespace veda
