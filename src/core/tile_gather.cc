#include "veda/tile_gather.h"

#include <algorithm>
#include <span>
#include <vector>

#include "veda/error.h"
#include "veda/tile_layout.h"
#include "veda/tile_scoring.h"
#include "veda/tile_selection.h"
#include "veda/tile_statistics.h"

namespace veda {

void TileGatherParams::validate() const {
  x.validate("x");
  VEDA_CHECK(order != nullptr && groups >= 1, "tile gather needs an order table of at least one ",
             "shape group; got ", groups, " groups", order ? "" : " and no table");
  VEDA_CHECK(head_group != nullptr || groups == 1, "tile gather of ", groups,
             " shape groups needs the group of each head");
}

void tile_gather_cpu(const TileGatherParams& params) {
  params.validate();
  const TokensView& x = params.x;
  const std::int64_t tokens = x.tokens, dim = x.dim, tiles = tile_count(tokens);
  std::vector<float> tiled(static_cast<std::size_t>(tokens * dim));
  for (std::int64_t h = 0; h < x.heads; ++h) {
    const std::int64_t group = params.head_group ? params.head_group[h] : 0;
    VEDA_CHECK(group >= 0 && group < params.groups, "head ", h, " is in shape group ", group,
               "; expected 0..", params.groups - 1);
    const std::span<const std::int32_t> order(params.order + group * tokens,
                                              static_cast<std::size_t>(tokens));
    for (std::int64_t b = 0; b < x.batch; ++b) {
      gather_rows(load_head(x, b, h), order, dim, tiled);
      const std::int64_t head = b * x.heads + h;
      if (params.x_tiled != nullptr) {
        for (std::int64_t e = 0; e < tokens * dim; ++e) {
          store_from_float(params.x_tiled, x.dtype, head * tokens * dim + e, tiled[e]);
        }
      }
      if (params.stats == nullptr && params.descriptors == nullptr) continue;
      const std::vector<float> stats = tile_statistics(tiled, dim);
      if (params.stats != nullptr) {
        std::copy(stats.begin(), stats.end(), params.stats + head * tiles * 3 * dim);
      }
      if (params.descriptors != nullptr) {
        const std::int64_t global = params.global_head ? params.global_head[h] : h;
        const std::span<const float> projection =
            params.diagonal_projection
                ? std::span<const float>(params.diagonal_projection + global * 3 * dim,
                                         static_cast<std::size_t>(3 * dim))
                : std::span<const float>();
        const std::vector<float> rows = project_tiles(stats, dim, projection);
        const std::int64_t width = descriptor_width(dim);
        float* out = params.descriptors + head * tiles * width;
        std::fill_n(out, tiles * width, 0.0f);
        for (std::int64_t t = 0; t < tiles; ++t) {
          std::copy_n(rows.begin() + t * dim, dim, out + t * width);
        }
      }
    }
  }
}

}  // namespace veda
