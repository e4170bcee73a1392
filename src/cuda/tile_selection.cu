#include <algorithm>
#include <cfloat>
#include <climits>
#include <cmath>

#include "veda/cuda/tile_front_end.h"
#include "veda/error.h"
#include "veda/tile_statistics.h"

namespace veda {
namespace {

constexpr int kSelectWarps = 8;
constexpr int kSelectThreads = kSelectWarps * 32;
constexpr std::int64_t kMaxKeyTiles = 32768;  // one row of scores + bitmask in ~132 KB

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

// The best (score, index) among a lane's key tiles j = lane, lane + 32, ... not yet taken.
__device__ void lane_best(const float* scores, const unsigned* taken, int k_tiles, int lane,
                          float& best_score, int& best_index) {
  best_score = -INFINITY, best_index = INT_MAX;
  for (int j = lane; j < k_tiles; j += 32) {
    if (!(taken[j / 32] >> (j % 32) & 1u) && ranks_before(scores[j], j, best_score, best_index)) {
      best_score = scores[j], best_index = j;
    }
  }
}

struct SelectArgs {
  const float* q_hat;  // [B, H, Tq, D]
  const float* k_hat;  // [B, H, Tk, D]
  std::int64_t q_tiles, k_tiles, dim, budget;
  int rows;  // query tiles per block, <= kSelectWarps
  float scale;
  bool keep_own_tile;
  std::int32_t* counts;
  std::int32_t* indices;
};

// Block (`rows` query tiles, head, batch). Phase 1: all warps form the logits of every row
// against every key tile, each k^_j read once for all rows. Phase 2: warp r selects row r's top
// `budget` by repeated warp arg-max (each lane caches the best of its 1/32 of the tiles and
// rescans only when that one is taken: about Tk/32 + budget * (10 + Tk/32 / 32 * ...) steps),
// marking taken tiles in a bitmask, then writes the marked tiles in ascending order with ballots.
__global__ void __launch_bounds__(kSelectThreads) select_kernel(SelectArgs args) {
  extern __shared__ float shared[];
  const int k_tiles = static_cast<int>(args.k_tiles), words = (k_tiles + 31) / 32;
  const std::int64_t dim = args.dim;
  float* q_rows = shared;                                                   // [rows, D]
  float* scores = q_rows + args.rows * dim;                                 // [rows, Tk]
  auto* taken = reinterpret_cast<unsigned*>(scores + args.rows * k_tiles);  // [rows, words]
  const std::int64_t first = blockIdx.x * std::int64_t{args.rows};
  const std::int64_t head = blockIdx.y, batch = blockIdx.z, heads = gridDim.y;
  const std::int64_t head_row = batch * heads + head;
  const int rows = static_cast<int>(min(std::int64_t{args.rows}, args.q_tiles - first));
  for (std::int64_t e = threadIdx.x; e < rows * dim; e += blockDim.x) {
    q_rows[e] = args.q_hat[(head_row * args.q_tiles + first) * dim + e];
  }
  for (int w = threadIdx.x; w < rows * words; w += blockDim.x) taken[w] = 0u;
  __syncthreads();
  const float* k = args.k_hat + head_row * args.k_tiles * dim;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  for (int j = warp; j < k_tiles; j += kSelectWarps) {
    for (int r = 0; r < rows; ++r) {
      float dot = 0.0f;
      for (std::int64_t d = lane; d < dim; d += 32) dot += q_rows[r * dim + d] * k[j * dim + d];
      for (int offset = 16; offset > 0; offset /= 2) {
        dot += __shfl_xor_sync(0xFFFFFFFF, dot, offset);
      }
      if (lane == 0) {
        const float score = args.scale * dot;
        scores[r * k_tiles + j] = isnan(score) ? -INFINITY : score;
      }
    }
  }
  __syncthreads();
  if (warp >= rows) return;

  const std::int64_t tile = first + warp;
  const float* row_scores = scores + warp * k_tiles;
  unsigned* row_taken = taken + warp * words;
  int picked = 0;
  if (args.keep_own_tile && tile < k_tiles) {
    if (lane == 0) row_taken[tile / 32] |= 1u << (tile % 32);
    ++picked;
  }
  __syncwarp();
  float best_score;
  int best_index;
  lane_best(row_scores, row_taken, k_tiles, lane, best_score, best_index);
  for (; picked < args.budget; ++picked) {
    float winner_score = best_score;
    int winner = best_index;
    for (int offset = 16; offset > 0; offset /= 2) {
      const float other_score = __shfl_xor_sync(0xFFFFFFFF, winner_score, offset);
      const int other = __shfl_xor_sync(0xFFFFFFFF, winner, offset);
      if (ranks_before(other_score, other, winner_score, winner)) {
        winner_score = other_score, winner = other;
      }
    }
    if (winner % 32 == lane) {  // the owner marks it and finds its next best
      row_taken[winner / 32] |= 1u << (winner % 32);
      lane_best(row_scores, row_taken, k_tiles, lane, best_score, best_index);
    }
    __syncwarp();
  }
  // Marked tiles in ascending order: word w's set bits go after the popcounts of words < w.
  std::int32_t* out = args.indices + (head_row * args.q_tiles + tile) * args.budget;
  int written = 0;
  for (int base = 0; base < words; base += 32) {
    const unsigned word = base + lane < words ? row_taken[base + lane] : 0u;
    const int count = __popc(word);
    int before = count;  // inclusive prefix sum of counts across lanes
    for (int offset = 1; offset < 32; offset *= 2) {
      const int other = __shfl_up_sync(0xFFFFFFFF, before, offset);
      if (lane >= offset) before += other;
    }
    int slot = written + before - count;
    for (unsigned bits = word; bits != 0u; bits &= bits - 1u) {
      out[slot++] = (base + lane) * 32 + __ffs(static_cast<int>(bits)) - 1;
    }
    written += __shfl_sync(0xFFFFFFFF, before, 31);
  }
  if (lane == 0) args.counts[head_row * args.q_tiles + tile] = static_cast<int>(args.budget);
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

  SelectArgs args{q_hat,         k_hat, params.q_tiles, params.k_tiles,       params.dim,
                  params.budget, 1,     params.scale,   params.keep_own_tile, params.counts,
                  params.indices};
  // As many query tiles per block (one warp each) as fit in ~96 KB of shared memory, at most 8:
  // each k^_j row is then read from L2 once per 8 query tiles.
  const auto row_bytes = static_cast<std::size_t>(4 * params.k_tiles + 4 * params.dim +
                                                  4 * ((params.k_tiles + 31) / 32));
  args.rows = static_cast<int>(std::clamp<std::size_t>(96 * 1024 / row_bytes, 1, kSelectWarps));
  const std::size_t shared = row_bytes * static_cast<std::size_t>(args.rows);
  const cudaError_t status = cudaFuncSetAttribute(
      select_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(shared));
  VEDA_CHECK(status == cudaSuccess, "tile selection needs ", shared,
             " bytes of shared memory: ", cudaGetErrorString(status));
  const auto blocks = static_cast<unsigned>((params.q_tiles + args.rows - 1) / args.rows);
  select_kernel<<<dim3(blocks, heads, batch), kSelectThreads, shared, stream>>>(args);
  check_launch("tile selection");
}

}  // namespace veda
