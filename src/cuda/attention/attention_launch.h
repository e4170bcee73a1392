// Internal: the device-ready form of AttentionParams shared by both attention kernels, and the
// per-(dtype, head dim) launch functions that the instantiation files define.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#include "veda/dtype.h"

namespace veda::attention_detail {

inline constexpr int kTileTokens = 128;  // tokens per query tile and per key tile
// Head groups whose full-box tiles load as TMA boxes (AttentionParams::box_shapes); later
// groups gather rows. 7 = the standard tile shapes; 3 x 7 tensor maps fit the parameter space.
inline constexpr int kMaxBoxGroups = 7;

// One head group's full boxes: tile b < full is the box at (t, h, w) = (pt (b / across_hw),
// ph (b / across_w % (across_hw / across_w)), pw (b % across_w)) of the grid.
struct BoxGroup {
  int pt = 0, ph = 0, pw = 0;
  int across_w = 0, across_hw = 0, full = 0;
};

// Plain struct passed by value to the kernels (no pointers to host memory).
struct AttentionLaunch {
  const void* q = nullptr;  // [B, Nq, H, D]
  const void* k = nullptr;  // [B, Nk, H, D]
  const void* v = nullptr;  // [B, Nk, H, D]
  std::int64_t q_stride_batch = 0, q_stride_token = 0, q_stride_head = 0;
  std::int64_t k_stride_batch = 0, k_stride_token = 0, k_stride_head = 0;
  std::int64_t v_stride_batch = 0, v_stride_token = 0, v_stride_head = 0;
  int batch = 0, heads = 0, q_tokens = 0, k_tokens = 0;
  int q_tiles = 0, k_tiles = 0;
  // Key-tile lists (veda/block_index.h): padded (counts, rows [B, H, Tq, budget]) or CSR
  // (offsets [B*H*Tq + 1], rows); neither counts nor offsets: dense (every key tile, in order).
  const std::int32_t* counts = nullptr;
  const std::int32_t* rows = nullptr;
  int budget = 0;
  const std::int64_t* offsets = nullptr;
  float scale = 0.0f;       // softmax scale s
  float scale_log2 = 0.0f;  // s * log2(e): the kernels use exp2
  void* out = nullptr;      // [B, Nq, H, D] of out_dtype
  DType out_dtype = DType::kF32;
  std::int64_t out_stride_batch = 0, out_stride_token = 0, out_stride_head = 0;
  float* lse = nullptr;  // [B, Nq, H] or nullptr
  std::int64_t lse_stride_batch = 0, lse_stride_token = 0, lse_stride_head = 0;
  // Optional: query row r of head h is stored at row out_order[out_head_group[h] * Nq + r].
  const std::int32_t* out_order = nullptr;
  const std::int32_t* out_head_group = nullptr;
  // q, k, v row r of head h is read at the same permuted row (AttentionParams::read_through_order).
  bool read_through_order = false;
  // q alone read at the permuted rows (AttentionParams::read_queries_through_order).
  bool read_queries_through_order = false;
  // With read_through_order: head groups g < box_groups load their full-box tiles by TMA
  // (box tensor maps over (H*D, W, H_grid, T, B), launch_attention_hopper); grid_* the grid.
  int box_groups = 0;
  int grid_t = 0, grid_h = 0, grid_w = 0;
  BoxGroup box[kMaxBoxGroups];
};

// Returns the launch error (cudaSuccess when queued). kType is kBF16 or kF16, kDim 64 or 128.
template <DType kType, int kDim>
cudaError_t launch_attention_portable(const AttentionLaunch& launch, cudaStream_t stream);
template <DType kType, int kDim>
cudaError_t launch_attention_hopper(const AttentionLaunch& launch, cudaStream_t stream);

// Whether this binary holds device code of the kernel for the current device (the arch list of
// the build decides): cudaFuncGetAttributes succeeds.
template <DType kType, int kDim>
bool attention_portable_has_image();
template <DType kType, int kDim>
bool attention_hopper_has_image();

}  // namespace veda::attention_detail
