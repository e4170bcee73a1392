// The GPU oracle backend of calibration against the CPU reference (multi_shape_oracle and
// mask_output_error, what the CPU backend runs) on the same numbers: lse, dense output, tile heat
// and mass, and masked-output errors, on awkward grids (packed edge boxes, N not a multiple of
// 128, a single short tile), head subsets and f32 / bf16 / f16 captures; then whole calibrations
// with each backend. The backend fills every device output with NaN before its kernels write
// it and rejects non-finite maps, so an entry a kernel misses fails here.
#include <gtest/gtest.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <random>
#include <span>
#include <string>

#include "cuda_test_util.h"
#include "veda/error.h"
#include "veda/method/calibration.h"
#include "veda/method/multi_shape_oracle.h"
#include "veda/method/oracle_backend.h"
#include "veda/method/synthetic_video.h"
#include "veda/method/tiling_search.h"
#include "veda/metrics.h"
#include "veda/selection.h"

namespace veda::method {
namespace {

using veda::testing::has_gpu;

// q, k, v [B, N, H, D] held in `dtype`. f32 captures hold bf16-representable values, so the GPU
// (which rounds f32 to bf16) and the CPU reference compute on the same numbers.
struct Capture {
  std::vector<std::uint8_t> q, k, v;
  CalibrationSample sample;

