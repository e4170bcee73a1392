// Attention over the union of two disjoint key sets from each set's partial result (O, lse), on
// the GPU: the split-softmax identity, per query row r and head h,
//   lse = logaddexp(lse_a, lse_b),   O = exp(lse_a - lse) O_a + exp(lse_b - lse) O_b
// in float32. A row with no key in either set (both lse -inf) gets O = 0 and lse = -inf, never NaN.
// Part a is merged in place (the partial that a kernel already wrote into the final output);
// part b is float32 scratch. One elementwise kernel: B*N*H*D elements read twice, written once.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#include "veda/dtype.h"

namespace veda {

struct AttentionMergeParams {
  std::int64_t batch = 0, tokens = 0, heads = 0, dim = 0;  // dim even
  // Part a, merged in place: O_a [B, N, H, D] of out_dtype (F32, F16 or BF16) on entry, O on
  // return. Strides in elements, even, D contiguous; base aligned to 2 elements.
  void* out = nullptr;
  DType out_dtype = DType::kBF16;
  std::int64_t out_stride_batch = 0, out_stride_token = 0, out_stride_head = 0;
  const float* lse_a = nullptr;  // contiguous [B, N, H]
  // Part b: contiguous float32 O_b [B, N, H, D] (8-byte aligned) and lse_b [B, N, H].
  const float* out_b = nullptr;
  const float* lse_b = nullptr;
  // Merged lse [B, N, H], strides in elements, or nullptr; never the same memory as lse_a, lse_b.
  float* lse = nullptr;
  std::int64_t lse_stride_batch = 0, lse_stride_token = 0, lse_stride_head = 0;

  // Throws veda::Error naming the first inconsistent field (host-side checks only: no device).
  void validate() const;
};

// Launches one kernel on `stream`; no allocation, no host synchronisation (graph capturable).
// Throws veda::Error for invalid params or a failed launch.
void attention_merge_cuda(const AttentionMergeParams& params, cudaStream_t stream);

}  // namespace veda
