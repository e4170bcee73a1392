// The whole GPU sparse attention call (plan/run) against the CPU references composed the same
// way: gather, selection, block-sparse attention into frame-major rows; with text tokens, the
// video part merged with float64 dense attention over the text keys, and dense text rows.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <ostream>
#include <random>
#include <string>

#include "../expect_error.h"
#include "../reference.h"
#include "cuda_test_util.h"
#include "veda/attention.h"
#include "veda/cuda/attention_merge.h"
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
  selection.diagonal_projection = s.diagonal_projection;
  selection.global_head = s.global_head.empty() ? nullptr : s.global_head.data();
  selection.batch = s.batch, selection.heads = s.heads, selection.q_tiles = tiles;
  selection.k_tiles = tiles, selection.dim = dim, selection.budget = index.budget;
  selection.scale = 1.0f / std::sqrt(static_cast<float>(dim));
  selection.keep_own_tile = s.keep_own_tile;
  selection.thresholds = s.head_thresholds.empty() ? nullptr : s.head_thresholds.data();
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
  std::vector<double> thresholds = {};  // per head, or none
  bool reordered_copies = true;
  bool diagonal_projection = false;  // where projected
};

void PrintTo(const PlanCase& c, std::ostream* os) { *os << c.name; }  // not its bytes

// Seeded random bf16 q, k, v (`elements` values each) and, where `projected`, estimator
// parameters (0.02 x normal) of heads + 1 global heads, to which the settings' local heads then
// map in reverse (local h -> global heads - h): a head index that is not the identity.
struct LayerInputs {
  std::vector<std::uint16_t> qkv[3];
  std::vector<float> projection_q, projection_k;
};

LayerInputs random_layer(SparseLayerSettings& settings, std::size_t elements, bool projected,
                         std::uint32_t seed) {
  std::mt19937 generator(seed);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  LayerInputs in;
  for (auto& x : in.qkv) {
    x.resize(elements);
    for (auto& value : x) value = float_to_bf16(normal(generator));
  }
  const std::int64_t global_heads = settings.heads + 1, dim = settings.dim;
  if (projected) {
    for (auto* p : {&in.projection_q, &in.projection_k}) {
      // P [3D, D] per head, or its diagonals [3, D] (larger: each is one term of a channel).
      const std::int64_t columns = settings.diagonal_projection ? 1 : dim;
      p->resize(static_cast<std::size_t>(global_heads * 3 * dim * columns));
      for (float& value : *p)
        value = (settings.diagonal_projection ? 0.5f : 0.02f) * normal(generator);
    }
  }
  for (std::int64_t h = 0; h < settings.heads; ++h) {
    settings.global_head.push_back(static_cast<std::int32_t>(global_heads - 1 - h));
  }
  return in;
}

class SparseAttentionPlanCuda : public ::testing::TestWithParam<PlanCase> {};

TEST_P(SparseAttentionPlanCuda, MatchesTheCpuComposition) {
  if (!has_gpu()) GTEST_SKIP() << "no CUDA device";
  const PlanCase& c = GetParam();
  const std::int64_t tokens = c.grid.tokens(), dim = c.dim;
  const auto elements = static_cast<std::size_t>(c.batch * tokens * c.heads * dim);
  SparseLayerSettings settings = layer(c.grid, c.batch, c.heads, dim, c.tiles, c.sparsity);
  settings.head_thresholds = c.thresholds;
  settings.reordered_copies = c.reordered_copies;
  settings.diagonal_projection = c.diagonal_projection;
  const LayerInputs in =
      random_layer(settings, elements, c.projected, static_cast<std::uint32_t>(tokens + dim));
  const auto& [inputs, projection_q, projection_k] = in;
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
  // bf16 output rounding alone is <= 2^-8 relative per element; the kernel also rounds P to bf16.
  EXPECT_LT(relative_l2(got, reference.out), 8e-3);
  const auto got_lse = lse.download<float>();
  for (std::size_t n = 0; n < got_lse.size(); ++n) {
    ASSERT_NEAR(got_lse[n], reference.lse[n], 2e-3 * (1.0 + std::abs(reference.lse[n]))) << n;
  }
}

// A case run again with attention gathering q, k, v rows itself (no tile-major copies).
template <typename Case>
Case without_copies(Case c, const char* name) {
  c.name = name;
  c.reordered_copies = false;
  return c;
}

