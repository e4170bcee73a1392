// GPU front end (tile-major gather with statistics, estimator tile selection) against the CPU
// references on the same inputs.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <deque>
#include <iterator>
#include <limits>
#include <numeric>
#include <random>
#include <span>
#include <string>

#include "../expect_error.h"
#include "cuda_test_util.h"
#include "veda/block_index.h"
#include "veda/cuda/tile_front_end.h"
#include "veda/error.h"
#include "veda/tile_layout.h"
#include "veda/tile_scoring.h"
#include "veda/tile_statistics.h"

namespace veda {
namespace {

using testing::DeviceBuffer;
using testing::expect_error_naming;
using testing::has_gpu;

std::vector<float> normal_values(std::size_t count, std::uint32_t seed, float scale = 1.0f) {
  std::mt19937 generator(seed);
  std::normal_distribution<float> normal(0.0f, scale);
  std::vector<float> values(count);
  for (float& value : values) value = normal(generator);
  return values;
}

// got within tolerance x (1 + |want|) of want, or equal to it (infinities), or both NaN.
::testing::AssertionResult close_to(float got, float want, float tolerance) {
  if (got == want || (std::isnan(got) && std::isnan(want)) ||
      std::abs(got - want) <= tolerance * (1.0f + std::abs(want))) {
    return ::testing::AssertionSuccess();
  }
  return ::testing::AssertionFailure() << "got " << got << ", expected " << want;
}

struct GatherCase {
  std::int64_t batch;
  Grid grid;
  std::int64_t heads, dim;
  DType dtype = DType::kBF16;  // or kF16
};

// 16-bit elements of x (dtype bf16 or f16) from normal values, with two infinities: channel 0
// of the fourth D-element row (a head of a token) +inf, channel 1 of the fifth -inf, so some
// tiles' maxima or minima are infinite and their means too.
std::vector<std::uint16_t> gather_input(std::size_t count, std::int64_t dim, DType dtype,
                                        std::uint32_t seed) {
  std::vector<float> values = normal_values(count, seed);
  if (count >= 8 * static_cast<std::size_t>(dim)) {
    values[3 * dim] = std::numeric_limits<float>::infinity();
    values[4 * dim + 1] = -std::numeric_limits<float>::infinity();
  }
  std::vector<std::uint16_t> x(count);
  for (std::size_t n = 0; n < count; ++n) {
    store_from_float(x.data(), dtype, static_cast<std::int64_t>(n), values[n]);
  }
  return x;
}

class TileGatherCuda : public ::testing::TestWithParam<GatherCase> {};

TEST_P(TileGatherCuda, MatchesCpuReferenceWithTwoShapeGroups) {
  if (!has_gpu()) GTEST_SKIP() << "no CUDA device";
  const auto [batch, grid, heads, dim, dtype] = GetParam();
  const std::int64_t tokens = grid.tokens(), tiles = tile_count(tokens);
  const std::vector<std::uint16_t> x =
      gather_input(static_cast<std::size_t>(batch * tokens * heads * dim), dim, dtype, 3);
  std::vector<std::int32_t> order = tile_major_order(grid, {1, 8, 16});
  const std::vector<std::int32_t> second = tile_major_order(grid, {4, 4, 8});
  order.insert(order.end(), second.begin(), second.end());
  std::vector<std::int32_t> head_group(static_cast<std::size_t>(heads));
  for (std::int64_t h = 0; h < heads; ++h) head_group[h] = static_cast<std::int32_t>(h % 2);

  TileGatherParams params{TokensView::contiguous(x.data(), dtype, batch, tokens, heads, dim),
                          order.data(), 2, head_group.data()};
  std::vector<std::uint16_t> tiled(x.size());
  std::vector<float> stats(static_cast<std::size_t>(batch * heads * tiles * 3 * dim));
  params.x_tiled = tiled.data(), params.stats = stats.data();
  tile_gather_cpu(params);

  const DeviceBuffer x_device(x), order_device(order), group_device(head_group);
  const DeviceBuffer tiled_device(tiled.size() * 2), stats_device(stats.size() * 4);
  TileGatherParams device = params;
  device.x.data = x_device.get(), device.order = order_device.get<std::int32_t>();
  device.head_group = group_device.get<std::int32_t>();
  device.x_tiled = tiled_device.get(), device.stats = stats_device.get<float>();
  tile_gather_cuda(device, nullptr);
  ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  EXPECT_EQ(tiled_device.download<std::uint16_t>(), tiled);  // a permutation: bit-exact
  const auto got = stats_device.download<float>();
  for (std::size_t n = 0; n < stats.size(); ++n) {
    ASSERT_TRUE(close_to(got[n], stats[n], 1e-5f)) << "element " << n;
  }

  // Descriptors alone (the plan's launch): diagonal P of global heads, then none (tile means).
  const auto diagonal = normal_values(static_cast<std::size_t>((heads + 1) * 3 * dim), 4, 0.5f);
  std::vector<std::int32_t> global_head(static_cast<std::size_t>(heads));
  std::iota(global_head.rbegin(), global_head.rend(), 1);  // local h -> global heads - h
  const DeviceBuffer diagonal_device(diagonal), global_device(global_head);
  for (const bool projected : {true, false}) {
    std::vector<float> descriptors(
        static_cast<std::size_t>(batch * heads * tiles * descriptor_width(dim)));
    TileGatherParams cpu = params;
    cpu.x_tiled = nullptr, cpu.stats = nullptr, cpu.descriptors = descriptors.data();
    cpu.diagonal_projection = projected ? diagonal.data() : nullptr;
    cpu.global_head = global_head.data();
    tile_gather_cpu(cpu);
    const DeviceBuffer descriptors_device(descriptors.size() * 4);
    TileGatherParams gpu = device;
    gpu.x_tiled = nullptr, gpu.stats = nullptr;
    gpu.descriptors = descriptors_device.get<float>();
    gpu.diagonal_projection = projected ? diagonal_device.get<float>() : nullptr;
    gpu.global_head = global_device.get<std::int32_t>();
    tile_gather_cuda(gpu, nullptr);
    ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
    const auto got_descriptors = descriptors_device.download<float>();
    for (std::size_t n = 0; n < descriptors.size(); ++n) {
      ASSERT_TRUE(close_to(got_descriptors[n], descriptors[n], 4e-5f))
          << "element " << n << (projected ? ", diagonal P" : ", no projection");
    }
  }
}

// q, k and v in one launch (the plan's): descriptors of q, the copy and descriptors of k, the
// copy of v, each against its own CPU gather.
TEST_P(TileGatherCuda, GathersThreeTensorsInOneLaunch) {
  if (!has_gpu()) GTEST_SKIP() << "no CUDA device";
  const auto [batch, grid, heads, dim, dtype] = GetParam();
  const std::int64_t tokens = grid.tokens(), tiles = tile_count(tokens);
  const auto elements = static_cast<std::size_t>(batch * tokens * heads * dim);
  const auto descriptor_floats =
      static_cast<std::size_t>(batch * heads * tiles * descriptor_width(dim));
  std::vector<std::int32_t> order = tile_major_order(grid, {2, 8, 8});
  const std::vector<std::int32_t> second = tile_major_order(grid, {8, 4, 4});
  order.insert(order.end(), second.begin(), second.end());
  std::vector<std::int32_t> head_group(static_cast<std::size_t>(heads));
  for (std::int64_t h = 0; h < heads; ++h) head_group[h] = static_cast<std::int32_t>(h % 2);
  const auto diagonal = normal_values(static_cast<std::size_t>(heads * 3 * dim), 7, 0.5f);
  const DeviceBuffer order_device(order), group_device(head_group), diagonal_device(diagonal);

  std::vector<std::vector<std::uint16_t>> x(3);
  std::vector<std::vector<std::uint16_t>> tiled(3);
  std::vector<std::vector<float>> descriptors(3);
  std::deque<DeviceBuffer> x_device, tiled_device, descriptors_device;  // not movable
  TileGatherParams cpu[3], gpu[3];
  for (int t = 0; t < 3; ++t) {
    x[t] = gather_input(elements, dim, dtype, 10 + t);
    if (t > 0) tiled[t].resize(elements);                 // k and v: tile-major copies
    if (t < 2) descriptors[t].resize(descriptor_floats);  // q and k: descriptors
    cpu[t] = {TokensView::contiguous(x[t].data(), dtype, batch, tokens, heads, dim), order.data(),
              2, head_group.data()};
    cpu[t].x_tiled = tiled[t].empty() ? nullptr : tiled[t].data();
    cpu[t].descriptors = descriptors[t].empty() ? nullptr : descriptors[t].data();
    cpu[t].diagonal_projection = diagonal.data();
    tile_gather_cpu(cpu[t]);
    x_device.emplace_back(x[t]);
    tiled_device.emplace_back(tiled[t].size() * 2);
    descriptors_device.emplace_back(descriptors[t].size() * 4);
  }
  for (int t = 0; t < 3; ++t) {
    gpu[t] = cpu[t];
    gpu[t].x.data = x_device[t].get(), gpu[t].order = order_device.get<std::int32_t>();
    gpu[t].head_group = group_device.get<std::int32_t>();
    gpu[t].x_tiled = tiled[t].empty() ? nullptr : tiled_device[t].get();
    gpu[t].descriptors = descriptors[t].empty() ? nullptr : descriptors_device[t].get<float>();
    gpu[t].diagonal_projection = diagonal_device.get<float>();
  }
  tile_gather_cuda(std::span<const TileGatherParams>(gpu), nullptr);
  ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  for (int t = 0; t < 3; ++t) {
    if (!tiled[t].empty()) {
      EXPECT_EQ(tiled_device[t].download<std::uint16_t>(), tiled[t]) << "tensor " << t;
    }
    if (descriptors[t].empty()) continue;
    const auto got = descriptors_device[t].download<float>();
    for (std::size_t n = 0; n < got.size(); ++n) {
      ASSERT_TRUE(close_to(got[n], descriptors[t][n], 4e-5f))
          << "tensor " << t << ", element " << n;
    }
  }
}

INSTANTIATE_TEST_SUITE_P(
    Shapes, TileGatherCuda,
    // D = 64 to 256 take bulk copies on Hopper (bf16 and f16); 264 the 16-byte register path
    // (a tile over 64 KB); 36 and 300 the element-wise path (rows not 16-byte multiples), 300
    // with a row over more than one pass.
    ::testing::Values(GatherCase{1, {1, 1, 1}, 1, 64}, GatherCase{2, {3, 10, 21}, 3, 128},
                      GatherCase{1, {21, 45, 16}, 4, 64}, GatherCase{1, {2, 5, 7}, 2, 36},
                      GatherCase{2, {1, 3, 50}, 1, 300}, GatherCase{1, {2, 3, 40}, 2, 264},
                      GatherCase{1, {3, 8, 16}, 2, 256, DType::kF16},
                      GatherCase{2, {2, 8, 24}, 3, 192},
                      GatherCase{1, {4, 9, 16}, 5, 128, DType::kF16}),
    [](const auto& test) {
      const GatherCase& c = test.param;
      return "b" + std::to_string(c.batch) + "_grid" + c.grid.str() + "_h" +
             std::to_string(c.heads) + "_d" + std::to_string(c.dim) + "_" +
             std::string(dtype_name(c.dtype));
    });

struct SelectionCase {
  std::int64_t batch, heads, q_tiles, k_tiles, dim, budget;
  bool projected, keep_own_tile;
  // Small integer statistics: exact logits with many equal scores, so the order of ties is
  // checked (the lower tile index first) and not only the order of distinct scores.
  bool tied = false;
  // Cumulative threshold of the even local heads (odd heads keep the fixed budget); 0: none.
  double threshold = 0.0;
  bool diagonal = false;  // projections given as their diagonals [H, 3, D]
  bool given = false;     // descriptors projected beforehand (TileSelectionParams::q_descriptors)
  // Tied means with a few key tiles of mean 2^126 in channel 0 (else 0): their logits are exact
  // +-inf, huge or 0, so the search meets infinite key ranges.
  bool extreme = false;
};

// [B*H*T rows][descriptor_width(D)]: the CPU projection of each head's statistics, zero-padded.
std::vector<float> padded_descriptors(const TileSelectionParams& params, const float* stats,
                                      const float* projection, std::int64_t tiles) {
  const std::int64_t dim = params.dim, width = descriptor_width(dim);
  const std::int64_t features = params.diagonal_projection ? 3 * dim : 3 * dim * dim;
  std::vector<float> out(static_cast<std::size_t>(params.batch * params.heads * tiles * width));
  for (std::int64_t head = 0; head < params.batch * params.heads; ++head) {
    const std::int64_t global = params.global_head[head % params.heads];
    const std::vector<float> rows =
        project_tiles(std::span<const float>(stats + head * tiles * 3 * dim, tiles * 3 * dim), dim,
                      projection ? std::span<const float>(projection + global * features, features)
                                 : std::span<const float>());
    for (std::int64_t t = 0; t < tiles; ++t) {
      std::copy_n(rows.begin() + t * dim, dim, out.begin() + (head * tiles + t) * width);
    }
  }
  return out;
}

// The CPU reference's logits of every (batch, head), [B*H*Tq rows][Tk].
std::vector<float> cpu_logits(const TileSelectionParams& params) {
  std::vector<float> logits;
  for (std::int64_t b = 0; b < params.batch; ++b) {
    for (std::int64_t h = 0; h < params.heads; ++h) {
      const std::vector<float> head_logits = tile_selection_logits(params, b, h);
      logits.insert(logits.end(), head_logits.begin(), head_logits.end());
    }
  }
  return logits;
}

// Rows of two selections [rows, budget] with counts: the GPU's equals the CPU's, except where
// float sums in another order (the GPU's tensor-core products) may reorder near-equal logits:
//   - a row may swap tiles whose CPU logits lie within 1e-5 x (the row's largest |logit|) of the
//     CPU's last kept logit (near-ties at the edge of the selection);
//   - with cumulative thresholds, a row whose mass sits at the threshold may take one tile more
//     or less (each a subset of the other by one tile).
// At most 1% of rows may differ; with exact logits (small-integer statistics: ties are exact
// and must fall to the lower tile index) none may.
void expect_same_selection(const std::vector<std::int32_t>& gpu_counts,
                           const std::vector<std::int32_t>& gpu_indices,
                           const std::vector<std::int32_t>& counts,
                           const std::vector<std::int32_t>& indices,
                           const TileSelectionParams& params, bool exact) {
  const std::vector<float> logits = cpu_logits(params);
  const auto k_tiles = static_cast<std::size_t>(params.k_tiles);
  const std::int64_t budget = params.budget;
  std::size_t differing = 0;
  for (std::size_t row = 0; row < counts.size(); ++row) {
    const auto begin = static_cast<std::ptrdiff_t>(row) * budget;
    const std::vector<std::int32_t> gpu(gpu_indices.begin() + begin,
                                        gpu_indices.begin() + begin + gpu_counts[row]);
    const std::vector<std::int32_t> cpu(indices.begin() + begin,
                                        indices.begin() + begin + counts[row]);
    for (std::int64_t slot = gpu_counts[row]; slot < budget; ++slot) {
      ASSERT_EQ(gpu_indices[begin + slot], kPaddedSlot) << "row " << row << " slot " << slot;
    }
    if (gpu_counts[row] == counts[row] && gpu == cpu) continue;
    ++differing;
    ASSERT_FALSE(exact) << "row " << row << ": GPU count " << gpu_counts[row] << ", CPU count "
                        << counts[row];
    if (gpu.size() != cpu.size()) {
      const auto& shorter = gpu.size() < cpu.size() ? gpu : cpu;
      const auto& longer = gpu.size() < cpu.size() ? cpu : gpu;
      ASSERT_EQ(longer.size(), shorter.size() + 1) << "row " << row;
      ASSERT_TRUE(std::includes(longer.begin(), longer.end(), shorter.begin(), shorter.end()))
          << "row " << row;
      continue;
    }
    const float* z = logits.data() + row * k_tiles;
    float largest = 0.0f, edge = INFINITY;
    for (std::size_t j = 0; j < k_tiles; ++j) largest = std::max(largest, std::abs(z[j]));
    const auto own = static_cast<std::int32_t>(row % static_cast<std::size_t>(params.q_tiles));
    for (const std::int32_t j : cpu) {
      if (!params.keep_own_tile || j != own) edge = std::min(edge, z[j]);
    }
    std::vector<std::int32_t> swapped;
    std::set_symmetric_difference(gpu.begin(), gpu.end(), cpu.begin(), cpu.end(),
                                  std::back_inserter(swapped));
    for (const std::int32_t j : swapped) {
      EXPECT_LE(std::abs(z[j] - edge), 1e-5f * largest)
          << "row " << row << ": tile " << j << " swapped with logit " << z[j]
          << ", the CPU's last kept logit " << edge;
    }
  }
  EXPECT_LE(differing, std::max<std::size_t>(1, counts.size() / 100));
}

class TileSelectionCuda : public ::testing::TestWithParam<SelectionCase> {};

TEST_P(TileSelectionCuda, MatchesCpuReference) {
  if (!has_gpu()) GTEST_SKIP() << "no CUDA device";
  const SelectionCase c = GetParam();
  const std::int64_t dim = c.dim, global_heads = c.heads + 2;
  auto q_stats =
      normal_values(static_cast<std::size_t>(c.batch * c.heads * c.q_tiles * 3 * dim), 5);
  auto k_stats =
      normal_values(static_cast<std::size_t>(c.batch * c.heads * c.k_tiles * 3 * dim), 6);
  if (c.tied) {
    for (float& value : q_stats) value = std::round(2.0f * value);
    for (float& value : k_stats) value = std::round(2.0f * value);
  }
  if (c.extreme) {
    for (std::int64_t row = 0; row < c.batch * c.heads * c.k_tiles; ++row) {
      if (row % 5 != 2) continue;
      float* mean = k_stats.data() + row * 3 * dim + kTileMean * dim;
      std::fill_n(mean, dim, 0.0f);
      mean[0] = std::ldexp(1.0f, 126);
    }
  }
  // Diagonal weights matter alone, so they are drawn larger than a full P's entries.
  const auto q_projection =
      normal_values(static_cast<std::size_t>(global_heads * 3 * dim * (c.diagonal ? 1 : dim)), 7,
                    c.diagonal ? 0.5f : 0.05f);
  const auto k_projection = normal_values(q_projection.size(), 8, c.diagonal ? 0.5f : 0.05f);
  std::vector<std::int32_t> global_head(static_cast<std::size_t>(c.heads));
  std::iota(global_head.rbegin(), global_head.rend(), 2);  // local h -> global heads + 1 - h
  TileSelectionParams params;
  params.q_stats = q_stats.data(), params.k_stats = k_stats.data();
  params.q_projection = c.projected ? q_projection.data() : nullptr;
  params.k_projection = c.projected ? k_projection.data() : nullptr;
  params.diagonal_projection = c.diagonal;
  params.global_head = global_head.data();
  params.batch = c.batch, params.heads = c.heads, params.q_tiles = c.q_tiles;
  params.k_tiles = c.k_tiles, params.dim = dim, params.budget = c.budget;
  params.scale = 1.0f / std::sqrt(static_cast<float>(dim));
  params.keep_own_tile = c.keep_own_tile;
  std::vector<double> thresholds(static_cast<std::size_t>(c.heads), 0.0);
  for (std::size_t h = 0; h < thresholds.size(); h += 2) thresholds[h] = c.threshold;
  params.thresholds = c.threshold > 0.0 ? thresholds.data() : nullptr;
  std::vector<std::int32_t> counts(static_cast<std::size_t>(c.batch * c.heads * c.q_tiles));
  std::vector<std::int32_t> indices(counts.size() * static_cast<std::size_t>(c.budget));
  params.counts = counts.data(), params.indices = indices.data();
  tile_selection_cpu(params);

  const DeviceBuffer q_device(q_stats), k_device(k_stats), qp_device(q_projection),
      kp_device(k_projection), global_device(global_head);
  const DeviceBuffer counts_device(counts.size() * 4), indices_device(indices.size() * 4);
  const DeviceBuffer workspace(tile_selection_workspace_bytes(params)),
      thresholds_device(thresholds);
  TileSelectionParams device = params;
  device.q_stats = q_device.get<float>(), device.k_stats = k_device.get<float>();
  device.q_projection = c.projected ? qp_device.get<float>() : nullptr;
  device.k_projection = c.projected ? kp_device.get<float>() : nullptr;
  device.global_head = global_device.get<std::int32_t>();
  device.counts = counts_device.get<std::int32_t>();
  device.indices = indices_device.get<std::int32_t>();
  device.workspace = workspace.get();
  device.thresholds = c.threshold > 0.0 ? thresholds_device.get<double>() : nullptr;
  const DeviceBuffer q_given(
      c.given ? padded_descriptors(params, q_stats.data(), params.q_projection, c.q_tiles)
              : std::vector<float>{});
  const DeviceBuffer k_given(
      c.given ? padded_descriptors(params, k_stats.data(), params.k_projection, c.k_tiles)
              : std::vector<float>{});
  if (c.given) {
    device.q_descriptors = q_given.get<float>(), device.k_descriptors = k_given.get<float>();
    device.q_stats = device.k_stats = nullptr;
    ASSERT_EQ(tile_selection_workspace_bytes(device), 0u);
    device.workspace = nullptr;
  }
  tile_selection_cuda(device, nullptr);
  ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  expect_same_selection(counts_device.download<std::int32_t>(),
                        indices_device.download<std::int32_t>(), counts, indices, params, c.tied);
}

INSTANTIATE_TEST_SUITE_P(
    Shapes, TileSelectionCuda,
    ::testing::Values(
        SelectionCase{1, 1, 1, 1, 64, 1, false, true},
        SelectionCase{2, 3, 96, 96, 128, 10, true, true},
        SelectionCase{1, 2, 591, 591, 128, 30, true, true},
        SelectionCase{1, 2, 50, 70, 64, 70, false, false},
        SelectionCase{1, 1, 80, 20, 64, 5, true, true},
        // D = 36: a full P whose rows are not 16-byte aligned (scalar loads).
        SelectionCase{1, 1, 45, 45, 36, 9, true, false},
        // Tk = 4000: keys of 32 rows exceed shared memory,
        // so blocks of 4 query tiles.
        SelectionCase{1, 1, 21, 4000, 64, 200, true, true},
        // Rows past the 640 key tiles held in registers: the search counts keys in shared
        // memory until few enough are left to compact (147,600 tokens at 95%: 58 of 1,154).
        SelectionCase{1, 2, 40, 1154, 128, 58, true, true},
        SelectionCase{1, 1, 33, 700, 64, 35, false, true, true},
        SelectionCase{1, 2, 33, 1154, 128, 58, true, true, false, 0.9},
        SelectionCase{1, 2, 21, 700, 64, 20, false, true, true, 0.0, false, false, true},
        SelectionCase{2, 2, 40, 40, 64, 7, false, true, true},
        SelectionCase{1, 1, 33, 65, 64, 65, false, false, true},
        // Cumulative thresholds on even heads.
        SelectionCase{2, 2, 40, 40, 64, 12, false, true, true, 0.5},
        SelectionCase{1, 2, 33, 65, 64, 65, false, false, true, 0.9},
        SelectionCase{1, 2, 30, 50, 64, 50, false, true, true, 1.0},
        SelectionCase{1, 2, 591, 591, 128, 60, true, true, false, 0.9},
        SelectionCase{1, 2, 21, 4000, 64, 400, true, true, false, 0.5},
        // More than 128 tiles may be taken from rows held in registers: the mass bisection
        // searches the row again and again, so only the last search may compact.
        SelectionCase{1, 2, 33, 300, 64, 150, false, true, false, 0.9},
        SelectionCase{1, 2, 33, 300, 64, 150, false, true, true, 0.5},
        // Diagonal projections ([H, 3, D], the elementwise path).
        SelectionCase{2, 3, 96, 96, 128, 10, true, true, false, 0.0, true},
        SelectionCase{1, 2, 591, 591, 128, 60, true, true, false, 0.9, true},
        SelectionCase{1, 1, 45, 45, 36, 9, true, false, false, 0.0, true},
        // Descriptors given (as the plan's gather makes them).
        SelectionCase{1, 2, 591, 591, 128, 30, true, true, false, 0.0, true, true},
        SelectionCase{2, 2, 40, 40, 64, 7, false, true, true, 0.5, false, true},
        // Infinite and huge logits.
        SelectionCase{1, 2, 70, 70, 64, 9, false, true, true, 0.0, false, false, true},
        SelectionCase{1, 2, 70, 70, 64, 9, false, true, true, 0.7, false, false, true},
        SelectionCase{1, 1, 21, 4000, 64, 200, false, false, true, 0.0, false, false, true}),
    [](const auto& test) {
      const SelectionCase& c = test.param;
      return "b" + std::to_string(c.batch) + "_h" + std::to_string(c.heads) + "_tq" +
             std::to_string(c.q_tiles) + "_tk" + std::to_string(c.k_tiles) + "_d" +
             std::to_string(c.dim) + "_k" + std::to_string(c.budget) +
             (c.projected ? "_projected" : "_meanpool") + (c.keep_own_tile ? "_own" : "") +
             (c.tied ? "_tied" : "") + (c.diagonal ? "_diagonal" : "") + (c.given ? "_given" : "") +
             (c.extreme ? "_extreme" : "") +
             (c.threshold > 0.0
                  ? "_cumulative" + std::to_string(static_cast<int>(std::lround(100 * c.threshold)))
                  : "");
    });

TEST(TileGatherCudaErrors, NamesTensorsOfDifferentShapesInOneLaunch) {
  const std::int32_t order[4] = {0, 1, 2, 3};
  TileGatherParams gathers[2];
  gathers[0] = {TokensView::contiguous(order, DType::kBF16, 1, 4, 2, 8), order};
  gathers[1] = {TokensView::contiguous(order, DType::kBF16, 1, 4, 1, 8), order};
  expect_error_naming(
      [&] { tile_gather_cuda(std::span<const TileGatherParams>(gathers), nullptr); },
      "tensor 1 is [1, 4, 1, 8] BF16, tensor 0 [1, 4, 2, 8] BF16");
}

TEST(TileSelectionCudaErrors, NamesTheKeyTileLimit) {
  // Checked before anything is launched: dummy pointers are never read.
  std::int32_t dummy = 0;
  float stats = 0.0f;
  TileSelectionParams params;
  params.q_stats = params.k_stats = &stats;
  params.batch = params.heads = 1, params.q_tiles = 1, params.k_tiles = 8193, params.dim = 64;
  params.budget = 10, params.scale = 0.125f, params.counts = params.indices = &dummy;
  params.workspace = &dummy;
  try {
    tile_selection_cuda(params, nullptr);
    FAIL() << "expected veda::Error";
  } catch (const Error& error) {
    EXPECT_NE(std::string(error.what()).find("8193 key tiles"), std::string::npos) << error.what();
  }
}

// Given descriptors are read 16 bytes at a time: a pointer off that alignment is refused before
// anything is launched (host pointers stand in; none is read).
TEST(TileSelectionCudaErrors, NamesUnalignedDescriptors) {
  std::int32_t dummy = 0;
  alignas(16) float descriptors[8] = {};
  TileSelectionParams params;
  params.q_descriptors = descriptors + 1, params.k_descriptors = descriptors;
  params.batch = params.heads = 1, params.q_tiles = params.k_tiles = 1, params.dim = 4;
  params.budget = 1, params.scale = 0.5f, params.counts = params.indices = &dummy;
  try {
    tile_selection_cuda(params, nullptr);
    FAIL() << "expected veda::Error";
  } catch (const Error& error) {
    EXPECT_NE(std::string(error.what()).find("q_descriptors at"), std::string::npos)
        << error.what();
    EXPECT_NE(std::string(error.what()).find("not 16-byte aligned"), std::string::npos)
        << error.what();
  }
}

}  // namespace
}  // namespace veda
