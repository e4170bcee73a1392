// The oracle backend interface on the CPU: device names and their resolution (auto picks the CPU
// where no GPU is, cuda without one is an error naming what was asked and what is available),
// the CPU backend against multi_shape_oracle and oracle_mask_error, and calibrate_layer giving
// the same profile without a backend, with an explicit CPU backend and with a CPU backend taking
// all heads per item (the GPU backend's blocks). The GPU backend against these is
// tests/gpu/oracle_backend_cuda_test.cc.
#include "veda/method/oracle_backend.h"

#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <string>

#include "veda/error.h"
#include "veda/method/calibration.h"
#include "veda/method/multi_shape_oracle.h"
#include "veda/method/synthetic_video.h"
#include "veda/method/tiling_search.h"
#include "veda/selection.h"

namespace veda::method {
namespace {

// Runs `body`, expecting a veda::Error whose message holds every one of `needles`.
template <typename Body>
void expect_error(const Body& body, std::initializer_list<std::string> needles) {
  try {
    body();
    ADD_FAILURE() << "no veda::Error";
  } catch (const Error& error) {
    const std::string message = error.what();
    for (const std::string& needle : needles) {
      EXPECT_NE(message.find(needle), std::string::npos) << message << " lacks " << needle;
    }
  }
}

TEST(OracleDevice, ParsesTheThreeNames) {
  EXPECT_EQ(parse_oracle_device("auto"), OracleDevice::kAuto);
  EXPECT_EQ(parse_oracle_device("cpu"), OracleDevice::kCpu);
  EXPECT_EQ(parse_oracle_device("cuda"), OracleDevice::kCuda);
  for (OracleDevice device : {OracleDevice::kAuto, OracleDevice::kCpu, OracleDevice::kCuda}) {
    EXPECT_EQ(parse_oracle_device(oracle_device_name(device)), device);
  }
  expect_error([] { parse_oracle_device("gpu"); }, {"'gpu'", "auto, cpu or cuda"});
}

TEST(OracleDevice, AutoPicksTheGpuOnlyWhenOneIsUsable) {
  const OracleDevices cpu_build;  // built without CUDA
  EXPECT_EQ(resolve_oracle_device(OracleDevice::kAuto, cpu_build, 128).device, OracleDevice::kCpu);
  EXPECT_EQ(cpu_build.describe(), "cpu");

  OracleDevices no_gpu;
  no_gpu.cuda_built = true;
  no_gpu.gpu_problem = "no CUDA-capable device is detected";
  const OracleDeviceChoice fallback = resolve_oracle_device(OracleDevice::kAuto, no_gpu, 128);
  EXPECT_EQ(fallback.device, OracleDevice::kCpu);
  EXPECT_NE(fallback.reason.find("no CUDA-capable device"), std::string::npos) << fallback.reason;

  OracleDevices gpu;
  gpu.cuda_built = true;
  gpu.gpus = 1;
  gpu.gpu_name = "NVIDIA H200, sm_90";
  EXPECT_EQ(gpu.describe(), "cpu, cuda (NVIDIA H200, sm_90)");
  EXPECT_EQ(resolve_oracle_device(OracleDevice::kAuto, gpu, 128).device, OracleDevice::kCuda);
  EXPECT_EQ(resolve_oracle_device(OracleDevice::kAuto, gpu, 64).device, OracleDevice::kCuda);
  // Head dims the GPU kernels do not take stay on the CPU under auto.
  EXPECT_EQ(resolve_oracle_device(OracleDevice::kAuto, gpu, 40).device, OracleDevice::kCpu);
  EXPECT_EQ(resolve_oracle_device(OracleDevice::kCpu, gpu, 128).device, OracleDevice::kCpu);
  EXPECT_EQ(resolve_oracle_device(OracleDevice::kCuda, gpu, 128).device, OracleDevice::kCuda);
}

TEST(OracleDevice, CudaWithoutAGpuNamesWhatWasAskedAndWhatIsAvailable) {
  expect_error([] { resolve_oracle_device(OracleDevice::kCuda, OracleDevices{}, 128); },
               {"--device cuda", "built without CUDA", "available: cpu"});
  OracleDevices no_gpu;
  no_gpu.cuda_built = true;
  no_gpu.gpu_problem = "no CUDA-capable device is detected";
  expect_error([&] { resolve_oracle_device(OracleDevice::kCuda, no_gpu, 128); },
               {"--device cuda", "no usable CUDA GPU", "no CUDA-capable device is detected",
                "available: cpu"});
  OracleDevices gpu;
  gpu.cuda_built = true;
  gpu.gpus = 1;
  gpu.gpu_name = "NVIDIA H200, sm_90";
  expect_error([&] { resolve_oracle_device(OracleDevice::kCuda, gpu, 40); },
               {"--device cuda", "64 or 128", "40"});
}

// On this machine: without a GPU (CI) auto is the CPU and the cuda backend cannot be made.
TEST(OracleDevice, ThisMachine) {
  const OracleDevices devices = available_oracle_devices();
  const OracleDeviceChoice choice = resolve_oracle_device(OracleDevice::kAuto, devices, 128);
  if (devices.gpus == 0) {
    EXPECT_EQ(choice.device, OracleDevice::kCpu) << choice.reason;
    EXPECT_THROW(make_oracle_backend(OracleDevice::kCuda), Error);
  } else {
    EXPECT_EQ(choice.device, OracleDevice::kCuda);
  }
  EXPECT_THROW(make_oracle_backend(OracleDevice::kAuto), Error);  // resolve first
  EXPECT_EQ(make_oracle_backend(OracleDevice::kCpu)->name().rfind("cpu", 0), 0u);
}

// q, k, v [B, N, H, D] float32 with normal entries.
struct RandomSample {
  std::vector<float> q, k, v;
  CalibrationSample sample;

