#include <cfloat>

#include "element_type.cuh"
#include "veda/cuda/tile_front_end.h"
#include "veda/error.h"
#include "veda/tile_layout.h"
#include "veda/tile_statistics.h"

namespace veda {
namespace {

using cuda_detail::to_float;

struct GatherArgs {
  const void* x;
  std::int64_t tokens, dim, stride_batch, stride_token, stride_head;
  const std::int32_t* order;
  const std::int32_t* head_group;
  void* x_tiled;
  float* stats;
};

// Block (tile, head, batch); thread d owns channel d (and d + blockDim.x, ...).
template <typename Element>
__global__ void tile_gather_kernel(GatherArgs args) {
  __shared__ std::int32_t source[kTileTokens];
  const std::int64_t tile = blockIdx.x, head = blockIdx.y, batch = blockIdx.z;
  const std::int64_t heads = gridDim.y, tiles = gridDim.x, dim = args.dim;
  const std::int64_t begin = tile * kTileTokens;
  const int rows = static_cast<int>(min(std::int64_t{kTileTokens}, args.tokens - begin));
  const std::int64_t group = args.head_group ? args.head_group[head] : 0;
  for (int r = threadIdx.x; r < rows; r += blockDim.x) {
    source[r] = args.order[group * args.tokens + begin + r];
  }
  __syncthreads();
  const Element* x =
      static_cast<const Element*>(args.x) + batch * args.stride_batch + head * args.stride_head;
  Element* tiled = args.x_tiled ? static_cast<Element*>(args.x_tiled) +
                                      ((batch * heads + head) * args.tokens + begin) * dim
                                : nullptr;
  for (std::int64_t d = threadIdx.x; d < dim; d += blockDim.x) {
    float sum = 0.0f, max = -FLT_MAX, min = FLT_MAX;
    for (int r = 0; r < rows; ++r) {
      const Element element = x[source[r] * args.stride_token + d];
      if (tiled) tiled[r * dim + d] = element;
      const float value = to_float(element);
      sum += value;
      max = fmaxf(max, value);
      min = fminf(min, value);
    }
    if (args.stats) {
      float* out = args.stats + ((batch * heads + head) * tiles + tile) * 3 * dim;
      out[kTileMean * dim + d] = sum * (1.0f / static_cast<float>(rows));  // as the CPU does
      out[kTileMax * dim + d] = max;
      out[kTileMin * dim + d] = min;
    }
  }
}

}  // namespace

void tile_gather_cuda(const TileGatherParams& params, cudaStream_t stream) {
  params.validate();
  const TokensView& x = params.x;
  VEDA_CHECK(tile_count(x.tokens) <= 2147483647 && x.heads <= 65535 && x.batch <= 65535,
             "tile gather grid of ", tile_count(x.tokens), " tiles x ", x.heads, " heads x ",
             x.batch, " batches exceeds the launch limits");
  const GatherArgs args{x.data,         x.tokens,      x.dim,        x.stride_batch,
                        x.stride_token, x.stride_head, params.order, params.head_group,
                        params.x_tiled, params.stats};
  const dim3 grid(static_cast<unsigned>(tile_count(x.tokens)), static_cast<unsigned>(x.heads),
                  static_cast<unsigned>(x.batch));
  const unsigned threads = static_cast<unsigned>(x.dim < 256 ? (x.dim + 31) / 32 * 32 : 256);
  cuda_detail::dispatch_floating(x.dtype, [&](auto element) {
    tile_gather_kernel<decltype(element)><<<grid, threads, 0, stream>>>(args);
  });
  const cudaError_t status = cudaGetLastError();
  VEDA_CHECK(status == cudaSuccess, "tile gather launch failed: ", cudaGetErrorString(status));
}

}  // namespace veda