const PlanCase kTwoShapesEstimator{
    "TwoShapesEstimator", 2, {3, 10, 21}, 3, 64, {{1, 8, 16}, {4, 4, 8}, {1, 8, 16}}, 0.9, true};
// 7 heads of 5 shapes: the front end's head chunks come out uneven (3, 3, 1 per batch item).
const PlanCase kSevenHeadsDiagonal{
    "SevenHeadsDiagonal",
    2,
    {3, 10, 21},
    7,
    64,
    {{1, 8, 16}, {4, 4, 8}, {1, 8, 16}, {2, 8, 8}, {8, 4, 4}, {4, 4, 8}, {1, 4, 32}},
    0.8,
    true,
    {},
    true,
    true};
const PlanCase kWanLikeRows{"WanLikeRows",          1,    {5, 45, 16}, 2, 128,
                            {{2, 8, 8}, {8, 4, 4}}, 0.95, true};
// Without copies the kernel loads full boxes by TMA: 16 of 20 tiles in each of three shapes.
const PlanCase kManyBoxesRows{"ManyBoxesRows",
                              2,
                              {4, 17, 36},
                              3,
                              128,
                              {{1, 8, 16}, {2, 8, 8}, {4, 4, 8}},
                              0.8,
                              true,
                              {},
                              false};
// Eight shapes, each tiling the grid whole: groups 0-6 load boxes by TMA, group 7 (past
// kMaxBoxGroups) gathers rows.
const PlanCase kEightShapesRows{
    "EightShapesRows",
    1,
    {8, 16, 32},
    8,
    64,
    {{1, 8, 16}, {1, 16, 8}, {2, 8, 8}, {4, 4, 8}, {4, 8, 4}, {8, 4, 4}, {2, 4, 16}, {1, 4, 32}},
    0.7,
    false,
    {},
    false};

INSTANTIATE_TEST_SUITE_P(
    Layers, SparseAttentionPlanCuda,
    ::testing::Values(
        PlanCase{"OneShapeMeanPool", 1, {4, 16, 16}, 2, 128, {{1, 8, 16}}, 0.75, false},
        kTwoShapesEstimator, kWanLikeRows, without_copies(kWanLikeRows, "WanLikeRowsNoCopies"),
        kManyBoxesRows, kEightShapesRows,
        without_copies(kTwoShapesEstimator, "TwoShapesEstimatorNoCopies"), kSevenHeadsDiagonal,
        without_copies(kSevenHeadsDiagonal, "SevenHeadsDiagonalNoCopies"),
        // Head 0 keeps the fewest tiles holding 70% of the estimated mass (at most the budget).
        PlanCase{
            "CumulativeThreshold", 2, {3, 10, 21}, 2, 64, {{1, 8, 16}}, 0.5, true, {0.7, 0.0}}),
    [](const auto& test) { return std::string(test.param.name); });

TEST(SparseAttentionPlanCuda, RejectsMismatchedCallsWithClearMessages) {
  if (!has_gpu()) GTEST_SKIP() << "no CUDA device";
  const SparseAttentionPlan plan(layer({2, 8, 16}, 1, 2, 64, {{1, 8, 16}}, 0.5));
  const DeviceBuffer data(2 * 256 * 2 * 64 * 2);
  const auto wrong = TokensView::contiguous(data.get(), DType::kBF16, 1, 200, 2, 64);
  testing::expect_error_naming(
      [&] { plan.run(wrong, wrong, wrong, data.get(), nullptr, data.get(), 1, nullptr); },
      "the plan is for [1, 256, 2, 64] BF16 (grid 2x8x16)");
  EXPECT_THROW(SparseAttentionPlan(layer({2, 8, 16}, 1, 3, 64, {{1, 8, 16}, {2, 8, 8}}, 0.5)),
               Error);
}

// Runs f, expecting a veda::Error whose message contains `expected`.
template <typename F>
void expect_error(F&& f, const std::string& expected) {
  try {
    f();
  } catch (const Error& error) {
    EXPECT_NE(std::string(error.what()).find(expected), std::string::npos) << error.what();
    return;
  }
  ADD_FAILURE() << "expected an error containing: " << expected;
}

// ---- Text tokens: video rows sparse + dense over the text keys (merged), text rows dense ----

// bf16 output rounding alone is <= 2^-8 relative per element; the kernels also round P to bf16,
// and the video rows' sparse part is rounded once more before the merge.
constexpr double kOutTolerance = 8e-3;

