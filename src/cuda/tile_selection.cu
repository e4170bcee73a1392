#include <cmath>
#include <cstdint>

#include "veda/block_index.h"
#include "veda/cuda/tile_front_end.h"
#include "veda/error.h"
#include "veda/tile_statistics.h"

namespace veda {
namespace {

constexpr int kThreads = 256, kWarps = kThreads / 32;
constexpr unsigned kFullWarp = 0xFFFFFFFFu;
constexpr int kDepth = 32;  // features per staged chunk of the projection; D is padded to it
constexpr std::int64_t kMaxKeyTiles = 8192;  // a block's rows of keys fit in shared memory

// ---- Projection: descriptor[t, e] = mean[t, e] + sum_f feature[t, f] P[f, e] --------------
// One block computes 32 tiles x 128 columns as a small SGEMM: features [32, 3D] and P [3D, 128]
// are staged 32 features at a time; thread (y, x) accumulates tiles 4y..4y+3 x columns
// 4x..4x+3, two 16-byte shared loads per 16 FMAs (the warp shares y: a broadcast).
constexpr int kProjectTiles = 32, kProjectColumns = 128;

__global__ void __launch_bounds__(kThreads, 2)
    project_kernel(const float* stats, const float* projection, const std::int32_t* global_head,
                   std::int64_t tiles, std::int64_t dim, float* out) {
  __shared__ __align__(16) float features[kDepth][kProjectTiles + 4];  // transposed, padded
  __shared__ __align__(16) float weights[kDepth][kProjectColumns];
  const std::int64_t column_blocks = (dim + kProjectColumns - 1) / kProjectColumns;
  const std::int64_t first = blockIdx.x / column_blocks * kProjectTiles;
  const std::int64_t column0 = blockIdx.x % column_blocks * kProjectColumns;
  const std::int64_t head = blockIdx.y, batch = blockIdx.z, heads = gridDim.y;
  const std::int64_t depth = 3 * dim, row = (batch * heads + head) * tiles;
  const float* tile_stats = stats + row * depth;
  const float* p =
      projection ? projection + (global_head ? global_head[head] : head) * depth * dim : nullptr;
  const int y = threadIdx.x / 32, x = threadIdx.x % 32;
  // The next chunk is loaded into registers before the current one is multiplied, so the
  // global loads overlap the FMAs.
  constexpr int kFeatureLoads = kProjectTiles * kDepth / kThreads;
  constexpr int kWeightLoads = kDepth * kProjectColumns / kThreads;
  float next_features[kFeatureLoads], next_weights[kWeightLoads];
  const auto load_chunk = [&](std::int64_t f0) {
#pragma unroll
    for (int i = 0; i < kFeatureLoads; ++i) {
      const int e = threadIdx.x + i * kThreads, t = e / kDepth, f = e % kDepth;
      next_features[i] =
          first + t < tiles && f0 + f < depth ? tile_stats[(first + t) * depth + f0 + f] : 0.0f;
    }
#pragma unroll
    for (int i = 0; i < kWeightLoads; ++i) {
      const int e = threadIdx.x + i * kThreads, f = e / kProjectColumns, c = e % kProjectColumns;
      next_weights[i] =
          f0 + f < depth && column0 + c < dim ? p[(f0 + f) * dim + column0 + c] : 0.0f;
    }
  };
  float acc[4][4] = {};
  if (p != nullptr) load_chunk(0);
  for (std::int64_t f0 = 0; p != nullptr && f0 < depth; f0 += kDepth) {
    __syncthreads();  // the previous chunk's readers are done
#pragma unroll
    for (int i = 0; i < kFeatureLoads; ++i) {
      const int e = threadIdx.x + i * kThreads;  // adjacent threads hold adjacent features
      features[e % kDepth][e / kDepth] = next_features[i];
    }
#pragma unroll
    for (int i = 0; i < kWeightLoads; ++i) {
      const int e = threadIdx.x + i * kThreads;
      weights[e / kProjectColumns][e % kProjectColumns] = next_weights[i];
    }
    __syncthreads();
    if (f0 + kDepth < depth) load_chunk(f0 + kDepth);
#pragma unroll 8
    for (int f = 0; f < kDepth; ++f) {
      const float4 a = *reinterpret_cast<const float4*>(&features[f][4 * y]);
      const float4 b = *reinterpret_cast<const float4*>(&weights[f][4 * x]);
      const float as[4] = {a.x, a.y, a.z, a.w}, bs[4] = {b.x, b.y, b.z, b.w};
#pragma unroll
      for (int i = 0; i < 4; ++i) {
#pragma unroll
        for (int j = 0; j < 4; ++j) acc[i][j] += as[i] * bs[j];
      }
    }
  }
  for (int i = 0; i < 4; ++i) {
    const std::int64_t t = first + 4 * y + i;
    for (int j = 0; j < 4 && t < tiles; ++j) {
      const std::int64_t e = column0 + 4 * x + j;
      if (e < dim)
        out[(row + t) * dim + e] = tile_stats[t * depth + kTileMean * dim + e] + acc[i][j];
    }
  }
}

// ---- Logits and top-k ------------------------------------------------------------------------
// Logits as unsigned keys that order as the floats do: NaN ranks as -inf (last) and -0 as +0, so
// equal scores give equal keys and ties fall to the lower tile index, as on the CPU.
__device__ unsigned order_key(float score) {
  if (isnan(score)) score = -INFINITY;
  if (score == 0.0f) score = 0.0f;
  const unsigned bits = __float_as_uint(score);
  return bits & 0x80000000u ? ~bits : bits | 0x80000000u;
}

// The logit an order key was made from (NaN came back as -inf, -0 as +0).
__device__ float key_score(unsigned key) {
  return __uint_as_float(key & 0x80000000u ? key & 0x7FFFFFFFu : ~key);
}

__device__ double warp_sum(double value) {
  for (int offset = 16; offset > 0; offset /= 2) value += __shfl_xor_sync(kFullWarp, value, offset);
  return value;
}

struct SelectArgs {
  const float* q_hat;  // [B, H, Tq, D]
  const float* k_hat;  // [B, H, Tk, D]
  std::int64_t q_tiles, k_tiles, dim, padded_dim, budget;
  float scale;
  bool keep_own_tile;
  const double* thresholds;  // [H] or nullptr
  std::int32_t* counts;
  std::int32_t* indices;
};

// Phase 1's work split for a block of kRows query tiles: a thread computes 4 rows x 4 key tiles
// (two 16-byte shared loads per 16 FMAs); the lanes of a warp cover all kRows rows and
// kWarpKeys key tiles, the block a chunk of kChunk key tiles, staged kChannels channels at a
// time (8 values per thread).
// Shared memory, in floats / keys: q^ transposed [D', kRows] (D' = D rounded up to 32), the
// staged chunk of k^ transposed [kChannels, kChunk + 4], the rows' keys [kRows, Tk] and one
// 256-bin histogram per warp.
template <int kRows>
struct SelectLayout {
  static constexpr int kRowGroups = kRows / 4;
  static constexpr int kLaneQuads = 32 / kRowGroups;  // key quads of a warp
  static constexpr int kWarpKeys = 4 * kLaneQuads;
  static constexpr int kChunk = kWarps * kWarpKeys;
  static constexpr int kStride = kChunk + 4;  // padded row of the staged chunk (16 B aligned)
  static constexpr int kChannels = 8 * kThreads / kChunk;
  static std::size_t bytes(std::int64_t padded_dim, std::int64_t k_tiles) {
    return 4 * static_cast<std::size_t>(padded_dim * kRows + kChannels * kStride + kRows * k_tiles +
                                        kWarps * 256);
  }
};

// Row selection of one warp: the key T of the `need`-th best tile other than `own`, by radix
// select on 8-bit digits from the top (one shared histogram per pass, bins counted with
// warp-aggregated atomics), and how many of the tiles whose key equals T to take.
__device__ void radix_select(const unsigned* keys, int k_tiles, int own, int need,
                             unsigned* histogram, unsigned& threshold, int& equal_needed) {
  const int lane = threadIdx.x % 32;
  unsigned prefix = 0u, prefix_mask = 0u;
  for (int shift = 24; shift >= 0; shift -= 8) {
    for (int b = lane; b < 256; b += 32) histogram[b] = 0u;
    __syncwarp();
    for (int base = 0; base < k_tiles; base += 32) {
      const int j = base + lane;
      const unsigned key = j < k_tiles ? keys[j] : 0u;
      const bool counted = j < k_tiles && j != own && (key & prefix_mask) == prefix;
      const unsigned bin = counted ? key >> shift & 255u : 256u;
      const unsigned same = __match_any_sync(kFullWarp, bin);
      if (counted && lane == __ffs(static_cast<int>(same)) - 1) {
        atomicAdd(&histogram[bin], static_cast<unsigned>(__popc(same)));
      }
    }
    __syncwarp();
    // Lane l holds bins 8l..8l+7; `above` counts the candidates in higher bins.
    int counts[8], total = 0;
#pragma unroll
    for (int i = 0; i < 8; ++i) total += counts[i] = static_cast<int>(histogram[8 * lane + i]);
    int suffix = total;  // inclusive sum over lanes >= this one
    for (int offset = 1; offset < 32; offset *= 2) {
      const int other = __shfl_down_sync(kFullWarp, suffix, offset);
      if (lane + offset < 32) suffix += other;
    }
    int above = suffix - total, found = -1, found_above = 0;
#pragma unroll
    for (int i = 7; i >= 0; --i) {
      if (above < need && need <= above + counts[i]) found = 8 * lane + i, found_above = above;
      above += counts[i];
    }
    const int owner = __ffs(static_cast<int>(__ballot_sync(kFullWarp, found >= 0))) - 1;
    const auto bin = static_cast<unsigned>(__shfl_sync(kFullWarp, found, owner));
    need -= __shfl_sync(kFullWarp, found_above, owner);
    prefix |= bin << shift;
    prefix_mask |= 255u << shift;
    __syncwarp();
  }
  threshold = prefix;
  equal_needed = need;
}

// Cumulative threshold of one warp's row: how many tiles besides `own` to take, i.e. the fewest
// best tiles whose softmax mass, added to the own tile's, reaches threshold * total, capped at
// `cap` and at the tiles of positive weight (the CPU reference's walk, select_cumulative). The
// weights exp(s - peak) are summed in double as there; the count is found by bisection, each
// step a radix select of the best n tiles and a sum of their weights.
__device__ int cumulative_count(const unsigned* keys, int k_tiles, int own, int cap,
                                double threshold, unsigned* histogram) {
  const int lane = threadIdx.x % 32;
  unsigned top = 0u;
  for (int j = lane; j < k_tiles; j += 32) top = max(top, keys[j]);
  for (int offset = 16; offset > 0; offset /= 2) {
    top = max(top, __shfl_xor_sync(kFullWarp, top, offset));
  }
  const double peak = key_score(top);
  if (!isfinite(peak)) return own >= 0 ? 0 : 1;  // no mass anywhere: the first tile only
  const auto weight = [&](unsigned key) { return exp(static_cast<double>(key_score(key)) - peak); };
  double total = 0.0;
  int positive = 0;  // tiles other than own with weight > 0
  for (int j = lane; j < k_tiles; j += 32) {
    const double w = weight(keys[j]);
    total += w;
    positive += j != own && w > 0.0;
  }
  total = warp_sum(total);
  for (int offset = 16; offset > 0; offset /= 2) {
    positive += __shfl_xor_sync(kFullWarp, positive, offset);
  }
  const double target = threshold * total;
  const double own_mass = own >= 0 ? weight(keys[own]) : 0.0;
  if (own >= 0 && own_mass >= target) return 0;
  const int most = min(cap, positive);
  if (most < 1) return 0;
  // Mass of the own tile and the best n others (ties: lower index first).
  const auto mass_of_best = [&](int n) {
    unsigned cut;
    int equal_needed;
    radix_select(keys, k_tiles, own, n, histogram, cut, equal_needed);
    double mass = 0.0;
    for (int j = lane; j < k_tiles; j += 32) {
      if (j != own && keys[j] > cut) mass += weight(keys[j]);
    }
    return own_mass + warp_sum(mass) + equal_needed * weight(cut);
  };
  int low = 1, high = most;  // the answer is in [low, high]: `most` when no n reaches the target
  while (low < high) {
    const int middle = (low + high) / 2;
    if (mass_of_best(middle) >= target) {
      high = middle;
    } else {
      low = middle + 1;
    }
  }
  return low;
}

// Block (kRows query tiles, head, batch). Phase 1: logits of the rows against every key tile as
// a register-tiled SGEMM (SelectLayout), stored as order keys in shared memory. Phase 2: warp w
// selects rows w, w + 8, ... by radix select (after the cumulative count where the head has a
// threshold), then writes the chosen tiles in ascending order with ballots and pads the row
// with kPaddedSlot.
template <int kRows>
__global__ void __launch_bounds__(kThreads, 2) select_kernel(SelectArgs args) {
  using Layout = SelectLayout<kRows>;
  extern __shared__ __align__(16) float shared[];
  const int k_tiles = static_cast<int>(args.k_tiles);
  const std::int64_t dim = args.dim, padded_dim = args.padded_dim;
  float* q_t = shared;                    // [D', kRows]
  float* k_t = q_t + padded_dim * kRows;  // [kChannels, kStride]
  auto* keys =
      reinterpret_cast<unsigned*>(k_t + Layout::kChannels * Layout::kStride);  // [kRows, Tk]
  unsigned* histograms = keys + kRows * args.k_tiles;                          // [kWarps, 256]
  const std::int64_t first = blockIdx.x * std::int64_t{kRows};
  const std::int64_t head = blockIdx.y, batch = blockIdx.z, heads = gridDim.y;
  const std::int64_t head_row = batch * heads + head;
  const int rows = static_cast<int>(min(std::int64_t{kRows}, args.q_tiles - first));
  const float* q = args.q_hat + (head_row * args.q_tiles + first) * dim;
  const float* k = args.k_hat + head_row * args.k_tiles * dim;
  for (std::int64_t e = threadIdx.x; e < kRows * padded_dim; e += kThreads) {
    const std::int64_t r = e / padded_dim, d = e % padded_dim;
    q_t[d * kRows + r] = r < rows && d < dim ? q[r * dim + d] : 0.0f;
  }
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int row_group = lane / Layout::kLaneQuads;
  const int key_offset = warp * Layout::kWarpKeys + 4 * (lane % Layout::kLaneQuads);
  // Steps over (key chunk, channel chunk); the next step's k^ values are loaded into registers
  // before the current step's FMAs, so the global loads overlap them.
  constexpr int kChannels = Layout::kChannels;
  const int channel_chunks = static_cast<int>(padded_dim / kChannels);
  const int steps = (k_tiles + Layout::kChunk - 1) / Layout::kChunk * channel_chunks;
  constexpr int kStageLoads = Layout::kChunk * kChannels / kThreads;
  float staged[kStageLoads];
  const auto load_step = [&](int step) {
    const int j0 = step / channel_chunks * Layout::kChunk;
    const std::int64_t d0 = step % channel_chunks * std::int64_t{kChannels};
#pragma unroll
    for (int i = 0; i < kStageLoads; ++i) {
      const int e = threadIdx.x + i * kThreads;
      const int j = e / kChannels, d = e % kChannels;  // adjacent threads: adjacent channels
      staged[i] = j0 + j < k_tiles && d0 + d < dim ? k[(j0 + j) * dim + d0 + d] : 0.0f;
    }
  };
  load_step(0);
  float acc[4][4] = {};
  for (int step = 0; step < steps; ++step) {
    __syncthreads();  // the previous step's readers are done (and q_t is written)
#pragma unroll
    for (int i = 0; i < kStageLoads; ++i) {
      const int e = threadIdx.x + i * kThreads;
      k_t[e % kChannels * Layout::kStride + e / kChannels] = staged[i];
    }
    __syncthreads();
    if (step + 1 < steps) load_step(step + 1);
    const float* q_chunk = q_t + step % channel_chunks * kChannels * kRows;
#pragma unroll 8
    for (int d = 0; d < kChannels; ++d) {
      const float4 a = *reinterpret_cast<const float4*>(q_chunk + d * kRows + 4 * row_group);
      const float4 b = *reinterpret_cast<const float4*>(k_t + d * Layout::kStride + key_offset);
      const float as[4] = {a.x, a.y, a.z, a.w}, bs[4] = {b.x, b.y, b.z, b.w};
#pragma unroll
      for (int r = 0; r < 4; ++r) {
#pragma unroll
        for (int c = 0; c < 4; ++c) acc[r][c] += as[r] * bs[c];
      }
    }
    if (step % channel_chunks == channel_chunks - 1) {  // the chunk's logits are complete
      const int j0 = step / channel_chunks * Layout::kChunk;
#pragma unroll
      for (int r = 0; r < 4; ++r) {
#pragma unroll
        for (int c = 0; c < 4; ++c) {
          const int j = j0 + key_offset + c;
          if (j < k_tiles) {
            keys[(4 * row_group + r) * k_tiles + j] = order_key(args.scale * acc[r][c]);
          }
          acc[r][c] = 0.0f;
        }
      }
    }
  }
  __syncthreads();

  const unsigned lower_lanes = (1u << lane) - 1u;
  const double threshold = args.thresholds ? args.thresholds[head] : 0.0;
  for (int r = warp; r < rows; r += kWarps) {
    const std::int64_t tile = first + r;
    const unsigned* row_keys = keys + r * k_tiles;
    const int own = args.keep_own_tile && tile < k_tiles ? static_cast<int>(tile) : -1;
    const int cap = static_cast<int>(args.budget) - (own >= 0 ? 1 : 0);
    const int need = threshold > 0.0 ? cumulative_count(row_keys, k_tiles, own, cap, threshold,
                                                        histograms + warp * 256)
                                     : cap;
    unsigned cut = 0xFFFFFFFFu;  // above every key: only the own tile when need is 0
    int equal_needed = 0;
    if (need > 0) {
      radix_select(row_keys, k_tiles, own, need, histograms + warp * 256, cut, equal_needed);
    }
    std::int32_t* out = args.indices + (head_row * args.q_tiles + tile) * args.budget;
    int written = 0, equal_before = 0;
    for (int base = 0; base < k_tiles; base += 32) {
      const int j = base + lane;
      const unsigned key = j < k_tiles ? row_keys[j] : 0u;
      const bool candidate = j < k_tiles && j != own;
      const unsigned equal = __ballot_sync(kFullWarp, candidate && key == cut);
      const bool taken_equal =
          (equal >> lane & 1u) && equal_before + __popc(equal & lower_lanes) < equal_needed;
      const bool chosen = j == own || (candidate && key > cut) || taken_equal;
      const unsigned chosen_lanes = __ballot_sync(kFullWarp, chosen);
      if (chosen) out[written + __popc(chosen_lanes & lower_lanes)] = j;
      written += __popc(chosen_lanes);
      equal_before += __popc(equal);
    }
    const int count = need + (own >= 0 ? 1 : 0);
    for (std::int64_t slot = count + lane; slot < args.budget; slot += 32) out[slot] = kPaddedSlot;
    if (lane == 0) args.counts[head_row * args.q_tiles + tile] = count;
  }
}

void check_launch(const char* what) {
  const cudaError_t status = cudaGetLastError();
  VEDA_CHECK(status == cudaSuccess, what, " launch failed: ", cudaGetErrorString(status));
}

template <int kRows>
void launch_select(const SelectArgs& args, std::size_t shared, std::int64_t heads,
                   std::int64_t batch, cudaStream_t stream) {
  const cudaError_t status = cudaFuncSetAttribute(
      select_kernel<kRows>, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(shared));
  VEDA_CHECK(status == cudaSuccess, "tile selection needs ", shared,
             " bytes of shared memory: ", cudaGetErrorString(status));
  const auto blocks = static_cast<unsigned>((args.q_tiles + kRows - 1) / kRows);
  select_kernel<kRows><<<dim3(blocks, static_cast<unsigned>(heads), static_cast<unsigned>(batch)),
                         kThreads, shared, stream>>>(args);
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
             " key tiles; the GPU path supports at most ", kMaxKeyTiles, " (", kMaxKeyTiles * 128,
             " tokens)");
  VEDA_CHECK(params.q_tiles <= 2147483647 && params.heads <= 65535 && params.batch <= 65535,
             "tile selection grid of ", params.q_tiles, " tiles x ", params.heads, " heads x ",
             params.batch, " batches exceeds the launch limits");
  float* q_hat = static_cast<float*>(params.workspace);
  float* k_hat = q_hat + params.batch * params.heads * params.q_tiles * params.dim;
  const auto heads = static_cast<unsigned>(params.heads);
  const auto batch = static_cast<unsigned>(params.batch);
  const auto project = [&](const float* stats, const float* projection, std::int64_t tiles,
                           float* out) {
    const std::int64_t column_blocks = (params.dim + kProjectColumns - 1) / kProjectColumns;
    const auto blocks =
        static_cast<unsigned>((tiles + kProjectTiles - 1) / kProjectTiles * column_blocks);
    project_kernel<<<dim3(blocks, heads, batch), kThreads, 0, stream>>>(
        stats, projection, params.global_head, tiles, params.dim, out);
  };
  project(params.q_stats, params.q_projection, params.q_tiles, q_hat);
  check_launch("tile projection (q)");
  project(params.k_stats, params.k_projection, params.k_tiles, k_hat);
  check_launch("tile projection (k)");

