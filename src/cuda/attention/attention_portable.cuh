// Portable block-sparse attention forward (sm_80 and newer): mma.sync m16n8k16, ldmatrix and
// cp.async double buffering. Correct on every GPU the build targets; not tuned (the Hopper
// kernel is the fast path on sm_90).
//
// One CTA per (query tile, head, batch): 8 warps x 16 query rows = the 128-row query tile.
// Keys stream through shared memory in steps of 64 (half a key tile), two stages:
//   stage = K [64][D + 8] then V [64][D + 8] elements; the 8-element (16-byte) row padding puts
//   the 8 rows read by one ldmatrix phase in 8 different 16-byte bank groups.
//   Q [128][D + 8] is loaded once through stage 1's space (same size) and kept in registers as
//   mma A fragments: D/16 x 4 registers per thread (32 at D = 128).
// Shared memory: 2 stages x 2 x 64 x (D + 8) x 2 bytes = 69,632 B at D = 128, 36,864 B at D = 64.
// Registers per thread at D = 128: O 64 floats, S 32 floats, Q 32.
#pragma once

#include <cuda_runtime.h>

#include <cmath>
#include <cstdint>

#include "attention_common.cuh"
#include "attention_launch.h"

namespace veda::attention_detail {

template <int kDim>
struct PortableTile {
  static constexpr int kWarps = 8;
  static constexpr int kThreads = kWarps * 32;
  static constexpr int kStepKeys = 64;
  static constexpr int kRowElements = kDim + 8;
  static constexpr int kStageElements = 2 * kStepKeys * kRowElements;  // K then V
  static constexpr int kSmemBytes = 2 * kStageElements * 2;            // 2 stages, 2-byte elements
  static_assert(kTileTokens * kRowElements == kStageElements, "Q must fit one stage");
};

namespace portable {

__device__ __forceinline__ std::uint32_t smem_address(const void* pointer) {
  return static_cast<std::uint32_t>(__cvta_generic_to_shared(pointer));
}

// 16-byte async copy; src_bytes = 0 fills the destination with zeros (rows past the end).
__device__ __forceinline__ void cp_async_16(void* dst, const void* src, int src_bytes) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(smem_address(dst)), "l"(src),
               "r"(src_bytes)
               : "memory");
}
__device__ __forceinline__ void cp_async_commit() {
  asm volatile("cp.async.commit_group;\n" ::: "memory");
}
template <int kPending>
__device__ __forceinline__ void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(kPending) : "memory");
}

__device__ __forceinline__ void ldmatrix_x4(std::uint32_t (&r)[4], const void* pointer) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(smem_address(pointer)));
}
__device__ __forceinline__ void ldmatrix_x4_trans(std::uint32_t (&r)[4], const void* pointer) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(smem_address(pointer)));
}

// d[16x8] += a[16x16] b[16x8], fp32 accumulation.
template <DType kType>
__device__ __forceinline__ void mma_16816(float (&d)[4], const std::uint32_t (&a)[4],
                                          std::uint32_t b0, std::uint32_t b1) {
  if constexpr (kType == DType::kBF16) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, "
        "{%4, %5, %6, %7}, {%8, %9}, {%0, %1, %2, %3};\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
  } else {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0, %1, %2, %3}, "
        "{%4, %5, %6, %7}, {%8, %9}, {%0, %1, %2, %3};\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
  }
}

// Copies rows [first, first + kRows) of one head (row stride `stride` elements; row t read at
// order[t] when order is given) into shared memory rows of kRowElements; rows at or past `limit`
// become zeros.
template <int kDim, int kRows, typename Element>
__device__ __forceinline__ void load_rows(Element* dst, const Element* head, std::int64_t stride,
                                          const std::int32_t* order, int first, int limit) {
  constexpr int kChunks = kDim / 8;  // 16-byte chunks per row
  for (int c = threadIdx.x; c < kRows * kChunks; c += PortableTile<kDim>::kThreads) {
    const int row = c / kChunks;
    const int chunk = c % kChunks;
    const int token = first + row;
    const bool valid = token < limit;
    const int source = !valid ? 0 : order ? __ldg(order + token) : token;
    const Element* src = head + static_cast<std::int64_t>(source) * stride + chunk * 8;
    cp_async_16(dst + row * PortableTile<kDim>::kRowElements + chunk * 8, src, valid ? 16 : 0);
  }
}

}  // namespace portable

