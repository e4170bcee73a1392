#include "veda/method/multi_shape_oracle.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>

#include "dense_kernels.h"
#include "vector_math.h"
#include "veda/error.h"

namespace veda::method {
namespace {

using detail::load16;
using detail::store16;
using detail::Vec16;

constexpr std::int64_t kRows = 64;      // query rows per block: S is [64, N] per thread
constexpr std::int64_t kColBlock = 64;  // key columns per register block (4 vectors)

std::int64_t round_up(std::int64_t x, std::int64_t m) { return (x + m - 1) / m * m; }

// Number of atoms (distinct tuples of tiles) of a set of shapes.
std::int64_t count_atoms(const Grid& grid, std::span<const TileShape> shapes) {
  const std::int64_t n = grid.tokens();
  std::vector<std::vector<std::int32_t>> tile_of;
  for (const TileShape& shape : shapes) {
    const std::vector<std::int32_t> order = tile_major_order(grid, shape);
    tile_of.emplace_back(n);
    for (std::int64_t i = 0; i < n; ++i) {
      tile_of.back()[order[i]] = static_cast<std::int32_t>(i / kTileTokens);
    }
  }
  std::vector<std::int32_t> tokens(n);
  std::iota(tokens.begin(), tokens.end(), 0);
  auto less = [&](std::int32_t a, std::int32_t b) {
    for (const auto& tiles : tile_of) {
      if (tiles[a] != tiles[b]) return tiles[a] < tiles[b];
    }
    return false;
  };
  std::sort(tokens.begin(), tokens.end(), less);
  std::int64_t atoms = n > 0 ? 1 : 0;
  for (std::int64_t i = 1; i < n; ++i) atoms += less(tokens[i - 1], tokens[i]) ? 1 : 0;
  return atoms;
}

// One pass over Q K^T for a group of shapes whose atoms are few enough.
MultiShapeOracle oracle_pass(std::span<const float> q, std::span<const float> k,
                             std::span<const float> v, std::int64_t dim, float scale,
                             const Grid& grid, std::span<const TileShape> shapes) {
  const std::int64_t n = grid.tokens();
  // Tile of every token in every shape, then atoms = tokens with equal tiles in all shapes,
  // listed in the first shape's tile-major order.
  const auto shape_count = static_cast<std::int64_t>(shapes.size());
  MultiShapeOracle result;
  std::vector<std::vector<std::int32_t>> tile_of(shape_count, std::vector<std::int32_t>(n));
  std::vector<std::int32_t> position0(n);
  for (std::int64_t s = 0; s < shape_count; ++s) {
    ShapeOracle shape_oracle;
    shape_oracle.shape = shapes[s];
    shape_oracle.order = tile_major_order(grid, shapes[s]);
    for (std::int64_t i = 0; i < n; ++i) {
      tile_of[s][shape_oracle.order[i]] = static_cast<std::int32_t>(i / kTileTokens);
      if (s == 0) position0[shape_oracle.order[i]] = static_cast<std::int32_t>(i);
    }
    result.shapes.push_back(std::move(shape_oracle));
  }
  std::vector<std::int32_t> atom_order(n);  // atom-major position -> frame-major token
  std::iota(atom_order.begin(), atom_order.end(), 0);
  std::sort(atom_order.begin(), atom_order.end(), [&](std::int32_t a, std::int32_t b) {
    for (std::int64_t s = 0; s < shape_count; ++s) {
      if (tile_of[s][a] != tile_of[s][b]) return tile_of[s][a] < tile_of[s][b];
    }
    return position0[a] < position0[b];
  });
  std::vector<std::int64_t> atom_start = {0};  // [A + 1]
  for (std::int64_t i = 1; i < n; ++i) {
    const std::int32_t a = atom_order[i - 1], b = atom_order[i];
    for (std::int64_t s = 0; s < shape_count; ++s) {
      if (tile_of[s][a] != tile_of[s][b]) {
        atom_start.push_back(i);
        break;
      }
    }
  }
  atom_start.push_back(n);
  const auto atoms = static_cast<std::int64_t>(atom_start.size()) - 1;
  result.atoms = atoms;
  std::vector<std::int32_t> atom_of_row(n);
  for (std::int64_t a = 0; a < atoms; ++a) {
    std::fill(atom_of_row.begin() + atom_start[a], atom_of_row.begin() + atom_start[a + 1],
              static_cast<std::int32_t>(a));
  }

  // Operands in atom order, zero-padded: q [N, Dp], K^T [Dp, Np], v [Np, Dp] with Dp a multiple
  // of 64 (pv_block's register block) and Np of 64 (score_block's).
  const std::int64_t dims = round_up(dim, 64), cols = round_up(n, kColBlock);
  std::vector<float> qa(n * dims, 0.0f), kt(dims * cols, 0.0f), va;
  const bool with_out = !v.empty();
  if (with_out) va.assign(cols * dims, 0.0f);
  for (std::int64_t i = 0; i < n; ++i) {
    const std::int64_t token = atom_order[i];
    for (std::int64_t d = 0; d < dim; ++d) {
      qa[i * dims + d] = q[token * dim + d];
      kt[d * cols + i] = k[token * dim + d];
      if (with_out) va[i * dims + d] = v[token * dim + d];
    }
  }

  // Work items: runs of whole atoms with at most 64 rows, or one larger atom alone; a work item
  // owns its atoms' rows of the atom maps, so threads never write the same entry.
  std::vector<std::int64_t> item_start = {0};
  for (std::int64_t a = 0; a < atoms; ++a) {
    const std::int64_t begin = atom_start[item_start.back()];
    if (atom_start[a + 1] - begin > kRows && a > item_start.back()) item_start.push_back(a);
  }
  item_start.push_back(atoms);
  const auto items = static_cast<std::int64_t>(item_start.size()) - 1;

  std::vector<float> atom_heat(atoms * atoms, 0.0f), atom_mass(atoms * atoms, 0.0f);
  std::vector<float> lse_atom(n), out_atom(with_out ? n * dims : 0);

#pragma omp parallel
  {
    std::vector<float> q_block(kRows * dims), s(kRows * cols), o(kRows * dims);
    std::vector<float> col_max(cols), col_sum(cols);
#pragma omp for schedule(dynamic, 1)
    for (std::int64_t item = 0; item < items; ++item) {
      const std::int64_t row_begin = atom_start[item_start[item]];
      const std::int64_t row_end = atom_start[item_start[item + 1]];
      for (std::int64_t r0 = row_begin; r0 < row_end; r0 += kRows) {
        const std::int64_t rows = std::min(kRows, row_end - r0);
        std::fill(q_block.begin(), q_block.end(), 0.0f);
        std::copy_n(qa.data() + r0 * dims, rows * dims, q_block.data());
        detail::score_rows(q_block.data(), kRows, dims, kt.data(), cols, 0, cols, scale, s.data(),
                           cols);
        // Row softmax in place: s <- p = exp(s - lse), zero on padded columns.
        for (std::int64_t r = 0; r < rows; ++r) {
          float* row = s.data() + r * cols;
          float row_max = -std::numeric_limits<float>::infinity();
          for (std::int64_t c = 0; c < n; ++c) row_max = std::max(row_max, row[c]);
          // Padded keys: exp16 of -inf is ~1e-38 (clamped), zeroed below.
          std::fill(row + n, row + cols, -std::numeric_limits<float>::infinity());
          Vec16 sum{};
          for (std::int64_t c = 0; c < cols; c += detail::kLanes) {
            const Vec16 e = detail::exp16(load16(row + c) - row_max);
            store16(row + c, e);
            sum += e;
          }
          std::fill(row + n, row + cols, 0.0f);
          const float total = detail::hsum16(sum);
          const float inverse = 1.0f / total;
          for (std::int64_t c = 0; c < n; ++c) row[c] *= inverse;
          lse_atom[r0 + r] = row_max + std::log(total);
        }
        // Per query atom in this block: column max / sum over its rows, then per key atom.
        for (std::int64_t r = 0; r < rows;) {
          const std::int64_t a = atom_of_row[r0 + r];
          const std::int64_t r_end = std::min(rows, atom_start[a + 1] - r0);
          std::copy_n(s.data() + r * cols, cols, col_max.data());
          std::copy_n(s.data() + r * cols, cols, col_sum.data());
          for (std::int64_t rr = r + 1; rr < r_end; ++rr) {
            const float* row = s.data() + rr * cols;
            for (std::int64_t c = 0; c < cols; c += detail::kLanes) {
              store16(col_max.data() + c,
                      detail::max16(load16(col_max.data() + c), load16(row + c)));
              store16(col_sum.data() + c, load16(col_sum.data() + c) + load16(row + c));
            }
          }
          float* heat_row = atom_heat.data() + a * atoms;
          float* mass_row = atom_mass.data() + a * atoms;
          for (std::int64_t b = 0; b < atoms; ++b) {
            float m = heat_row[b], total = 0;
            for (std::int64_t c = atom_start[b]; c < atom_start[b + 1]; ++c) {
              m = std::max(m, col_max[c]);
              total += col_sum[c];
            }
            heat_row[b] = m;
            mass_row[b] += total;
          }
          r = r_end;
        }
        if (with_out) {
          std::fill(o.begin(), o.end(), 0.0f);
          detail::accumulate_pv_rows(s.data(), cols, round_up(rows, 4), va.data(), 0, cols, dims,
                                     o.data());
          for (std::int64_t r = 0; r < rows; ++r) {
            std::copy_n(o.data() + r * dims, dims, out_atom.data() + (r0 + r) * dims);
          }
        }
      }
    }
  }

  // Back to frame-major rows.
  result.lse.resize(n);
  if (with_out) result.out.resize(n * dim);
  for (std::int64_t i = 0; i < n; ++i) {
    const std::int64_t token = atom_order[i];
    result.lse[token] = lse_atom[i];
    if (with_out) std::copy_n(out_atom.data() + i * dims, dim, result.out.data() + token * dim);
  }

  // Shape maps: heat = max, mass = sum / rows of the query tile, over the atoms of each tile pair.
  for (std::int64_t s = 0; s < shape_count; ++s) {
    TileMaps& maps = result.shapes[s].maps;
    maps.q_tiles = maps.k_tiles = tile_count(n);
    const std::int64_t tiles = maps.q_tiles;
    maps.heat.assign(tiles * tiles, 0.0f);
    std::vector<double> mass(tiles * tiles, 0.0);
    std::vector<std::int32_t> atom_tile(atoms);
    for (std::int64_t a = 0; a < atoms; ++a) atom_tile[a] = tile_of[s][atom_order[atom_start[a]]];
    for (std::int64_t a = 0; a < atoms; ++a) {
      const std::int64_t i = atom_tile[a];
      for (std::int64_t b = 0; b < atoms; ++b) {
        const std::int64_t entry = i * tiles + atom_tile[b];
        maps.heat[entry] = std::max(maps.heat[entry], atom_heat[a * atoms + b]);
        mass[entry] += atom_mass[a * atoms + b];
      }
    }
    maps.mass.resize(tiles * tiles);
    for (std::int64_t i = 0; i < tiles; ++i) {
      const std::int64_t rows = std::min(kTileTokens, n - i * kTileTokens);
      for (std::int64_t j = 0; j < tiles; ++j) {
        maps.mass[i * tiles + j] =
            static_cast<float>(mass[i * tiles + j] / static_cast<double>(rows));
      }
    }
  }
  return result;
}

}  // namespace

MultiShapeOracle multi_shape_oracle(std::span<const float> q, std::span<const float> k,
                                    std::span<const float> v, std::int64_t dim, float scale,
                                    const Grid& grid, std::span<const TileShape> shapes,
                                    std::int64_t max_atoms) {
  grid.validate();
  const std::int64_t n = grid.tokens();
  VEDA_CHECK(dim > 0 && static_cast<std::int64_t>(q.size()) == n * dim &&
                 static_cast<std::int64_t>(k.size()) == n * dim &&
                 (v.empty() || v.size() == k.size()),
             "multi-shape oracle got q, k, v of ", q.size(), ", ", k.size(), ", ", v.size(),
             " floats; grid ", grid.str(), " with head dim ", dim, " needs ", n * dim, " each");
  VEDA_CHECK(!shapes.empty(), "multi-shape oracle needs at least one tile shape");
  for (const TileShape& shape : shapes) shape.validate();

  // Atom maps are [A, A] floats twice: the default 8192 atoms = 512 MB. Grids whose candidate
  // tilings refine into more atoms (21x45x80 with the 7 standard shapes: 7,974; 41x45x80: ~16k)
  // take several passes, each over a group of consecutive shapes (a single shape always forms one).
  std::vector<std::size_t> group_start = {0};
  for (std::size_t s = 1; s < shapes.size(); ++s) {
    const std::size_t begin = group_start.back();
    if (count_atoms(grid, shapes.subspan(begin, s + 1 - begin)) > max_atoms) {
      group_start.push_back(s);
    }
  }
  group_start.push_back(shapes.size());
  MultiShapeOracle result;
  for (std::size_t g = 0; g + 1 < group_start.size(); ++g) {
    const auto group = shapes.subspan(group_start[g], group_start[g + 1] - group_start[g]);
    MultiShapeOracle pass =
        oracle_pass(q, k, g == 0 ? v : std::span<const float>{}, dim, scale, grid, group);
    if (g == 0) {
      result.lse = std::move(pass.lse);
      result.out = std::move(pass.out);
    }
    result.atoms = std::max(result.atoms, pass.atoms);
    ++result.passes;
    for (ShapeOracle& shape : pass.shapes) result.shapes.push_back(std::move(shape));
  }
  return result;
}

}  // namespace veda::method
