// Veda's sparse self-attention of one layer on the GPU, as a plan/run pair:
//   plan (once per shape): tile-major order tables per tile shape, uploaded to the device;
//   run  (every call):     gather q, k, v into tile-major order with per-tile statistics,
//                          select key tiles with the estimator, block-sparse attention whose
//                          epilogue stores O (and lse) straight at their frame-major rows.
// run launches 7 kernels on the caller's stream, into the caller's workspace: no allocation and
// no host synchronisation, so a whole call can be captured in a CUDA graph.
//
// Memory per call beyond q, k, v and out (workspace_bytes): tile-major copies of q, k, v
// (3 x B*N*H*D elements), statistics and descriptors (4 x B*H*T*(3D + D) * 2 bytes) and the
// index (4 B*H*T*(budget + 1) bytes). At Wan2.1-14B 720p (B = 1, N = 75,600, H = 40, D = 128,
// bf16) that is 2.3 GB, dominated by the tile-major copies.
#pragma once

#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>
#include <vector>

#include "veda/tile_layout.h"
#include "veda/tokens.h"

namespace veda {

struct SparseLayerSettings {
  Grid grid;                                     // the latent grid; N = grid.tokens()
  std::int64_t batch = 1, heads = 1, dim = 128;  // heads: this call's (local) heads
  DType dtype = DType::kBF16;                    // of q, k, v and out
  // One tile shape per local head, or a single shape for all heads.
  std::vector<TileShape> head_tiles = {TileShape{}};
  double sparsity = 0.9;  // fixed budget ceil((1 - sparsity) * T) key tiles per row
  bool keep_own_tile = true;
  // Local -> global head (sequence-parallel head splits); empty: identity.
  std::vector<std::int32_t> global_head;
  // Estimator parameters, device memory [H_global, 3D, D] float32; nullptr: mean pooling.
  const float* q_projection = nullptr;
  const float* k_projection = nullptr;
};

class SparseAttentionPlan {
 public:
  // Validates the settings and uploads the order tables (synchronous: do it once per shape).
  explicit SparseAttentionPlan(SparseLayerSettings settings);
  ~SparseAttentionPlan();
  SparseAttentionPlan(const SparseAttentionPlan&) = delete;
  SparseAttentionPlan& operator=(const SparseAttentionPlan&) = delete;

  std::size_t workspace_bytes() const;
  std::int64_t budget() const { return budget_; }

  // q, k, v: device [B, N, H, D] views matching the settings; out: contiguous [B, N, H, D] of
  // the same dtype; lse: contiguous float32 [B, N, H] or nullptr.
  void run(const TokensView& q, const TokensView& k, const TokensView& v, void* out, float* lse,
           void* workspace, std::size_t workspace_size, cudaStream_t stream) const;

 private:
  SparseLayerSettings settings_;
  std::int64_t tokens_ = 0, tiles_ = 0, budget_ = 0, groups_ = 0;
  std::int32_t* order_ = nullptr;        // device [G, N]
  std::int32_t* head_group_ = nullptr;   // device [H]
  std::int32_t* global_head_ = nullptr;  // device [H] or nullptr
};

}  // namespace veda
