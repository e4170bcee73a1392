// Internal device helpers shared by the portable and the Hopper attention kernels: element
// traits, the per-(batch, head, query tile) key-tile list, and the output/lse stores.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>

#include "attention_launch.h"

namespace veda::attention_detail {

template <DType kType>
struct ElementTraits;

template <>
struct ElementTraits<DType::kBF16> {
  using Element = __nv_bfloat16;
  // Two floats -> one 32-bit register of two elements (lower address in the low half).
  static __device__ __forceinline__ std::uint32_t pack(float lo, float hi) {
    __nv_bfloat162 pair = __floats2bfloat162_rn(lo, hi);
    return *reinterpret_cast<std::uint32_t*>(&pair);
  }
};

template <>
struct ElementTraits<DType::kF16> {
  using Element = __half;
  static __device__ __forceinline__ std::uint32_t pack(float lo, float hi) {
    __half2 pair = __floats2half2_rn(lo, hi);
    return *reinterpret_cast<std::uint32_t*>(&pair);
  }
};

// The key tiles of one (batch, head, query tile): `count` entries of `rows`, or all tiles.
struct TileList {
  const std::int32_t* rows;  // nullptr: dense, tile j is j
  int count;

  __device__ __forceinline__ int tile(int j) const { return rows ? __ldg(rows + j) : j; }
};

__device__ __forceinline__ TileList tile_list(const AttentionLaunch& p, int b, int h, int q_tile) {
  const std::int64_t slot = (static_cast<std::int64_t>(b) * p.heads + h) * p.q_tiles + q_tile;
  if (p.offsets != nullptr) {
    const std::int64_t first = __ldg(p.offsets + slot);
    return {p.rows + first, static_cast<int>(__ldg(p.offsets + slot + 1) - first)};
  }
  if (p.counts == nullptr) return {nullptr, p.k_tiles};
  return {p.rows + slot * p.budget, __ldg(p.counts + slot)};
}

// Head h's row of p.out_order [G, N]: tile-major row r is frame-major row order[r].
__device__ __forceinline__ const std::int32_t* head_order(const AttentionLaunch& p, int h) {
  const int group = p.out_head_group ? __ldg(p.out_head_group + h) : 0;
  return p.out_order + static_cast<std::int64_t>(group) * p.q_tokens;
}

// Where rows of head h are read: through head_order, or nullptr for row r itself; q's, and k's
// and v's.
__device__ __forceinline__ const std::int32_t* query_order(const AttentionLaunch& p, int h) {
  return p.read_through_order || p.read_queries_through_order ? head_order(p, h) : nullptr;
}
__device__ __forceinline__ const std::int32_t* key_order(const AttentionLaunch& p, int h) {
  return p.read_through_order ? head_order(p, h) : nullptr;
}

// The row that query row `token` of head h is stored at (p.out_order: tile-major -> frame-major).
__device__ __forceinline__ int output_row(const AttentionLaunch& p, int token, int h) {
  return p.out_order == nullptr ? token : __ldg(head_order(p, h) + token);
}

// Two adjacent output elements of type float, bf16 or f16.
__device__ __forceinline__ void store_pair(float* out, float x0, float x1) {
  *reinterpret_cast<float2*>(out) = make_float2(x0, x1);
}
__device__ __forceinline__ void store_pair(__nv_bfloat16* out, float x0, float x1) {
  *reinterpret_cast<__nv_bfloat162*>(out) = __floats2bfloat162_rn(x0, x1);
}
__device__ __forceinline__ void store_pair(__half* out, float x0, float x1) {
  *reinterpret_cast<__half2*>(out) = __floats2half2_rn(x0, x1);
}

// The pairs of columns 8 n, 8 n + 1 (n < kGroups) of out, times `inverse`.
template <int kGroups, typename T, typename PairOf>
__device__ __forceinline__ void store_pairs(T* out, float inverse, PairOf pair) {
#pragma unroll
  for (int n = 0; n < kGroups; ++n) {
    const float2 x = pair(n);
    store_pair(out + 8 * n, x.x * inverse, x.y * inverse);
  }
}

// Stores one thread's share of a finished output row: the pairs of columns 8 n + col,
// 8 n + col + 1 (n < kGroups; pair(n) gives the two unnormalised values) times `inverse`, at
// frame-major row `row` (output_row). The row's address and the output dtype are resolved once
// per row, not once per pair.
template <int kGroups, typename PairOf>
__device__ __forceinline__ void store_out_row(const AttentionLaunch& p, int b, int row, int h,
                                              int col, float inverse, PairOf pair) {
  const std::int64_t offset = b * p.out_stride_batch +
                              static_cast<std::int64_t>(row) * p.out_stride_token +
                              h * p.out_stride_head + col;
  switch (p.out_dtype) {
    case DType::kF32:
      store_pairs<kGroups>(static_cast<float*>(p.out) + offset, inverse, pair);
      break;
    case DType::kBF16:
      store_pairs<kGroups>(static_cast<__nv_bfloat16*>(p.out) + offset, inverse, pair);
      break;
    default:  // kF16; can_implement admits no other
      store_pairs<kGroups>(static_cast<__half*>(p.out) + offset, inverse, pair);
      break;
  }
}

// Stores the lse of frame-major row `row` (output_row) of head h, if lse is wanted.
__device__ __forceinline__ void store_lse(const AttentionLaunch& p, int b, int row, int h,
                                          float value) {
  if (p.lse == nullptr) return;
  p.lse[b * p.lse_stride_batch + static_cast<std::int64_t>(row) * p.lse_stride_token +
        h * p.lse_stride_head] = value;
}

// 2^x by the hardware's ex2 with denormal results flushed to zero: one MUFU.EX2. exp2f without
// fast math adds a range test and two multiplies per call to keep denormals (~190 instructions
// per key tile of the Hopper loop, a quarter of it); probabilities under 2^-126 are zero in
// bf16/f16 anyway. -inf gives 0.
__device__ __forceinline__ float fast_exp2(float x) {
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
  return y;
}

// Row statistics of the online softmax, in units of raw scores: m = running max of s q.k / s,
// kept as max of q.k; l = running sum of exp2((q.k - m) * scale_log2) (partial per thread until
// the final quad reduction).
__device__ __forceinline__ float quad_max(float x) {
  x = fmaxf(x, __shfl_xor_sync(0xffffffffu, x, 1));
  return fmaxf(x, __shfl_xor_sync(0xffffffffu, x, 2));
}
__device__ __forceinline__ float quad_sum(float x) {
  x += __shfl_xor_sync(0xffffffffu, x, 1);
  return x + __shfl_xor_sync(0xffffffffu, x, 2);
}

}  // namespace veda::attention_detail
