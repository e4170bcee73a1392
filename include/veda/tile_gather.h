// One pass over q or k (or v) that reorders every head into its tile-major order and computes the
// per-tile statistics on the way: the front end of the GPU path, with this CPU reference. (The
// way back needs no pass: attention stores rows at AttentionParams::out_order.)
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
  // The estimator's descriptors of the statistics (tile_scoring.h), [B, H, T,
  // descriptor_width(D)] with zeros past D: what TileSelectionParams::q_descriptors or
  // k_descriptors takes, made here for a diagonal projection [H_global, 3, D] or none (P = 0:
  // the tile means) so that the statistics never go to memory.
  float* descriptors = nullptr;
  const float* diagonal_projection = nullptr;
  const std::int32_t* global_head = nullptr;  // [H]: global head of each local head, or identity

  // Throws veda::Error naming the first inconsistent argument (host-visible fields only).
  void validate() const;
};

// order and head_group are host pointers here.
void tile_gather_cpu(const TileGatherParams& params);

}  // namespace veda
