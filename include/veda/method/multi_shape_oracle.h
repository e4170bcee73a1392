// The oracle of one head for several tile shapes at once, in a single dense pass.
//
// Calling row_lse + tile_heat_and_mass per candidate shape costs 1 + (number of shapes) dense
// passes over Q K^T (8 for the 7 standard shapes). Here the tokens are grouped into "atoms": the
// common refinement of all shapes' tilings (tokens sharing a tile in every shape; for grids that
// the standard shapes divide, the 1x4x4 boxes, 16 tokens). One pass over query atoms computes each
// row's exact lse from the whole row, p = exp(s q.k - lse), and per atom pair the max and the sum
// of p (plus, optionally, the dense output p V). Every shape's heat is a max and its mass a sum of
// atom entries, so all shapes' maps follow exactly from the atom maps ([A, A], A = N/16 for those
// grids).
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "veda/oracle.h"
#include "veda/tile_layout.h"

namespace veda::method {

struct ShapeOracle {
  TileShape shape;
  std::vector<std::int32_t> order;  // tile-major order of this shape (tile_major_order)
  TileMaps maps;                    // heat and mass over this shape's tiles, as tile_heat_and_mass
};

struct MultiShapeOracle {
  std::int64_t atoms = 0;   // atoms of the largest pass
  std::int64_t passes = 0;  // passes over Q K^T: 1 unless the atoms of all shapes exceed max_atoms
  std::vector<float> lse;   // [N] frame-major, as row_lse
  std::vector<float> out;   // [N, D] frame-major dense output; empty when v was not given
  std::vector<ShapeOracle> shapes;
};

// q, k, v: one head, float32 [N, D] in frame-major order over `grid`; v may be empty.
// max_atoms bounds the atoms of one pass (tests lower it to exercise several passes).
MultiShapeOracle multi_shape_oracle(std::span<const float> q, std::span<const float> k,
                                    std::span<const float> v, std::int64_t dim, float scale,
                                    const Grid& grid, std::span<const TileShape> shapes,
                                    std::int64_t max_atoms = 8192);

}  // namespace veda::method
