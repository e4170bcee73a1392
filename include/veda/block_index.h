// The block-sparse index format shared by selection, the CPU reference and the GPU kernels.
//
// For every (batch b, head h, query tile i): counts[(b*H + h)*Tq + i] key tiles, listed ascending
// and duplicate-free at indices[((b*H + h)*Tq + i)*budget + 0 .. count), the rest of the row
// padded with -1. A list is padded to the budget, not to all key tiles: at 250k tokens a
// full-width list would be ~15 MB per head. A count of 0 means the row attends to nothing:
// O = 0 and lse = -inf.
// CSR form (offsets): the same lists without padding, row r = (b*H + h)*Tq + i at
// indices[offsets[r] .. offsets[r + 1]), for lists of very different lengths (cumulative
// thresholds) where a budget-wide row wastes memory.
#pragma once

#include <cstdint>
#include <vector>

namespace veda {

inline constexpr std::int32_t kPaddedSlot = -1;

// Non-owning view, as kernels take it (pointers may be device memory).
struct BlockIndexView {
  const std::int32_t* counts = nullptr;   // [B, H, Tq]; unused in CSR form
  const std::int32_t* indices = nullptr;  // [B, H, Tq, budget], or CSR: [offsets[B*H*Tq]]
  std::int64_t batch = 0, heads = 0, q_tiles = 0, k_tiles = 0, budget = 0;  // budget: padded only
  const std::int64_t* offsets = nullptr;  // CSR form: [B*H*Tq + 1], offsets[0] = 0; else nullptr

  const std::int32_t* row(std::int64_t b, std::int64_t h, std::int64_t i) const {
    const std::int64_t r = (b * heads + h) * q_tiles + i;
    return indices + (offsets ? offsets[r] : r * budget);
  }
  std::int32_t count(std::int64_t b, std::int64_t h, std::int64_t i) const {
    const std::int64_t r = (b * heads + h) * q_tiles + i;
    return offsets ? static_cast<std::int32_t>(offsets[r + 1] - offsets[r]) : counts[r];
  }
  // Host views only: throws veda::Error unless every list is ascending, duplicate-free and in
  // [0, Tk), with counts in [0, budget] (padded form) or offsets from 0, never decreasing (CSR).
  void validate() const;
};

// An index in CSR form, owning its arrays.
struct CsrBlockIndex {
  std::int64_t batch = 0, heads = 0, q_tiles = 0, k_tiles = 0;
  std::vector<std::int64_t> offsets;  // [B*H*Tq + 1]
  std::vector<std::int32_t> indices;  // [offsets.back()]
  BlockIndexView view() const {
    return {nullptr, indices.data(), batch, heads, q_tiles, k_tiles, 0, offsets.data()};
  }
};

struct BlockIndex {
  std::int64_t batch = 0, heads = 0, q_tiles = 0, k_tiles = 0, budget = 0;
  std::vector<std::int32_t> counts;
  std::vector<std::int32_t> indices;

  // All rows empty (count 0, all slots padded).
  BlockIndex(std::int64_t batch, std::int64_t heads, std::int64_t q_tiles, std::int64_t k_tiles,
             std::int64_t budget);
  BlockIndex() = default;
  // Every row lists every key tile: the dense mask in this format.
  static BlockIndex dense(std::int64_t batch, std::int64_t heads, std::int64_t q_tiles,
                          std::int64_t k_tiles);

  std::int32_t* row(std::int64_t b, std::int64_t h, std::int64_t i) {
    return indices.data() + ((b * heads + h) * q_tiles + i) * budget;
  }
  std::int32_t& count(std::int64_t b, std::int64_t h, std::int64_t i) {
    return counts[(b * heads + h) * q_tiles + i];
  }
  BlockIndexView view() const {
    return {counts.data(), indices.data(), batch, heads, q_tiles, k_tiles, budget};
  }
  // Fraction of (query tile, key tile) pairs not computed: 1 - sum(counts) / (B*H*Tq*Tk).
  double sparsity() const;
  // Throws veda::Error unless every row is ascending, duplicate-free, in [0, Tk) and padded.
  void validate() const;
  // The same lists in CSR form.
  CsrBlockIndex csr() const;
};

}  // namespace veda