  Capture(const Grid& grid, std::int64_t batch, std::int64_t heads, std::int64_t dim, DType dtype,
          std::uint32_t seed) {
    std::mt19937 rng(seed);
    const std::int64_t count = batch * grid.tokens() * heads * dim;
    for (auto [bytes, sigma] : {std::pair{&q, 1.5f}, std::pair{&k, 1.0f}, std::pair{&v, 1.0f}}) {
      std::normal_distribution<float> normal(0.0f, sigma);
      bytes->resize(static_cast<std::size_t>(count) * dtype_size(dtype));
      for (std::int64_t i = 0; i < count; ++i) {
        float value = normal(rng);
        if (dtype == DType::kF32) value = bf16_to_float(float_to_bf16(value));
        store_from_float(bytes->data(), dtype, i, value);
      }
    }
    sample.grid = grid;
    sample.q = TokensView::contiguous(q.data(), dtype, batch, grid.tokens(), heads, dim);
    sample.k = TokensView::contiguous(k.data(), dtype, batch, grid.tokens(), heads, dim);
    sample.v = TokensView::contiguous(v.data(), dtype, batch, grid.tokens(), heads, dim);
  }
};

struct BackendCase {
  std::string name;
  Grid grid;
  std::int64_t batch, heads, dim;
  DType dtype;
  std::vector<TileShape> shapes;
  std::int64_t item_batch, head_begin, head_end;  // the first item; the second: batch 0, all heads
};

// One item of the GPU backend against the reference.
void check_item(OracleBackend& gpu, const Capture& capture, const BackendCase& c,
                std::int64_t batch, std::int64_t head_begin, std::int64_t head_end) {
  SCOPED_TRACE("batch " + std::to_string(batch) + ", heads [" + std::to_string(head_begin) + ", " +
               std::to_string(head_end) + ")");
  const std::int64_t heads = head_end - head_begin, dim = c.dim,
                     tiles = tile_count(c.grid.tokens());
  const float scale = 1.0f / std::sqrt(static_cast<float>(dim));
  gpu.set_item(capture.sample, batch, head_begin, head_end);
  const auto maps = gpu.tile_maps(std::vector<std::vector<TileShape>>(heads, c.shapes), true);
  ASSERT_EQ(static_cast<std::int64_t>(maps.size()), heads);

  std::vector<std::vector<float>> q, k, v;
  std::vector<MultiShapeOracle> want;
  for (std::int64_t h = 0; h < heads; ++h) {
    q.push_back(load_head(capture.sample.q, batch, head_begin + h));
    k.push_back(load_head(capture.sample.k, batch, head_begin + h));
    v.push_back(load_head(capture.sample.v, batch, head_begin + h));
    want.push_back(multi_shape_oracle(q[h], k[h], v[h], dim, scale, c.grid, c.shapes));
  }
  for (std::int64_t h = 0; h < heads; ++h) {
    SCOPED_TRACE("head " + std::to_string(h));
    // Tolerances as tests/gpu/oracle_cuda_test.cc (f32 sums in another order, the fast exp);
    // the dense output as attention_gpu_test.cc (the kernel rounds P to bf16 for P V).
    const std::vector<float> lse = gpu.lse(h);
    ASSERT_EQ(lse.size(), want[h].lse.size());
    for (std::size_t r = 0; r < lse.size(); ++r) {
      ASSERT_NEAR(lse[r], want[h].lse[r], 2e-4 + 1e-5 * std::abs(want[h].lse[r])) << "row " << r;
    }
    const std::vector<float> out = gpu.dense_output(h);
    ASSERT_EQ(out.size(), want[h].out.size());
    for (float value : out) ASSERT_TRUE(std::isfinite(value));
    EXPECT_LT(relative_l2(out, want[h].out), 8e-3);
    ASSERT_EQ(maps[h].size(), c.shapes.size());
    for (std::size_t s = 0; s < c.shapes.size(); ++s) {
      SCOPED_TRACE(c.shapes[s].str());
      const TileMaps& got = maps[h][s];
      const TileMaps& expected = want[h].shapes[s].maps;
      ASSERT_EQ(got.q_tiles, tiles);
      ASSERT_EQ(got.k_tiles, tiles);
      ASSERT_EQ(got.heat.size(), expected.heat.size());
      ASSERT_EQ(got.mass.size(), expected.mass.size());
      for (std::size_t cell = 0; cell < got.heat.size(); ++cell) {
        ASSERT_NEAR(got.heat[cell], expected.heat[cell], 2e-3 * expected.heat[cell] + 1e-7)
            << "heat cell " << cell;
        ASSERT_NEAR(got.mass[cell], expected.mass[cell], 2e-3 * expected.mass[cell] + 1e-7)
            << "mass cell " << cell;
      }
    }
  }

  // Masked outputs: each shape's oracle mask chosen on the reference heat (so both sides score
  // the same mask), compared as rel-L2 = sqrt(rel-MSE); then the full mask, which reproduces the
  // dense output up to rounding.
  for (std::size_t s = 0; s < c.shapes.size(); ++s) {
    SCOPED_TRACE(c.shapes[s].str());
    BlockIndex index(1, heads, tiles, tiles, budget_for_sparsity(0.6, tiles));
    for (std::int64_t h = 0; h < heads; ++h) {
      select_top_k(want[h].shapes[s].maps.heat, true, index, 0, h);
    }
    const std::vector<SquaredError> got = gpu.mask_errors(c.shapes[s], index);
    ASSERT_EQ(static_cast<std::int64_t>(got.size()), heads);
    for (std::int64_t h = 0; h < heads; ++h) {
      BlockIndex one(1, 1, tiles, tiles, index.budget);
      std::copy_n(index.counts.begin() + h * tiles, tiles, one.counts.begin());
      std::copy_n(index.indices.begin() + h * tiles * index.budget, tiles * index.budget,
                  one.indices.begin());
      const SquaredError expected = mask_output_error(q[h], k[h], v[h], dim, scale,
                                                      want[h].shapes[s].order, one, want[h].out);
      EXPECT_NEAR(got[h].norm, expected.norm, 1.6e-2 * expected.norm) << "head " << h;
      EXPECT_NEAR(std::sqrt(got[h].relative()), std::sqrt(expected.relative()), 1e-2)
          << "head " << h;
    }
  }
  const std::vector<SquaredError> full =
      gpu.mask_errors(c.shapes.back(), BlockIndex::dense(1, heads, tiles, tiles));
  for (std::int64_t h = 0; h < heads; ++h) {
    EXPECT_LT(std::sqrt(full[h].relative()), 1e-2) << "full mask, head " << h;
  }
}

class OracleBackendCuda : public ::testing::TestWithParam<BackendCase> {};

TEST_P(OracleBackendCuda, MatchesCpuReference) {
  if (!has_gpu()) GTEST_SKIP() << "no CUDA device";
  const BackendCase& c = GetParam();
  const Capture capture(c.grid, c.batch, c.heads, c.dim, c.dtype, 11);
  const auto gpu = make_oracle_backend(OracleDevice::kCuda);
  EXPECT_EQ(gpu->name().rfind("cuda (", 0), 0u) << gpu->name();
  EXPECT_EQ(gpu->heads_per_item(c.grid.tokens(), c.heads, c.dim,
                                static_cast<std::int64_t>(c.shapes.size())),
            c.heads);
  // A head subset first, then all heads of batch element 0 in the same (grown) buffers.
  check_item(*gpu, capture, c, c.item_batch, c.head_begin, c.head_end);
  check_item(*gpu, capture, c, 0, 0, c.heads);
  EXPECT_GT(gpu->seconds(), 0.0);
}

INSTANTIATE_TEST_SUITE_P(
    Grids, OracleBackendCuda,
    ::testing::Values(
        // 630 tokens: packed edge boxes in both shapes, a short last tile.
        BackendCase{"grid3x10x21_bf16_d128",
                    {3, 10, 21},
                    1,
                    3,
                    128,
                    DType::kBF16,
                    {TileShape{1, 8, 16}, TileShape{2, 8, 8}},
                    0,
                    1,
                    3},
        // 480 tokens (not a multiple of 128), f32 rounded to bf16 on upload, batch element 1.
        BackendCase{"grid2x12x20_f32_d64",
                    {2, 12, 20},
                    2,
                    2,
                    64,
                    DType::kF32,
                    {TileShape{8, 4, 4}, TileShape{1, 8, 16}},
                    1,
                    0,
                    2},
        // 1024 tokens, f16 kept, every standard shape in one call.
        BackendCase{"grid4x16x16_f16_d128",
                    {4, 16, 16},
                    1,
                    2,
                    128,
                    DType::kF16,
                    standard_tile_shapes(),
                    0,
                    1,
                    2},
        // 35 tokens: a single short tile.
        BackendCase{"grid1x5x7_bf16_d64",
                    {1, 5, 7},
                    1,
                    2,
                    64,
                    DType::kBF16,
                    {TileShape{1, 8, 16}},
                    0,
                    0,
                    1}),
    [](const auto& test) { return test.param.name; });

// Two bf16 clips of the synthetic model (as a model's capture: both backends see the same
// numbers), 8 heads of distinct kinds on 4x16x32 (2,048 tokens, 16 tiles).
struct SyntheticCapture {
  std::vector<std::vector<std::uint16_t>> tensors;
  std::vector<CalibrationSample> samples;