template <DType kType, int kDim>
__global__ void __launch_bounds__(PortableTile<kDim>::kThreads)
    attention_portable_kernel(const AttentionLaunch p) {
  using Element = typename ElementTraits<kType>::Element;
  using Tile = PortableTile<kDim>;
  using namespace portable;
  constexpr int kRow = Tile::kRowElements;
  constexpr int kKeys = Tile::kStepKeys;

  extern __shared__ __align__(16) unsigned char smem_bytes[];
  Element* smem = reinterpret_cast<Element*>(smem_bytes);

  const int q_tile = blockIdx.x, h = blockIdx.y, b = blockIdx.z;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const TileList list = tile_list(p, b, h, q_tile);
  const int steps = 2 * list.count;  // two 64-key steps per key tile
  const int q0 = q_tile * kTileTokens;

  const Element* q_head =
      static_cast<const Element*>(p.q) + b * p.q_stride_batch + h * p.q_stride_head;
  const Element* k_head =
      static_cast<const Element*>(p.k) + b * p.k_stride_batch + h * p.k_stride_head;
  const Element* v_head =
      static_cast<const Element*>(p.v) + b * p.v_stride_batch + h * p.v_stride_head;
  const std::int32_t* q_order = query_order(p, h);
  const std::int32_t* kv_order = key_order(p, h);

  auto load_step = [&](int step) {
    Element* stage = smem + (step & 1) * Tile::kStageElements;
    const int key0 = list.tile(step / 2) * kTileTokens + (step % 2) * kKeys;
    load_rows<kDim, kKeys>(stage, k_head, p.k_stride_token, kv_order, key0, p.k_tokens);
    load_rows<kDim, kKeys>(stage + kKeys * kRow, v_head, p.v_stride_token, kv_order, key0,
                           p.k_tokens);
  };

  // Q through stage 1's space, step 0's K/V into stage 0.
  load_rows<kDim, kTileTokens>(smem + Tile::kStageElements, q_head, p.q_stride_token, q_order, q0,
                               p.q_tokens);
  cp_async_commit();
  if (steps > 0) load_step(0);
  cp_async_commit();
  cp_async_wait<1>();
  __syncthreads();

  // Q as A fragments: rows warp*16 .. +15, 16 columns per k step.
  std::uint32_t qf[kDim / 16][4];
  {
    const Element* q_smem = smem + Tile::kStageElements;
    const int row = warp * 16 + (lane % 8) + ((lane / 8) % 2) * 8;
#pragma unroll
    for (int kk = 0; kk < kDim / 16; ++kk) {
      ldmatrix_x4(qf[kk], q_smem + row * kRow + kk * 16 + (lane / 16) * 8);
    }
  }
  __syncthreads();  // stage 1 is free for K/V from here

  // O rows (lane/4) and (lane/4 + 8) of the warp's 16; columns nt*8 + 2*(lane%4) + {0, 1}.
  float o[kDim / 8][4];
#pragma unroll
  for (int nt = 0; nt < kDim / 8; ++nt) o[nt][0] = o[nt][1] = o[nt][2] = o[nt][3] = 0.0f;
  float row_max[2] = {-INFINITY, -INFINITY};
  float row_sum[2] = {0.0f, 0.0f};

  for (int step = 0; step < steps; ++step) {
    if (step + 1 < steps) load_step(step + 1);
    cp_async_commit();
    cp_async_wait<1>();
    __syncthreads();

    const Element* k_smem = smem + (step & 1) * Tile::kStageElements;
    const Element* v_smem = k_smem + kKeys * kRow;
    const int key0 = list.tile(step / 2) * kTileTokens + (step % 2) * kKeys;

    // S [16 x 64] = Q K^T for this warp: 8 key groups of 8.
    float s[kKeys / 8][4];
#pragma unroll
    for (int nt = 0; nt < kKeys / 8; ++nt) s[nt][0] = s[nt][1] = s[nt][2] = s[nt][3] = 0.0f;
#pragma unroll
    for (int kk = 0; kk < kDim / 16; ++kk) {
#pragma unroll
      for (int np = 0; np < kKeys / 16; ++np) {
        std::uint32_t kf[4];
        const int key = np * 16 + (lane % 8) + (lane / 16) * 8;
        ldmatrix_x4(kf, k_smem + key * kRow + kk * 16 + ((lane / 8) % 2) * 8);
        mma_16816<kType>(s[2 * np], qf[kk], kf[0], kf[1]);
        mma_16816<kType>(s[2 * np + 1], qf[kk], kf[2], kf[3]);
      }
    }

    if (key0 + kKeys > p.k_tokens) {  // the last, partial key tile
#pragma unroll
      for (int nt = 0; nt < kKeys / 8; ++nt) {
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          if (key0 + nt * 8 + 2 * (lane % 4) + (e & 1) >= p.k_tokens) s[nt][e] = -INFINITY;
        }
      }
    }

    // Online softmax on rows i = 0 (registers 0, 1) and i = 1 (registers 2, 3).
#pragma unroll
    for (int i = 0; i < 2; ++i) {
      float step_max = -INFINITY;
#pragma unroll
      for (int nt = 0; nt < kKeys / 8; ++nt) {
        step_max = fmaxf(step_max, fmaxf(s[nt][2 * i], s[nt][2 * i + 1]));
      }
      const float new_max = fmaxf(row_max[i], quad_max(step_max));
      // A row whose keys so far are all masked keeps max -inf; exponentiate against 0 then.
      const float base = new_max == -INFINITY ? 0.0f : new_max * p.scale_log2;
      const float rescale = fast_exp2(row_max[i] * p.scale_log2 - base);
      row_max[i] = new_max;
      row_sum[i] *= rescale;
#pragma unroll
      for (int nt = 0; nt < kDim / 8; ++nt) {
        o[nt][2 * i] *= rescale;
        o[nt][2 * i + 1] *= rescale;
      }
#pragma unroll
      for (int nt = 0; nt < kKeys / 8; ++nt) {
#pragma unroll
        for (int e = 2 * i; e < 2 * i + 2; ++e) {
          s[nt][e] = fast_exp2(fmaf(s[nt][e], p.scale_log2, -base));
          row_sum[i] += s[nt][e];
        }
      }
    }

    // O [16 x D] += P [16 x 64] V [64 x D]; P rounded to the input type, as in every
    // 16-bit FlashAttention.
#pragma unroll
    for (int kk = 0; kk < kKeys / 16; ++kk) {
      const std::uint32_t pf[4] = {
          ElementTraits<kType>::pack(s[2 * kk][0], s[2 * kk][1]),
          ElementTraits<kType>::pack(s[2 * kk][2], s[2 * kk][3]),
          ElementTraits<kType>::pack(s[2 * kk + 1][0], s[2 * kk + 1][1]),
          ElementTraits<kType>::pack(s[2 * kk + 1][2], s[2 * kk + 1][3]),
      };
      const int key = kk * 16 + (lane % 8) + ((lane / 8) % 2) * 8;
#pragma unroll
      for (int dp = 0; dp < kDim / 16; ++dp) {
        std::uint32_t vf[4];
        ldmatrix_x4_trans(vf, v_smem + key * kRow + dp * 16 + (lane / 16) * 8);
        mma_16816<kType>(o[2 * dp], pf, vf[0], vf[1]);
        mma_16816<kType>(o[2 * dp + 1], pf, vf[2], vf[3]);
      }
    }
    __syncthreads();  // the next iteration's prefetch overwrites this stage
  }

