#include "veda/method/veda_attention.h"

#include <algorithm>
#include <cmath>
#include <map>

#include "veda/attention.h"
#include "veda/error.h"
#include "veda/method/two_pass_attention.h"
#include "veda/selection.h"
#include "veda/tile_scoring.h"
#include "veda/tile_statistics.h"

namespace veda::method {

void veda_select_head(std::span<const float> q_tiled, std::span<const float> k_tiled,
                      std::int64_t dim, float scale, const HeadProfile& head, bool keep_own_tile,
                      BlockIndex& index, std::int64_t b, std::int64_t h) {
  VEDA_CHECK(head.estimator.dim == dim, "profile estimator has head dim ", head.estimator.dim,
             "; q has ", dim);
  const std::vector<float> q_hat =
      project_tiles(tile_statistics(q_tiled, dim), dim, head.estimator.p_q);
  const std::vector<float> k_hat =
      project_tiles(tile_statistics(k_tiled, dim), dim, head.estimator.p_k);
  const std::vector<float> logits = tile_logits(q_hat, k_hat, dim, scale);
  if (head.threshold) {
    select_cumulative(logits, *head.threshold, keep_own_tile, index, b, h);
  } else {
    select_top_k(logits, keep_own_tile, index, b, h);
  }
}

VedaAttentionResult veda_attention_cpu(const TokensView& q, const TokensView& k,
                                       const TokensView& v, const Grid& grid,
                                       const LayerProfile& layer, std::optional<double> sparsity,
                                       AttentionKernel kernel, bool keep_own_tile) {
  q.validate("q");
  k.validate("k");
  v.validate("v");
  grid.validate();
  const std::int64_t batch = q.batch, n = q.tokens, heads = q.heads, dim = q.dim;
  VEDA_CHECK(k.tokens == n && v.tokens == n && k.heads == heads && v.heads == heads &&
                 k.dim == dim && v.dim == dim && k.batch == batch && v.batch == batch,
             "veda attention is self-attention: q, k, v must have equal [B, N, H, D]");
  VEDA_CHECK(grid.tokens() == n, "grid ", grid.str(), " holds ", grid.tokens(),
             " tokens; q has N = ", n);
  VEDA_CHECK(static_cast<std::int64_t>(layer.heads.size()) == heads, "profile layer ", layer.layer,
             " has ", layer.heads.size(), " heads; q has ", heads);
  const std::int64_t tiles = tile_count(n);
  // One budget for the whole index: the largest over heads (rows of smaller budgets are padded).
  std::int64_t budget = 1;
  for (const HeadProfile& head : layer.heads) {
    budget = std::max(budget, budget_for_sparsity(sparsity.value_or(head.sparsity), tiles));
  }
  VedaAttentionResult result;
  result.index = BlockIndex(batch, heads, tiles, tiles, budget);
  result.out.assign(batch * n * heads * dim, 0.0f);
  result.lse.assign(batch * n * heads, 0.0f);
  const float scale = 1.0f / std::sqrt(static_cast<float>(dim));
  std::map<std::string, std::vector<std::int32_t>> orders;  // one gather order per shape group

  std::vector<float> qt(n * dim), kt(n * dim), vt(n * dim), out(n * dim), lse(n);
  std::vector<float> frame_out(n * dim), frame_lse(n);
  for (std::int64_t b = 0; b < batch; ++b) {
    for (std::int64_t h = 0; h < heads; ++h) {
      const HeadProfile& head = layer.heads[h];
      auto [it, inserted] = orders.try_emplace(head.tile.str());
      if (inserted) it->second = tile_major_order(grid, head.tile);
      const std::vector<std::int32_t>& order = it->second;
      gather_rows(load_head(q, b, h), order, dim, qt);
      gather_rows(load_head(k, b, h), order, dim, kt);
      gather_rows(load_head(v, b, h), order, dim, vt);
      // Rows of this head use their own budget inside the shared index.
      BlockIndex head_index(1, 1, tiles, tiles,
                            budget_for_sparsity(sparsity.value_or(head.sparsity), tiles));
      veda_select_head(qt, kt, dim, scale, head, keep_own_tile, head_index, 0, 0);
      for (std::int64_t i = 0; i < tiles; ++i) {
        result.index.count(b, h, i) = head_index.count(0, 0, i);
        std::copy_n(head_index.row(0, 0, i), head_index.budget, result.index.row(b, h, i));
      }
      if (kernel == AttentionKernel::kReference) {
        attend_head(qt, kt, vt, dim, scale, head_index.counts.data(), head_index.indices.data(),
                    head_index.budget, out, lse);
      } else {
        attend_head_two_pass(qt, kt, vt, dim, scale, head_index.counts.data(),
                             head_index.indices.data(), head_index.budget, out, lse);
      }
      scatter_rows(out, order, dim, frame_out);
      scatter_rows(lse, order, 1, frame_lse);
      for (std::int64_t t = 0; t < n; ++t) {
        std::copy_n(frame_out.data() + t * dim, dim,
                    result.out.data() + ((b * n + t) * heads + h) * dim);
        result.lse[(b * n + t) * heads + h] = frame_lse[t];
      }
    }
  }
  return result;
}

}  // namespace veda::method
