// Internal: float32 matrix products on tensor cores at float32 accuracy (3xTF32, sm_80+).
//
// Why: the front end's two small GEMMs (estimator projection, tile logits) must rank key tiles
// as the CPU reference's float32 sums do (a fixed budget is compared row for row), which plain
// TF32 (10-bit mantissa) does not; as SIMT SGEMMs they ran at ~15 TFLOP/s. Each float is split
// into a TF32 head and a TF32 tail, x = hi + lo, and a b ~ a_hi b_hi + a_hi b_lo + a_lo b_hi:
// what is dropped, a_lo b_lo and the tails' own rounding, is ~2^-22 of each product (~2^-20
// where one operand is split by truncation, split_tf32_truncated: the logits' key descriptors).
//
// warp_tile_k16 computes a warp's C[16 kMTiles x 16] += A[16 kMTiles x 16] B[16 x 16] for one
// 16-channel slice, both operands k-contiguous: A as rows of C, B as columns (B^T row-major,
// e.g. K^ rows for Q^ K^T). mma.m16n8k8 takes k = 8 per step; which 8 of the 16
// channels a step takes is free as long as A and B agree, so lane (g, t) reads channels
// 4t..4t+3 of its rows with one 16-byte load and feeds channels 4t, 4t+1 to step 0 and 4t+2,
// 4t+3 to step 1 (as the fragments' k = t and t + 4). Row strides must be multiples of 4 floats
// with (stride mod 32) = 16 for conflict-free loads (tf32_row_stride).
#pragma once

#include <cstdint>