#pragma unroll
  for (int i = 0; i < 2; ++i) {
    const float sum = quad_sum(row_sum[i]);
    const int token = q0 + warp * 16 + lane / 4 + 8 * i;
    if (token >= p.q_tokens) continue;
    const float inverse = sum > 0.0f ? 1.0f / sum : 0.0f;
    const int row = output_row(p, token, h);
    store_out_row<kDim / 8>(p, b, row, h, 2 * (lane % 4), inverse,
                            [&](int nt) { return make_float2(o[nt][2 * i], o[nt][2 * i + 1]); });
    if (lane % 4 == 0) {
      store_lse(p, b, row, h, sum > 0.0f ? row_max[i] * p.scale + logf(sum) : -INFINITY);
    }
  }
}

template <DType kType, int kDim>
cudaError_t launch_attention_portable(const AttentionLaunch& launch, cudaStream_t stream) {
  auto* kernel = attention_portable_kernel<kType, kDim>;
  constexpr int kBytes = PortableTile<kDim>::kSmemBytes;
  cudaError_t status =
      cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, kBytes);
  if (status != cudaSuccess) return status;
  const dim3 grid(static_cast<unsigned>(launch.q_tiles), static_cast<unsigned>(launch.heads),
                  static_cast<unsigned>(launch.batch));
  kernel<<<grid, PortableTile<kDim>::kThreads, kBytes, stream>>>(launch);
  return cudaGetLastError();
}

template <DType kType, int kDim>
bool attention_portable_has_image() {
  cudaFuncAttributes attributes;
  const bool ok =
      cudaFuncGetAttributes(&attributes, attention_portable_kernel<kType, kDim>) == cudaSuccess;
  if (!ok) cudaGetLastError();  // clear the sticky-free error so later calls start clean
  return ok;
}

#define VEDA_INSTANTIATE_ATTENTION_PORTABLE(kType, kDim)                              \
  template cudaError_t launch_attention_portable<kType, kDim>(const AttentionLaunch&, \
                                                              cudaStream_t);          \
  template bool attention_portable_has_image<kType, kDim>();

}  // namespace veda::attention_detail
