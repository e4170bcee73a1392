#include <algorithm>
#include <cmath>
#include <cstdint>
#include <utility>

#include "tf32x3_mma.cuh"
#include "veda/block_index.h"
#include "veda/cuda/tile_front_end.h"
#include "veda/error.h"
#include "veda/tile_statistics.h"

namespace veda {
namespace {

constexpr int kThreads = 256, kWarps = kThreads / 32;
constexpr unsigned kFullWarp = 0xFFFFFFFFu;
constexpr std::int64_t kMaxKeyTiles = 8192;  // a block's rows of keys fit in shared memory

using cuda_detail::a_fragment_word;
using cuda_detail::kTailOffset;
using cuda_detail::load_slice_rows;
using cuda_detail::split_tf32;
using cuda_detail::split_tf32_truncated;
using cuda_detail::tf32_row_stride;
using cuda_detail::Tf32Split4;
using cuda_detail::warp_tile_k16;
using cuda_detail::warp_tile_k16_fragments;

// Descriptors are stored [B, H, T, D'] with D' = descriptor_width(D) (tile_selection.h), so the
// logits read whole 16-channel slices of any row with 16-byte loads.

// ---- Projection: descriptor[t, e] = mean[t, e] + sum_f feature[t, f] P[f, e] --------------
// One block computes 32 tiles x 128 columns on tensor cores (3xTF32, tf32x3_mma.cuh); warp w
// takes columns 16w..16w+15 of all 32 tiles. The features [32, 3D] and P [3D, 128] are staged
// 32 features at a time, P transposed (columns as k-contiguous rows); the next slice is loaded
// into registers while the current one is multiplied.
constexpr int kProjectTiles = 32, kProjectColumns = 128, kSlice = 32;
constexpr int kSliceStride = tf32_row_stride(kSlice);

__global__ void __launch_bounds__(kThreads, 2)
    project_kernel(const float* stats, const float* projection, const std::int32_t* global_head,
                   std::int64_t tiles, std::int64_t dim, std::int64_t width, float* out) {
  __shared__ __align__(16) float features[kProjectTiles * kSliceStride];   // [tile][f]
  __shared__ __align__(16) float weights[kProjectColumns * kSliceStride];  // [column][f]
  const std::int64_t column_blocks = (width + kProjectColumns - 1) / kProjectColumns;
  const std::int64_t first = blockIdx.x / column_blocks * kProjectTiles;
  const std::int64_t column0 = blockIdx.x % column_blocks * kProjectColumns;
  const std::int64_t head = blockIdx.y, batch = blockIdx.z, heads = gridDim.y;
  const std::int64_t depth = 3 * dim, row = (batch * heads + head) * tiles;
  const float* tile_stats = stats + row * depth;
  const float* p =
      projection ? projection + (global_head ? global_head[head] : head) * depth * dim : nullptr;
  const int warp = static_cast<int>(threadIdx.x) / 32, lane = static_cast<int>(threadIdx.x) % 32;
  const int g = lane / 4, t = lane % 4;
  // Features: thread reads feature f = e % 32 of tile e / 32 (coalesced along f). P: float4 of
  // columns 4c..4c+3 of feature f, a warp reading 16 features x 2 adjacent float4 (32-byte
  // sectors, all used) so that its transposed shared stores, weights[4c + q][f], fall in 16
  // banks twice (2-way) rather than all in one.
  constexpr int kFeatureLoads = kProjectTiles * kSlice / kThreads;
  constexpr int kWeightLoads = kSlice * kProjectColumns / 4 / kThreads;
  const auto weight_slot = [](int e, int& f, int& c4) {
    f = e % 16 + 16 * (e / 32 % 2);
    c4 = 2 * (e / 64) + e / 16 % 2;
  };
  // P's float4 as one 16-byte load where its rows are aligned (D % 4 == 0: every head dim in
  // use); four scalar loads cost the L1, this kernel's bound, four times the requests.
  const bool vector_weights =
      dim % 4 == 0 && reinterpret_cast<std::uintptr_t>(p) % alignof(float4) == 0;
  float next_features[kFeatureLoads];
  float4 next_weights[kWeightLoads];
  const auto load_slice = [&](std::int64_t f0) {
#pragma unroll
    for (int i = 0; i < kFeatureLoads; ++i) {
      const int e = static_cast<int>(threadIdx.x) + i * kThreads, tile = e / kSlice;
      const std::int64_t f = f0 + e % kSlice;
      next_features[i] =
          first + tile < tiles && f < depth ? tile_stats[(first + tile) * depth + f] : 0.0f;
    }
#pragma unroll
    for (int i = 0; i < kWeightLoads; ++i) {
      int f_in_slice, c4;
      weight_slot(static_cast<int>(threadIdx.x) + i * kThreads, f_in_slice, c4);
      const std::int64_t f = f0 + f_in_slice, c = column0 + 4 * c4;
      if (vector_weights) {
        next_weights[i] = f < depth && c < dim ? *reinterpret_cast<const float4*>(p + f * dim + c)
                                               : make_float4(0.0f, 0.0f, 0.0f, 0.0f);
        continue;
      }
      float values[4];
#pragma unroll
      for (int q = 0; q < 4; ++q) values[q] = f < depth && c + q < dim ? p[f * dim + c + q] : 0.0f;
      next_weights[i] = make_float4(values[0], values[1], values[2], values[3]);
    }
  };
  const bool active = column0 + 16 * warp < width;  // D' = 64: warps 4-7 idle
  float acc[2][2][4] = {};
  const float* a_rows[4];
  const float* b_rows[2];
#pragma unroll
  for (int i = 0; i < 4; ++i) a_rows[i] = features + (g + 8 * i) * kSliceStride + 4 * t;
#pragma unroll
  for (int n = 0; n < 2; ++n) b_rows[n] = weights + (16 * warp + g + 8 * n) * kSliceStride + 4 * t;
  if (p != nullptr) load_slice(0);
  for (std::int64_t f0 = 0; p != nullptr && f0 < depth; f0 += kSlice) {
    __syncthreads();  // the previous slice's readers are done
#pragma unroll
    for (int i = 0; i < kFeatureLoads; ++i) {
      const int e = static_cast<int>(threadIdx.x) + i * kThreads;
      features[e / kSlice * kSliceStride + e % kSlice] = next_features[i];
    }
#pragma unroll
    for (int i = 0; i < kWeightLoads; ++i) {
      int f, c4;
      weight_slot(static_cast<int>(threadIdx.x) + i * kThreads, f, c4);
      float* column = weights + 4 * c4 * kSliceStride + f;
      column[0] = next_weights[i].x, column[kSliceStride] = next_weights[i].y;
      column[2 * kSliceStride] = next_weights[i].z, column[3 * kSliceStride] = next_weights[i].w;
    }
    __syncthreads();
    if (f0 + kSlice < depth) load_slice(f0 + kSlice);
    if (active) {
#pragma unroll
      for (int k0 = 0; k0 < kSlice; k0 += 16) {
        float4 a[4], b[2];
        load_slice_rows(a, a_rows, k0);
        load_slice_rows(b, b_rows, k0);
        warp_tile_k16<2>(acc,
                         {split_tf32(a[0]), split_tf32(a[1]), split_tf32(a[2]), split_tf32(a[3])},
                         {split_tf32(b[0]), split_tf32(b[1])});
      }
    }
  }
  if (!active) return;
#pragma unroll
  for (int m = 0; m < 2; ++m) {
#pragma unroll
    for (int half = 0; half < 2; ++half) {
      const std::int64_t tile = first + 16 * m + g + 8 * half;
      if (tile >= tiles) continue;
#pragma unroll
      for (int n = 0; n < 2; ++n) {
#pragma unroll
        for (int q = 0; q < 2; ++q) {
          const std::int64_t e = column0 + 16 * warp + 8 * n + 2 * t + q;
          const float mean = e < dim ? tile_stats[tile * depth + kTileMean * dim + e] : 0.0f;
          out[(row + tile) * width + e] = mean + acc[m][n][2 * half + q];
        }
      }
    }
  }
}

// Diagonal P ([H_global, 3, D]): descriptor[t, d] = mean + sum_c stats[t, c, d] P[c, d], one
// thread per (tile, channel) of the [B*H*T, D'] output (zeros past D); memory-bound.
__global__ void project_diagonal_kernel(const float* stats, const float* projection,
                                        const std::int32_t* global_head, std::int64_t tiles,
                                        std::int64_t heads, std::int64_t dim, std::int64_t width,
                                        std::int64_t rows, float* out) {
  for (std::int64_t e = blockIdx.x * std::int64_t{blockDim.x} + threadIdx.x; e < rows * width;
       e += std::int64_t{gridDim.x} * blockDim.x) {
    const std::int64_t row = e / width, d = e % width;  // row = (batch * heads + head) * tiles + t
    float value = 0.0f;
    if (d < dim) {
      const std::int64_t head = row / tiles % heads;
      const float* p = projection + (global_head ? global_head[head] : head) * 3 * dim;
      const float* feature = stats + row * 3 * dim;
      value = feature[kTileMean * dim + d];
#pragma unroll
      for (int c = 0; c < 3; ++c) value += feature[c * dim + d] * p[c * dim + d];
    }
    out[e] = value;
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
  const float* q_hat;  // [B, H, Tq, D'] (descriptor_width)
  const float* k_hat;  // [B, H, Tk, D']
  std::int64_t q_tiles, k_tiles, width, budget;
  float scale;
  bool keep_own_tile;
  const double* thresholds;  // [H] or nullptr
  std::int32_t* counts;
  std::int32_t* indices;
};

// Shared memory of a block of kRows query tiles: their descriptors split into TF32 heads and
// tails in mma fragment order (a_fragment_word), 2 x 16 kMTiles rows x D' words (rows past kRows
// zero: blocks of 4 rows still fill one 16-row mma tile), and their logits as order keys
// [kRows, Tk].
template <int kRows>
struct SelectLayout {
  static constexpr int kMTiles = (kRows + 15) / 16;
  static std::size_t bytes(std::int64_t width, std::int64_t k_tiles) {
    return 4 * static_cast<std::size_t>(2 * 16 * kMTiles * width + kRows * k_tiles);
  }
};

// One row's keys, cached in registers (tile lane + 32 i in cached[i]) for rows of up to
// 32 kCachedKeys tiles, read from shared memory for longer ones. The own tile holds key 0,
// below every logit's (order_key(-inf) > 0), so it never counts among the candidates.
constexpr int kCachedKeys = 20;  // Tk <= 640 (81,920 tokens)

// Once kth_best's lower bound leaves at most 32 kCompactSlots - 1 candidates, they and the own
// tile are compacted in tile order into kCompactSlots keys and tiles a lane (through the warp's
// scratch, into cached[]), and the search's further counts and the write-out read those
// instead of the row.
constexpr int kCompactSlots = 4;
constexpr int kNoTile = 0x7FFFFFFF;  // the tile of an empty compact slot: never own

struct RowKeys {
  const unsigned* keys;  // shared [Tk]
  int k_tiles, own;
  bool in_registers;
  unsigned cached[kCachedKeys];
  uint2* scratch;  // the warp's, >= 32 kCompactSlots pairs, or nullptr: never compacted
  // kth_best's candidates >= its bound and the own tile (key 0), in tile order, where compacted:
  // slot s of lane holds the (lane + 32 s)-th, its key in cached[s] and its tile in
  // cached[kCompactSlots + s]; empty slots key 0, tile kNoTile.
  bool compacted = false;
  __device__ __forceinline__ unsigned compact_key(int s) const { return cached[s]; }
  __device__ __forceinline__ int compact_tile(int s) const {
    return static_cast<int>(cached[kCompactSlots + s]);
  }

  __device__ RowKeys(const unsigned* row, int tiles, int own_tile, uint2* warp_scratch)
      : keys(row),
        k_tiles(tiles),
        own(own_tile),
        in_registers(tiles <= 32 * kCachedKeys),
        scratch(warp_scratch) {
    if (!in_registers) return;
    const int lane = static_cast<int>(threadIdx.x) % 32;
#pragma unroll
    for (int i = 0; i < kCachedKeys; ++i) {
      const int j = lane + 32 * i;
      cached[i] = j < k_tiles && j != own ? keys[j] : 0u;
    }
  }

  // Candidate keys >= bound (bound > 0), counted over the warp. Registers: a fixed unrolled
  // count (the keys past Tk hold 0), four independent sums.
  __device__ __forceinline__ int count_cached(unsigned bound) const {
    int n[4] = {};
#pragma unroll
    for (int i = 0; i < kCachedKeys; ++i) {
      // A compare and a predicated increment (the compiler's own form is a select: 3 instead).
      asm("{\n .reg .pred ge;\n setp.ge.u32 ge, %1, %2;\n @ge add.s32 %0, %0, 1;\n}"
          : "+r"(n[i % 4])
          : "r"(cached[i]), "r"(bound));
    }
    return n[0] + n[1] + n[2] + n[3];
  }
  __device__ __forceinline__ int count_at_least(unsigned bound) const {
    int n = 0;
    if (compacted) {
#pragma unroll
      for (int s = 0; s < kCompactSlots; ++s) n += compact_key(s) >= bound;
    } else if (!in_registers) {
      for (int j = static_cast<int>(threadIdx.x) % 32; j < k_tiles; j += 32) {
        n += j != own && keys[j] >= bound;
      }
    } else {
      n = count_cached(bound);
    }
    return static_cast<int>(__reduce_add_sync(kFullWarp, static_cast<unsigned>(n)));
  }

  // The row's candidates: smallest and largest key, and the mean and standard deviation of
  // their logits (NaN where a logit is infinite).
  struct Summary {
    unsigned smallest, largest;
    float mean, deviation;
  };
  __device__ __forceinline__ Summary summary_cached() const {
    unsigned low = 0xFFFFFFFFu, high = 0u;
    float sum = 0.0f, squares = 0.0f;
#pragma unroll
    for (int i = 0; i < kCachedKeys; ++i) {
      const bool candidate = cached[i] != 0u;
      const float score = candidate ? key_score(cached[i]) : 0.0f;
      low = min(low, candidate ? cached[i] : 0xFFFFFFFFu);
      high = max(high, cached[i]);
      sum += score;
      squares += score * score;
    }
    return reduce_summary(low, high, sum, squares);
  }
  __device__ __forceinline__ Summary summary() const {
    if (in_registers) return summary_cached();
    unsigned low = 0xFFFFFFFFu, high = 0u;
    float sum = 0.0f, squares = 0.0f;
    for (int j = static_cast<int>(threadIdx.x) % 32; j < k_tiles; j += 32) {
      if (j == own) continue;
      const float score = key_score(keys[j]);
      low = min(low, keys[j]);
      high = max(high, keys[j]);
      sum += score;
      squares += score * score;
    }
    return reduce_summary(low, high, sum, squares);
  }
  __device__ __forceinline__ Summary reduce_summary(unsigned low, unsigned high, float sum,
                                                    float squares) const {
    for (int offset = 16; offset > 0; offset /= 2) {
      sum += __shfl_xor_sync(kFullWarp, sum, offset);
      squares += __shfl_xor_sync(kFullWarp, squares, offset);
    }
    const float n = static_cast<float>(k_tiles - (own >= 0 ? 1 : 0)), mean = sum / n;
    return {__reduce_min_sync(kFullWarp, low), __reduce_max_sync(kFullWarp, high), mean,
            sqrtf(fmaxf(squares / n - mean * mean, 0.0f))};
  }

  // The need-th best tile other than own (1 <= need <= the candidates), as the cut the
  // write-out applies: every candidate with key > cut, and the first `equal_needed` (in tile
  // order) of those with key == cut. A search over keys keeping count(>= low) >= need >
  // count(>= high), from the row's key range. The first trial is the logits' normal quantile
  // (mean + z deviation); then each trial interpolates the logits linearly between the bounds'
  // counts, or, after an interpolation that did not halve the count gap, takes the middle logit
  // (the middle key where logits are infinite). Ends when count(>= low) == need or the
  // interval is one key wide. Counts a row (warp-wide, simulated): ~5 on normal logits, ~7 on
  // log-normal ones, 25-60 on rows of many ties (small integers), 33 for a bitwise bisection.
  // `final_search`: no later kth_best on this row, so the search may compact (compact()
  // overwrites the cached keys).
  __device__ __forceinline__ void kth_best(int need, unsigned& cut, int& equal_needed,
                                           bool final_search = true) {
    const int candidates = k_tiles - (own >= 0 ? 1 : 0);
    compacted = false;
    const Summary row = summary();
    unsigned low = row.smallest, high = row.largest + 1u;  // order_key(+inf) < 0xFFFFFFFF
    int count_low = candidates, count_high = 0;
    float guess = row.mean - row.deviation * normcdfinvf((need + 0.5f) / candidates);
    bool halve = false;
    while (count_low != need && high - low > 1u) {
      if (final_search && !compacted && scratch != nullptr && count_low < 32 * kCompactSlots) {
        compact(low);
      }
      const float from = key_score(low), to = key_score(high);
      float score = 0.5f * from + 0.5f * to;
      if (isfinite(guess)) {
        score = guess, guess = NAN;
      } else if (!halve) {
        const float fraction = (static_cast<float>(count_low - need) - 0.5f) /
                               static_cast<float>(count_low - count_high);
        score = from + (to - from) * fraction;
      }
      unsigned trial = low + (high - low) / 2u;
      if (isfinite(score)) trial = min(max(order_key(score), low + 1u), high - 1u);
      const int count = count_at_least(trial);
      const int gap = count_low - count_high;
      if (count >= need) {
        low = trial, count_low = count;
      } else {
        high = trial, count_high = count;
      }
      halve = !halve && 2 * (count_low - count_high) > gap;
    }
    if (count_low == need) {
      cut = low - 1u, equal_needed = 0;  // low >= the smallest key >= 1
    } else {
      cut = low, equal_needed = need - count_high;
    }
  }

  // Compacts the candidates >= bound (> 0; at most 32 kCompactSlots - 1 of them) and the own
  // tile into cached[] (compact_key, compact_tile).
  __device__ __forceinline__ void compact(unsigned bound) {
    const int lane = static_cast<int>(threadIdx.x) % 32;
    const unsigned lower_lanes = (1u << lane) - 1u;
    int placed = 0;
    const auto place = [&](bool member, unsigned key, int j) {
      const unsigned members = __ballot_sync(kFullWarp, member);
      if (member) scratch[placed + __popc(members & lower_lanes)] = make_uint2(key, j);
      placed += __popc(members);
    };
    if (in_registers) {
#pragma unroll
      for (int i = 0; i < kCachedKeys; ++i) {  // own's cached key is 0
        const int j = lane + 32 * i;
        place(cached[i] >= bound || j == own, cached[i], j);
      }
    } else {
      for (int base = 0; base < k_tiles; base += 32) {
        const int j = base + lane;
        const unsigned key = j < k_tiles && j != own ? keys[j] : 0u;
        place(key >= bound || j == own, key, j);
      }
    }
    __syncwarp();
#pragma unroll
    for (int s = 0; s < kCompactSlots; ++s) {
      const int p = lane + 32 * s;
      cached[s] = p < placed ? scratch[p].x : 0u;
      cached[kCompactSlots + s] = p < placed ? scratch[p].y : static_cast<unsigned>(kNoTile);
    }
    __syncwarp();  // read by every lane before anything overwrites it
    compacted = true;
  }
};

// The write-out's running state over slices of 32 tiles in tile order (tile j = base + lane):
// take() stores a slice's chosen tiles at their positions, counting from 0 (warp ballots):
// every candidate with key > cut, the first `equal_needed` (in tile order) of those with
// key == cut (kth_best's cut), and the own tile where `with_own`.
struct ChosenSlices {
  unsigned cut;
  int equal_needed;
  bool with_own;
  int written = 0, equal_before = 0;

  template <typename Store>
  __device__ __forceinline__ void take(int own, int j, unsigned key, bool candidate,
                                       const Store& store) {
    const int lane = threadIdx.x % 32;
    const unsigned lower_lanes = (1u << lane) - 1u;
    const unsigned equal = __ballot_sync(kFullWarp, candidate && key == cut);
    const bool taken_equal =
        (equal >> lane & 1u) && equal_before + __popc(equal & lower_lanes) < equal_needed;
    const bool chosen = (with_own && j == own) || (candidate && key > cut) || taken_equal;
    const unsigned chosen_lanes = __ballot_sync(kFullWarp, chosen);
    if (chosen) store(written + __popc(chosen_lanes & lower_lanes), key, j);
    written += __popc(chosen_lanes);
    equal_before += __popc(equal);
  }
};

// Calls store(position, key, tile) for the row's chosen tiles in tile order (ChosenSlices):
// from the compacted candidates where kth_best compacted them (they include every chosen tile:
// the cut is at or above the bound they were compacted at); else from the cached keys; both
// unrolled so that the slices' ballots issue back to back. There own's key and the keys past Tk
// are 0, and cut > 0 (kth_best's cut >= the smallest candidate key - 1 >= order_key(-inf) - 1),
// so every key counts as a candidate and own is stored only by the write-out. Else from shared
// memory.
template <typename Store>
__device__ __forceinline__ void for_each_chosen(const RowKeys& row, unsigned cut, int equal_needed,
                                                bool with_own, const Store& store) {
  const int lane = threadIdx.x % 32;
  ChosenSlices slices{cut, equal_needed, with_own};
  if (row.compacted) {  // the same: own and empty slots hold key 0
#pragma unroll
    for (int s = 0; s < kCompactSlots; ++s) {
      slices.take(row.own, row.compact_tile(s), row.compact_key(s), true, store);
    }
    return;
  }
  if (row.in_registers) {
#pragma unroll
    for (int i = 0; i < kCachedKeys; ++i) {
      slices.take(row.own, lane + 32 * i, row.cached[i], true, store);
    }
    return;
  }
  for (int base = 0; base < row.k_tiles; base += 32) {
    const int j = base + lane;
    const unsigned key = j < row.k_tiles ? row.keys[j] : 0u;
    slices.take(row.own, j, key, j < row.k_tiles && j != row.own, store);
  }
}

// The smallest n in [1, most] with mass_of_best(n) >= target (mass_of_best grows with n), or
// `most` when none reaches it; by bisection.
template <typename MassOfBest>
__device__ __forceinline__ int fewest_reaching(int most, double target,
                                               const MassOfBest& mass_of_best) {
  int low = 1, high = most;  // the answer is in [low, high]
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

// The best tiles of a cumulative row can be weighed and ranked once where there are at most
// 32 kCandidateSlots of them (e.g. the budget of 95% or 90% up to ~1,280 key tiles).
constexpr int kCandidateSlots = 4;

// Cumulative threshold of one warp's row: how many tiles besides `own` to take, i.e. the fewest
// best tiles whose softmax mass, added to the own tile's, reaches threshold * total, capped at
// `cap` and at the tiles of positive weight (the CPU reference's walk, select_cumulative), and
// the cut that selects them (as kth_best's). The weights exp(s - peak) are summed in double as
// there. Where the `most` tiles that can be taken fit in the warp's `scratch` (at most
// 32 kCandidateSlots and `scratch_size`), they are compacted once, each lane weighs and ranks
// its kCandidateSlots of them, and the count is bisected over warp sums of those weights; else
// each bisection step selects the best n tiles again and sums their weights.
__device__ __forceinline__ int cumulative_selection(RowKeys& row, int cap, double threshold,
                                                    uint2* scratch, int scratch_size, unsigned& cut,
                                                    int& equal_needed) {
  const int lane = threadIdx.x % 32, k_tiles = row.k_tiles, own = row.own;
  const unsigned* keys = row.keys;
  unsigned top = 0u;
  for (int j = lane; j < k_tiles; j += 32) top = max(top, keys[j]);
  top = __reduce_max_sync(kFullWarp, top);
  const double peak = key_score(top);
  const auto weight = [&](unsigned key) { return exp(static_cast<double>(key_score(key)) - peak); };
  // The count n, then its cut from kth_best (n > 0).
  const auto select_best = [&](int n) {
    if (n > 0) row.kth_best(n, cut, equal_needed);
    return n;
  };
  if (!isfinite(peak)) return select_best(own >= 0 ? 0 : 1);  // no mass anywhere: the first tile
  double total = 0.0;
  int positive = 0;  // tiles other than own with weight > 0
  for (int j = lane; j < k_tiles; j += 32) {
    const double w = weight(keys[j]);
    total += w;
    positive += j != own && w > 0.0;
  }
  total = warp_sum(total);
  positive = static_cast<int>(__reduce_add_sync(kFullWarp, static_cast<unsigned>(positive)));
  const double target = threshold * total;
  const double own_mass = own >= 0 ? weight(keys[own]) : 0.0;
  if (own >= 0 && own_mass >= target) return 0;
  const int most = min(cap, positive);
  if (most < 1) return 0;

  if (most > 32 * kCandidateSlots || most > scratch_size) {
    // Mass of the own tile and the best n others (ties: lower index first).
    const auto mass_of_best = [&](int n) {
      unsigned n_cut;
      int n_equal;
      row.kth_best(n, n_cut, n_equal, false);  // searched again: the cached keys must stay
      double mass = 0.0;
      for (int j = lane; j < k_tiles; j += 32) {
        if (j != own && keys[j] > n_cut) mass += weight(keys[j]);
      }
      return own_mass + warp_sum(mass) + n_equal * weight(n_cut);
    };
    return select_best(fewest_reaching(most, target, mass_of_best));
  }

  // The best `most` tiles in tile order; lane holds those at lane + 32 s: key, weight and rank
  // (0 = best; ties rank the lower tile first, i.e. the earlier one in scratch).
  row.kth_best(most, cut, equal_needed);
  for_each_chosen(row, cut, equal_needed, false,
                  [&](int p, unsigned key, int j) { scratch[p] = make_uint2(key, j); });
  __syncwarp();
  unsigned key[kCandidateSlots];
  double w[kCandidateSlots];
  int rank[kCandidateSlots];
#pragma unroll
  for (int s = 0; s < kCandidateSlots; ++s) {
    const int p = lane + 32 * s;
    key[s] = p < most ? scratch[p].x : 0u;
    w[s] = p < most ? weight(key[s]) : 0.0;
    rank[s] = 0;
  }
  for (int d = 0; d < most; ++d) {
    const unsigned other = scratch[d].x;
#pragma unroll
    for (int s = 0; s < kCandidateSlots; ++s) {
      rank[s] += other > key[s] || (other == key[s] && d < lane + 32 * s);
    }
  }
#pragma unroll
  for (int s = 0; s < kCandidateSlots; ++s) {
    if (lane + 32 * s >= most) rank[s] = most;  // never among the best n <= most
  }
  const auto mass_of_best = [&](int n) {
    double mass = 0.0;
#pragma unroll
    for (int s = 0; s < kCandidateSlots; ++s) mass += rank[s] < n ? w[s] : 0.0;
    return own_mass + warp_sum(mass);
  };
  const int low = fewest_reaching(most, target, mass_of_best);
  // The cut: the key ranked low - 1, and how many of the best `low` share it.
  unsigned last = 0u;
  int sharing = 0;
#pragma unroll
  for (int s = 0; s < kCandidateSlots; ++s) last = rank[s] == low - 1 ? key[s] : last;
  cut = __reduce_max_sync(kFullWarp, last);  // one lane holds it; candidate keys are > 0
#pragma unroll
  for (int s = 0; s < kCandidateSlots; ++s) sharing += rank[s] < low && key[s] == cut;
  equal_needed = static_cast<int>(__reduce_add_sync(kFullWarp, static_cast<unsigned>(sharing)));
  __syncwarp();  // scratch is read by every lane before the next row overwrites it
  return low;
}

// Block (kRows query tiles, head, batch). Phase 1: logits of the rows against every key tile on
// tensor cores (3xTF32): warp w computes key tiles 16u..16u+15 for u = w, w + 8, ..., A = the
// rows' descriptors from shared memory, B = the key descriptors straight from global memory
// (L2-resident: 4 D' bytes per key tile and head; split by truncation each time they are used,
// split_tf32_truncated); stored as order keys in shared memory.
// Phase 2: warp w selects rows w, w + 8, ... (RowKeys::kth_best, or cumulative_selection where
// the head has a threshold), then writes the chosen tiles in ascending order with ballots and
// pads the row with kPaddedSlot.
template <int kRows>
__global__ void __launch_bounds__(kThreads, 2) select_kernel(SelectArgs args) {
  using Layout = SelectLayout<kRows>;
  constexpr int kMTiles = Layout::kMTiles;
  extern __shared__ __align__(16) float shared[];
  const int k_tiles = static_cast<int>(args.k_tiles), width = static_cast<int>(args.width);
  auto* q_fragments = reinterpret_cast<std::uint32_t*>(shared);  // 2 x 16 kMTiles x D' words
  auto* keys = reinterpret_cast<unsigned*>(q_fragments + 2 * 16 * kMTiles * width);  // [kRows, Tk]
  const std::int64_t first = blockIdx.x * std::int64_t{kRows};
  const std::int64_t head = blockIdx.y, batch = blockIdx.z, heads = gridDim.y;
  const std::int64_t head_row = batch * heads + head;
  const int rows = static_cast<int>(min(std::int64_t{kRows}, args.q_tiles - first));
  const float* q = args.q_hat + (head_row * args.q_tiles + first) * width;
  const float* k = args.k_hat + head_row * args.k_tiles * width;
  // The rows' descriptors: kSplitLoads float4 loads in flight per thread before any is split
  // (in one loop, each shared store waits for its load: a chain of L2 latencies).
  constexpr int kSplitLoads = 4;
  const int elements = 16 * kMTiles * width;  // D' is a multiple of 16
  for (int first_element = 4 * threadIdx.x; first_element < elements;
       first_element += 4 * kSplitLoads * kThreads) {
    float4 loaded[kSplitLoads];
#pragma unroll
    for (int i = 0; i < kSplitLoads; ++i) {
      const int e = first_element + 4 * i * kThreads;
      loaded[i] = e < elements && e / width < rows ? *reinterpret_cast<const float4*>(q + e)
                                                   : make_float4(0.0f, 0.0f, 0.0f, 0.0f);
    }
#pragma unroll
    for (int i = 0; i < kSplitLoads; ++i) {
      const int e = first_element + 4 * i * kThreads;
      const float values[4] = {loaded[i].x, loaded[i].y, loaded[i].z, loaded[i].w};
#pragma unroll
      for (int c = 0; c < 4 && e < elements; ++c) {
        const int word = a_fragment_word<kMTiles>(e / width, e % width + c);
        split_tf32(values[c], q_fragments[word], q_fragments[word + kTailOffset]);
      }
    }
  }
  __syncthreads();
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4, t = lane % 4;
  const auto* fragments = reinterpret_cast<const uint4*>(q_fragments) + lane;
  for (int key0 = 16 * warp; key0 < k_tiles; key0 += 16 * kWarps) {
    float acc[kMTiles][2][4] = {};
    const float* b_rows[2];
#pragma unroll
    for (int n = 0; n < 2; ++n) {  // rows past Tk read the last key tile; never stored
      b_rows[n] = k + static_cast<std::int64_t>(min(key0 + g + 8 * n, k_tiles - 1)) * width + 4 * t;
    }
    // The next slice's key descriptors (L2 reads) are loaded before this slice's products.
    float4 b[2], b_next[2];
    load_slice_rows(b, b_rows, 0);
    for (int d0 = 0; d0 < width; d0 += 16) {
      if (d0 + 16 < width) load_slice_rows(b_next, b_rows, d0 + 16);
      warp_tile_k16_fragments<kMTiles>(acc, fragments + d0 / 16 * kMTiles * 4 * 32,
                                       {split_tf32_truncated(b[0]), split_tf32_truncated(b[1])});
      b[0] = b_next[0], b[1] = b_next[1];
    }
#pragma unroll
    for (int m = 0; m < kMTiles; ++m) {
#pragma unroll
      for (int half = 0; half < 2; ++half) {
        const int r = 16 * m + g + 8 * half;
#pragma unroll
        for (int n = 0; n < 2; ++n) {
#pragma unroll
          for (int q_col = 0; q_col < 2; ++q_col) {
            const int j = key0 + 8 * n + 2 * t + q_col;
            if (r < kRows && j < k_tiles) {
              keys[r * k_tiles + j] = order_key(args.scale * acc[m][n][2 * half + q_col]);
            }
          }
        }
      }
    }
  }
  __syncthreads();

  const double threshold = args.thresholds ? args.thresholds[head] : 0.0;
  // The query fragments are spent: each warp's scratch of (key, tile) pairs for its cumulative
  // rows (cumulative_selection).
  const int scratch_size = 16 * kMTiles * width / kWarps;
  uint2* scratch = reinterpret_cast<uint2*>(q_fragments) + warp * scratch_size;
  for (int r = warp; r < rows; r += kWarps) {
    const std::int64_t tile = first + r;
    const unsigned* row_keys = keys + r * k_tiles;
    const int own = args.keep_own_tile && tile < k_tiles ? static_cast<int>(tile) : -1;
    RowKeys row(row_keys, k_tiles, own, scratch_size >= 32 * kCompactSlots ? scratch : nullptr);
    const int cap = static_cast<int>(args.budget) - (own >= 0 ? 1 : 0);
    unsigned cut = 0xFFFFFFFFu;  // above every key: only the own tile when need is 0
    int equal_needed = 0;
    int need = cap;
    if (threshold > 0.0) {
      need = cumulative_selection(row, cap, threshold, scratch, scratch_size, cut, equal_needed);
    } else if (need > 0) {
      row.kth_best(need, cut, equal_needed);
    }
    std::int32_t* out = args.indices + (head_row * args.q_tiles + tile) * args.budget;
    for_each_chosen(row, cut, equal_needed, true, [&](int p, unsigned, int j) { out[p] = j; });
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
  const std::int64_t tiles =
      (params.q_descriptors ? 0 : params.q_tiles) + (params.k_descriptors ? 0 : params.k_tiles);
  return sizeof(float) * static_cast<std::size_t>(params.batch * params.heads * tiles *
                                                  descriptor_width(params.dim));
}

void tile_selection_cuda(const TileSelectionParams& params, cudaStream_t stream) {
  params.validate();
  const std::size_t workspace_bytes = tile_selection_workspace_bytes(params);
  VEDA_CHECK(params.workspace != nullptr || workspace_bytes == 0,
             "tile selection on the GPU needs a workspace of ", workspace_bytes, " bytes");
  VEDA_CHECK(params.k_tiles <= kMaxKeyTiles, "tile selection of ", params.k_tiles,
             " key tiles; the GPU path supports at most ", kMaxKeyTiles, " (", kMaxKeyTiles * 128,
             " tokens)");
  VEDA_CHECK(params.q_tiles <= 2147483647 && params.heads <= 65535 && params.batch <= 65535,
             "tile selection grid of ", params.q_tiles, " tiles x ", params.heads, " heads x ",
             params.batch, " batches exceeds the launch limits");
  const std::pair<const void*, const char*> read_by_vectors[] = {
      {params.q_descriptors, "q_descriptors"},
      {params.k_descriptors, "k_descriptors"},
      {params.workspace, "workspace"}};
  for (const auto& [pointer, name] : read_by_vectors) {
    VEDA_CHECK(reinterpret_cast<std::uintptr_t>(pointer) % 16 == 0,
               "tile selection reads descriptors 16 bytes at a time; ", name, " at ", pointer,
               " is not 16-byte aligned");
  }
  const std::int64_t width = descriptor_width(params.dim);
  const auto heads = static_cast<unsigned>(params.heads);
  const auto batch = static_cast<unsigned>(params.batch);
  float* scratch = static_cast<float*>(params.workspace);
  // The given descriptors, or those projected here into the next piece of the workspace.
  const auto descriptors = [&](const float* given, const float* stats, const float* projection,
                               std::int64_t tiles, const char* what) -> const float* {
    if (given != nullptr) return given;
    float* out = scratch;
    scratch += params.batch * params.heads * tiles * width;
    if (projection != nullptr && params.diagonal_projection) {
      const std::int64_t rows = params.batch * params.heads * tiles;
      const auto blocks = static_cast<unsigned>(
          std::min<std::int64_t>((rows * width + kThreads - 1) / kThreads, std::int64_t{1} << 20));
      project_diagonal_kernel<<<blocks, kThreads, 0, stream>>>(
          stats, projection, params.global_head, tiles, params.heads, params.dim, width, rows, out);
    } else {
      const std::int64_t column_blocks = (width + kProjectColumns - 1) / kProjectColumns;
      const auto blocks =
          static_cast<unsigned>((tiles + kProjectTiles - 1) / kProjectTiles * column_blocks);
      project_kernel<<<dim3(blocks, heads, batch), kThreads, 0, stream>>>(
          stats, projection, params.global_head, tiles, params.dim, width, out);
    }
    check_launch(what);
    return out;
  };
  const float* q_hat = descriptors(params.q_descriptors, params.q_stats, params.q_projection,
                                   params.q_tiles, "tile projection (q)");
  const float* k_hat = descriptors(params.k_descriptors, params.k_stats, params.k_projection,
                                   params.k_tiles, "tile projection (k)");

  const SelectArgs args{
      q_hat,         k_hat,        params.q_tiles,       params.k_tiles,    width,
      params.budget, params.scale, params.keep_own_tile, params.thresholds, params.counts,
      params.indices};
  // 32 query tiles per block (each k^ row read once per 32) where their keys fit in shared
  // memory (Tk <= ~1,600 for two blocks per SM on Hopper); 4 for longer sequences (Tk up to
  // kMaxKeyTiles).
  int device = 0, shared_limit = 0;
  VEDA_CHECK(cudaGetDevice(&device) == cudaSuccess &&
                 cudaDeviceGetAttribute(&shared_limit, cudaDevAttrMaxSharedMemoryPerBlockOptin,
                                        device) == cudaSuccess,
             "tile selection could not read the device's shared memory limit");
  const std::size_t wide = SelectLayout<32>::bytes(width, params.k_tiles);
  const std::size_t narrow = SelectLayout<4>::bytes(width, params.k_tiles);
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
