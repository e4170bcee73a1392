#include "veda/method/tiling_search.h"

#include <functional>
#include <limits>
#include <map>

#include "veda/error.h"
#include "veda/method/two_pass_attention.h"
#include "veda/selection.h"

namespace veda::method {

SquaredError mask_output_error(std::span<const float> q, std::span<const float> k,
                               std::span<const float> v, std::int64_t dim, float scale,
                               std::span<const std::int32_t> order, const BlockIndex& index,
                               std::span<const float> dense_out) {
  VEDA_CHECK(
      dense_out.size() == q.size() && order.size() * static_cast<std::size_t>(dim) == q.size(),
      "mask error: dense output of ", dense_out.size(), " floats and an order of ", order.size(),
      " tokens for q of ", q.size(), " floats");
  const auto n = static_cast<std::int64_t>(order.size());
  std::vector<float> qt(n * dim), kt(n * dim), vt(n * dim), out(n * dim), lse(n);
  gather_rows(q, order, dim, qt);
  gather_rows(k, order, dim, kt);
  gather_rows(v, order, dim, vt);
  attend_head_two_pass(qt, kt, vt, dim, scale, index.counts.data(), index.indices.data(),
                       index.budget, out, lse);
  SquaredError result;
  for (std::int64_t i = 0; i < n; ++i) {
    const float* want = dense_out.data() + static_cast<std::int64_t>(order[i]) * dim;
    for (std::int64_t d = 0; d < dim; ++d) {
      const double delta = static_cast<double>(out[i * dim + d]) - want[d];
      result.error += delta * delta;
      result.norm += static_cast<double>(want[d]) * want[d];
    }
  }
  return result;
}

SquaredError oracle_mask_error(std::span<const float> q, std::span<const float> k,
                               std::span<const float> v, std::int64_t dim, float scale,
                               const ShapeOracle& shape, std::span<const float> dense_out,
                               double sparsity, bool keep_own_tile) {
  const TileMaps& maps = shape.maps;
  BlockIndex index(1, 1, maps.q_tiles, maps.k_tiles, budget_for_sparsity(sparsity, maps.k_tiles));
  select_top_k(maps.heat, keep_own_tile, index, 0, 0);
  return mask_output_error(q, k, v, dim, scale, shape.order, index, dense_out);
}

std::vector<int> choose_tile_shapes(const std::vector<std::vector<double>>& errors,
                                    int max_shapes) {
  VEDA_CHECK(!errors.empty() && !errors[0].empty(), "tile search needs at least one head and ",
             "one candidate shape");
  const auto heads = errors.size();
  const auto candidates = static_cast<int>(errors[0].size());
  for (const auto& row : errors) {
    VEDA_CHECK(static_cast<int>(row.size()) == candidates, "tile search: a head has ", row.size(),
               " candidate errors; expected ", candidates);
  }
  std::vector<int> best_choice(heads, 0);
  if (max_shapes <= 0 || max_shapes >= candidates) {
    for (std::size_t h = 0; h < heads; ++h) {
      for (int s = 1; s < candidates; ++s) {
        if (errors[h][s] < errors[h][best_choice[h]]) best_choice[h] = s;
      }
    }
    return best_choice;
  }
  // Every subset of max_shapes candidates; each head takes its best member of the subset.
  double best_total = std::numeric_limits<double>::infinity();
  std::vector<int> subset;
  std::function<void(int)> visit = [&](int next) {
    if (static_cast<int>(subset.size()) == max_shapes) {
      double total = 0;
      std::vector<int> choice(heads);
      for (std::size_t h = 0; h < heads; ++h) {
        choice[h] = subset[0];
        for (int s : subset) {
          if (errors[h][s] < errors[h][choice[h]]) choice[h] = s;
        }
        total += errors[h][choice[h]];
      }
      if (total < best_total) {
        best_total = total;
        best_choice = choice;
      }
      return;
    }
    for (int s = next; s < candidates; ++s) {
      subset.push_back(s);
      visit(s + 1);
      subset.pop_back();
    }
  };
  visit(0);
  return best_choice;
}

TilingSummary summarize_tiling(const LayerProfile& layer) {
  VEDA_CHECK(!layer.heads.empty(), "tiling summary of a layer without heads");
  std::map<std::string, double> single;  // shape -> sum over heads
  TilingSummary summary;
  for (const HeadProfile& head : layer.heads) {
    const auto chosen = head.calibration.find("err_" + head.tile.str());
    VEDA_CHECK(chosen != head.calibration.end(), "layer ", layer.layer,
               " has a head without search errors (err_", head.tile.str(), ")");
    summary.head_aware += chosen->second;
    for (const auto& [key, value] : head.calibration) {
      if (key.rfind("err_", 0) == 0) single[key.substr(4)] += value;
    }
  }
  const auto heads = static_cast<double>(layer.heads.size());
  summary.head_aware /= heads;
  summary.best_single = std::numeric_limits<double>::infinity();
  for (const auto& [shape, total] : single) {
    if (total / heads < summary.best_single) {
      summary.best_single = total / heads;
      summary.best_single_shape = shape;
    }
  }
  return summary;
}

}  // namespace veda::method
