// Times the GPU oracle (lse pass + heat/mass pass) at the sizes calibration meets:
// Wan2.1-1.3B 480p (32,760 tokens, 12 heads) and Wan2.1-14B 720p (75,600 tokens, 40 heads).
// Prints one line per size: milliseconds (median of 3 after a warm-up) and effective TFLOP/s
// counting the two Q K^T passes, 2 x 2 N^2 D per head.
#include <cuda_runtime_api.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <random>
#include <vector>

#include "veda/cuda/oracle.h"
#include "veda/tile_layout.h"

namespace {

struct Size {
  const char* name;
  std::int64_t tokens, heads;
};

void check(cudaError_t status) {
  if (status != cudaSuccess) {
    std::fprintf(stderr, "CUDA error: %s\n", cudaGetErrorString(status));
    std::exit(1);
  }
}

}  // namespace

int main() {
  constexpr std::int64_t kDim = 128;
  std::printf("%-28s %10s %10s\n", "size", "ms", "TFLOP/s");
  for (const Size& size : {Size{"wan1.3b-480p n32760 h12", 32760, 12},
                           Size{"wan14b-720p n75600 h40", 75600, 40}}) {
    const std::int64_t elements = size.tokens * size.heads * kDim;
    std::vector<std::uint16_t> host(static_cast<std::size_t>(elements));
    std::mt19937 generator(7);
    std::normal_distribution<float> normal(0.0f, 1.0f);
    for (auto& value : host) value = veda::float_to_bf16(normal(generator));
    const std::int64_t tiles = veda::tile_count(size.tokens);
    void *q = nullptr, *k = nullptr;
    float *lse = nullptr, *heat = nullptr, *mass = nullptr;
    check(cudaMalloc(&q, host.size() * 2));
    check(cudaMalloc(&k, host.size() * 2));
    check(cudaMalloc(reinterpret_cast<void**>(&lse), size.heads * size.tokens * 4));
    check(cudaMalloc(reinterpret_cast<void**>(&heat), size.heads * tiles * tiles * 4));
    check(cudaMalloc(reinterpret_cast<void**>(&mass), size.heads * tiles * tiles * 4));
    check(cudaMemcpy(q, host.data(), host.size() * 2, cudaMemcpyHostToDevice));
    check(cudaMemcpy(k, host.data(), host.size() * 2, cudaMemcpyHostToDevice));
    const veda::OracleParams params{
        veda::TokensView::contiguous(q, veda::DType::kBF16, 1, size.tokens, size.heads, kDim),
        veda::TokensView::contiguous(k, veda::DType::kBF16, 1, size.tokens, size.heads, kDim),
        1.0f / std::sqrt(static_cast<float>(kDim)), lse, heat, mass};
    cudaEvent_t start, stop;
    check(cudaEventCreate(&start));
    check(cudaEventCreate(&stop));
    std::vector<float> times;
    for (int run = 0; run < 4; ++run) {
      check(cudaEventRecord(start));
      veda::oracle_cuda(params, nullptr);
      check(cudaEventRecord(stop));
      check(cudaEventSynchronize(stop));
      float ms = 0.0f;
      check(cudaEventElapsedTime(&ms, start, stop));
      if (run > 0) times.push_back(ms);  // run 0 is the warm-up
    }
    std::sort(times.begin(), times.end());
    const double flop = 8.0 * static_cast<double>(size.tokens * size.tokens * kDim * size.heads);
    std::printf("%-28s %10.1f %10.1f\n", size.name, times[1], flop / (times[1] * 1e-3) / 1e12);
    cudaFree(q), cudaFree(k), cudaFree(lse), cudaFree(heat), cudaFree(mass);
  }
  return 0;
}
