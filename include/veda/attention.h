// Dense and block-sparse attention: the CPU reference that every kernel is checked against.
//   O_r = sum_c softmax_c(s q_r.k_c) v_c over the key tiles listed for r's query tile,
//   lse_r = log sum_c exp(s q_r.k_c) over the same keys; no listed key: O_r = 0, lse_r = -inf.
// Inputs f32, f16 or bf16; float32 accumulation; tiles are 128 consecutive tokens.
#pragma once

#include <cstdint>
#include <span>

#include "veda/block_index.h"
#include "veda/tile_layout.h"
#include "veda/tokens.h"

namespace veda {

struct AttentionParams {
  TokensView q;  // [B, Nq, H, D]
  TokensView k;  // [B, Nk, H, D]
  TokensView v;  // [B, Nk, H, D]
  // nullptr: dense. Otherwise B, H match q, Tq = tile_count(Nq), Tk = tile_count(Nk); padded
  // or CSR form (veda/block_index.h).
  const BlockIndexView* index = nullptr;
  float scale = 0.0f;  // softmax scale s, usually 1/sqrt(D)
  // Output [B, Nq, H, D] of type out_dtype, strides in elements (D contiguous).
  void* out = nullptr;
  DType out_dtype = DType::kF32;
  std::int64_t out_stride_batch = 0, out_stride_token = 0, out_stride_head = 0;
  // Optional float32 lse (natural log), strides in elements; nullptr to skip.
  float* lse = nullptr;
  std::int64_t lse_stride_batch = 0, lse_stride_token = 0, lse_stride_head = 0;
  // Optional output row permutation, so that attention over tile-major q, k, v writes O and lse
  // straight into frame-major order (no separate scatter pass): query row r of head h is stored
  // at row out_order[out_head_group[h] * Nq + r]. out_order [G, Nq] as in TileGatherParams;
  // out_head_group [H], nullptr putting every head in group 0. nullptr out_order: row r.
  const std::int32_t* out_order = nullptr;
  const std::int32_t* out_head_group = nullptr;
  // Read q, k, v through out_order as well: tile-major row r of head h is row
  // out_order[out_head_group[h] * N + r] of q, k and v. Attention then runs in tile-major order
  // straight on frame-major inputs, with no reordered copies. Needs out_order and Nq == Nk.
  bool read_through_order = false;
  // Read q alone through out_order, k and v as given (tile-major copies): the sparse call with
  // reordered copies of k and v, which so needs no copy of q (its rows are loaded once per query
  // tile, k and v rows once per listed key tile). Needs out_order.
  bool read_queries_through_order = false;
  // With read_through_order, optionally what out_order is: group g of out_order is
  // tile_major_order(box_grid, box_shapes[g]) (box_grid.tokens() == N). The Hopper kernel then
  // loads each tile that is a full box (a group's first full_box_count tiles) as one
  // multi-dimensional TMA box instead of 128 row gathers, where q, k and v keep their heads
  // contiguous (stride_head == D). The order itself is not read to check this. Empty: rows.
  Grid box_grid;
  std::span<const TileShape> box_shapes;

  // Throws veda::Error naming the first inconsistent argument.
  void validate() const;
};

void attention_cpu(const AttentionParams& params);

// Throws veda::Error unless q, k, v are floating [B, N, H, D] views with equal B, H, D and k, v
// of equal N.
void validate_qkv(const TokensView& q, const TokensView& k, const TokensView& v);

// One head on float32 row-major matrices q [Nq, D], k, v [Nk, D]; out [Nq, D], lse [Nq].
// counts/rows: this head's slice of a BlockIndexView (counts[i], rows + i*budget); counts == null
// means dense.
void attend_head(std::span<const float> q, std::span<const float> k, std::span<const float> v,
                 std::int64_t dim, float scale, const std::int32_t* counts,
                 const std::int32_t* rows, std::int64_t budget, std::span<float> out,
                 std::span<float> lse);

}  // namespace veda