struct TextCase {
  const char* name;
  std::int64_t batch;
  Grid grid;
  std::int64_t heads, dim;
  std::vector<TileShape> tiles;
  double sparsity;
  std::int64_t text_tokens;
  TextPosition position;
  bool projected;
  bool reordered_copies = true;
};

struct TextReference {
  std::vector<float> out;       // [B, L, H, D]
  std::vector<float> lse;       // [B, L, H]
  std::vector<float> unmerged;  // out with the video rows' sparse part alone (no text keys)
};

// Where the video and the text rows start among the L rows.
struct RowSplit {
  std::int64_t video, text, length, video0, text0;
  explicit RowSplit(const SparseLayerSettings& s)
      : video(s.grid.tokens()),
        text(s.text_tokens),
        length(video + text),
        video0(s.text_position == TextPosition::kBefore ? text : 0),
        text0(s.text_position == TextPosition::kBefore ? 0 : video) {}
};

// Rows [first, first + count) of every batch of a contiguous [B, L, ...] tensor whose rows hold
// row_size values, as a contiguous [B, count, ...] copy.
template <typename T>
std::vector<T> copy_rows(const std::vector<T>& x, std::int64_t batch, std::int64_t length,
                         std::int64_t row_size, std::int64_t first, std::int64_t count) {
  std::vector<T> rows;
  rows.reserve(static_cast<std::size_t>(batch * count * row_size));
  for (std::int64_t b = 0; b < batch; ++b) {
    const auto begin = x.begin() + (b * length + first) * row_size;
    rows.insert(rows.end(), begin, begin + count * row_size);
  }
  return rows;
}

// The CPU composition of a run with text tokens, on the same bf16 inputs [B, L, H, D]: the video
// rows' sparse part by reference_run on copies of the video rows, merged in float64 with dense
// float64 attention over the text keys; the text rows dense over all L keys.
TextReference reference_text_run(const SparseLayerSettings& s,
                                 const std::vector<float>& projection_q,
                                 const std::vector<float>& projection_k,
                                 const std::vector<std::uint16_t> (&inputs)[3]) {
  const RowSplit rows(s);
  const std::int64_t heads = s.heads, dim = s.dim, row_size = heads * dim;
  SparseLayerSettings video_only = s;
  video_only.text_tokens = 0;
  std::vector<std::uint16_t> video_inputs[3];
  for (int i = 0; i < 3; ++i) {
    video_inputs[i] = copy_rows(inputs[i], s.batch, rows.length, row_size, rows.video0, rows.video);
  }
  const auto video_view = [&](const std::vector<std::uint16_t>& x) {
    return TokensView::contiguous(x.data(), DType::kBF16, s.batch, rows.video, heads, dim);
  };
  const Reference sparse =
      reference_run(video_only, projection_q, projection_k, video_view(video_inputs[0]),
                    video_view(video_inputs[1]), video_view(video_inputs[2]));

  const auto full = [&](int i) {
    return TokensView::contiguous(inputs[i].data(), DType::kBF16, s.batch, rows.length, heads, dim);
  };
  // Rows [first, first + count) of one head's [L, D] matrix.
  const auto head_rows = [&](const std::vector<float>& head, std::int64_t first,
                             std::int64_t count) {
    return std::vector<float>(head.begin() + first * dim, head.begin() + (first + count) * dim);
  };
  const auto every_key = [](std::int64_t, std::int64_t) { return true; };
  const double scale = 1.0 / std::sqrt(static_cast<double>(dim));
  const auto out_size = static_cast<std::size_t>(s.batch * rows.length * row_size);
  TextReference reference{
      std::vector<float>(out_size),
      std::vector<float>(static_cast<std::size_t>(s.batch * rows.length * heads)),
      std::vector<float>(out_size)};
  for (std::int64_t b = 0; b < s.batch; ++b) {
    for (std::int64_t h = 0; h < heads; ++h) {
      const std::vector<float> q = load_head(full(0), b, h), k = load_head(full(1), b, h),
                               v = load_head(full(2), b, h);
      const testing::ReferenceAttention video_text = testing::reference_attention(
          head_rows(q, rows.video0, rows.video), head_rows(k, rows.text0, rows.text),
          head_rows(v, rows.text0, rows.text), dim, scale, every_key);
      const testing::ReferenceAttention text_all = testing::reference_attention(
          head_rows(q, rows.text0, rows.text), k, v, dim, scale, every_key);
      for (std::int64_t n = 0; n < rows.video; ++n) {
        const auto from = static_cast<std::size_t>((b * rows.video + n) * heads + h);
        const auto to = static_cast<std::size_t>((b * rows.length + rows.video0 + n) * heads + h);
        const double lse_vv = sparse.lse[from], lse_vt = video_text.lse[n];
        const double peak = std::max(lse_vv, lse_vt);
        const double lse = peak + std::log(std::exp(lse_vv - peak) + std::exp(lse_vt - peak));
        reference.lse[to] = static_cast<float>(lse);
        for (std::int64_t d = 0; d < dim; ++d) {
          const double o_vv = sparse.out[from * dim + d], o_vt = video_text.out[n * dim + d];
          reference.out[to * dim + d] =
              static_cast<float>(std::exp(lse_vv - lse) * o_vv + std::exp(lse_vt - lse) * o_vt);
          reference.unmerged[to * dim + d] = static_cast<float>(o_vv);
        }
      }
      for (std::int64_t t = 0; t < rows.text; ++t) {
        const auto to = static_cast<std::size_t>((b * rows.length + rows.text0 + t) * heads + h);
        reference.lse[to] = static_cast<float>(text_all.lse[t]);
        for (std::int64_t d = 0; d < dim; ++d) {
          reference.out[to * dim + d] = reference.unmerged[to * dim + d] =
              static_cast<float>(text_all.out[t * dim + d]);
        }
      }
    }
  }
  return reference;
}

