// The oracle on the GPU. One block of 8 warps per (query tile, head, batch); warp w owns query
// rows [16 w, 16 w + 16). For each key tile the block stages K in shared memory, each warp forms
// its 16 x 128 block of S = Q K^T with WMMA (bf16/f16 in, f32 accumulate) into shared memory, and
// two lanes per row reduce 64 columns each. Pass 1 keeps an online (max, sum) per row -> lse;
// pass 2 turns S into p = exp(s - lse) and reduces the whole 128 x 128 block to its max (heat)
// and its sum / rows (mass). Simple rather than fastest: the oracle runs offline, and at
// N = 75,600 x 40 heads its 117 TFLOP fit in seconds even at a fraction of tensor-core peak.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <mma.h>

#include <cstdint>

#include "veda/cuda/oracle.h"
#include "veda/error.h"
#include "veda/tile_layout.h"

namespace veda {
namespace {

constexpr int kTile = 128;
constexpr int kWarps = 8;
constexpr int kRowsPerWarp = kTile / kWarps;  // 16 = one WMMA row block
constexpr int kScorePitch = kTile + 4;        // floats; breaks bank conflicts, WMMA needs % 4

struct OracleKernelArgs {
  const void* q;
  const void* k;
  std::int64_t q_tokens, k_tokens;
  std::int64_t q_stride_batch, q_stride_token, q_stride_head;
  std::int64_t k_stride_batch, k_stride_token, k_stride_head;
  float scale;
  float* lse;   // [B, H, Nq]
  float* heat;  // [B, H, Tq, Tk]
  float* mass;
};

template <int kDim>
struct SharedLayout {
  static constexpr int kPitch = kDim + 8;  // elements; 16-byte rows, WMMA needs % 8
  static constexpr std::size_t kOperandBytes = std::size_t{kTile} * kPitch * 2;
  static constexpr std::size_t kBytes = 2 * kOperandBytes + std::size_t{kTile} * kScorePitch * 4;
};

// rows [0, 128) of one tile into shared memory [128, kPitch]; rows past `tokens` are zeros.
template <typename Element, int kDim>
__device__ void load_tile(const Element* base, std::int64_t stride_token, std::int64_t first,
                          std::int64_t tokens, Element* tile) {
  constexpr int kChunksPerRow = kDim / 8;  // 16-byte chunks
  for (int chunk = threadIdx.x; chunk < kTile * kChunksPerRow; chunk += blockDim.x) {
    const int row = chunk / kChunksPerRow, column = chunk % kChunksPerRow * 8;
    uint4 value = make_uint4(0, 0, 0, 0);
    if (first + row < tokens) {
      value = *reinterpret_cast<const uint4*>(base + (first + row) * stride_token + column);
    }
    *reinterpret_cast<uint4*>(tile + row * SharedLayout<kDim>::kPitch + column) = value;
  }
}

// This warp's 16 x 128 block of scale * Q K^T into scores (row pitch kScorePitch).
template <typename Element, int kDim>
__device__ void warp_scores(const Element* q_tile, const Element* k_tile, float scale,
                            float* scores) {
  using namespace nvcuda;
  constexpr int kPitch = SharedLayout<kDim>::kPitch;
  const int warp = threadIdx.x / 32;
  wmma::fragment<wmma::matrix_a, 16, 16, 16, Element, wmma::row_major> a[kDim / 16];
  for (int kk = 0; kk < kDim / 16; ++kk) {
    wmma::load_matrix_sync(a[kk], q_tile + warp * kRowsPerWarp * kPitch + kk * 16, kPitch);
  }
  for (int column_block = 0; column_block < kTile / 16; ++column_block) {
    wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc;
    wmma::fill_fragment(acc, 0.0f);
    for (int kk = 0; kk < kDim / 16; ++kk) {
      // K stored [key, channel] row-major is K^T in column-major order.
      wmma::fragment<wmma::matrix_b, 16, 16, 16, Element, wmma::col_major> b;
      wmma::load_matrix_sync(b, k_tile + column_block * 16 * kPitch + kk * 16, kPitch);
      wmma::mma_sync(acc, a[kk], b, acc);
    }
    for (int e = 0; e < acc.num_elements; ++e) acc.x[e] *= scale;
    wmma::store_matrix_sync(scores + warp * kRowsPerWarp * kScorePitch + column_block * 16, acc,
                            kScorePitch, wmma::mem_row_major);
  }
  __syncwarp();
}

template <typename Element, int kDim, bool kHeatPass>
__global__ void __launch_bounds__(kWarps * 32) oracle_kernel(OracleKernelArgs args) {
  extern __shared__ __align__(16) unsigned char shared[];
  Element* q_tile = reinterpret_cast<Element*>(shared);
  Element* k_tile = reinterpret_cast<Element*>(shared + SharedLayout<kDim>::kOperandBytes);
  float* scores = reinterpret_cast<float*>(shared + 2 * SharedLayout<kDim>::kOperandBytes);
  __shared__ float block_max[kWarps], block_sum[kWarps];

  const std::int64_t tile = blockIdx.x, head = blockIdx.y, batch = blockIdx.z;
  const std::int64_t heads = gridDim.y, q_tiles = gridDim.x;
  const std::int64_t k_tiles = (args.k_tokens + kTile - 1) / kTile;
  const auto* q =
      static_cast<const Element*>(args.q) + batch * args.q_stride_batch + head * args.q_stride_head;
  const auto* k =
      static_cast<const Element*>(args.k) + batch * args.k_stride_batch + head * args.k_stride_head;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int row = warp * kRowsPerWarp + lane / 2;  // two lanes per row, 64 columns each
  const int half = lane % 2;
  const std::int64_t token = tile * kTile + row;
  const bool row_valid = token < args.q_tokens;
  float* lse_out = args.lse + (batch * heads + head) * args.q_tokens;
  const float row_lse = kHeatPass && row_valid ? lse_out[token] : 0.0f;
  const std::int64_t rows_in_tile = min(std::int64_t{kTile}, args.q_tokens - tile * kTile);

  load_tile<Element, kDim>(q, args.q_stride_token, tile * kTile, args.q_tokens, q_tile);
  float running_max = -INFINITY, running_sum = 0.0f;
  for (std::int64_t j = 0; j < k_tiles; ++j) {
    __syncthreads();  // every warp is done with the previous K tile
    load_tile<Element, kDim>(k, args.k_stride_token, j * kTile, args.k_tokens, k_tile);
    __syncthreads();
    warp_scores<Element, kDim>(q_tile, k_tile, args.scale, scores);
    const int columns = static_cast<int>(min(std::int64_t{kTile}, args.k_tokens - j * kTile));
    const float* s = scores + row * kScorePitch;
    const int begin = half * (kTile / 2), end = min(columns, begin + kTile / 2);
    if constexpr (!kHeatPass) {
      float tile_max = -INFINITY;
      for (int c = begin; c < end; ++c) tile_max = fmaxf(tile_max, s[c]);
      tile_max = fmaxf(tile_max, __shfl_xor_sync(0xFFFFFFFF, tile_max, 1));
      const float new_max = fmaxf(running_max, tile_max);
      float tile_sum = 0.0f;
      for (int c = begin; c < end; ++c) tile_sum += __expf(s[c] - new_max);
      tile_sum += __shfl_xor_sync(0xFFFFFFFF, tile_sum, 1);
      running_sum = running_sum * __expf(running_max - new_max) + tile_sum;
      running_max = new_max;
    } else {
      float p_max = 0.0f, p_sum = 0.0f;
      if (row_valid) {
        for (int c = begin; c < end; ++c) {
          const float p = __expf(s[c] - row_lse);
          p_max = fmaxf(p_max, p);
          p_sum += p;
        }
      }
      for (int offset = 16; offset > 0; offset /= 2) {
        p_max = fmaxf(p_max, __shfl_xor_sync(0xFFFFFFFF, p_max, offset));
        p_sum += __shfl_xor_sync(0xFFFFFFFF, p_sum, offset);
      }
      if (lane == 0) block_max[warp] = p_max, block_sum[warp] = p_sum;
      __syncthreads();
      if (threadIdx.x == 0) {
        float heat = 0.0f, mass = 0.0f;
        for (int w = 0; w < kWarps; ++w) heat = fmaxf(heat, block_max[w]), mass += block_sum[w];
        const std::int64_t cell = ((batch * heads + head) * q_tiles + tile) * k_tiles + j;
        args.heat[cell] = heat;
        args.mass[cell] = mass / static_cast<float>(rows_in_tile);
      }
    }
  }
  if (!kHeatPass && row_valid && half == 0) lse_out[token] = running_max + logf(running_sum);
}

template <typename Element, int kDim, bool kHeatPass>
void launch_pass(const OracleParams& params, cudaStream_t stream) {
  const OracleKernelArgs args{params.q.data,         params.k.data,
                              params.q.tokens,       params.k.tokens,
                              params.q.stride_batch, params.q.stride_token,
                              params.q.stride_head,  params.k.stride_batch,
                              params.k.stride_token, params.k.stride_head,
                              params.scale,          params.lse,
                              params.heat,           params.mass};
  const dim3 grid(static_cast<unsigned>(tile_count(params.q.tokens)),
                  static_cast<unsigned>(params.q.heads), static_cast<unsigned>(params.q.batch));
  constexpr std::size_t bytes = SharedLayout<kDim>::kBytes;
  const auto kernel = oracle_kernel<Element, kDim, kHeatPass>;
  const cudaError_t status = cudaFuncSetAttribute(
      kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(bytes));
  VEDA_CHECK(status == cudaSuccess, "oracle kernel needs ", bytes,
             " bytes of shared memory: ", cudaGetErrorString(status));
  kernel<<<grid, kWarps * 32, bytes, stream>>>(args);
  const cudaError_t launched = cudaGetLastError();
  VEDA_CHECK(launched == cudaSuccess, "oracle launch failed: ", cudaGetErrorString(launched));
}

// The q, k checks of the GPU path (dtype, head dim, alignment, launch limits).
void check_operands(const OracleParams& params) {
  const TokensView& q = params.q;
  VEDA_CHECK(q.dtype == params.k.dtype && (q.dtype == DType::kBF16 || q.dtype == DType::kF16),
             "q has dtype ", dtype_name(q.dtype), " and k ", dtype_name(params.k.dtype),
             "; the GPU oracle supports BF16 or F16 for both");
  VEDA_CHECK(q.dim == 64 || q.dim == 128, "q has head dim ", q.dim,
             "; the GPU oracle supports 64 and 128");
  for (const TokensView* view : {&params.q, &params.k}) {
    VEDA_CHECK(
        view->stride_token % 8 == 0 && view->stride_head % 8 == 0 && view->stride_batch % 8 == 0 &&
            reinterpret_cast<std::uintptr_t>(view->data) % 16 == 0,
        "q/k strides (", view->stride_batch, ", ", view->stride_token, ", ", view->stride_head,
        ") or data are not 16-byte aligned; the GPU oracle loads rows ", "in 16-byte chunks");
  }
  VEDA_CHECK(tile_count(q.tokens) <= 2147483647 && q.heads <= 65535 && q.batch <= 65535,
             "oracle grid of ", tile_count(q.tokens), " tiles x ", q.heads, " heads x ", q.batch,
             " batches exceeds the launch limits");
}

// Validation of one pass: OracleParams::validate asks for all three outputs, a single pass
// needs only its own (lse for pass 1; lse, heat and mass for pass 2).
void check_pass(const OracleParams& params, bool heat_pass) {
  OracleParams checked = params;
  float placeholder = 0.0f;  // stands in for the outputs this pass does not touch
  if (!heat_pass) checked.heat = checked.mass = &placeholder;
  checked.validate();
  check_operands(params);
}

template <bool kHeatPass>
void dispatch_pass(const OracleParams& params, cudaStream_t stream) {
  check_pass(params, kHeatPass);
  const bool bf16 = params.q.dtype == DType::kBF16;
  if (params.q.dim == 64) {
    bf16 ? launch_pass<__nv_bfloat16, 64, kHeatPass>(params, stream)
         : launch_pass<__half, 64, kHeatPass>(params, stream);
  } else {
    bf16 ? launch_pass<__nv_bfloat16, 128, kHeatPass>(params, stream)
         : launch_pass<__half, 128, kHeatPass>(params, stream);
  }
}

}  // namespace

void check_oracle_cuda_supported(const OracleParams& params) {
  params.validate();
  check_operands(params);
}

void oracle_lse_cuda(const OracleParams& params, cudaStream_t stream) {
  dispatch_pass<false>(params, stream);
}

void oracle_tile_maps_cuda(const OracleParams& params, cudaStream_t stream) {
  dispatch_pass<true>(params, stream);
}

void oracle_cuda(const OracleParams& params, cudaStream_t stream) {
  check_oracle_cuda_supported(params);
  oracle_lse_cuda(params, stream);
  oracle_tile_maps_cuda(params, stream);
}

}  // namespace veda