  RandomSample(const Grid& grid, std::int64_t batch, std::int64_t heads, std::int64_t dim,
               std::uint32_t seed) {
    std::mt19937 rng(seed);
    std::normal_distribution<float> normal(0.0f, 1.0f);
    const auto count = static_cast<std::size_t>(batch * grid.tokens() * heads * dim);
    for (auto* x : {&q, &k, &v}) {
      x->resize(count);
      for (float& value : *x) value = normal(rng);
    }
    for (float& value : q) value *= 1.5f;  // peakier attention
    sample.grid = grid;
    sample.q = TokensView::contiguous(q.data(), DType::kF32, batch, grid.tokens(), heads, dim);
    sample.k = TokensView::contiguous(k.data(), DType::kF32, batch, grid.tokens(), heads, dim);
    sample.v = TokensView::contiguous(v.data(), DType::kF32, batch, grid.tokens(), heads, dim);
  }
};

TEST(CpuOracleBackend, MatchesMultiShapeOracleAndOracleMaskError) {
  const Grid grid{3, 10, 21};  // 630 tokens: packed edge boxes, a short last tile
  const std::int64_t heads = 3, dim = 32;
  const RandomSample random(grid, 2, heads, dim, 7);
  const std::vector<TileShape> shapes = {TileShape{1, 8, 16}, TileShape{4, 4, 8}};
  const float scale = 1.0f / std::sqrt(static_cast<float>(dim));
  const auto backend = make_oracle_backend(OracleDevice::kCpu);
  EXPECT_EQ(backend->heads_per_item(grid.tokens(), heads, dim, 2), 1);

  // Heads [1, 3) of batch element 1.
  backend->set_item(random.sample, 1, 1, 3);
  const auto maps = backend->tile_maps({shapes, shapes}, true);
  ASSERT_EQ(maps.size(), 2u);
  const std::int64_t tiles = tile_count(grid.tokens());
  BlockIndex index(1, 2, tiles, tiles, budget_for_sparsity(0.6, tiles));
  for (std::int64_t h = 0; h < 2; ++h) select_top_k(maps[h][1].heat, true, index, 0, h);
  const std::vector<SquaredError> errors = backend->mask_errors(shapes[1], index);
  ASSERT_EQ(errors.size(), 2u);

  for (std::int64_t h = 0; h < 2; ++h) {
    SCOPED_TRACE("head " + std::to_string(h));
    const auto q = load_head(random.sample.q, 1, h + 1), k = load_head(random.sample.k, 1, h + 1),
               v = load_head(random.sample.v, 1, h + 1);
    const MultiShapeOracle want = multi_shape_oracle(q, k, v, dim, scale, grid, shapes);
    EXPECT_EQ(backend->lse(h), want.lse);
    EXPECT_EQ(backend->dense_output(h), want.out);
    ASSERT_EQ(maps[h].size(), 2u);
    for (std::size_t s = 0; s < shapes.size(); ++s) {
      EXPECT_EQ(maps[h][s].heat, want.shapes[s].maps.heat);
      EXPECT_EQ(maps[h][s].mass, want.shapes[s].maps.mass);
    }
    const SquaredError expected =
        oracle_mask_error(q, k, v, dim, scale, want.shapes[1], want.out, 0.6, true);
    EXPECT_EQ(errors[h].error, expected.error);
    EXPECT_EQ(errors[h].norm, expected.norm);
    EXPECT_GT(errors[h].relative(), 0.0);
  }
  EXPECT_GT(backend->seconds(), 0.0);
}

TEST(CpuOracleBackend, RejectsMisuse) {
  const Grid grid{2, 8, 8};
  const RandomSample random(grid, 1, 2, 16, 3);
  const auto backend = make_oracle_backend(OracleDevice::kCpu);
  const std::vector<TileShape> one = {TileShape{2, 8, 8}};
  expect_error([&] { backend->tile_maps({one}, false); }, {"set_item"});
  expect_error([&] { backend->set_item(random.sample, 0, 1, 3); }, {"heads [1, 3) of 2"});
  backend->set_item(random.sample, 0, 0, 2);
  expect_error([&] { backend->tile_maps({one}, false); }, {"1 shape lists", "2 heads"});
  expect_error([&] { backend->tile_maps({one, {}}, false); }, {"same, positive number"});
  backend->tile_maps({one, one}, false);
  BlockIndex index(1, 2, 1, 1, 1);
  expect_error([&] { backend->mask_errors(one[0], index); }, {"dense output"});
  BlockIndex wrong_heads(1, 3, 1, 1, 1);
  expect_error([&] { backend->mask_errors(one[0], wrong_heads); }, {"3 heads", "2 heads"});
}

// The CPU backend, but taking all heads of an item at once as the GPU backend does: the
// calibration driver's multi-head blocks, checkable without a GPU.
class AllHeadsCpuBackend final : public OracleBackend {
 public:
  std::string name() const override { return "cpu, all heads per item"; }
  std::int64_t heads_per_item(std::int64_t, std::int64_t heads, std::int64_t,
                              std::int64_t) override {
    return heads;
  }
  std::vector<float> lse(std::int64_t head) override { return cpu_->lse(head); }
  std::vector<float> dense_output(std::int64_t head) override { return cpu_->dense_output(head); }

