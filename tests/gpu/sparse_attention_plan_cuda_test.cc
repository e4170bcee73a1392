// The whole GPU sparse attention call (plan/run) against the CPU references composed the same
// way: gather, selection, block-sparse attention into frame-major rows.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <random>

#include "cuda_test_util.h"
#include "veda/attention.h"
#include "veda/cuda/sparse_attention_plan.h"
#include "veda/error.h"
#include "veda/metrics.h"
#include "veda/selection.h"
#include "veda/sparse_attention.h"
#include "veda/tile_gather.h"
#include "veda/tile_selection.h"

namespace veda {
namespace {

using testing::DeviceBuffer;
using testing::has_gpu;

SparseLayerSettings layer(Grid grid, std::int64_t batch, std::int64_t heads, std::int64_t dim,
                          std::vector<TileShape> tiles, double sparsity) {
  SparseLayerSettings settings;
  settings.grid = grid, settings.batch = batch, settings.heads = heads, settings.dim = dim;
  settings.head_tiles = std::move(tiles), settings.sparsity = sparsity;
  return settings;
}

struct Reference {
  std::vector<float> out;  // [B, N, H, D]
  std::vector<float> lse;  // [B, N, H]
};

// The CPU composition of what SparseAttentionPlan::run does, on the same bf16 inputs:
// gather, selection, then attention storing rows at their frame-major places.
Reference reference_run(const SparseLayerSettings& s, const std::vector<float>& projection_q,
                        const std::vector<float>& projection_k, const TokensView& q,
                        const TokensView& k, const TokensView& v) {
  const std::int64_t tokens = s.grid.tokens(), tiles = tile_count(tokens), dim = s.dim;
  std::vector<TileShape> shapes;
  std::vector<std::int32_t> head_group, order;
  for (std::int64_t h = 0; h < s.heads; ++h) {
    const TileShape shape = s.head_tiles.size() == 1 ? s.head_tiles[0] : s.head_tiles[h];
    auto found = std::find(shapes.begin(), shapes.end(), shape);
    head_group.push_back(static_cast<std::int32_t>(found - shapes.begin()));
    if (found == shapes.end()) {
      shapes.push_back(shape);
      const auto group_order = tile_major_order(s.grid, shape);
      order.insert(order.end(), group_order.begin(), group_order.end());
    }
  }
  const auto elements = static_cast<std::size_t>(s.batch * s.heads * tokens * dim);
  const auto stats_size = static_cast<std::size_t>(s.batch * s.heads * tiles * 3 * dim);
  std::vector<float> q_tiled(elements), k_tiled(elements), v_tiled(elements);
  std::vector<float> q_stats(stats_size), k_stats(stats_size);
  const auto groups = static_cast<std::int64_t>(shapes.size());
  // Gather into float32 copies: the values are the bf16 inputs', exactly.
  TokensView q32 = q, k32 = k, v32 = v;
  std::vector<float> q_values(elements), k_values(elements), v_values(elements);
  for (auto [view, values] : {std::pair{&q32, &q_values}, {&k32, &k_values}, {&v32, &v_values}}) {
    for (std::size_t n = 0; n < elements; ++n)
      (*values)[n] = load_as_float(view->data, view->dtype, n);
    view->data = values->data(), view->dtype = DType::kF32;
  }
  tile_gather_cpu({q32, order.data(), groups, head_group.data(), q_tiled.data(), q_stats.data()});
  tile_gather_cpu({k32, order.data(), groups, head_group.data(), k_tiled.data(), k_stats.data()});
  tile_gather_cpu({v32, order.data(), groups, head_group.data(), v_tiled.data(), nullptr});

  BlockIndex index(s.batch, s.heads, tiles, tiles, budget_for_sparsity(s.sparsity, tiles));
  TileSelectionParams selection;
  selection.q_stats = q_stats.data(), selection.k_stats = k_stats.data();
  selection.q_projection = projection_q.empty() ? nullptr : projection_q.data();
  selection.k_projection = projection_k.empty() ? nullptr : projection_k.data();
  selection.global_head = s.global_head.empty() ? nullptr : s.global_head.data();
  selection.batch = s.batch, selection.heads = s.heads, selection.q_tiles = tiles;
  selection.k_tiles = tiles, selection.dim = dim, selection.budget = index.budget;
  selection.scale = 1.0f / std::sqrt(static_cast<float>(dim));
  selection.keep_own_tile = s.keep_own_tile;
  selection.counts = index.counts.data(), selection.indices = index.indices.data();
  tile_selection_cpu(selection);

  const auto tiled = [&](const std::vector<float>& x) {
    return TokensView{x.data(), DType::kF32, s.batch, tokens, s.heads, dim, s.heads * tokens * dim,
                      dim,      tokens * dim};
  };
  const BlockIndexView view = index.view();
  Reference reference{std::vector<float>(elements),
                      std::vector<float>(static_cast<std::size_t>(s.batch * tokens * s.heads))};
  AttentionParams attention;
  attention.q = tiled(q_tiled), attention.k = tiled(k_tiled), attention.v = tiled(v_tiled);
  attention.index = &view, attention.scale = selection.scale;
  attention.out = reference.out.data(), attention.out_dtype = DType::kF32;
  attention.out_stride_batch = tokens * s.heads * dim, attention.out_stride_token = s.heads * dim;
  attention.out_stride_head = dim;
  attention.lse = reference.lse.data(), attention.lse_stride_batch = tokens * s.heads;
  attention.lse_stride_token = s.heads, attention.lse_stride_head = 1;
  attention.out_order = order.data(), attention.out_head_group = head_group.data();
  attention_cpu(attention);
  return reference;
}

struct PlanCase {
  const char* name;
  std::int64_t batch;
  Grid grid;
  std::int64_t heads, dim;
  std::vector<TileShape> tiles;
  double sparsity;
  bool projected;
};

class SparseAttentionPlanCuda : public ::testing::TestWithParam<PlanCase> {};

TEST_P(SparseAttentionPlanCuda, MatchesTheCpuComposition) {
  if (!has_gpu()) GTEST_SKIP() << "no CUDA device";
  const PlanCase& c = GetParam();
  const std::int64_t tokens = c.grid.tokens(), dim = c.dim;
  const auto elements = static_cast<std::size_t>(c.batch * tokens * c.heads * dim);
  std::mt19937 generator(static_cast<std::uint32_t>(tokens + dim));
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<std::uint16_t> inputs[3];
  for (auto& x : inputs) {
    x.resize(elements);
    for (auto& value : x) value = float_to_bf16(normal(generator));
  }
  std::vector<float> projection_q, projection_k;
  const std::int64_t global_heads = c.heads + 1;
  if (c.projected) {
    for (auto* p : {&projection_q, &projection_k}) {
      p->resize(static_cast<std::size_t>(global_heads * 3 * dim * dim));
      for (float& value : *p) value = 0.02f * normal(generator);
    }
  }
  SparseLayerSettings settings = layer(c.grid, c.batch, c.heads, dim, c.tiles, c.sparsity);
  for (std::int64_t h = 0; h < c.heads; ++h) {
    settings.global_head.push_back(static_cast<std::int32_t>(global_heads - 1 - h));
  }
  const auto view = [&](const void* data) {
    return TokensView::contiguous(data, DType::kBF16, c.batch, tokens, c.heads, dim);
  };
  const Reference reference =
      reference_run(settings, projection_q, projection_k, view(inputs[0].data()),
                    view(inputs[1].data()), view(inputs[2].data()));

  const DeviceBuffer q(inputs[0]), k(inputs[1]), v(inputs[2]), p_q(projection_q), p_k(projection_k);
  settings.q_projection = c.projected ? p_q.get<float>() : nullptr;
  settings.k_projection = c.projected ? p_k.get<float>() : nullptr;
  const SparseAttentionPlan plan(settings);
  const DeviceBuffer workspace(plan.workspace_bytes()), out(elements * 2),
      lse(reference.lse.size() * 4);
  plan.run(view(q.get()), view(k.get()), view(v.get()), out.get(), lse.get<float>(),
           workspace.get(), plan.workspace_bytes(), nullptr);
  ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);

