// Internal: the two 128x128 tile products that dense attention, block-sparse attention and the
// oracle share, on operands zero-padded to whole tiles and to a head dim that is a multiple of 16
// so the register-blocked loops below need no edge cases (zero channels leave dot products and
// the output's real channels unchanged; padded keys are masked by the callers).
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "veda/tile_layout.h"

namespace veda::detail {

struct PaddedRows {
  std::int64_t rows = 0;        // real rows
  std::int64_t tiles = 0;       // tile_count(rows)
  std::int64_t padded_dim = 0;  // head dim rounded up to 16
  std::vector<float> data;      // [tiles * 128, padded_dim], zeros past the real rows / dims
  const float* tile(std::int64_t i) const { return data.data() + i * kTileTokens * padded_dim; }
};

// x: [rows, dim] -> zero-padded [tiles*128, padded_dim].
PaddedRows pad_rows(std::span<const float> x, std::int64_t dim);

inline constexpr std::int64_t kPanelColumns = 16;  // key columns per packed panel

struct PaddedColumns {
  std::int64_t cols = 0, tiles = 0, padded_dim = 0;
  // K^T packed in panels of 16 keys: [tiles * 128 / 16, padded_dim, 16]. One panel (8 KB at
  // D = 128) is read front to back for every query row block, so it stays in L1; a plain
  // [D, N] transpose strides by N floats per channel and thrashes L1 sets (3 vs 30 GFLOP/s).
  std::vector<float> data;
  const float* panel(std::int64_t p) const { return data.data() + p * padded_dim * kPanelColumns; }
};

// k: [cols, dim] -> zero-padded packed K^T panels.
PaddedColumns pad_transposed(std::span<const float> k, std::int64_t dim);

// s[r, c] = scale * q_tile[r, :] . k^T[:, 128 j + c] for r, c in [0, 128).
void score_tile(const float* q_tile, const PaddedColumns& kt, std::int64_t j, float scale,
                float* s);

// o[r, :] += sum_c p[r, c] v_tile[c, :] for r, c in [0, 128); o and v_tile have padded_dim columns.
void accumulate_pv(const float* p, const float* v_tile, std::int64_t padded_dim, float* o);

}  // namespace veda::detail