// A run's out (bf16, NaN-poisoned before the run) and lse against the reference: the video rows
// and the text rows separately, so neither part's error hides in the other's norm.
void expect_text_run_matches(const SparseLayerSettings& s, const TextReference& reference,
                             const DeviceBuffer& out, const DeviceBuffer* lse) {
  const RowSplit rows(s);
  const std::int64_t row_size = s.heads * s.dim;
  const auto bits = out.download<std::uint16_t>();
  std::vector<float> got(bits.size());
  for (std::size_t n = 0; n < bits.size(); ++n) {
    got[n] = bf16_to_float(bits[n]);
    ASSERT_FALSE(std::isnan(got[n])) << "out element " << n << " not written";
  }
  const auto part = [&](const std::vector<float>& x, std::int64_t first, std::int64_t count) {
    return copy_rows(x, s.batch, rows.length, row_size, first, count);
  };
  EXPECT_LT(
      relative_l2(part(got, rows.video0, rows.video), part(reference.out, rows.video0, rows.video)),
      kOutTolerance)
      << "video rows";
  EXPECT_LT(
      relative_l2(part(got, rows.text0, rows.text), part(reference.out, rows.text0, rows.text)),
      kOutTolerance)
      << "text rows";
  if (lse == nullptr) return;
  const auto got_lse = lse->download<float>();
  ASSERT_EQ(got_lse.size(), reference.lse.size());
  for (std::size_t n = 0; n < got_lse.size(); ++n) {
    ASSERT_NEAR(got_lse[n], reference.lse[n], 2e-3 * (1.0 + std::abs(reference.lse[n])))
        << "lse element " << n << " (row " << n / static_cast<std::size_t>(s.heads)
        << " of batch-major [B, L])";
  }
}

// A stream and the graph captured on it, freed on scope exit.
struct CapturedRun {
  cudaStream_t stream = nullptr;
  cudaGraph_t graph = nullptr;
  cudaGraphExec_t exec = nullptr;
  CapturedRun() = default;
  CapturedRun(const CapturedRun&) = delete;
  CapturedRun& operator=(const CapturedRun&) = delete;
  ~CapturedRun() {
    if (exec != nullptr) cudaGraphExecDestroy(exec);
    if (graph != nullptr) cudaGraphDestroy(graph);
    if (stream != nullptr) cudaStreamDestroy(stream);
  }
};

void PrintTo(const TextCase& c, std::ostream* os) { *os << c.name; }

class SparseAttentionPlanTextCuda : public ::testing::TestWithParam<TextCase> {};

