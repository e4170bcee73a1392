// GPU tile statistics against the CPU reference; skipped where no GPU is present (CI).
#include <cuda_runtime_api.h>
#include <gtest/gtest.h>

#include <cmath>
#include <random>

#include "cuda_test_util.h"
#include "veda/cuda/tile_statistics.h"
#include "veda/tile_layout.h"

namespace veda {
namespace {

using testing::has_gpu;

struct StatisticsCase {
  std::int64_t batch, tokens, heads, dim;
  DType dtype;
};

class TileStatisticsCuda : public ::testing::TestWithParam<StatisticsCase> {};

TEST_P(TileStatisticsCuda, MatchesCpuReference) {
  if (!has_gpu()) GTEST_SKIP() << "no CUDA device";
  const auto [batch, tokens, heads, dim, dtype] = GetParam();
  const std::int64_t elements = batch * tokens * heads * dim, tiles = tile_count(tokens);
  std::mt19937 generator(static_cast<std::uint32_t>(tokens * 31 + dim));
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<std::byte> host(static_cast<std::size_t>(elements) * dtype_size(dtype));
  for (std::int64_t n = 0; n < elements; ++n)
    store_from_float(host.data(), dtype, n, normal(generator));
  const TokensView host_view =
      TokensView::contiguous(host.data(), dtype, batch, tokens, heads, dim);
  const std::size_t out_size = static_cast<std::size_t>(batch * heads * tiles * 3 * dim);
  std::vector<float> expected(out_size);
  tile_statistics_cpu({host_view, expected.data()});

  void* device_x = nullptr;
  float* device_out = nullptr;
  ASSERT_EQ(cudaMalloc(&device_x, host.size()), cudaSuccess);
  ASSERT_EQ(cudaMalloc(reinterpret_cast<void**>(&device_out), out_size * sizeof(float)),
            cudaSuccess);
  ASSERT_EQ(cudaMemcpy(device_x, host.data(), host.size(), cudaMemcpyHostToDevice), cudaSuccess);
  ASSERT_EQ(cudaMemset(device_out, 0xFF, out_size * sizeof(float)), cudaSuccess);  // NaN poison
  TokensView device_view = host_view;
  device_view.data = device_x;
  tile_statistics_cuda({device_view, device_out}, nullptr);
  std::vector<float> got(out_size);
  ASSERT_EQ(cudaMemcpy(got.data(), device_out, out_size * sizeof(float), cudaMemcpyDeviceToHost),
            cudaSuccess);
  cudaFree(device_x);
  cudaFree(device_out);

  for (std::size_t n = 0; n < out_size; ++n) {
    ASSERT_FALSE(std::isnan(got[n])) << "element " << n << " was not written";
    const bool is_mean = (n / static_cast<std::size_t>(dim)) % 3 == kTileMean;
    if (is_mean) {
      ASSERT_NEAR(got[n], expected[n], 1e-5) << "element " << n;
    } else {
      ASSERT_EQ(got[n], expected[n]) << "element " << n;
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Shapes, TileStatisticsCuda,
                         ::testing::Values(StatisticsCase{1, 1, 1, 64, DType::kBF16},
                                           StatisticsCase{2, 129, 3, 128, DType::kBF16},
                                           StatisticsCase{1, 1000, 2, 64, DType::kF16},
                                           StatisticsCase{1, 32760, 12, 128, DType::kBF16},
                                           StatisticsCase{2, 300, 40, 96, DType::kF32}),
                         [](const auto& test) {
                           const StatisticsCase& c = test.param;
                           return "b" + std::to_string(c.batch) + "_n" + std::to_string(c.tokens) +
                                  "_h" + std::to_string(c.heads) + "_d" + std::to_string(c.dim) +
                                  "_" + std::string(dtype_name(c.dtype));
                         });

}  // namespace
}  // namespace veda
