#include <cfloat>

#include "element_type.cuh"
#include "veda/cuda/tile_statistics.h"
#include "veda/error.h"
#include "veda/tile_layout.h"

namespace veda {
namespace {

using cuda_detail::to_float;

// One block per (tile, head, batch); thread d reduces channel d over the tile's <= 128 tokens,
// so each token row is one coalesced load across the block. Memory-bound: N*H*D elements in,
// 3*D floats per tile out (1/43 of the input at 128 tokens per tile).
template <typename Element>
__global__ void tile_statistics_kernel(const Element* __restrict__ x, std::int64_t tokens,
                                       std::int64_t dim, std::int64_t stride_batch,
                                       std::int64_t stride_token, std::int64_t stride_head,
                                       float* __restrict__ out) {
  const std::int64_t tile = blockIdx.x, head = blockIdx.y, batch = blockIdx.z;
  const std::int64_t heads = gridDim.y, tiles = gridDim.x;
  const std::int64_t begin = tile * kTileTokens;
  const std::int64_t end = min(tokens, begin + kTileTokens);
  const Element* base = x + batch * stride_batch + head * stride_head;
  float* tile_out = out + ((batch * heads + head) * tiles + tile) * 3 * dim;
  for (std::int64_t d = threadIdx.x; d < dim; d += blockDim.x) {
    float sum = 0.0f, max = -FLT_MAX, min = FLT_MAX;
    for (std::int64_t n = begin; n < end; ++n) {
      const float value = to_float(base[n * stride_token + d]);
      sum += value;
      max = fmaxf(max, value);
      min = fminf(min, value);
    }
    tile_out[kTileMean * dim + d] = sum * (1.0f / static_cast<float>(end - begin));
    tile_out[kTileMax * dim + d] = max;
    tile_out[kTileMin * dim + d] = min;
  }
}

template <typename Element>
void launch(const TileStatisticsParams& params, cudaStream_t stream) {
  const TokensView& x = params.x;
  const dim3 grid(static_cast<unsigned>(tile_count(x.tokens)), static_cast<unsigned>(x.heads),
                  static_cast<unsigned>(x.batch));
  const unsigned threads = static_cast<unsigned>(x.dim < 256 ? (x.dim + 31) / 32 * 32 : 256);
  tile_statistics_kernel<Element>
      <<<grid, threads, 0, stream>>>(static_cast<const Element*>(x.data), x.tokens, x.dim,
                                     x.stride_batch, x.stride_token, x.stride_head, params.out);
}

}  // namespace

void tile_statistics_cuda(const TileStatisticsParams& params, cudaStream_t stream) {
  params.x.validate("x");
  VEDA_CHECK(params.out != nullptr, "tile statistics output is null");
  VEDA_CHECK(tile_count(params.x.tokens) <= 2147483647 && params.x.heads <= 65535 &&
                 params.x.batch <= 65535,
             "tile statistics grid of ", tile_count(params.x.tokens), " tiles x ", params.x.heads,
             " heads x ", params.x.batch,
             " batches exceeds the launch limits (2^31-1 x 65535 x 65535)");
  cuda_detail::dispatch_floating(params.x.dtype,
                                 [&](auto element) { launch<decltype(element)>(params, stream); });
  const cudaError_t status = cudaGetLastError();
  VEDA_CHECK(status == cudaSuccess, "tile statistics launch failed: ", cudaGetErrorString(status));
}

}  // namespace veda