TEST_P(SparseAttentionPlanTextCuda, MatchesTheCpuComposition) {
  const TextCase& c = GetParam();
  const std::int64_t length = c.grid.tokens() + c.text_tokens, dim = c.dim;
  const auto elements = static_cast<std::size_t>(c.batch * length * c.heads * dim);
  SparseLayerSettings settings = layer(c.grid, c.batch, c.heads, dim, c.tiles, c.sparsity);
  settings.text_tokens = c.text_tokens, settings.text_position = c.position;
  settings.reordered_copies = c.reordered_copies;
  const LayerInputs in =
      random_layer(settings, elements, c.projected, static_cast<std::uint32_t>(7 * length + dim));
  const auto& [inputs, projection_q, projection_k] = in;
  const TextReference reference = reference_text_run(settings, projection_q, projection_k, inputs);
  // The comparison can fail: leaving the text keys out of the video rows (a missing or wrong
  // merge) moves them by well over the tolerance. (Checked without a GPU too.)
  const RowSplit rows(settings);
  const auto video_rows = [&](const std::vector<float>& x) {
    return copy_rows(x, c.batch, length, c.heads * dim, rows.video0, rows.video);
  };
  ASSERT_GT(relative_l2(video_rows(reference.unmerged), video_rows(reference.out)),
            4 * kOutTolerance);
  if (!has_gpu()) GTEST_SKIP() << "no CUDA device";

  const DeviceBuffer q(inputs[0]), k(inputs[1]), v(inputs[2]), p_q(projection_q), p_k(projection_k);
  settings.q_projection = c.projected ? p_q.get<float>() : nullptr;
  settings.k_projection = c.projected ? p_k.get<float>() : nullptr;
  const SparseAttentionPlan plan(settings);
  ASSERT_EQ(plan.rows(), length);
  const std::size_t bytes = plan.workspace_bytes();
  const DeviceBuffer workspace(bytes), out(elements * 2), lse(reference.lse.size() * 4);
  const auto view = [&](const DeviceBuffer& x) {
    return TokensView::contiguous(x.get(), DType::kBF16, c.batch, length, c.heads, dim);
  };

  {
    SCOPED_TRACE("first run, default stream");
    plan.run(view(q), view(k), view(v), out.get(), lse.get<float>(), workspace.get(), bytes,
             nullptr);
    ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
    ASSERT_NO_FATAL_FAILURE(expect_text_run_matches(settings, reference, out, &lse));
  }
  {
    SCOPED_TRACE("second run without lse: nothing may land in the lse buffer");
    out.poison();
    lse.poison();
    plan.run(view(q), view(k), view(v), out.get(), nullptr, workspace.get(), bytes, nullptr);
    ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
    ASSERT_NO_FATAL_FAILURE(expect_text_run_matches(settings, reference, out, nullptr));
    for (const float value : lse.download<float>()) ASSERT_TRUE(std::isnan(value));
  }
  {
    SCOPED_TRACE("captured in a CUDA graph on a stream of its own, workspace poisoned");
    out.poison();
    lse.poison();
    workspace.poison();
    CapturedRun captured;
    ASSERT_EQ(cudaStreamCreateWithFlags(&captured.stream, cudaStreamNonBlocking), cudaSuccess);
    ASSERT_EQ(cudaStreamBeginCapture(captured.stream, cudaStreamCaptureModeGlobal), cudaSuccess);
    plan.run(view(q), view(k), view(v), out.get(), lse.get<float>(), workspace.get(), bytes,
             captured.stream);
    ASSERT_EQ(cudaStreamEndCapture(captured.stream, &captured.graph), cudaSuccess);
    ASSERT_EQ(cudaGraphInstantiate(&captured.exec, captured.graph, 0), cudaSuccess);
    ASSERT_EQ(cudaGraphLaunch(captured.exec, captured.stream), cudaSuccess);
    ASSERT_EQ(cudaStreamSynchronize(captured.stream), cudaSuccess);
    ASSERT_NO_FATAL_FAILURE(expect_text_run_matches(settings, reference, out, &lse));
  }
}

const TextCase kAfter77Estimator{
    "After77Estimator",   2,   {2, 9, 20}, 2, 128, {{2, 8, 8}, {8, 4, 4}}, 0.7, 77,
    TextPosition::kAfter, true};

