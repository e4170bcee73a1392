#include <cmath>
#include <cstdint>
#include <limits>

#include "element_type.cuh"
#include "veda/cuda/attention_merge.h"
#include "veda/error.h"

namespace veda {
namespace {

// One warp per (b, n, h) row, kRowsPerBlock rows per block; lane l handles channel pairs
// 2l, 2l + 64, ... so every row is read and written in coalesced 2-element pieces.
constexpr unsigned kRowsPerBlock = 8;

__device__ inline float2 load_pair(const float* p) { return *reinterpret_cast<const float2*>(p); }
__device__ inline float2 load_pair(const __half* p) {
  return __half22float2(*reinterpret_cast<const __half2*>(p));
}
__device__ inline float2 load_pair(const __nv_bfloat16* p) {
  return __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(p));
}
__device__ inline void store_pair(float* p, float2 x) { *reinterpret_cast<float2*>(p) = x; }
__device__ inline void store_pair(__half* p, float2 x) {
  *reinterpret_cast<__half2*>(p) = __float22half2_rn(x);
}
__device__ inline void store_pair(__nv_bfloat16* p, float2 x) {
  *reinterpret_cast<__nv_bfloat162*>(p) = __float22bfloat162_rn(x);
}

struct MergeArgs {
  std::int64_t rows, tokens, heads, dim;  // rows = B*N*H
  void* out;
  std::int64_t out_stride_batch, out_stride_token, out_stride_head;
  const float *lse_a, *out_b, *lse_b;
  float* lse;
  std::int64_t lse_stride_batch, lse_stride_token, lse_stride_head;
};

template <typename Element>
__global__ void attention_merge_kernel(MergeArgs args) {
  const std::int64_t row = static_cast<std::int64_t>(blockIdx.x) * kRowsPerBlock + threadIdx.y;
  if (row >= args.rows) return;
  // row = (b*N + n)*H + h
  const std::int64_t h = row % args.heads, bn = row / args.heads;
  const std::int64_t n = bn % args.tokens, b = bn / args.tokens;
  const float lse_a = args.lse_a[row], lse_b = args.lse_b[row];
  const float peak = fmaxf(lse_a, lse_b);
  // logaddexp; both -inf stays -inf (peak - peak would be NaN).
  const float lse = peak == -INFINITY ? -INFINITY : peak + log1pf(expf(fminf(lse_a, lse_b) - peak));
  const float weight_a = peak == -INFINITY ? 0.0f : expf(lse_a - lse);
  const float weight_b = peak == -INFINITY ? 0.0f : expf(lse_b - lse);

  Element* out = static_cast<Element*>(args.out) + b * args.out_stride_batch +
                 n * args.out_stride_token + h * args.out_stride_head;
  const float* out_b = args.out_b + row * args.dim;
  for (std::int64_t d = 2 * threadIdx.x; d < args.dim; d += 2 * blockDim.x) {
    // A part of weight 0 is not read: 0 * inf would be NaN.
    const float2 a = weight_a > 0.0f ? load_pair(out + d) : make_float2(0.0f, 0.0f);
    const float2 x = weight_b > 0.0f ? load_pair(out_b + d) : make_float2(0.0f, 0.0f);
    store_pair(out + d,
               make_float2(weight_a * a.x + weight_b * x.x, weight_a * a.y + weight_b * x.y));
  }
  if (args.lse != nullptr && threadIdx.x == 0) {
    args.lse[b * args.lse_stride_batch + n * args.lse_stride_token + h * args.lse_stride_head] =
        lse;
  }
}

}  // namespace

void AttentionMergeParams::validate() const {
  VEDA_CHECK(batch > 0 && tokens > 0 && heads > 0 && dim > 0, "attention merge of [", batch, ", ",
             tokens, ", ", heads, ", ", dim, "] (B, N, H, D); expected every size positive");
  VEDA_CHECK(dim % 2 == 0, "attention merge got head dim ", dim,
             "; expected an even head dim (channels are merged in pairs)");
  VEDA_CHECK(out_dtype == DType::kF32 || out_dtype == DType::kF16 || out_dtype == DType::kBF16,
             "attention merge got out dtype ", dtype_name(out_dtype),
             "; expected F32, F16 or BF16");
  VEDA_CHECK(out != nullptr && lse_a != nullptr && out_b != nullptr && lse_b != nullptr,
             "attention merge needs out, lse_a, out_b and lse_b; got a null pointer (out ", out,
             ", lse_a ", lse_a, ", out_b ", out_b, ", lse_b ", lse_b, ")");
  const auto pair_bytes = static_cast<std::uintptr_t>(2 * dtype_size(out_dtype));
  VEDA_CHECK(reinterpret_cast<std::uintptr_t>(out) % pair_bytes == 0 && out_stride_batch % 2 == 0 &&
                 out_stride_token % 2 == 0 && out_stride_head % 2 == 0,
             "attention merge needs out aligned to 2 elements (", pair_bytes,
             " bytes) with even strides; got strides (", out_stride_batch, ", ", out_stride_token,
             ", ", out_stride_head, ")");
  VEDA_CHECK(reinterpret_cast<std::uintptr_t>(out_b) % 8 == 0,
             "attention merge needs out_b aligned to 8 bytes (float pairs)");
  const std::int64_t rows = batch * tokens * heads;
  for (const float* part : {lse_a, lse_b}) {
    VEDA_CHECK(lse == nullptr || lse < part || lse >= part + rows,
               "attention merge writes lse over lse_a or lse_b; give it separate memory");
  }
  VEDA_CHECK((rows + kRowsPerBlock - 1) / kRowsPerBlock <= std::numeric_limits<std::int32_t>::max(),
             "attention merge of ", rows, " rows (B*N*H) exceeds the launch limit");
}

void attention_merge_cuda(const AttentionMergeParams& params, cudaStream_t stream) {
  params.validate();
  const MergeArgs args{params.batch * params.tokens * params.heads,
                       params.tokens,
                       params.heads,
                       params.dim,
                       params.out,
                       params.out_stride_batch,
                       params.out_stride_token,
                       params.out_stride_head,
                       params.lse_a,
                       params.out_b,
                       params.lse_b,
                       params.lse,
                       params.lse_stride_batch,
                       params.lse_stride_token,
                       params.lse_stride_head};
  const dim3 threads(32, kRowsPerBlock);
  const dim3 blocks(static_cast<unsigned>((args.rows + kRowsPerBlock - 1) / kRowsPerBlock));
  cuda_detail::dispatch_floating(params.out_dtype, [&](auto element) {
    attention_merge_kernel<decltype(element)><<<blocks, threads, 0, stream>>>(args);
  });
  const cudaError_t status = cudaGetLastError();
  VEDA_CHECK(status == cudaSuccess, "attention merge launch failed: ", cudaGetErrorString(status));
}

}  // namespace veda
