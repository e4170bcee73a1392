#include "attention_evaluation.h"

#include <chrono>
#include <cmath>

#include "veda/metrics.h"
#include "veda/oracle.h"
#include "veda/tile_layout.h"

namespace veda::cli {

TimedResult run_timed(const TokensView& q, const TokensView& k, const TokensView& v,
                      const SparseAttentionConfig& config) {
  const auto start = std::chrono::steady_clock::now();
  TimedResult timed{sparse_attention_cpu(q, k, v, config)};
  timed.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return timed;
}

std::vector<std::vector<float>> oracle_tile_mass(const TokensView& q, const TokensView& k,
                                                 const SparseAttentionConfig& config) {
  const std::int64_t dim = q.dim;
  // The scale sparse_attention_cpu uses.
  const float scale = 1.0f / std::sqrt(static_cast<float>(dim));
  const std::vector<std::int32_t> order = tile_major_order(config.grid, config.tile);
  std::vector<float> q_tiled(static_cast<std::size_t>(q.tokens * dim));
  std::vector<float> k_tiled(static_cast<std::size_t>(k.tokens * dim));
  std::vector<std::vector<float>> mass;
  for (std::int64_t b = 0; b < q.batch; ++b) {
    for (std::int64_t h = 0; h < q.heads; ++h) {
      gather_rows(load_head(q, b, h), order, dim, q_tiled);
      gather_rows(load_head(k, b, h), order, dim, k_tiled);
      const std::vector<float> lse = row_lse(q_tiled, k_tiled, dim, scale);
      mass.push_back(tile_heat_and_mass(q_tiled, k_tiled, dim, scale, lse).mass);
    }
  }
  return mass;
}

double mean_mass_recall(const BlockIndex& selected, const std::vector<std::vector<float>>& mass) {
  const BlockIndexView view = selected.view();
  double total = 0.0;
  for (std::int64_t b = 0; b < view.batch; ++b) {
    for (std::int64_t h = 0; h < view.heads; ++h) {
      total += mass_recall(view, b, h, mass[static_cast<std::size_t>(b * view.heads + h)]);
    }
  }
  return total / static_cast<double>(view.batch * view.heads);
}

}  // namespace veda::cli