INSTANTIATE_TEST_SUITE_P(
    TextTokens, SparseAttentionPlanTextCuda,
    ::testing::Values(
        TextCase{"After1",
                 2,
                 {3, 10, 21},
                 3,
                 64,
                 {{1, 8, 16}, {4, 4, 8}, {1, 8, 16}},
                 0.8,
                 1,
                 TextPosition::kAfter,
                 false},
        TextCase{
            "Before1", 1, {2, 9, 20}, 2, 128, {{1, 8, 16}}, 0.5, 1, TextPosition::kBefore, false},
        kAfter77Estimator,
        TextCase{"Before77Estimator",
                 2,
                 {3, 10, 21},
                 3,
                 64,
                 {{1, 8, 16}},
                 0.9,
                 77,
                 TextPosition::kBefore,
                 true},
        TextCase{
            "After300", 1, {5, 7, 9}, 2, 64, {{4, 4, 8}}, 0.6, 300, TextPosition::kAfter, false},
        TextCase{"Before300Estimator",
                 2,
                 {4, 6, 11},
                 3,
                 128,
                 {{1, 8, 16}, {2, 8, 8}, {8, 4, 4}},
                 0.5,
                 300,
                 TextPosition::kBefore,
                 true},
        without_copies(kAfter77Estimator, "After77EstimatorNoCopies"),
        // Text first: the video rows' batch stride is not N rows (the box maps' batch dimension).
        TextCase{"Before77BoxesNoCopies",
                 2,
                 {4, 17, 36},
                 2,
                 128,
                 {{1, 8, 16}, {4, 4, 8}},
                 0.8,
                 77,
                 TextPosition::kBefore,
                 true,
                 false}),
    [](const auto& test) { return std::string(test.param.name); });

TEST(SparseAttentionPlanCuda, RejectsBadThresholdsBeforeTouchingTheDevice) {
  SparseLayerSettings settings = layer({2, 8, 16}, 1, 2, 64, {{1, 8, 16}}, 0.5);
  settings.head_thresholds = {0.9};
  expect_error([&] { const SparseAttentionPlan plan(settings); },
               "sparse attention plan got 1 cumulative thresholds for 2 local heads; expected "
               "none or one per head");
  settings.head_thresholds = {0.9, 1.5};
  expect_error([&] { const SparseAttentionPlan plan(settings); },
               "head 1 has cumulative threshold 1.5; expected 0 (fixed budget) or (0, 1]");
}

TEST(SparseAttentionPlanCuda, RejectsBadTextSettingsBeforeTouchingTheDevice) {
  // No GPU needed: the constructor validates the settings before it uploads anything.
  SparseLayerSettings settings = layer({2, 8, 16}, 1, 2, 64, {{1, 8, 16}}, 0.5);
  settings.text_tokens = -3;
  expect_error([&] { const SparseAttentionPlan plan(settings); },
               "sparse attention plan got text_tokens = -3; expected 0 (video only) or more");
  settings.text_tokens = 77;
  settings.text_position = static_cast<TextPosition>(7);
  expect_error([&] { const SparseAttentionPlan plan(settings); },
               "sparse attention plan got text position 7; expected TextPosition::kAfter (0) or "
               "TextPosition::kBefore (1)");
}

TEST(SparseAttentionPlanCuda, RejectsCallsThatDoNotMatchTheTextRows) {
  if (!has_gpu()) GTEST_SKIP() << "no CUDA device";
  SparseLayerSettings settings = layer({2, 8, 16}, 1, 2, 64, {{1, 8, 16}}, 0.5);
  settings.text_tokens = 77;
  const SparseAttentionPlan plan(settings);
  EXPECT_EQ(plan.rows(), 333);
  const std::size_t bytes = plan.workspace_bytes();
  const DeviceBuffer data(333 * 2 * 64 * 2), workspace(bytes);
  const auto rows = [&](std::int64_t tokens) {
    return TokensView::contiguous(data.get(), DType::kBF16, 1, tokens, 2, 64);
  };
  // The video tokens alone: the text rows are missing.
  expect_error(
      [&] {
        plan.run(rows(256), rows(256), rows(256), data.get(), nullptr, workspace.get(), bytes,
                 nullptr);
      },
      "sparse attention run got q [1, 256, 2, 64] BF16; the plan is for [1, 333, 2, 64] BF16 "
      "(grid 2x8x16: 256 video tokens and 77 text tokens after them)");
  // k and v alone with too few rows are named.
  expect_error(
      [&] {
        plan.run(rows(333), rows(300), rows(300), data.get(), nullptr, workspace.get(), bytes,
                 nullptr);
      },
      "sparse attention run got k [1, 300, 2, 64] BF16; the plan is for [1, 333, 2, 64]");
  // A workspace sized for the video tokens alone is too small.
  SparseLayerSettings video_only = settings;
  video_only.text_tokens = 0;
  const std::size_t video_bytes = SparseAttentionPlan(video_only).workspace_bytes();
  EXPECT_GT(bytes, video_bytes);
  expect_error(
      [&] {
        plan.run(rows(333), rows(333), rows(333), data.get(), nullptr, workspace.get(), video_bytes,
                 nullptr);
      },
      "sparse attention run got a workspace of " + std::to_string(video_bytes) +
          " bytes; the plan needs " + std::to_string(bytes));
  settings.text_position = TextPosition::kBefore;
  const SparseAttentionPlan before(settings);
  expect_error(
      [&] {
        before.run(rows(256), rows(256), rows(256), data.get(), nullptr, workspace.get(), bytes,
                   nullptr);
      },
      "(grid 2x8x16: 256 video tokens and 77 text tokens before them)");
}

