#include "veda/tile_layout.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <numeric>

#include "reference.h"
#include "veda/error.h"

namespace veda {
namespace {

struct LayoutCase {
  Grid grid;
  TileShape tile;
};

class TileMajorOrder : public ::testing::TestWithParam<LayoutCase> {};

TEST_P(TileMajorOrder, IsAPermutationAndEveryFullBoxIsOneTile) {
  const auto [grid, tile] = GetParam();
  const std::vector<std::int32_t> order = tile_major_order(grid, tile);
  ASSERT_EQ(static_cast<std::int64_t>(order.size()), grid.tokens());
  std::vector<std::int32_t> sorted = order;
  std::sort(sorted.begin(), sorted.end());
  for (std::int64_t n = 0; n < grid.tokens(); ++n) ASSERT_EQ(sorted[n], n);

  // Full boxes first, then edge boxes, each group in blocked order, packed: walk them and check
  // each box's tokens are consecutive in the order, at the running offset, and lie inside the
  // box; every full box is one whole tile.
  std::int64_t position = 0, full_boxes = 0;
  for (const bool full : {true, false}) {
    for (std::int64_t t0 = 0; t0 < grid.t; t0 += tile.pt) {
      for (std::int64_t h0 = 0; h0 < grid.h; h0 += tile.ph) {
        for (std::int64_t w0 = 0; w0 < grid.w; w0 += tile.pw) {
          const std::int64_t size = (std::min(grid.t, t0 + tile.pt) - t0) *
                                    (std::min(grid.h, h0 + tile.ph) - h0) *
                                    (std::min(grid.w, w0 + tile.pw) - w0);
          if ((size == kTileTokens) != full) continue;
          if (full) {
            EXPECT_EQ(position, full_boxes * kTileTokens);
            ++full_boxes;
          }
          for (std::int64_t s = 0; s < size; ++s, ++position) {
            const std::int32_t token = order[position];
            const std::int64_t t = token / (grid.h * grid.w), h = token / grid.w % grid.h,
                               w = token % grid.w;
            ASSERT_TRUE(t >= t0 && t < t0 + tile.pt && h >= h0 && h < h0 + tile.ph && w >= w0 &&
                        w < w0 + tile.pw)
                << "token " << token << " at position " << position;
          }
        }
      }
    }
  }
  EXPECT_EQ(position, grid.tokens());
  EXPECT_EQ(full_boxes, full_box_count(grid, tile));
}

TEST_P(TileMajorOrder, ScatterInvertsGather) {
  const auto [grid, tile] = GetParam();
  const std::int64_t dim = 3;
  const std::vector<std::int32_t> order = tile_major_order(grid, tile);
  const std::vector<float> frame = testing::random_matrix(grid.tokens(), dim, 7);
  std::vector<float> tiled(frame.size(), std::nanf("")), back(frame.size(), std::nanf(""));
  gather_rows(frame, order, dim, tiled);
  for (std::int64_t i = 0; i < grid.tokens(); ++i) {
    ASSERT_EQ(tiled[i * dim + 2], frame[order[i] * dim + 2]);
  }
  scatter_rows(tiled, order, dim, back);
  EXPECT_EQ(back, frame);
}

INSTANTIATE_TEST_SUITE_P(
    Grids, TileMajorOrder,
    ::testing::Values(LayoutCase{{3, 5, 7}, {1, 8, 16}},     // smaller than one box
                      LayoutCase{{1, 8, 16}, {1, 8, 16}},    // exactly one tile
                      LayoutCase{{4, 16, 32}, {2, 8, 8}},    // divides evenly
                      LayoutCase{{5, 9, 20}, {8, 4, 4}},     // nothing divides
                      LayoutCase{{21, 45, 16}, {1, 8, 16}},  // Wan 720p height, reduced width
                      LayoutCase{{3, 10, 10}, {4, 4, 8}}),   // N = 300, not a multiple of 128
    [](const auto& test) {
      return "grid" + test.param.grid.str() + "_tile" + test.param.tile.str();
    });

TEST(TileMajorOrder, PacksEdgeBoxesWithoutPadding) {
  // 45 rows in boxes of 8: five full boxes of 128 and a 5-row edge box of 80 tokens.
  const Grid grid{1, 45, 16};
  const std::vector<std::int32_t> order = tile_major_order(grid, {1, 8, 16});
  EXPECT_EQ(order.size(), 720u);
  EXPECT_EQ(tile_count(720), 6);
  EXPECT_EQ(order[640], 40 * 16);  // the edge box starts right after five full tiles
  EXPECT_EQ(order.back(), 719);
}

TEST(TileMajorOrder, PutsFullBoxesOnTheFirstTiles) {
  // 2x45x20 with 1x8x16: 2 frames x 5 x 1 full boxes, then 2 x 6 edge boxes (4 columns wide or
  // 5 rows high). Tile b < 10 is full box b: frame b / 5, rows 8 (b % 5) .., columns 0-15.
  const Grid grid{2, 45, 20};
  const TileShape shape{1, 8, 16};
  ASSERT_EQ(full_box_count(grid, shape), 10);
  const std::vector<std::int32_t> order = tile_major_order(grid, shape);
  for (std::int64_t b = 0; b < 10; ++b) {
    for (std::int64_t r = 0; r < kTileTokens; ++r) {
      const std::int64_t t = b / 5, h = 8 * (b % 5) + r / 16, w = r % 16;
      ASSERT_EQ(order[b * kTileTokens + r], (t * grid.h + h) * grid.w + w) << b << " " << r;
    }
  }
  // The first edge box: frame 0, rows 0-7, columns 16-19.
  EXPECT_EQ(order[10 * kTileTokens], 16);
  EXPECT_EQ(order[10 * kTileTokens + 4], 20 + 16);
  EXPECT_EQ(full_box_count({21, 45, 80}, {8, 4, 4}), 440);
  EXPECT_EQ(full_box_count({3, 5, 7}, {1, 8, 16}), 0);
}

TEST(Grid, ParsesBothSpellingsAndRejectsOthers) {
  EXPECT_EQ(Grid::parse("21,45,80").tokens(), 75600);
  EXPECT_EQ(Grid::parse("2x3x4").str(), "2x3x4");
  for (const char* text : {"", "1,2", "1,2,3,4", "0,4,4", "a,b,c", "-1,2,3", "1,,3"}) {
    EXPECT_THROW(Grid::parse(text), Error) << text;
  }
}

TEST(TileShape, RequiresA128TokenProduct) {
  EXPECT_EQ(TileShape::parse("8x4x4"), (TileShape{8, 4, 4}));
  try {
    TileShape::parse("2,8,16");
    FAIL() << "expected an error";
  } catch (const Error& error) {
    EXPECT_STREQ(error.what(), "tile 2x8x16 holds 256 tokens; expected pt*ph*pw = 128");
  }
  for (const TileShape& shape : standard_tile_shapes()) EXPECT_NO_THROW(shape.validate());
}

}  // namespace
}  // namespace veda
