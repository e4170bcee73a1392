// GPU oracle (lse, tile heat, tile mass) against oracle_cpu on the same rounded inputs.
#include <gtest/gtest.h>

#include <cmath>
#include <random>

#include "cuda_test_util.h"
#include "veda/cuda/oracle.h"
#include "veda/error.h"
#include "veda/tile_layout.h"

namespace veda {
namespace {

using testing::DeviceBuffer;
using testing::has_gpu;

struct OracleCase {
  std::int64_t batch, q_tokens, k_tokens, heads, dim;
  DType dtype;
};

std::vector<std::uint16_t> random_half(std::int64_t count, DType dtype, std::uint32_t seed) {
  std::mt19937 generator(seed);
  std::normal_distribution<float> normal(0.0f, 1.5f);
  std::vector<std::uint16_t> values(static_cast<std::size_t>(count));
  for (auto& value : values) store_from_float(&value, dtype, 0, normal(generator));
  return values;
}

class OracleCuda : public ::testing::TestWithParam<OracleCase> {};

TEST_P(OracleCuda, MatchesCpuReference) {
  if (!has_gpu()) GTEST_SKIP() << "no CUDA device";
  const auto [batch, q_tokens, k_tokens, heads, dim, dtype] = GetParam();
  const auto q_host = random_half(batch * q_tokens * heads * dim, dtype, 1);
  const auto k_host = random_half(batch * k_tokens * heads * dim, dtype, 2);
  const std::int64_t maps = batch * heads * tile_count(q_tokens) * tile_count(k_tokens);
  OracleParams params{TokensView::contiguous(q_host.data(), dtype, batch, q_tokens, heads, dim),
                      TokensView::contiguous(k_host.data(), dtype, batch, k_tokens, heads, dim),
                      1.0f / std::sqrt(static_cast<float>(dim))};
  std::vector<float> lse(static_cast<std::size_t>(batch * heads * q_tokens));
  std::vector<float> heat(static_cast<std::size_t>(maps)), mass(heat.size());
  params.lse = lse.data(), params.heat = heat.data(), params.mass = mass.data();
  oracle_cpu(params);

  const DeviceBuffer q_device(q_host), k_device(k_host);
  const DeviceBuffer lse_device(lse.size() * 4), heat_device(heat.size() * 4),
      mass_device(mass.size() * 4);
  OracleParams device = params;
  device.q.data = q_device.get(), device.k.data = k_device.get();
  device.lse = lse_device.get<float>(), device.heat = heat_device.get<float>(),
  device.mass = mass_device.get<float>();
  oracle_cuda(device, nullptr);
  ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);

  // Tolerances: both sides see the same rounded inputs and accumulate in f32; the GPU sums in a
  // different order and uses the fast exp, so lse agrees to ~1e-5 and p = exp(s - lse) to ~1e-4.
  const auto got_lse = lse_device.download<float>();
  for (std::size_t n = 0; n < lse.size(); ++n) {
    ASSERT_NEAR(got_lse[n], lse[n], 2e-4 + 1e-5 * std::abs(lse[n])) << "row " << n;
  }
  const auto got_heat = heat_device.download<float>(), got_mass = mass_device.download<float>();
  for (std::size_t cell = 0; cell < heat.size(); ++cell) {
    ASSERT_NEAR(got_heat[cell], heat[cell], 1e-3 * heat[cell] + 1e-7) << "cell " << cell;
    ASSERT_NEAR(got_mass[cell], mass[cell], 1e-3 * mass[cell] + 1e-7) << "cell " << cell;
  }
}

INSTANTIATE_TEST_SUITE_P(Shapes, OracleCuda,
                         ::testing::Values(OracleCase{1, 1, 1, 1, 128, DType::kBF16},
                                           OracleCase{1, 127, 129, 2, 128, DType::kBF16},
                                           OracleCase{2, 1000, 1000, 3, 64, DType::kF16},
                                           OracleCase{1, 4096, 4096, 2, 128, DType::kBF16},
                                           OracleCase{1, 2000, 300, 1, 64, DType::kBF16}),
                         [](const auto& test) {
                           const OracleCase& c = test.param;
                           return "b" + std::to_string(c.batch) + "_nq" +
                                  std::to_string(c.q_tokens) + "_nk" + std::to_string(c.k_tokens) +
                                  "_h" + std::to_string(c.heads) + "_d" + std::to_string(c.dim) +
                                  "_" + std::string(dtype_name(c.dtype));
                         });

TEST(OracleCuda, RejectsUnsupportedInputsWithClearMessages) {
  std::vector<float> data(64 * 96);
  OracleParams params{TokensView::contiguous(data.data(), DType::kF32, 1, 64, 1, 96),
                      TokensView::contiguous(data.data(), DType::kF32, 1, 64, 1, 96),
                      0.1f,
                      data.data(),
                      data.data(),
                      data.data()};
  EXPECT_THROW(check_oracle_cuda_supported(params), Error);
  params.q.dtype = params.k.dtype = DType::kBF16;
  try {
    check_oracle_cuda_supported(params);
    FAIL() << "expected an error";
  } catch (const Error& error) {
    EXPECT_STREQ(error.what(), "q has head dim 96; the GPU oracle supports 64 and 128");
  }
}

}  // namespace
}  // namespace veda