// ---- The merge kernel alone ----

// lse_a, lse_b and O_a, O_b of `rows` rows, with the edge cases in rows 0-2: part a empty
// (lse -inf, O_a NaN: must not be read), part b empty (O_b NaN), both empty (O = 0, lse = -inf).
TEST(AttentionMergeCuda, MatchesTheSplitSoftmaxIdentityInPlace) {
  if (!has_gpu()) GTEST_SKIP() << "no CUDA device";
  constexpr std::int64_t batch = 2, tokens = 37, heads = 3, dim = 64, first = 5;
  constexpr std::int64_t length = tokens + 9;  // the merged rows sit at [5, 42) of 46
  constexpr std::int64_t rows = batch * tokens * heads;
  const float inf = std::numeric_limits<float>::infinity(), nan = std::nanf("");
  std::mt19937 generator(11);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<float> lse_a(rows), lse_b(rows), out_a(rows * dim), out_b(rows * dim);
  for (std::int64_t r = 0; r < rows; ++r) {
    lse_a[r] = 3.0f * normal(generator), lse_b[r] = 3.0f * normal(generator);
    for (std::int64_t d = 0; d < dim; ++d) {
      out_a[r * dim + d] = normal(generator), out_b[r * dim + d] = normal(generator);
    }
  }
  lse_a[0] = lse_a[2] = lse_b[1] = lse_b[2] = -inf;
  for (std::int64_t d = 0; d < dim; ++d) {
    out_a[d] = out_a[2 * dim + d] = out_b[dim + d] = out_b[2 * dim + d] = nan;
  }

  for (const DType dtype : {DType::kBF16, DType::kF16, DType::kF32}) {
    SCOPED_TRACE(std::string(dtype_name(dtype)));
    const std::size_t element = dtype_size(dtype);
    // out [B, length, H, D] of dtype, poisoned, part a stored at rows [first, first + tokens).
    std::vector<std::byte> out_host(static_cast<std::size_t>(batch * length * heads * dim) *
                                    element);
    std::fill(out_host.begin(), out_host.end(), std::byte{0xFF});
    const auto at = [&](std::int64_t r, std::int64_t d) {  // r = (b*tokens + n)*heads + h
      const std::int64_t h = r % heads, n = r / heads % tokens, b = r / heads / tokens;
      return ((b * length + first + n) * heads + h) * dim + d;
    };
    std::vector<float> a_values(out_a.size());  // part a as stored, rounded to dtype
    for (std::int64_t r = 0; r < rows; ++r) {
      for (std::int64_t d = 0; d < dim; ++d) {
        store_from_float(out_host.data(), dtype, at(r, d), out_a[r * dim + d]);
        a_values[r * dim + d] = load_as_float(out_host.data(), dtype, at(r, d));
      }
    }
    const DeviceBuffer out(out_host), device_lse_a(lse_a), device_out_b(out_b), device_lse_b(lse_b),
        lse(static_cast<std::size_t>(batch * length * heads) * 4);
    AttentionMergeParams merge;
    merge.batch = batch, merge.tokens = tokens, merge.heads = heads, merge.dim = dim;
    merge.out = out.get<std::byte>() + first * heads * dim * static_cast<std::int64_t>(element);
    merge.out_dtype = dtype;
    merge.out_stride_batch = length * heads * dim, merge.out_stride_token = heads * dim;
    merge.out_stride_head = dim;
    merge.lse_a = device_lse_a.get<float>(), merge.out_b = device_out_b.get<float>();
    merge.lse_b = device_lse_b.get<float>();
    merge.lse = lse.get<float>() + first * heads;
    merge.lse_stride_batch = length * heads, merge.lse_stride_token = heads;
    merge.lse_stride_head = 1;
    attention_merge_cuda(merge, nullptr);
    ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);

    const auto got_out = out.download<std::byte>();
    const auto got_lse = lse.download<float>();
    for (std::int64_t r = 0; r < rows; ++r) {
      const double a = lse_a[r], b = lse_b[r], peak = std::max(a, b);
      const double expected_lse =
          std::isinf(peak) ? -inf : peak + std::log(std::exp(a - peak) + std::exp(b - peak));
      const std::int64_t lse_at = at(r, 0) / dim;
      if (std::isinf(expected_lse)) {
        ASSERT_TRUE(std::isinf(got_lse[lse_at]) && got_lse[lse_at] < 0) << "row " << r;
      } else {
        ASSERT_NEAR(got_lse[lse_at], expected_lse, 1e-5 * (1.0 + std::abs(expected_lse)))
            << "row " << r;
      }
      for (std::int64_t d = 0; d < dim; ++d) {
        double expected = 0.0;
        if (!std::isinf(a)) expected += std::exp(a - expected_lse) * a_values[r * dim + d];
        if (!std::isinf(b)) expected += std::exp(b - expected_lse) * out_b[r * dim + d];
        const float got = load_as_float(got_out.data(), dtype, at(r, d));
        // One rounding to dtype: <= 2^-11 relative for F16, 2^-8 for BF16, 2^-24 for F32.
        ASSERT_NEAR(got, expected, 5e-3 * std::abs(expected) + 1e-6) << "row " << r << " d " << d;
      }
    }
    // Rows outside [first, first + tokens) are left alone (still NaN).
    for (std::int64_t b = 0; b < batch; ++b) {
      for (const std::int64_t n : {std::int64_t{0}, first - 1, first + tokens, length - 1}) {
        const std::int64_t row = (b * length + n) * heads;
        ASSERT_TRUE(std::isnan(load_as_float(got_out.data(), dtype, row * dim))) << "row " << n;
        ASSERT_TRUE(std::isnan(got_lse[row])) << "row " << n;
      }
    }
  }
}