  SyntheticCapture() {
    SyntheticVideoConfig clip;
    clip.grid = {4, 16, 32};
    tensors.reserve(6);
    for (std::uint64_t seed : {1u, 2u}) {
      clip.seed = seed;
      const SyntheticVideo video = generate_synthetic_video(clip);
      for (const std::vector<float>* values : {&video.q, &video.k, &video.v}) {
        std::vector<std::uint16_t>& bits = tensors.emplace_back(values->size());
        for (std::size_t i = 0; i < values->size(); ++i) bits[i] = float_to_bf16((*values)[i]);
      }
      const auto view = [&](std::size_t tensor) {
        return TokensView::contiguous(tensors[tensor].data(), DType::kBF16, 1, video.grid.tokens(),
                                      video.heads, video.dim);
      };
      const std::size_t first = tensors.size() - 3;
      samples.push_back({video.grid, view(first), view(first + 1), view(first + 2)});
    }
  }
};

double rel_l2(const EstimatorParams& got, const EstimatorParams& want) {
  std::vector<float> a = got.p_q, b = want.p_q;
  a.insert(a.end(), got.p_k.begin(), got.p_k.end());
  b.insert(b.end(), want.p_k.begin(), want.p_k.end());
  return relative_l2(a, b);
}

class OracleBackendCudaCalibration : public ::testing::TestWithParam<CalibrationConfig::Search> {};

// The whole calibration with the GPU backend against the CPU one: the same tile per head where
// the CPU's choice is clear, the search errors, the distillation's losses and parameters close.
TEST_P(OracleBackendCudaCalibration, ChoosesTheCpuTilesWithCloseEstimators) {
  if (!has_gpu()) GTEST_SKIP() << "no CUDA device";
  const SyntheticCapture capture;
  CalibrationConfig config;
  config.sparsity = 0.9;
  config.search = GetParam();
  // Flat against tall tiles: on these clips every head's oracle-mask choice between them wins by
  // >= 0.05 in rel-L2 (the 7 standard shapes have near-ties of 0.001, which rounding may flip).
  config.shapes = {TileShape{1, 8, 16}, TileShape{8, 4, 4}};
  const auto cpu = make_oracle_backend(OracleDevice::kCpu);
  const auto gpu = make_oracle_backend(OracleDevice::kCuda);
  const LayerProfile want = calibrate_layer(capture.samples, config, {}, cpu.get());
  const LayerProfile got = calibrate_layer(capture.samples, config, {}, gpu.get());
  ASSERT_EQ(got.heads.size(), want.heads.size());
  // rel-L2 agreement of the search errors: the oracle masks are the same up to near-ties of the
  // heat; the estimator masks come from estimators distilled on slightly different teachers.
  const double tolerance = config.search == CalibrationConfig::Search::kOracleMask ? 1e-2 : 3e-2;
  for (std::size_t h = 0; h < want.heads.size(); ++h) {
    SCOPED_TRACE("head " + std::to_string(h));
    const HeadProfile& a = got.heads[h];
    const HeadProfile& b = want.heads[h];
    for (const TileShape& shape : config.shapes) {
      const std::string key = "err_" + shape.str();
      EXPECT_NEAR(std::sqrt(a.calibration.at(key)), std::sqrt(b.calibration.at(key)), tolerance)
          << key;
    }
    const double margin = std::abs(std::sqrt(b.calibration.at("err_1x8x16")) -
                                   std::sqrt(b.calibration.at("err_8x4x4")));
    if (margin < tolerance) continue;  // a near-tie: either choice is right
    ASSERT_EQ(a.tile, b.tile) << "CPU margin " << margin;
    for (const char* key : {"kl_train_after", "kl_heldout_after"}) {
      EXPECT_NEAR(a.calibration.at(key), b.calibration.at(key), 2e-2 * b.calibration.at(key) + 2e-3)
          << key;
    }
    // Adam's normalised steps move weights of near-zero gradient by up to the learning rate per
    // step whatever the gradient's size, so another early-stopping step moves them measurably.
    const bool same_step = a.calibration.at("best_step") == b.calibration.at("best_step");
    EXPECT_LT(rel_l2(a.estimator, b.estimator), same_step ? 2e-2 : 0.25)
        << "best steps " << a.calibration.at("best_step") << " and "
        << b.calibration.at("best_step");
  }
  EXPECT_GT(gpu->seconds(), 0.0);
}

INSTANTIATE_TEST_SUITE_P(Searches, OracleBackendCudaCalibration,
                         ::testing::Values(CalibrationConfig::Search::kOracleMask,
                                           CalibrationConfig::Search::kEstimatorMask),
                         [](const auto& test) {
                           return test.param == CalibrationConfig::Search::kOracleMask
                                      ? std::string("OracleMask")
                                      : std::string("EstimatorMask");
                         });

// Timing at Wan2.1-14B 720p size (21x45x80 = 75,600 tokens, 40 heads, D = 128, bf16), on
// uniform random inputs: the backend's stages, then a whole calibrate_layer of one sample with
// the 7 standard shapes. Disabled by default (minutes, ~10 GB of device memory); run with
//   veda_gpu_tests --gtest_also_run_disabled_tests --gtest_filter='*WanSizeTiming*'
TEST(OracleBackendCudaTiming, DISABLED_WanSizeTiming) {
  if (!has_gpu()) GTEST_SKIP() << "no CUDA device";
  using Clock = std::chrono::steady_clock;
  const auto seconds_since = [](Clock::time_point start) {
    return std::chrono::duration<double>(Clock::now() - start).count();
  };
  const Grid grid{21, 45, 80};
  const std::int64_t heads = 40, dim = 128, count = grid.tokens() * heads * dim;
  std::vector<std::vector<std::uint16_t>> tensors(3, std::vector<std::uint16_t>(count));
  for (std::size_t t = 0; t < 3; ++t) {
    std::uint16_t* bits = tensors[t].data();
#pragma omp parallel for schedule(static)
    for (std::int64_t i = 0; i < count; ++i) {
      // A hash of (tensor, index) -> uniform in [-2, 2): cheap, deterministic, thread-safe.
      std::uint64_t x = (static_cast<std::uint64_t>(i) + 1) * 0x9E3779B97F4A7C15ull + t;
      x = (x ^ (x >> 31)) * 0xBF58476D1CE4E5B9ull;
      x ^= x >> 29;
      bits[i] = float_to_bf16(static_cast<float>(x >> 40) / 4194304.0f - 2.0f);
    }
  }
  CalibrationSample sample;
  sample.grid = grid;
  sample.q = TokensView::contiguous(tensors[0].data(), DType::kBF16, 1, grid.tokens(), heads, dim);
  sample.k = TokensView::contiguous(tensors[1].data(), DType::kBF16, 1, grid.tokens(), heads, dim);
  sample.v = TokensView::contiguous(tensors[2].data(), DType::kBF16, 1, grid.tokens(), heads, dim);
  const std::vector<TileShape> shapes = standard_tile_shapes();
  const auto gpu = make_oracle_backend(OracleDevice::kCuda);
  const std::int64_t block =
      gpu->heads_per_item(grid.tokens(), heads, dim, static_cast<std::int64_t>(shapes.size()));
  std::printf("%s: %lld heads per item\n", gpu->name().c_str(), static_cast<long long>(block));
  ASSERT_EQ(block, heads);

  auto start = Clock::now();
  gpu->set_item(sample, 0, 0, heads);
  const auto maps = gpu->tile_maps(std::vector<std::vector<TileShape>>(heads, shapes), true);
  std::printf("upload, lse, dense output and heat/mass of %zu shapes: %.2f s\n", shapes.size(),
              seconds_since(start));
  start = Clock::now();
  const std::int64_t tiles = tile_count(grid.tokens());
  for (std::size_t s = 0; s < shapes.size(); ++s) {
    BlockIndex index(1, heads, tiles, tiles, budget_for_sparsity(0.9, tiles));
    for (std::int64_t h = 0; h < heads; ++h) select_top_k(maps[h][s].heat, true, index, 0, h);
    const std::vector<SquaredError> errors = gpu->mask_errors(shapes[s], index);
    EXPECT_GT(errors[0].relative(), 0.0);
  }
  std::printf("oracle masks at 90%% and their errors for %zu shapes: %.2f s\n", shapes.size(),
              seconds_since(start));

  start = Clock::now();
  const double oracle_before = gpu->seconds();
  const LayerProfile layer =
      calibrate_layer(std::span(&sample, 1), CalibrationConfig{}, {}, gpu.get());
  std::printf("calibrate_layer (1 sample, 7 shapes, 40 heads): %.1f s, of which oracle %.1f s\n",
              seconds_since(start), gpu->seconds() - oracle_before);
  EXPECT_EQ(layer.heads.size(), static_cast<std::size_t>(heads));
}

}  // namespace
}  // namespace veda::method
