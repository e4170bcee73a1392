// The two small kernels of the GPU oracle backend (oracle_backend_cuda.cc) besides the core's:
// lse into each head's tile-major order, and per-head sums of squared output differences.
// Both launch on `stream`, allocate nothing and never synchronise with the host.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

namespace veda::method::detail {

// lse_tiled[h, i] = lse[h, order[head_group[h] * N + i]] for float [H, N] rows (frame-major ->
// the head's tile-major order); order [G, N], head_group [H] device int32 (nullptr: group 0).
void permute_lse_cuda(const float* lse, const std::int32_t* order, const std::int32_t* head_group,
                      std::int64_t heads, std::int64_t tokens, float* lse_tiled,
                      cudaStream_t stream);

// Tokens per partial sum of squared_error_partials_cuda.
inline constexpr std::int64_t kErrorChunkTokens = 256;
inline std::int64_t error_chunks(std::int64_t tokens) {
  return (tokens + kErrorChunkTokens - 1) / kErrorChunkTokens;
}

// got, want: float [N, H, D]. For head h and chunk c of kErrorChunkTokens tokens,
// partials[(h * chunks + c) * 2] = sum (got - want)^2 and [... + 1] = sum want^2 over the chunk's
// tokens and channels, in float64. Partials instead of atomics keep the sums deterministic; the
// host adds the [H, chunks] partials in a fixed order.
void squared_error_partials_cuda(const float* got, const float* want, std::int64_t tokens,
                                 std::int64_t heads, std::int64_t dim, double* partials,
                                 cudaStream_t stream);

}  // namespace veda::method::detail