  const std::int64_t padded_dim = (params.dim + kDepth - 1) / kDepth * kDepth;
  const SelectArgs args{
      q_hat,         k_hat,         params.q_tiles, params.k_tiles,       params.dim,
      padded_dim,    params.budget, params.scale,   params.keep_own_tile, params.thresholds,
      params.counts, params.indices};
  // 32 query tiles per block (each k^ row read once per 32) where their keys fit next to the
  // staging buffers (Tk <= ~2,400 on Hopper); 4 for longer sequences (Tk up to kMaxKeyTiles).
  int device = 0, shared_limit = 0;
  VEDA_CHECK(cudaGetDevice(&device) == cudaSuccess &&
                 cudaDeviceGetAttribute(&shared_limit, cudaDevAttrMaxSharedMemoryPerBlockOptin,
                                        device) == cudaSuccess,
             "tile selection could not read the device's shared memory limit");
  const std::size_t wide = SelectLayout<32>::bytes(padded_dim, params.k_tiles);
  const std::size_t narrow = SelectLayout<4>::bytes(padded_dim, params.k_tiles);
  if (wide <= static_cast<std::size_t>(shared_limit)) {
    launch_select<32>(args, wide, params.heads, params.batch, stream);
  } else {
    VEDA_CHECK(narrow <= static_cast<std::size_t>(shared_limit), "tile selection of ",
               params.k_tiles, " key tiles at head dim ", params.dim, " needs ", narrow,
               " bytes of shared memory; this GPU has ", shared_limit, " per block");
    launch_select<4>(args, narrow, params.heads, params.batch, stream);
  }
  check_launch("tile selection");
}

}  // namespace veda
