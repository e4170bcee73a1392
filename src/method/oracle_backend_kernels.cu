#include "oracle_backend_kernels.h"
#include "veda/error.h"

namespace veda::method::detail {
namespace {

constexpr int kThreads = 256;

// One thread per (head, tile-major position): a gather of H*N floats.
__global__ void permute_lse_kernel(const float* lse, const std::int32_t* order,
                                   const std::int32_t* head_group, std::int64_t heads,
                                   std::int64_t tokens, float* lse_tiled) {
  const std::int64_t index = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (index >= heads * tokens) return;
  const std::int64_t head = index / tokens, position = index % tokens;
  const std::int64_t group = head_group != nullptr ? head_group[head] : 0;
  lse_tiled[index] = lse[head * tokens + order[group * tokens + position]];
}

// Block (chunk, head): kThreads threads stride over the chunk's tokens x D floats of the head,
// accumulate in float64, and reduce in shared memory.
__global__ void squared_error_kernel(const float* got, const float* want, std::int64_t tokens,
                                     std::int64_t heads, std::int64_t dim, double* partials) {
  __shared__ double error_sum[kThreads], norm_sum[kThreads];
  const std::int64_t chunk = blockIdx.x, head = blockIdx.y, chunks = gridDim.x;
  const std::int64_t first = chunk * kErrorChunkTokens;
  const std::int64_t rows = min(kErrorChunkTokens, tokens - first);
  double error = 0.0, norm = 0.0;
  for (std::int64_t e = threadIdx.x; e < rows * dim; e += kThreads) {
    const std::int64_t at = ((first + e / dim) * heads + head) * dim + e % dim;
    const double w = want[at], delta = static_cast<double>(got[at]) - w;
    error += delta * delta;
    norm += w * w;
  }
  error_sum[threadIdx.x] = error;
  norm_sum[threadIdx.x] = norm;
  __syncthreads();
  for (int stride = kThreads / 2; stride > 0; stride /= 2) {
    if (static_cast<int>(threadIdx.x) < stride) {
      error_sum[threadIdx.x] += error_sum[threadIdx.x + stride];
      norm_sum[threadIdx.x] += norm_sum[threadIdx.x + stride];
    }
    __syncthreads();
  }
  if (threadIdx.x == 0) {
    partials[(head * chunks + chunk) * 2] = error_sum[0];
    partials[(head * chunks + chunk) * 2 + 1] = norm_sum[0];
  }
}

void check_launch(const char* what) {
  const cudaError_t status = cudaGetLastError();
  VEDA_CHECK(status == cudaSuccess, what, " launch failed: ", cudaGetErrorString(status));
}

}  // namespace

void permute_lse_cuda(const float* lse, const std::int32_t* order, const std::int32_t* head_group,
                      std::int64_t heads, std::int64_t tokens, float* lse_tiled,
                      cudaStream_t stream) {
  const std::int64_t count = heads * tokens;
  if (count == 0) return;
  const auto blocks = static_cast<unsigned>((count + kThreads - 1) / kThreads);
  permute_lse_kernel<<<blocks, kThreads, 0, stream>>>(lse, order, head_group, heads, tokens,
                                                      lse_tiled);
  check_launch("lse permutation");
}

void squared_error_partials_cuda(const float* got, const float* want, std::int64_t tokens,
                                 std::int64_t heads, std::int64_t dim, double* partials,
                                 cudaStream_t stream) {
  if (tokens == 0 || heads == 0) return;
  VEDA_CHECK(heads <= 65535, "squared error over ", heads, " heads exceeds the launch limit");
  const dim3 grid(static_cast<unsigned>(error_chunks(tokens)), static_cast<unsigned>(heads));
  squared_error_kernel<<<grid, kThreads, 0, stream>>>(got, want, tokens, heads, dim, partials);
  check_launch("squared error");
}

}  // namespace veda::method::detail
