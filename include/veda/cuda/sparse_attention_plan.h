// Veda's sparse self-attention of one layer on the GPU, as a plan/run pair:
//   plan (once per shape): tile-major order tables per tile shape, uploaded to the device;
//   run  (every call):     per-tile statistics of q and k, select key tiles with the
//                          estimator, block-sparse attention that reads q, k and v through the
//                          order (a tile that is a full box of the grid as one TMA box, edge
//                          tiles by row gathers) and whose epilogue stores O (and lse) straight
//                          at their frame-major rows. With reordered_copies the run also makes
//                          tile-major copies of k and v, which attention loads by TMA.
// Text tokens (joint-attention models), before or after the N video tokens, are dense both ways
// and never selected; with L = N + text_tokens rows in q, k, v and out:
//   video rows: sparse attention over the video keys (O_vv written into out, lse_vv),
//               dense attention over the text keys (O_vt float32, lse_vt), merged in place:
//               lse = logaddexp(lse_vv, lse_vt),
//               O = exp(lse_vv - lse) O_vv + exp(lse_vt - lse) O_vt
//   text rows:  dense attention over all L keys, straight into out.
// Every part reads q, k, v and writes out through row-offset views of the caller's tensors (no
// slicing copies).
// (O_vv passes through out's dtype before the merge: one extra rounding, <= 2^-8 relative in
// bf16, on the video part's share of each row.)
// run launches 3 kernels (one gather of q, k and v (or q and k without reordered_copies),
// selection, attention; 2 more for full projections, 3 more with text tokens) on the caller's
// stream, into the caller's workspace: no allocation and no host synchronisation, so a whole
// call can be captured in a CUDA graph.
//
// Memory per call beyond q, k, v and out (workspace_bytes): the tile-major copies of k and v
// (2 x 2 B*N*H*D bytes, reordered_copies only); for q and k each, its descriptors made by the
// gather (4 B*H*T*D' bytes, D' = D rounded up to 16; diagonal or no projection) or else its
// statistics (4 B*H*T*3D) and their projection (4 B*H*T*D'); the index (4 B*H*T*(budget + 1)
// bytes); nothing proportional to N^2. At Wan2.1-14B 720p (B = 1, N = 75,600, H = 40, D = 128,
// bf16, 95%, diagonal P): 27 MB by default, 1.6 GB with the copies. Text tokens add the video
// rows' dense part over the text keys, O_vt (4 B*N*H*D bytes, over the k and v copies when they
// exist) and two lse partials (8 B*N*H bytes).
#pragma once

#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>
#include <vector>

#include "veda/tile_layout.h"
#include "veda/tokens.h"

namespace veda {

// Where the text tokens sit in the L rows of q, k, v and out.
enum class TextPosition : std::uint8_t {
  kAfter,   // rows [0, N) video, [N, L) text (HunyuanVideo)
  kBefore,  // rows [0, text_tokens) text, then video (CogVideoX)
};

struct SparseLayerSettings {
  Grid grid;                                     // the latent grid; N = grid.tokens()
  std::int64_t batch = 1, heads = 1, dim = 128;  // heads: this call's (local) heads
  DType dtype = DType::kBF16;                    // of q, k, v and out
  // One tile shape per local head, or a single shape for all heads.
  std::vector<TileShape> head_tiles = std::vector<TileShape>(1);  // one 1x8x16 shape
  double sparsity = 0.9;  // fixed budget ceil((1 - sparsity) * T) key tiles per row
  // Per local head, or empty: a value in (0, 1] keeps the fewest best tiles whose estimated
  // softmax mass reaches it, capped at the budget (a profile's "threshold"); 0 the fixed budget.
  std::vector<double> head_thresholds;
  bool keep_own_tile = true;
  // Local -> global head (sequence-parallel head splits); empty: identity.
  std::vector<std::int32_t> global_head;
  // Estimator parameters, device memory [H_global, 3D, D] float32; nullptr: mean pooling.
  const float* q_projection = nullptr;
  const float* k_projection = nullptr;
  // The projections are P's diagonals, [H_global, 3, D] (TileSelectionParams): the estimator's
  // default structure, projected elementwise instead of by a GEMM.
  bool diagonal_projection = false;
  // Text tokens in each sequence, attended densely both ways: L = N + text_tokens.
  std::int64_t text_tokens = 0;
  TextPosition text_position = TextPosition::kAfter;
  // false (default): no copies, attention reads q, k and v through the order
  // (AttentionParams::read_through_order), full boxes of the grid by TMA and edge tiles by row
  // gathers; true: the gather also makes tile-major copies of k and v that attention loads by
  // TMA (q's rows still read through the order, AttentionParams::read_queries_through_order):
  // 1.5 GB more workspace at Wan2.1-14B 720p and no faster there or at 480p, 2-5% faster at
  // 147,600 tokens (k and v of a head outgrow the L2; 3.0 GB more there) (bench/RESULTS.md,
  // 08:45-10:10); it can pay on grids with few full boxes. Python: low_memory=False.
  bool reordered_copies = false;
};

class SparseAttentionPlan {
 public:
  // Validates the settings (throws veda::Error naming the bad one before touching the device)
  // and uploads the order tables (synchronous: do it once per shape).
  explicit SparseAttentionPlan(SparseLayerSettings settings);
  ~SparseAttentionPlan();
  SparseAttentionPlan(const SparseAttentionPlan&) = delete;
  SparseAttentionPlan& operator=(const SparseAttentionPlan&) = delete;

  std::size_t workspace_bytes() const;
  std::int64_t budget() const { return budget_; }
  std::int64_t rows() const { return tokens_ + settings_.text_tokens; }  // L

  // q, k, v: device [B, L, H, D] views matching the settings (L = N + text_tokens); out:
  // contiguous [B, L, H, D] of the same dtype; lse: contiguous float32 [B, L, H] or nullptr.
  void run(const TokensView& q, const TokensView& k, const TokensView& v, void* out, float* lse,
           void* workspace, std::size_t workspace_size, cudaStream_t stream) const;

 private:
  SparseLayerSettings settings_;
  std::int64_t tokens_ = 0, tiles_ = 0, budget_ = 0;
  std::vector<TileShape> shapes_;        // of each group, in order of first use
  std::int32_t* order_ = nullptr;        // device [G, N]
  std::int32_t* head_group_ = nullptr;   // device [H]
  std::int32_t* global_head_ = nullptr;  // device [H] or nullptr
  double* thresholds_ = nullptr;         // device [H] or nullptr
};

}  // namespace veda
