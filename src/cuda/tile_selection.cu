#include <algorithm>
#include <cfloat>
#include <climits>
#include <cmath>

#include "veda/cuda/tile_front_end.h"
#include "veda/error.h"
#include "veda/tile_statistics.h"

namespace veda {
namespace {

constexpr int kSelectThreads = 256;
constexpr std::int64_t kMaxKeyTiles = 8192;  // 64 KB of (score, index) pairs in shared memory

constexpr int kProjectTiles = 16;  // tiles per block: P [3D, D] is read once for 16 tiles

// Block (16 tiles, head, batch): descriptor[t, e] = mean[t, e] + sum_f feature[t, f] P[f, e] for
// the head's global projection P [3D, D] (nullptr: P = 0). Thread e keeps 16 accumulators.
__global__ void project_kernel(const float* stats, const float* projection,
                               const std::int32_t* global_head, std::int64_t tiles,
                               std::int64_t dim, float* out) {
  extern __shared__ float features[];  // [16, 3D]
  const std::int64_t first = blockIdx.x * std::int64_t{kProjectTiles};
  const std::int64_t head = blockIdx.y, batch = blockIdx.z, heads = gridDim.y;
  const int count = static_cast<int>(min(std::int64_t{kProjectTiles}, tiles - first));
  const std::int64_t row = (batch * heads + head) * tiles + first;
  for (std::int64_t f = threadIdx.x; f < count * 3 * dim; f += blockDim.x) {
    features[f] = stats[row * 3 * dim + f];
  }
  __syncthreads();
  const float* p =
      projection ? projection + (global_head ? global_head[head] : head) * 3 * dim * dim : nullptr;
  for (std::int64_t e = threadIdx.x; e < dim; e += blockDim.x) {
    float acc[kProjectTiles];
#pragma unroll
    for (int t = 0; t < kProjectTiles; ++t) {
      acc[t] = t < count ? features[t * 3 * dim + kTileMean * dim + e] : 0.0f;
    }
    if (p) {
      for (std::int64_t f = 0; f < 3 * dim; ++f) {
        const float weight = p[f * dim + e];
#pragma unroll
        for (int t = 0; t < kProjectTiles; ++t) {
          if (t < count) acc[t] += features[t * 3 * dim + f] * weight;
        }
      }
    }
#pragma unroll
    for (int t = 0; t < kProjectTiles; ++t) {
      if (t < count) out[(row + t) * dim + e] = acc[t];
    }
  }
}

// a ranks before b: higher score, ties to the lower index.
__device__ bool ranks_before(float score_a, int index_a, float score_b, int index_b) {
  return score_a > score_b || (score_a == score_b && index_a < index_b);
}

// Bitonic sort of `size` (a power of two) (score, index) pairs into rank order.
__device__ void sort_by_rank(float* scores, int* indices, int size) {
  for (int block = 2; block <= size; block <<= 1) {
    for (int stride = block / 2; stride > 0; stride >>= 1) {
      for (int t = threadIdx.x; t < size / 2; t += blockDim.x) {
        const int low = 2 * stride * (t / stride) + t % stride, high = low + stride;
        const bool in_order = (low & block) == 0;  // this run sorts best-first, else worst-first
        const bool high_first =
            ranks_before(scores[high], indices[high], scores[low], indices[low]);
        if (high_first == in_order) {
          const float score = scores[low];
          scores[low] = scores[high], scores[high] = score;
          const int index = indices[low];
          indices[low] = indices[high], indices[high] = index;
        }
      }
      __syncthreads();
    }
  }
}

// Bitonic sort of `size` (a power of two) ints ascending.
__device__ void sort_ascending(int* values, int size) {
  for (int block = 2; block <= size; block <<= 1) {
    for (int stride = block / 2; stride > 0; stride >>= 1) {
      for (int t = threadIdx.x; t < size / 2; t += blockDim.x) {
        const int low = 2 * stride * (t / stride) + t % stride, high = low + stride;
        const bool ascending = (low & block) == 0;
        if ((values[low] > values[high]) == ascending) {
          const int value = values[low];
          values[low] = values[high], values[high] = value;
        }
      }
      __syncthreads();
    }
  }
}

struct SelectArgs {
  const float* q_hat;  // [B, H, Tq, D]
  const float* k_hat;  // [B, H, Tk, D]
  std::int64_t q_tiles, k_tiles, dim, budget;
  int rows;                    // query tiles per block
  int sorted_size, list_size;  // powers of two >= Tk and >= budget
  float scale;
  bool keep_own_tile;
  std::int32_t* counts;
  std::int32_t* indices;
};

// Block (`rows` query tiles, head, batch): logits of each row against every key tile (each k^_j
// read once for all rows), then per row a bitonic top `budget`, written ascending.
__global__ void __launch_bounds__(kSelectThreads) select_kernel(SelectArgs args) {
  extern __shared__ float shared[];
  const int size = args.sorted_size;
  float* q_rows = shared;                                          // [rows, D]
  float* scores = q_rows + args.rows * args.dim;                   // [rows, sorted_size]
  int* order = reinterpret_cast<int*>(scores + args.rows * size);  // [rows, sorted_size]
  int* chosen = order + args.rows * size;                          // [list_size]
  const std::int64_t first = blockIdx.x * std::int64_t{args.rows};
  const std::int64_t head = blockIdx.y, batch = blockIdx.z, heads = gridDim.y, dim = args.dim;
  const std::int64_t head_row = batch * heads + head;
  const int rows = static_cast<int>(min(std::int64_t{args.rows}, args.q_tiles - first));
  for (std::int64_t e = threadIdx.x; e < rows * dim; e += blockDim.x) {
    q_rows[e] = args.q_hat[(head_row * args.q_tiles + first) * dim + e];
  }
  __syncthreads();
  const float* k = args.k_hat + head_row * args.k_tiles * dim;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, warps = kSelectThreads / 32;
  for (int j = warp; j < size; j += warps) {
    for (int r = 0; r < rows; ++r) {
      float dot = 0.0f;
      if (j < args.k_tiles) {
        for (std::int64_t d = lane; d < dim; d += 32) dot += q_rows[r * dim + d] * k[j * dim + d];
      }
      for (int offset = 16; offset > 0; offset /= 2) {
        dot += __shfl_xor_sync(0xFFFFFFFF, dot, offset);
      }
      if (lane == 0) {
        float score = args.scale * dot;
        if (j >= args.k_tiles || isnan(score)) score = -INFINITY;
        if (args.keep_own_tile && j == first + r && j < args.k_tiles) score = INFINITY;
        scores[r * size + j] = score;
        order[r * size + j] = j < args.k_tiles ? j : INT_MAX;
      }
    }
  }
  __syncthreads();
  for (int r = 0; r < rows; ++r) {
    sort_by_rank(scores + r * size, order + r * size, size);
    for (int s = threadIdx.x; s < args.list_size; s += blockDim.x) {
      chosen[s] = s < args.budget ? order[r * size + s] : INT_MAX;
    }
    __syncthreads();
    sort_ascending(chosen, args.list_size);
    std::int32_t* out = args.indices + (head_row * args.q_tiles + first + r) * args.budget;
    for (int s = threadIdx.x; s < args.budget; s += blockDim.x) out[s] = chosen[s];
    if (threadIdx.x == 0) {
      args.counts[head_row * args.q_tiles + first + r] = static_cast<int>(args.budget);
    }
    __syncthreads();  // chosen is reused by the next row
  }
}

int power_of_two_at_least(std::int64_t n) {
  int power = 1;
  while (power < n) power *= 2;
  return power;
}

void check_launch(const char* what) {
  const cudaError_t status = cudaGetLastError();
  VEDA_CHECK(status == cudaSuccess, what, " launch failed: ", cudaGetErrorString(status));
}

}  // namespace

std::size_t tile_selection_workspace_bytes(const TileSelectionParams& params) {
  return sizeof(float) * static_cast<std::size_t>(params.batch * params.heads *
                                                  (params.q_tiles + params.k_tiles) * params.dim);
}

void tile_selection_cuda(const TileSelectionParams& params, cudaStream_t stream) {
  params.validate();
  VEDA_CHECK(params.workspace != nullptr, "tile selection on the GPU needs a workspace of ",
             tile_selection_workspace_bytes(params), " bytes");
  VEDA_CHECK(params.k_tiles <= kMaxKeyTiles, "tile selection of ", params.k_tiles,
             " key tiles; the GPU path supports at most ", kMaxKeyTiles);
  VEDA_CHECK(params.q_tiles <= 2147483647 && params.heads <= 65535 && params.batch <= 65535,
             "tile selection grid of ", params.q_tiles, " tiles x ", params.heads, " heads x ",
             params.batch, " batches exceeds the launch limits");
  float* q_hat = static_cast<float*>(params.workspace);
  float* k_hat = q_hat + params.batch * params.heads * params.q_tiles * params.dim;
  const unsigned threads =
      static_cast<unsigned>(params.dim < 256 ? (params.dim + 31) / 32 * 32 : 256);
  const std::size_t feature_bytes =
      sizeof(float) * kProjectTiles * 3 * static_cast<std::size_t>(params.dim);
  const auto heads = static_cast<unsigned>(params.heads);
  const auto batch = static_cast<unsigned>(params.batch);
  const auto project = [&](const float* stats, const float* projection, std::int64_t tiles,
                           float* out) {
    const auto blocks = static_cast<unsigned>((tiles + kProjectTiles - 1) / kProjectTiles);
    project_kernel<<<dim3(blocks, heads, batch), threads, feature_bytes, stream>>>(
        stats, projection, params.global_head, tiles, params.dim, out);
  };
  project(params.q_stats, params.q_projection, params.q_tiles, q_hat);
  check_launch("tile projection (q)");
  project(params.k_stats, params.k_projection, params.k_tiles, k_hat);
  check_launch("tile projection (k)");

  SelectArgs args{q_hat,
                  k_hat,
                  params.q_tiles,
                  params.k_tiles,
                  params.dim,
                  params.budget,
                  1,
                  power_of_two_at_least(params.k_tiles),
                  power_of_two_at_least(params.budget),
                  params.scale,
                  params.keep_own_tile,
                  params.counts,
                  params.indices};
  // As many query tiles per block as fit in ~96 KB of shared memory, at most 8: each k^_j row is
  // then read from L2 once per 8 query tiles instead of once per tile.
  const auto row_bytes = static_cast<std::size_t>(8 * args.sorted_size + 4 * params.dim);
  args.rows = static_cast<int>(std::clamp<std::size_t>(96 * 1024 / row_bytes, 1, 8));
  const std::size_t shared = row_bytes * static_cast<std::size_t>(args.rows) +
                             sizeof(int) * static_cast<std::size_t>(args.list_size);
  const cudaError_t status = cudaFuncSetAttribute(
      select_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(shared));
  VEDA_CHECK(status == cudaSuccess, "tile selection needs ", shared,
             " bytes of shared memory: ", cudaGetErrorString(status));
  const auto blocks = static_cast<unsigned>((params.q_tiles + args.rows - 1) / args.rows);
  select_kernel<<<dim3(blocks, heads, batch), kSelectThreads, shared, stream>>>(args);
  check_launch("tile selection");
}

}  // namespace veda
