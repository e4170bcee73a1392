#include <algorithm>
#include <cmath>
#include <cstdint>
#include <span>

#include "attention/hopper_ptx.cuh"
#include "element_type.cuh"
#include "veda/cuda/tile_front_end.h"
#include "veda/error.h"
#include "veda/tile_layout.h"
#include "veda/tile_selection.h"
#include "veda/tile_statistics.h"

namespace veda {
namespace {

using cuda_detail::to_float;

constexpr int kGatherThreads = 256;
constexpr int kRowsInFlight = 8;  // loads a thread issues before using any: 8 x 16 B per thread
constexpr std::int64_t kMaxGatherDim = 4096;  // the [groups, 3, D] partials fit in 48 KB

// kVector elements moved by one load or store (16 bytes where the layout is aligned to it).
template <typename Element, int kVector>
struct alignas(sizeof(Element) * kVector) Pack {
  Element element[kVector];
};

struct GatherArgs {
  const void* x;
  // In elements (bulk kernel) or packs (register kernel: the host checked that every stride and
  // D divide by the vector width).
  std::int64_t tokens, dim, stride_batch, stride_token, stride_head;
  const std::int32_t* order;
  const std::int32_t* head_group;
  void* x_tiled;
  float* stats;
  float* descriptors;  // row length `width` (D rounded up to 16)
  std::int64_t width;
  const float* projection;  // diagonal [H_global, 3, D] or nullptr
  const std::int32_t* global_head;
};

// Up to three tensors of one shape gathered by one launch (grid z = tensor * B + batch): q, k
// and v share the order, so one launch saves the kernel boundaries between them.
constexpr int kMaxGatherTensors = 3;

struct GatherLaunch {
  GatherArgs tensor[kMaxGatherTensors];
  int count;
};

// The block's tensor and batch item. The arguments are picked by selects, not by indexing the
// parameter array (which would copy it to local memory).
__device__ __forceinline__ GatherArgs block_tensor(const GatherLaunch& launch,
                                                   std::int64_t& batch) {
  const int batches = static_cast<int>(gridDim.z) / launch.count;
  const int t = static_cast<int>(blockIdx.z) / batches;
  batch = blockIdx.z % batches;
  return t == 0 ? launch.tensor[0] : t == 1 ? launch.tensor[1] : launch.tensor[2];
}

// Channel d (< width) of one tile's outputs from its rows' sum, max and min (tile_row =
// (batch * heads + head) * tiles + tile): the statistics, and the descriptor mean +
// sum_c feature_c P[c, d] in tile_scoring.h's order (zero past D).
__device__ __forceinline__ void store_tile_channel(const GatherArgs& args, std::int64_t head,
                                                   std::int64_t tile_row, std::int64_t d, float sum,
                                                   float max, float min, int rows) {
  const std::int64_t dim = args.dim;
  if (d >= dim) {
    args.descriptors[tile_row * args.width + d] = 0.0f;
    return;
  }
  float feature[3];
  feature[kTileMean] = sum * (1.0f / static_cast<float>(rows));
  feature[kTileMax] = max;
  feature[kTileMin] = min;
  if (args.stats) {
    float* out = args.stats + tile_row * 3 * dim + d;
    for (int c = 0; c < 3; ++c) out[c * dim] = feature[c];
  }
  if (args.descriptors) {
    float value = feature[kTileMean];
    if (args.projection) {
      const float* p =
          args.projection + (args.global_head ? args.global_head[head] : head) * 3 * dim + d;
      for (int c = 0; c < 3; ++c) value += feature[c] * p[c * dim];
    }
    args.descriptors[tile_row * args.width + d] = value;
  }
}

// Block (head, tile, batch): the heads of a tile are neighbours in launch order, so blocks that
// run together read whole token rows of x (all heads), not one head's 256 bytes of many token
// rows. The D / kVector packs of a row are read by `columns` adjacent
// threads (one coalesced access per row), and the block's `groups` row groups take rows
// g, g + groups, ... with kRowsInFlight loads in flight each; every thread keeps the running
// sum, max and min of its kVector channels, and the groups' partials are combined in shared
// memory. Memory-bound: N*H*D elements in, as many out (tile-major), plus 3*D floats per tile.
template <typename Element, int kVector>
__global__ void __launch_bounds__(kGatherThreads, 2) tile_gather_kernel(GatherLaunch launch) {
  using Row = Pack<Element, kVector>;
  extern __shared__ float partial[];  // [groups, 3, D]
  __shared__ std::int32_t source[kTileTokens];
  std::int64_t batch = 0;
  const GatherArgs args = block_tensor(launch, batch);
  const std::int64_t head = blockIdx.x, tile = blockIdx.y;
  const std::int64_t heads = gridDim.x, tiles = gridDim.y;
  const int packs = static_cast<int>(args.dim / kVector);
  const int columns = min(packs, static_cast<int>(blockDim.x));
  const int groups = static_cast<int>(blockDim.x) / columns;  // the host sized blockDim so
  const int group = threadIdx.x / columns, column = threadIdx.x % columns;  // all are used
  const std::int64_t begin = tile * kTileTokens;
  const int rows = static_cast<int>(min(std::int64_t{kTileTokens}, args.tokens - begin));
  const std::int64_t shape_group = args.head_group ? args.head_group[head] : 0;
  for (int r = threadIdx.x; r < rows; r += blockDim.x) {
    source[r] = args.order[shape_group * args.tokens + begin + r];
  }
  __syncthreads();
  const Row* x =
      static_cast<const Row*>(args.x) + batch * args.stride_batch + head * args.stride_head;
  Row* tiled = args.x_tiled ? static_cast<Row*>(args.x_tiled) +
                                  ((batch * heads + head) * args.tokens + begin) * packs
                            : nullptr;
  const std::int64_t dim = args.dim;
  for (int c = column; c < packs; c += columns) {  // loops only when D / kVector > 256
    float sum[kVector], max[kVector], min[kVector];
#pragma unroll
    for (int v = 0; v < kVector; ++v) sum[v] = 0.0f, max[v] = -INFINITY, min[v] = INFINITY;
    for (int first = group; first < rows; first += groups * kRowsInFlight) {
      Row loaded[kRowsInFlight];
#pragma unroll
      for (int i = 0; i < kRowsInFlight; ++i) {
        const int r = first + i * groups;
        if (r < rows) loaded[i] = x[source[r] * args.stride_token + c];
      }
#pragma unroll
      for (int i = 0; i < kRowsInFlight; ++i) {
        const int r = first + i * groups;
        if (r >= rows) break;
        if (tiled) tiled[static_cast<std::int64_t>(r) * packs + c] = loaded[i];
#pragma unroll
        for (int v = 0; v < kVector; ++v) {
          const float value = to_float(loaded[i].element[v]);
          sum[v] += value;
          max[v] = fmaxf(max[v], value);
          min[v] = fminf(min[v], value);
        }
      }
    }
    if (args.stats || args.descriptors) {
      float* mine = partial + group * 3 * dim + c * kVector;
#pragma unroll
      for (int v = 0; v < kVector; ++v) {
        mine[kTileMean * dim + v] = sum[v];
        mine[kTileMax * dim + v] = max[v];
        mine[kTileMin * dim + v] = min[v];
      }
    }
  }
  if (!args.stats && !args.descriptors) return;
  __syncthreads();
  const std::int64_t channels = args.descriptors ? args.width : dim;
  for (std::int64_t d = threadIdx.x; d < channels; d += blockDim.x) {
    float sum = 0.0f, max = -INFINITY, min = INFINITY;
    for (int g = 0; g < groups && d < dim; ++g) {
      const float* theirs = partial + g * 3 * dim + d;
      sum += theirs[kTileMean * dim];
      max = fmaxf(max, theirs[kTileMax * dim]);
      min = fminf(min, theirs[kTileMin * dim]);
    }
    store_tile_channel(args, head, (batch * heads + head) * tiles + tile, d, sum, max, min, rows);
  }
}

// Hopper (sm_90+): the tile's rows arrive by bulk copies (one cp.async.bulk of D elements per row,
// all completing on one mbarrier), the statistics are read from shared memory and the tile
// leaves by one bulk store. No registers hold the data, so a multiprocessor keeps ~7 tiles
// (224 KB) in flight, where the register path above keeps 2 x 32 KB. Block (head, tile, batch),
// one thread per row; rows D * sizeof(Element) bytes, a multiple of 16, 16-byte aligned.
template <typename Element>
__global__ void __launch_bounds__(kTileTokens) tile_gather_bulk_kernel(GatherLaunch launch) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  namespace sm90 = attention_detail::sm90;
  extern __shared__ __align__(128) unsigned char staged_bytes[];  // [rows, D]
  __shared__ __align__(8) std::uint64_t arrived;
  const auto* staged = reinterpret_cast<const Element*>(staged_bytes);
  std::int64_t batch = 0;
  const GatherArgs args = block_tensor(launch, batch);
  const std::int64_t head = blockIdx.x, tile = blockIdx.y;
  const std::int64_t heads = gridDim.x, tiles = gridDim.y, dim = args.dim;
  const std::int64_t begin = tile * kTileTokens;
  const int rows = static_cast<int>(min(std::int64_t{kTileTokens}, args.tokens - begin));
  const auto row_bytes = static_cast<std::uint32_t>(dim * sizeof(Element));
  const std::uint32_t bar = sm90::smem_address(&arrived);
  if (threadIdx.x == 0) {
    sm90::mbarrier_init(bar, 1);
    sm90::fence_barrier_init();
    sm90::mbarrier_arrive_expect_tx(bar, static_cast<std::uint32_t>(rows) * row_bytes);
  }
  __syncthreads();
  if (const int r = threadIdx.x; r < rows) {
    const std::int64_t shape_group = args.head_group ? args.head_group[head] : 0;
    const std::int64_t source = args.order[shape_group * args.tokens + begin + r];
    const Element* x = static_cast<const Element*>(args.x) + batch * args.stride_batch +
                       head * args.stride_head + source * args.stride_token;
    sm90::bulk_load(sm90::smem_address(staged_bytes + r * row_bytes), x, row_bytes, bar);
  }
  sm90::mbarrier_wait(bar, 0);
  if (args.x_tiled != nullptr && threadIdx.x == 0) {
    Element* tiled =
        static_cast<Element*>(args.x_tiled) + ((batch * heads + head) * args.tokens + begin) * dim;
    sm90::fence_proxy_async_shared();
    sm90::bulk_store(tiled, sm90::smem_address(staged_bytes), rows * row_bytes);
    sm90::bulk_commit_group();
  }
  const std::int64_t channels = args.descriptors ? args.width : args.stats ? dim : 0;
  for (std::int64_t d = threadIdx.x; d < channels; d += blockDim.x) {
    float sum = 0.0f, max = -INFINITY, min = INFINITY;
    for (int r = 0; r < rows && d < dim; ++r) {
      const float value = to_float(staged[r * dim + d]);
      sum += value;
      max = fmaxf(max, value);
      min = fminf(min, value);
    }
    store_tile_channel(args, head, (batch * heads + head) * tiles + tile, d, sum, max, min, rows);
  }
  // Shared memory must outlive the bulk store's read of it.
  if (args.x_tiled != nullptr && threadIdx.x == 0) sm90::bulk_wait_group_read();
#else
  __trap();  // launched only where cudaFuncGetAttributes reports an sm_90+ binary
#endif
}

bool aligned(const void* pointer, std::size_t bytes) {
  return reinterpret_cast<std::uintptr_t>(pointer) % bytes == 0;
}

// Strides in units of `vector` elements.
GatherArgs gather_args(const TileGatherParams& params, int vector) {
  const TokensView& x = params.x;
  return {x.data,
          x.tokens,
          x.dim,
          x.stride_batch / vector,
          x.stride_token / vector,
          x.stride_head / vector,
          params.order,
          params.head_group,
          params.x_tiled,
          params.stats,
          params.descriptors,
          descriptor_width(x.dim),
          params.diagonal_projection,
          params.global_head};
}

GatherLaunch gather_launch(std::span<const TileGatherParams> tensors, int vector) {
  GatherLaunch launch{};
  launch.count = static_cast<int>(tensors.size());
  for (int t = 0; t < launch.count; ++t) launch.tensor[t] = gather_args(tensors[t], vector);
  return launch;
}

bool any_statistics(std::span<const TileGatherParams> tensors) {
  return std::any_of(tensors.begin(), tensors.end(), [](const TileGatherParams& params) {
    return params.stats != nullptr || params.descriptors != nullptr;
  });
}

dim3 gather_grid(std::span<const TileGatherParams> tensors) {
  const TokensView& x = tensors[0].x;
  return {static_cast<unsigned>(x.heads), static_cast<unsigned>(tile_count(x.tokens)),
          static_cast<unsigned>(x.batch * static_cast<std::int64_t>(tensors.size()))};
}

template <typename Element, int kVector>
void launch(std::span<const TileGatherParams> tensors, cudaStream_t stream) {
  const TokensView& x = tensors[0].x;
  const auto packs = static_cast<int>(x.dim / kVector);
  const int columns = packs < kGatherThreads ? packs : kGatherThreads;
  const int groups = kGatherThreads / columns;
  const auto partial_bytes =
      static_cast<std::size_t>(any_statistics(tensors) ? groups * 3 * x.dim * 4 : 0);
  tile_gather_kernel<Element, kVector>
      <<<gather_grid(tensors), static_cast<unsigned>(groups * columns), partial_bytes, stream>>>(
          gather_launch(tensors, kVector));
}

// The bulk path where this GPU runs an sm_90+ build of its kernel and a tile fits in 64 KB.
template <typename Element>
bool launch_bulk(std::span<const TileGatherParams> tensors, cudaStream_t stream) {
  const TokensView& x = tensors[0].x;
  const auto tile_bytes = static_cast<std::size_t>(kTileTokens * x.dim) * sizeof(Element);
  if (tile_bytes > 64 * 1024) return false;
  cudaFuncAttributes attributes{};
  if (cudaFuncGetAttributes(&attributes, tile_gather_bulk_kernel<Element>) != cudaSuccess) {
    (void)cudaGetLastError();  // no binary of it for this GPU: not an error of this call
    return false;
  }
  if (attributes.binaryVersion < 90) return false;
  const cudaError_t status = cudaFuncSetAttribute(tile_gather_bulk_kernel<Element>,
                                                  cudaFuncAttributeMaxDynamicSharedMemorySize,
                                                  static_cast<int>(tile_bytes));
  VEDA_CHECK(status == cudaSuccess, "tile gather needs ", tile_bytes,
             " bytes of shared memory: ", cudaGetErrorString(status));
  tile_gather_bulk_kernel<Element>
      <<<gather_grid(tensors), kTileTokens, tile_bytes, stream>>>(gather_launch(tensors, 1));
  return true;
}

}  // namespace

