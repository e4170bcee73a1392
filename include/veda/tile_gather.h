// One pass over q or k (or v) that reorders every head into its tile-major order and computes the
// per-tile statistics on the way: the front end of the GPU path, with this CPU reference.
// Heads may use different tile shapes: each head belongs to a shape group, and each group has
// its own order (tile_major_order of its shape).
#pragma once

#include <cstdint>

#include "veda/tokens.h"

namespace veda {

struct TileGatherParams {
  TokensView x;  // [B, N, H, D], frame-major
  // [G, N]: order[g * N + i] = frame-major token at tile-major position i for shape group g.
  const std::int32_t* order = nullptr;
  std::int64_t groups = 1;
  // [H]: shape group of each head; nullptr puts every head in group 0.
  const std::int32_t* head_group = nullptr;
  // Optional outputs (nullptr to skip):
  void* x_tiled = nullptr;  // [B, H, N, D] of x's dtype, contiguous, tile-major
  float* stats = nullptr;   // [B, H, T, 3, D]: mean, max, min per channel (tile_statistics.h)

  // Throws veda::Error naming the first inconsistent argument (host-visible fields only).
  void validate() const;
};

// order and head_group are host pointers here.
void tile_gather_cpu(const TileGatherParams& params);

// The inverse: every head's tile-major rows (an attention output) back to frame-major order.
struct TileScatterParams {
  const void* x_tiled = nullptr;  // [B, H, N, D], contiguous, tile-major
  DType dtype = DType::kBF16;
  std::int64_t batch = 0, tokens = 0, heads = 0, dim = 0;
  const std::int32_t* order = nullptr;  // [G, N], as in TileGatherParams
  std::int64_t groups = 1;
  const std::int32_t* head_group = nullptr;
  void* out = nullptr;  // [B, N, H, D] of dtype; strides in elements, D contiguous
  std::int64_t out_stride_batch = 0, out_stride_token = 0, out_stride_head = 0;
  const float* lse_tiled = nullptr;  // optional [B, H, N] -> lse [B, N, H] with strides
  float* lse = nullptr;
  std::int64_t lse_stride_batch = 0, lse_stride_token = 0, lse_stride_head = 0;

  void validate() const;
};

void tile_scatter_cpu(const TileScatterParams& params);

}  // namespace veda