 protected:
  void load_item(const CalibrationSample& sample, std::int64_t batch, std::int64_t head_begin,
                 std::int64_t head_end) override {
    cpu_->set_item(sample, batch, head_begin, head_end);
  }
  std::vector<std::vector<TileMaps>> compute_tile_maps(
      const std::vector<std::vector<TileShape>>& shapes, bool dense_output) override {
    return cpu_->tile_maps(shapes, dense_output);
  }
  std::vector<SquaredError> compute_mask_errors(const TileShape& shape,
                                                const BlockIndex& index) override {
    return cpu_->mask_errors(shape, index);
  }

 private:
  std::unique_ptr<OracleBackend> cpu_ = make_oracle_backend(OracleDevice::kCpu);
};

class CalibrationBackends : public ::testing::TestWithParam<CalibrationConfig::Search> {};

// Without a backend, with an explicit CPU backend, and with all heads per item: one profile.
TEST_P(CalibrationBackends, GiveTheSameProfile) {
  SyntheticVideoConfig clip;
  clip.grid = {2, 16, 16};
  clip.heads.resize(3);
  std::vector<SyntheticVideo> videos;
  for (std::uint64_t seed : {1u, 2u}) {
    clip.seed = seed;
    videos.push_back(generate_synthetic_video(clip));
  }
  std::vector<CalibrationSample> samples;
  for (const SyntheticVideo& video : videos) {
    samples.push_back({video.grid, video.q_view(), video.k_view(), video.v_view()});
  }
  CalibrationConfig config;
  config.sparsity = 0.5;
  config.search = GetParam();
  config.search_samples = 2;
  config.shapes = {TileShape{1, 8, 16}, TileShape{2, 8, 8}, TileShape{4, 4, 8}};
  config.distill.max_steps = 20;
  const LayerProfile without = calibrate_layer(samples, config);
  const auto cpu = make_oracle_backend(OracleDevice::kCpu);
  AllHeadsCpuBackend all_heads;
  int progress_calls = 0;
  for (OracleBackend* backend :
       {static_cast<OracleBackend*>(cpu.get()), static_cast<OracleBackend*>(&all_heads)}) {
    SCOPED_TRACE(backend->name());
    const LayerProfile with = calibrate_layer(
        samples, config, [&](std::string_view, std::int64_t, std::int64_t) { ++progress_calls; },
        backend);
    ASSERT_EQ(with.heads.size(), 3u);
    for (std::size_t h = 0; h < 3; ++h) {
      EXPECT_EQ(with.heads[h].tile, without.heads[h].tile);
      EXPECT_EQ(with.heads[h].estimator.p_q, without.heads[h].estimator.p_q);
      EXPECT_EQ(with.heads[h].estimator.p_k, without.heads[h].estimator.p_k);
      EXPECT_EQ(with.heads[h].calibration, without.heads[h].calibration);
    }
    EXPECT_GT(backend->seconds(), 0.0);
  }
  EXPECT_GT(progress_calls, 0);
}

INSTANTIATE_TEST_SUITE_P(Searches, CalibrationBackends,
                         ::testing::Values(CalibrationConfig::Search::kOracleMask,
                                           CalibrationConfig::Search::kEstimatorMask),
                         [](const auto& test) {
                           return test.param == CalibrationConfig::Search::kOracleMask
                                      ? std::string("OracleMask")
                                      : std::string("EstimatorMask");
                         });

}  // namespace
}  // namespace veda::method
