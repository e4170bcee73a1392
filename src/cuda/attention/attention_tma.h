// Internal: TMA tensor maps over [B, N, H, D] token tensors for the Hopper attention kernel.
#pragma once

#include <cuda.h>

#include <cstdint>

#include "attention_launch.h"
#include "veda/dtype.h"

namespace veda::attention_detail {

// A 4-D map (D, N, H, B) with 128-byte swizzle and box (64, 128, 1, 1): one 64-channel panel of
// one 128-token tile of one head; tokens past N read as zeros. Strides in elements; throws
// veda::Error when the driver rejects the map (unaligned base or strides).
CUtensorMap make_token_tensor_map(const void* base, DType dtype, std::int64_t batch,
                                  std::int64_t tokens, std::int64_t heads, std::int64_t dim,
                                  std::int64_t stride_batch, std::int64_t stride_token,
                                  std::int64_t stride_head);

// A 5-D map (H*D, W, H_grid, T, B) over the video tokens of [B, N, H, D] with the heads
// contiguous in a row (stride_head = D) and box (64, pw, ph, pt, 1): one 64-channel panel of one
// head's full box of the grid, which lands in shared memory as the 128 tile-major rows of that
// tile with the same 128-byte swizzle as make_token_tensor_map's box. Throws veda::Error when the
// driver rejects the map.
CUtensorMap make_box_tensor_map(const void* base, DType dtype, std::int64_t batch, int grid_t,
                                int grid_h, int grid_w, std::int64_t heads, std::int64_t dim,
                                std::int64_t stride_batch, std::int64_t stride_token,
                                const BoxGroup& box);

}  // namespace veda::attention_detail
