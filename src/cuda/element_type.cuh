// Internal: the floating element types of the CUDA kernels, and the one switch from DType to them.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include "veda/dtype.h"

namespace veda::cuda_detail {

__device__ inline float to_float(float x) { return x; }
__device__ inline float to_float(__half x) { return __half2float(x); }
__device__ inline float to_float(__nv_bfloat16 x) { return __bfloat162float(x); }

// Calls launch(Element{}) with the C++ type of a floating dtype; callers validated the dtype.
template <typename Launch>
void dispatch_floating(DType dtype, Launch&& launch) {
  switch (dtype) {
    case DType::kF32:
      launch(float{});
      break;
    case DType::kF16:
      launch(__half{});
      break;
    case DType::kBF16:
      launch(__nv_bfloat16{});
      break;
    default:
      break;
  }
}

}  // namespace veda::cuda_detail
