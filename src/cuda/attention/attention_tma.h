// Internal: TMA tensor maps over [B, N, H, D] token tensors for the Hopper attention kernel.
#pragma once

#include <cuda.h>

#include <cstdint>

#include "veda/dtype.h"

namespace veda::attention_detail {

// A 4-D map (D, N, H, B) with 128-byte swizzle and box (64, 128, 1, 1): one 64-channel panel of
// one 128-token tile of one head; tokens past N read as zeros. Strides in elements; throws
// veda::Error when the driver rejects the map (unaligned base or strides).
CUtensorMap make_token_tensor_map(const void* base, DType dtype, std::int64_t batch,
                                  std::int64_t tokens, std::int64_t heads, std::int64_t dim,
                                  std::int64_t stride_batch, std::int64_t stride_token,
                                  std::int64_t stride_head);

}  // namespace veda::attention_detail