  const auto out_bits = out.download<std::uint16_t>();
  std::vector<float> got(elements);
  for (std::size_t n = 0; n < elements; ++n) {
    got[n] = bf16_to_float(out_bits[n]);
    ASSERT_FALSE(std::isnan(got[n])) << "element " << n << " not written";
  }
  // bf16 output rounding alone is <= 2^-9 relative per element; the kernel also rounds P to bf16.
  EXPECT_LT(relative_l2(got, reference.out), 8e-3);
  const auto got_lse = lse.download<float>();
  for (std::size_t n = 0; n < got_lse.size(); ++n) {
    ASSERT_NEAR(got_lse[n], reference.lse[n], 2e-3 * (1.0 + std::abs(reference.lse[n]))) << n;
  }
}

INSTANTIATE_TEST_SUITE_P(
    Layers, SparseAttentionPlanCuda,
    ::testing::Values(
        PlanCase{"OneShapeMeanPool", 1, {4, 16, 16}, 2, 128, {{1, 8, 16}}, 0.75, false},
        PlanCase{"TwoShapesEstimator",
                 2,
                 {3, 10, 21},
                 3,
                 64,
                 {{1, 8, 16}, {4, 4, 8}, {1, 8, 16}},
                 0.9,
                 true},
        PlanCase{"WanLikeRows", 1, {5, 45, 16}, 2, 128, {{2, 8, 8}, {8, 4, 4}}, 0.95, true}),
    [](const auto& test) { return std::string(test.param.name); });

TEST(SparseAttentionPlanCuda, RejectsMismatchedCallsWithClearMessages) {
  if (!has_gpu()) GTEST_SKIP() << "no CUDA device";
  const SparseAttentionPlan plan(layer({2, 8, 16}, 1, 2, 64, {{1, 8, 16}}, 0.5));
  const DeviceBuffer data(2 * 256 * 2 * 64 * 2);
  const auto wrong = TokensView::contiguous(data.get(), DType::kBF16, 1, 200, 2, 64);
  try {
    plan.run(wrong, wrong, wrong, data.get(), nullptr, data.get(), 1, nullptr);
    FAIL() << "expected an error";
  } catch (const Error& error) {
    EXPECT_NE(std::string(error.what()).find("the plan is for [1, 256, 2, 64] BF16 (grid 2x8x16)"),
              std::string::npos)
        << error.what();
  }
  EXPECT_THROW(SparseAttentionPlan(layer({2, 8, 16}, 1, 3, 64, {{1, 8, 16}, {2, 8, 8}}, 0.5)),
               Error);
}

}  // namespace
}  // namespace veda