TEST(AttentionMergeCuda, RejectsBadParamsWithClearMessages) {
  // No GPU needed: attention_merge_cuda validates before it launches.
  std::vector<float> lse_a(6), lse_b(6), out_b(6 * 64), lse(6);
  std::vector<std::uint16_t> out(6 * 64);
  AttentionMergeParams merge;
  merge.batch = 1, merge.tokens = 2, merge.heads = 3, merge.dim = 64;
  merge.out = out.data(), merge.out_dtype = DType::kBF16;
  merge.out_stride_batch = 384, merge.out_stride_token = 192, merge.out_stride_head = 64;
  merge.lse_a = lse_a.data(), merge.out_b = out_b.data(), merge.lse_b = lse_b.data();
  merge.lse = lse.data();
  merge.lse_stride_batch = 6, merge.lse_stride_token = 3, merge.lse_stride_head = 1;
  EXPECT_NO_THROW(merge.validate());
  const auto rejects = [&](AttentionMergeParams bad, const std::string& expected) {
    expect_error([&] { attention_merge_cuda(bad, nullptr); }, expected);
  };
  AttentionMergeParams bad = merge;
  bad.tokens = 0;
  rejects(bad, "attention merge of [1, 0, 3, 64] (B, N, H, D); expected every size positive");
  bad = merge, bad.dim = 63;
  rejects(bad, "attention merge got head dim 63; expected an even head dim");
  bad = merge, bad.out_dtype = DType::kI32;
  rejects(bad, "attention merge got out dtype I32; expected F32, F16 or BF16");
  bad = merge, bad.out_b = nullptr;
  rejects(bad, "attention merge needs out, lse_a, out_b and lse_b; got a null pointer");
  bad = merge, bad.out_stride_token = 193;
  rejects(bad, "with even strides; got strides (384, 193, 64)");
  bad = merge, bad.lse = lse_b.data() + 2;
  rejects(bad, "attention merge writes lse over lse_a or lse_b");
}

}  // namespace
}  // namespace veda