namespace veda::cuda_detail {

// Shared-memory row stride (floats) for rows of `width` channels: a multiple of 16 floats that
// is 16 mod 32. A quarter-warp's 16-byte loads read 64 bytes of each of two adjacent rows
// (lanes 4g..4g+3 row g), which then fall in the two halves of the 32 banks.
__host__ __device__ constexpr int tf32_row_stride(int width) {
  const int padded = (width + 15) / 16 * 16;
  return padded % 32 == 0 ? padded + 16 : padded;
}

// Four floats split into TF32 heads and tails (x = hi + lo, both as TF32 bit patterns).
struct Tf32Split4 {
  uint4 hi, lo;
};

__device__ __forceinline__ void split_tf32(float x, std::uint32_t& hi, std::uint32_t& lo) {
  asm("cvt.rna.tf32.f32 %0, %1;" : "=r"(hi) : "f"(x));
  asm("cvt.rna.tf32.f32 %0, %1;" : "=r"(lo) : "f"(x - __uint_as_float(hi)));
}

__device__ __forceinline__ Tf32Split4 split_tf32(const float4& v) {
  Tf32Split4 s;
  split_tf32(v.x, s.hi.x, s.lo.x);
  split_tf32(v.y, s.hi.y, s.lo.y);
  split_tf32(v.z, s.hi.z, s.lo.z);
  split_tf32(v.w, s.hi.w, s.lo.w);
  return s;
}

// The same split for an operand split again at every use, in 2 instructions a float instead of
// cvt.rna's ~9 on sm_90: the head is x truncated to TF32, the tail x - hi (exact), which the
// tensor cores truncate in turn (they read a TF32 operand's top 19 bits). What is dropped grows
// from ~2^-22 to ~2^-20 of each product (the tails are up to 2^-10 of x instead of 2^-11).
__device__ __forceinline__ Tf32Split4 split_tf32_truncated(const float4& v) {
  Tf32Split4 s;
  const auto split = [](float x, std::uint32_t& hi, std::uint32_t& lo) {
    hi = __float_as_uint(x) & 0xFFFFE000u;
    lo = __float_as_uint(x - __uint_as_float(hi));
  };
  split(v.x, s.hi.x, s.lo.x);
  split(v.y, s.hi.y, s.lo.y);
  split(v.z, s.hi.z, s.lo.z);
  split(v.w, s.hi.w, s.lo.w);
  return s;
}

// values[i] = the 16-byte-aligned float4 at rows[i] + offset (shared or global memory).
template <int kRows>
__device__ __forceinline__ void load_slice_rows(float4 (&values)[kRows],
                                                const float* const (&rows)[kRows], int offset) {
#pragma unroll
  for (int i = 0; i < kRows; ++i) values[i] = *reinterpret_cast<const float4*>(rows[i] + offset);
}

// c[16 x 8] += a[16 x 8] b[8 x 8], TF32 inputs, float32 accumulators.
__device__ __forceinline__ void mma_tf32(float (&c)[4], const std::uint32_t (&a)[4],
                                         std::uint32_t b0, std::uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, "
      "{%8, %9}, {%0, %1, %2, %3};\n"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

// c += a b at float32 accuracy for one mma step: a_lo b_hi + a_hi b_lo + a_hi b_hi, the small
// terms first. Step 0 takes b's channels 4t, 4t + 1 (components x, y) as k = t, t + 4; step 1
// z and w.
__device__ __forceinline__ void mma_3xtf32(float (&c)[4], const std::uint32_t (&a_hi)[4],
                                           const std::uint32_t (&a_lo)[4], const Tf32Split4& b,
                                           int step) {
  const std::uint32_t b_hi0 = step == 0 ? b.hi.x : b.hi.z, b_hi1 = step == 0 ? b.hi.y : b.hi.w;
  const std::uint32_t b_lo0 = step == 0 ? b.lo.x : b.lo.z, b_lo1 = step == 0 ? b.lo.y : b.lo.w;
  mma_tf32(c, a_lo, b_hi0, b_hi1);
  mma_tf32(c, a_hi, b_lo0, b_lo1);
  mma_tf32(c, a_hi, b_hi0, b_hi1);
}

// acc[m][n] is the 16 x 8 block (rows 16 m.., columns 8 n..) in mma's C layout: lane (g, t) =
// (lane / 4, lane % 4) holds rows g and g + 8, columns 2t and 2t + 1:
//   acc[m][n][0..3] = C[16m + g][8n + 2t], C[16m + g][8n + 2t + 1],
//                     C[16m + g + 8][8n + 2t], C[16m + g + 8][8n + 2t + 1].
// a[i]: channels 4t..4t+3 of the slice in this lane's row g + 8 i of A (i < 2 kMTiles); b[n]:
// the same channels of its row g + 8 n of B^T; both split (split_tf32).
template <int kMTiles>
__device__ __forceinline__ void warp_tile_k16(float (&acc)[kMTiles][2][4],
                                              const Tf32Split4 (&a)[2 * kMTiles],
                                              const Tf32Split4 (&b)[2]) {
#pragma unroll
  for (int step = 0; step < 2; ++step) {
    // Step 0 takes channels 4t, 4t + 1 (components x, y) as k = t, t + 4; step 1 z and w.
    const auto first = [&](const uint4& v) { return step == 0 ? v.x : v.z; };
    const auto second = [&](const uint4& v) { return step == 0 ? v.y : v.w; };
#pragma unroll
    for (int m = 0; m < kMTiles; ++m) {
      const Tf32Split4 &upper = a[2 * m], &lower = a[2 * m + 1];  // rows g and g + 8
      const std::uint32_t a_hi[4] = {first(upper.hi), first(lower.hi), second(upper.hi),
                                     second(lower.hi)};
      const std::uint32_t a_lo[4] = {first(upper.lo), first(lower.lo), second(upper.lo),
                                     second(lower.lo)};
#pragma unroll
      for (int n = 0; n < 2; ++n) mma_3xtf32(acc[m][n], a_hi, a_lo, b[n], step);
    }
  }
}

// The same product with A stored in shared memory in mma fragment order, so that each of A's
// fragments is one 16-byte load straight into the four registers mma reads (A assembled from
// row loads costs ~3 register moves per mma). a_fragment_word(r, d) is the 32-bit word of
// element (row r, channel d) of A's heads; its tail is kTailOffset words further. Per slice
// (16 channels) and 16-row block m, per step (as in warp_tile_k16) and head/tail: 32 lanes x
// uint4, lane (g, t) holding A[16m + g][k], A[16m + g + 8][k], A[16m + g][k'], A[16m + g + 8][k']
// with k, k' the step's channels 4t + 2 step, 4t + 2 step + 1.
constexpr int kTailOffset = 32 * 4;
template <int kMTiles>
__host__ __device__ constexpr int a_fragment_word(int r, int d) {
  const int slice = d / 16, t = d % 16 / 4, step = d % 4 / 2, second = d % 2;
  const int m = r / 16, g = r % 8, lower = r % 16 / 8;
  return ((((slice * kMTiles + m) * 2 + step) * 2) * 32 + 4 * g + t) * 4 + 2 * second + lower;
}

// acc += A B for one 16-channel slice; `slice` = A's fragments of this slice (a_fragment_word
// order) offset by the lane; b as in warp_tile_k16. Same products in the same order.
template <int kMTiles>
__device__ __forceinline__ void warp_tile_k16_fragments(float (&acc)[kMTiles][2][4],
                                                        const uint4* slice,
                                                        const Tf32Split4 (&b)[2]) {
#pragma unroll
  for (int step = 0; step < 2; ++step) {
#pragma unroll
    for (int m = 0; m < kMTiles; ++m) {
      const uint4 hi = slice[(m * 2 + step) * 2 * 32], lo = slice[(m * 2 + step) * 2 * 32 + 32];
      const std::uint32_t a_hi[4] = {hi.x, hi.y, hi.z, hi.w};
      const std::uint32_t a_lo[4] = {lo.x, lo.y, lo.z, lo.w};
#pragma unroll
      for (int n = 0; n < 2; ++n) mma_3xtf32(acc[m][n], a_hi, a_lo, b[n], step);
    }
  }
}

}  // namespace veda::cuda_detail
