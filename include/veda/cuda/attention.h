// Block-sparse (and dense) attention forward on NVIDIA GPUs, with the same params struct and
// index format as the CPU reference veda::attention_cpu (veda/attention.h).
//
//   O_r = sum_c softmax_c(s q_r.k_c) v_c over the key tiles listed for r's query tile,
//   lse_r = log sum_c exp(s q_r.k_c); an empty list writes O_r = 0 and lse_r = -inf.
//
// Two kernels, one selector (can_implement) that decides both "supported" and what launches:
//   kHopper   sm_90 (H100/H200): TMA + wgmma, warp-specialised, persistent. Built for sm_90a only.
//   kPortable sm_80 and newer: mma.sync, cp.async double buffering (correct everywhere, not tuned).
//
// Preconditions (checked by can_implement, which names the first one violated):
//   q, k, v: BF16 or F16, the same dtype, head dim 64 or 128, device memory, 16-byte aligned base,
//   batch/token/head strides multiples of 8 elements (16 bytes; the head dim is contiguous).
//   out: F32, F16 or BF16, [B, Nq, H, D], strides multiples of 2 elements, 8-byte aligned base.
//   lse: optional float32 [B, Nq, H]. index (optional): device pointers, as in veda/block_index.h,
//   padded (counts + indices) or CSR (offsets + indices).
// Costs: no allocation, no host synchronisation; launches one kernel on the caller's stream.
// Work is 4 * B * H * sum(count) * 128 * 128 * D FLOP (fewer for the last, partial tile).
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>
#include <optional>
#include <string>

#include "veda/attention.h"

namespace veda {

enum class AttentionKernel : std::uint8_t { kHopper, kPortable };

struct AttentionOptions {
  // Unset: the fastest kernel this build and device support. Set: that kernel or an error.
  std::optional<AttentionKernel> kernel;
};

struct AttentionSupport {
  bool supported = false;
  AttentionKernel kernel = AttentionKernel::kPortable;  // what attention_cuda would launch
  std::string reason;                                   // why not, when !supported
  explicit operator bool() const { return supported; }
};

// Checks params (shapes, dtypes, alignment) against what this build and `device` support.
AttentionSupport can_implement(const AttentionParams& params, int device,
                               const AttentionOptions& options = {});

// Launches on `stream` (the current device's). Throws veda::Error with can_implement's reason
// when unsupported, or with the CUDA error text when the launch fails.
void attention_cuda(const AttentionParams& params, cudaStream_t stream,
                    const AttentionOptions& options = {});

const char* attention_kernel_name(AttentionKernel kernel);

}  // namespace veda