void tile_gather_cuda(std::span<const TileGatherParams> tensors, cudaStream_t stream) {
  VEDA_CHECK(!tensors.empty() && tensors.size() <= kMaxGatherTensors, "tile gather of ",
             tensors.size(), " tensors in one launch; expected 1 to ", kMaxGatherTensors);
  const TileGatherParams& first = tensors[0];
  for (std::size_t t = 0; t < tensors.size(); ++t) {
    const TileGatherParams& params = tensors[t];
    params.validate();
    const TokensView &x = params.x, &x0 = first.x;
    VEDA_CHECK(x.batch == x0.batch && x.tokens == x0.tokens && x.heads == x0.heads &&
                   x.dim == x0.dim && x.dtype == x0.dtype && params.order == first.order &&
                   params.groups == first.groups && params.head_group == first.head_group,
               "tile gather of several tensors in one launch: tensor ", t, " is [", x.batch, ", ",
               x.tokens, ", ", x.heads, ", ", x.dim, "] ", dtype_name(x.dtype), ", tensor 0 [",
               x0.batch, ", ", x0.tokens, ", ", x0.heads, ", ", x0.dim, "] ", dtype_name(x0.dtype),
               "; expected one shape, dtype, order and head groups");
  }
  const TokensView& x = first.x;
  VEDA_CHECK(x.heads <= 2147483647 && tile_count(x.tokens) <= 65535 &&
                 x.batch * static_cast<std::int64_t>(tensors.size()) <= 65535,
             "tile gather grid of ", x.heads, " heads x ", tile_count(x.tokens), " tiles x ",
             x.batch, " batches x ", tensors.size(),
             " tensors exceeds the launch limits (2^31-1 x 65535 x 65535)");
  VEDA_CHECK(x.dim <= kMaxGatherDim, "tile gather of head dim ", x.dim, "; the GPU path supports ",
             "at most ", kMaxGatherDim);
  cuda_detail::dispatch_floating(x.dtype, [&](auto element) {
    using Element = decltype(element);
    // Bulk copies (Hopper) or 16-byte loads and stores where every row of every x and of the
    // tile-major copies starts on a 16-byte boundary; element-wise otherwise (strided views, odd
    // head dims).
    constexpr int kVector = 16 / sizeof(Element);
    const bool vectorizable =
        std::all_of(tensors.begin(), tensors.end(), [](const TileGatherParams& params) {
          const TokensView& v = params.x;
          return v.dim % kVector == 0 && v.stride_token % kVector == 0 &&
                 v.stride_head % kVector == 0 && v.stride_batch % kVector == 0 &&
                 aligned(v.data, 16) && aligned(params.x_tiled, 16);
        });
    if (vectorizable) {
      if (!launch_bulk<Element>(tensors, stream)) launch<Element, kVector>(tensors, stream);
    } else {
      launch<Element, 1>(tensors, stream);
    }
  });
  const cudaError_t status = cudaGetLastError();
  VEDA_CHECK(status == cudaSuccess, "tile gather launch failed: ", cudaGetErrorString(status));
}

void tile_gather_cuda(const TileGatherParams& params, cudaStream_t stream) {
  tile_gather_cuda(std::span<const TileGatherParams>(&params, 1), stream);
}

}  // namespace veda
