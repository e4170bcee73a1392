#include "tile_products.h"

#include <algorithm>
#include <cstring>

#include "veda/error.h"

namespace veda::detail {
namespace {

constexpr std::int64_t kRowBlock = 4;   // rows of s / o held in registers at once
constexpr std::int64_t kColBlock = 16;  // columns: 4 x 16 floats = 8 AVX2 or 4 AVX-512 registers

// 16 floats as one value (GCC/Clang vector extension): spelling the register block out keeps the
// compiler from vectorising the reduction loop instead (3 GFLOP/s instead of ~30 on one core).
// Without AVX-512 (VEDA_NATIVE=OFF) GCC warns that passing such values changes the ABI; these
// helpers are internal to this file, so no ABI is crossed.
#pragma GCC diagnostic ignored "-Wpsabi"
using Floats16 = float __attribute__((vector_size(64)));
inline Floats16 load16(const float* x) {
  Floats16 value;
  std::memcpy(&value, x, sizeof(value));
  return value;
}
inline void store16(float* x, Floats16 value) { std::memcpy(x, &value, sizeof(value)); }

std::int64_t round_up_16(std::int64_t dim) { return (dim + 15) / 16 * 16; }

void check_matrix(std::span<const float> x, std::int64_t dim) {
  VEDA_CHECK(dim > 0 && !x.empty() && x.size() % static_cast<std::size_t>(dim) == 0, "matrix of ",
             x.size(), " floats with head dim ", dim, "; expected a non-empty [N, D]");
}

}  // namespace

PaddedRows pad_rows(std::span<const float> x, std::int64_t dim) {
  check_matrix(x, dim);
  PaddedRows padded;
  padded.rows = static_cast<std::int64_t>(x.size()) / dim;
  padded.tiles = tile_count(padded.rows);
  padded.padded_dim = round_up_16(dim);
  padded.data.assign(static_cast<std::size_t>(padded.tiles * kTileTokens * padded.padded_dim), 0.f);
  for (std::int64_t r = 0; r < padded.rows; ++r) {
    std::copy_n(x.data() + r * dim, dim, padded.data.data() + r * padded.padded_dim);
  }
  return padded;
}

PaddedColumns pad_transposed(std::span<const float> k, std::int64_t dim) {
  check_matrix(k, dim);
  PaddedColumns padded;
  padded.cols = static_cast<std::int64_t>(k.size()) / dim;
  padded.tiles = tile_count(padded.cols);
  padded.padded_dim = round_up_16(dim);
  padded.data.assign(static_cast<std::size_t>(padded.tiles * kTileTokens * padded.padded_dim), 0.f);
  for (std::int64_t c = 0; c < padded.cols; ++c) {
    float* column = padded.data.data() + (c / kPanelColumns) * padded.padded_dim * kPanelColumns +
                    c % kPanelColumns;
    for (std::int64_t d = 0; d < dim; ++d) column[d * kPanelColumns] = k[c * dim + d];
  }
  return padded;
}

void score_tile(const float* q_tile, const PaddedColumns& kt, std::int64_t j, float scale,
                float* s) {
  static_assert(kColBlock == kPanelColumns);
  const std::int64_t dims = kt.padded_dim;
  for (std::int64_t c0 = 0; c0 < kTileTokens; c0 += kColBlock) {
    const float* panel = kt.panel((j * kTileTokens + c0) / kPanelColumns);
    for (std::int64_t r0 = 0; r0 < kTileTokens; r0 += kRowBlock) {
      const float* q_rows = q_tile + r0 * dims;
      Floats16 acc0 = {}, acc1 = {}, acc2 = {}, acc3 = {};
      for (std::int64_t d = 0; d < dims; ++d) {
        const Floats16 k_row = load16(panel + d * kPanelColumns);
        acc0 += q_rows[d] * k_row;
        acc1 += q_rows[dims + d] * k_row;
        acc2 += q_rows[2 * dims + d] * k_row;
        acc3 += q_rows[3 * dims + d] * k_row;
      }
      float* s_rows = s + r0 * kTileTokens + c0;
      store16(s_rows, scale * acc0);
      store16(s_rows + kTileTokens, scale * acc1);
      store16(s_rows + 2 * kTileTokens, scale * acc2);
      store16(s_rows + 3 * kTileTokens, scale * acc3);
    }
  }
}

void accumulate_pv(const float* p, const float* v_tile, std::int64_t padded_dim, float* o) {
  for (std::int64_t r0 = 0; r0 < kTileTokens; r0 += kRowBlock) {
    const float* p_rows = p + r0 * kTileTokens;
    for (std::int64_t d0 = 0; d0 < padded_dim; d0 += kColBlock) {
      float* o_rows = o + r0 * padded_dim + d0;
      Floats16 acc0 = load16(o_rows), acc1 = load16(o_rows + padded_dim),
               acc2 = load16(o_rows + 2 * padded_dim), acc3 = load16(o_rows + 3 * padded_dim);
      for (std::int64_t c = 0; c < kTileTokens; ++c) {
        const Floats16 v_row = load16(v_tile + c * padded_dim + d0);
        acc0 += p_rows[c] * v_row;
        acc1 += p_rows[kTileTokens + c] * v_row;
        acc2 += p_rows[2 * kTileTokens + c] * v_row;
        acc3 += p_rows[3 * kTileTokens + c] * v_row;
      }
      store16(o_rows, acc0);
      store16(o_rows + padded_dim, acc1);
      store16(o_rows + 2 * padded_dim, acc2);
      store16(o_rows + 3 * padded_dim, acc3);
    }
  }
}

}  // namespace veda::detail
