#include "veda/tile_layout.h"

#include <algorithm>
#include <charconv>
#include <sstream>

#include "veda/error.h"

namespace veda {
namespace {

// Splits "a,b,c" or "axbxc" into three positive integers; nullopt-like false on failure.
bool parse_triple(std::string_view text, std::int64_t out[3]) {
  int field = 0;
  const char* cursor = text.data();
  const char* end = text.data() + text.size();
  while (field < 3) {
    auto [next, ec] = std::from_chars(cursor, end, out[field]);
    if (ec != std::errc() || out[field] <= 0) return false;
    ++field;
    cursor = next;
    if (field < 3) {
      if (cursor == end || (*cursor != ',' && *cursor != 'x')) return false;
      ++cursor;
    }
  }
  return cursor == end;
}

}  // namespace

std::string Grid::str() const {
  std::ostringstream text;
  text << t << "x" << h << "x" << w;
  return text.str();
}

Grid Grid::parse(std::string_view text) {
  std::int64_t sides[3];
  VEDA_CHECK(parse_triple(text, sides), "grid '", text,
             "' is not three positive integers T,H,W (or TxHxW)");
  Grid grid{sides[0], sides[1], sides[2]};
  grid.validate();
  return grid;
}

void Grid::validate() const {
  VEDA_CHECK(t > 0 && h > 0 && w > 0, "grid ", str(), " has a side that is not positive");
  VEDA_CHECK(tokens() <= (std::int64_t{1} << 31) - 1, "grid ", str(), " has ", tokens(),
             " tokens; at most 2^31 - 1 are supported (int32 token indices)");
}

std::string TileShape::str() const {
  std::ostringstream text;
  text << pt << "x" << ph << "x" << pw;
  return text.str();
}

TileShape TileShape::parse(std::string_view text) {
  std::int64_t sides[3];
  VEDA_CHECK(parse_triple(text, sides) && sides[0] <= 128 && sides[1] <= 128 && sides[2] <= 128,
             "tile '", text, "' is not three positive integers pt,ph,pw (or ptxphxpw)");
  TileShape shape{static_cast<int>(sides[0]), static_cast<int>(sides[1]),
                  static_cast<int>(sides[2])};
  shape.validate();
  return shape;
}

void TileShape::validate() const {
  VEDA_CHECK(pt > 0 && ph > 0 && pw > 0, "tile ", str(), " has a side that is not positive");
  VEDA_CHECK(pt * ph * pw == kTileTokens, "tile ", str(), " holds ", pt * ph * pw,
             " tokens; expected pt*ph*pw = ", kTileTokens);
}

std::vector<TileShape> standard_tile_shapes() {
  return {{1, 8, 16}, {1, 16, 8}, {2, 8, 8}, {4, 4, 8}, {4, 8, 4}, {8, 4, 4}, {2, 4, 16}};
}

std::int64_t full_box_count(const Grid& grid, const TileShape& shape) {
  return (grid.t / shape.pt) * (grid.h / shape.ph) * (grid.w / shape.pw);
}

std::vector<std::int32_t> tile_major_order(const Grid& grid, const TileShape& shape) {
  grid.validate();
  shape.validate();
  std::vector<std::int32_t> order;
  order.reserve(static_cast<std::size_t>(grid.tokens()));
  // Appends the box at (t0, h0, w0), clipped to the grid, in frame-major order.
  const auto append_box = [&](std::int64_t t0, std::int64_t h0, std::int64_t w0) {
    const std::int64_t t1 = std::min(grid.t, t0 + shape.pt);
    const std::int64_t h1 = std::min(grid.h, h0 + shape.ph);
    const std::int64_t w1 = std::min(grid.w, w0 + shape.pw);
    for (std::int64_t t = t0; t < t1; ++t) {
      for (std::int64_t h = h0; h < h1; ++h) {
        for (std::int64_t w = w0; w < w1; ++w) {
          order.push_back(static_cast<std::int32_t>((t * grid.h + h) * grid.w + w));
        }
      }
    }
  };
  // Boxes in blocked order over (t/pt, h/ph, w/pw): the full ones first, then the edge ones.
  for (const bool full : {true, false}) {
    for (std::int64_t t0 = 0; t0 < grid.t; t0 += shape.pt) {
      for (std::int64_t h0 = 0; h0 < grid.h; h0 += shape.ph) {
        for (std::int64_t w0 = 0; w0 < grid.w; w0 += shape.pw) {
          const bool inside =
              t0 + shape.pt <= grid.t && h0 + shape.ph <= grid.h && w0 + shape.pw <= grid.w;
          if (inside == full) append_box(t0, h0, w0);
        }
      }
    }
  }
  return order;
}

namespace {
void check_reorder_sizes(std::size_t src, std::size_t order, std::int64_t dim, std::size_t dst) {
  VEDA_CHECK(dim > 0 && src == order * static_cast<std::size_t>(dim) && dst == src, "reorder of ",
             order, " tokens x ", dim, " channels got buffers of ", src, " and ", dst,
             " floats; expected ", order * static_cast<std::size_t>(dim), " each");
}
}  // namespace

void gather_rows(std::span<const float> src, std::span<const std::int32_t> order, std::int64_t dim,
                 std::span<float> dst) {
  check_reorder_sizes(src.size(), order.size(), dim, dst.size());
  const auto tokens = static_cast<std::int64_t>(order.size());
#pragma omp parallel for schedule(static)
  for (std::int64_t i = 0; i < tokens; ++i) {
    std::copy_n(src.data() + order[i] * dim, dim, dst.data() + i * dim);
  }
}

void scatter_rows(std::span<const float> src, std::span<const std::int32_t> order, std::int64_t dim,
                  std::span<float> dst) {
  check_reorder_sizes(src.size(), order.size(), dim, dst.size());
  const auto tokens = static_cast<std::int64_t>(order.size());
#pragma omp parallel for schedule(static)
  for (std::int64_t i = 0; i < tokens; ++i) {
    std::copy_n(src.data() + i * dim, dim, dst.data() + order[i] * dim);
  }
}

}  // namespace veda
