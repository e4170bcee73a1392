// Video geometry and tile-major token order.
//
// Tokens arrive frame-major: index = t*H*W + h*W + w (diffusers' Wan order). A tile shape
// (pt, ph, pw) with pt*ph*pw = 128 cuts the grid into boxes; the tile-major order lists the boxes
// in blocked order over (t/pt, h/ph, w/pw) and, inside a box, its tokens in frame-major order.
//
// Grids that do not divide into boxes (45 = 5*8 + 5) are PACKED, not padded: the full boxes come
// first, each exactly one 128-token tile (tile i < full_box_count is box i of the full boxes'
// blocked order), then the edge boxes, clipped to the grid, follow each other directly, so tile i
// is tokens [128 i, 128 i + 128) and only the last tile can be short. Why packed: padding each box
// to 128 slots wastes up to ~20% of the attention work (21x45x80 with 1x8x16: 45 rows -> 48
// slots) and forces every kernel to mask keys inside interior tiles; packing keeps the attention
// kernels plain block-sparse kernels over N tokens whose only partial tile is the last, at the
// price of a few edge tiles that hold parts of several edge boxes. Why full boxes first: every
// full box then starts on a tile, so a kernel can load it as one multi-dimensional TMA box
// (21x45x80: 525 of 591 tiles with 1x8x16, 440 with 8x4x4). Speed is counted on real tokens
// only, as DESIGN.md asks.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace veda {

inline constexpr std::int64_t kTileTokens = 128;

// Number of 128-token tiles covering n tokens (the last one possibly short).
inline std::int64_t tile_count(std::int64_t tokens) {
  return (tokens + kTileTokens - 1) / kTileTokens;
}

struct Grid {
  std::int64_t t = 1, h = 1, w = 1;
  std::int64_t tokens() const { return t * h * w; }
  // "21x45x80"
  std::string str() const;
  // Parses "T,H,W" or "TxHxW"; throws veda::Error naming the text on anything else.
  static Grid parse(std::string_view text);
  void validate() const;
};

struct TileShape {
  int pt = 1, ph = 8, pw = 16;
  // "1x8x16"
  std::string str() const;
  // Parses "pt,ph,pw" or "ptxphxpw"; validates the product.
  static TileShape parse(std::string_view text);
  // Throws veda::Error unless every side is positive and pt*ph*pw = 128.
  void validate() const;
  friend bool operator==(const TileShape&, const TileShape&) = default;
};

// The candidate shapes of the head-aware tiling search (DESIGN.md section 2).
std::vector<TileShape> standard_tile_shapes();

// order[i] = frame-major index of the token at tile-major position i; a permutation of [0, N).
std::vector<std::int32_t> tile_major_order(const Grid& grid, const TileShape& shape);

// Boxes of `shape` that fit the grid whole: (T / pt) (H / ph) (W / pw), the leading tiles of
// tile_major_order, full box b at (t, h, w) = pt (b / (nh nw)), ph (b / nw % nh), pw (b % nw)
// with nh = H / ph, nw = W / pw.
std::int64_t full_box_count(const Grid& grid, const TileShape& shape);

// dst[i, :] = src[order[i], :] for row-major [N, D] float matrices (frame-major -> tile-major).
void gather_rows(std::span<const float> src, std::span<const std::int32_t> order, std::int64_t dim,
                 std::span<float> dst);
// dst[order[i], :] = src[i, :] (tile-major -> frame-major), the inverse of gather_rows.
void scatter_rows(std::span<const float> src, std::span<const std::int32_t> order, std::int64_t dim,
                  std::span<float> dst);

}  // namespace veda
