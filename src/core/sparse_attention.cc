#include "veda/sparse_attention.h"

#include <algorithm>
#include <cmath>

#include "veda/attention.h"
#include "veda/error.h"
#include "veda/oracle.h"
#include "veda/selection.h"
#include "veda/tile_scoring.h"
#include "veda/tile_statistics.h"

namespace veda {
namespace {

// [Tq, Tk] scores of one head in tile-major order; higher = keep. q_projection, k_projection:
// the head's [3D, D] (method veda) or empty (P = 0: mean pooling).
std::vector<float> score_head(MaskMethod method, std::span<const float> q, std::span<const float> k,
                              std::int64_t dim, float scale, std::span<const float> q_projection,
                              std::span<const float> k_projection) {
  if (method == MaskMethod::kOracle) {
    const std::vector<float> lse = row_lse(q, k, dim, scale);
    return tile_heat_and_mass(q, k, dim, scale, lse).heat;
  }
  const std::vector<float> q_hat = project_tiles(tile_statistics(q, dim), dim, q_projection);
  const std::vector<float> k_hat = project_tiles(tile_statistics(k, dim), dim, k_projection);
  return tile_logits(q_hat, k_hat, dim, scale);
}

constexpr MaskMethod kMethods[] = {MaskMethod::kDense, MaskMethod::kOracle, MaskMethod::kMeanPool,
                                   MaskMethod::kEstimator};

}  // namespace

std::string_view mask_method_name(MaskMethod method) {
  switch (method) {
    case MaskMethod::kDense:
      return "dense";
    case MaskMethod::kOracle:
      return "oracle";
    case MaskMethod::kMeanPool:
      return "meanpool";
    case MaskMethod::kEstimator:
      return "veda";
  }
  return "?";
}

MaskMethod parse_mask_method(std::string_view text) {
  for (MaskMethod method : kMethods) {
    if (mask_method_name(method) == text) return method;
  }
  detail::fail("method '", text, "' is not known; expected dense, oracle, meanpool or veda");
}

SparseAttentionResult sparse_attention_cpu(const TokensView& q, const TokensView& k,
                                           const TokensView& v,
                                           const SparseAttentionConfig& config) {
  validate_qkv(q, k, v);
  VEDA_CHECK(k.tokens == q.tokens, "q has N = ", q.tokens, " but k has N = ", k.tokens,
             "; sparse self-attention over a video grid needs equal lengths");
  VEDA_CHECK(config.threshold == 0.0 || (config.threshold > 0.0 && config.threshold <= 1.0),
             "cumulative threshold ", config.threshold, "; expected 0 (fixed budget) or (0, 1]");
  VEDA_CHECK(config.threshold == 0.0 || config.method == MaskMethod::kMeanPool ||
                 config.method == MaskMethod::kEstimator,
             "a cumulative threshold applies to the logit-scored methods meanpool and veda, not ",
             mask_method_name(config.method));
  VEDA_CHECK(config.grid.tokens() == q.tokens, "grid ", config.grid.str(), " has ",
             config.grid.tokens(), " tokens but q has N = ", q.tokens);
  config.tile.validate();
  const std::int64_t batch = q.batch, heads = q.heads, tokens = q.tokens, dim = q.dim;
  const std::int64_t tiles = tile_count(tokens);
  const float scale = 1.0f / std::sqrt(static_cast<float>(dim));
  const std::vector<std::int32_t> order = tile_major_order(config.grid, config.tile);
  const auto projection_size = static_cast<std::size_t>(3 * dim * dim);
  const bool estimator = config.method == MaskMethod::kEstimator;
  VEDA_CHECK(!estimator || (config.q_projection.size() == heads * projection_size &&
                            config.k_projection.size() == heads * projection_size),
             "method veda needs P_q and P_k of every head, float32 [H, 3D, D] = [", heads, ", ",
             3 * dim, ", ", dim, "] each; got ", config.q_projection.size(), " and ",
             config.k_projection.size(), " values");

  SparseAttentionResult result;
  result.index =
      config.method == MaskMethod::kDense
          ? BlockIndex::dense(batch, heads, tiles, tiles)
          : BlockIndex(batch, heads, tiles, tiles, budget_for_sparsity(config.sparsity, tiles));
  result.out.resize(static_cast<std::size_t>(batch * tokens * heads * dim));
  result.lse.resize(static_cast<std::size_t>(batch * tokens * heads));

  const auto head_size = static_cast<std::size_t>(tokens * dim);
  std::vector<float> q_tiled(head_size), k_tiled(head_size), v_tiled(head_size);
  std::vector<float> out_tiled(head_size), out_frame(head_size);
  std::vector<float> lse_tiled(static_cast<std::size_t>(tokens)), lse_frame(lse_tiled.size());
  for (std::int64_t b = 0; b < batch; ++b) {
    for (std::int64_t h = 0; h < heads; ++h) {
      gather_rows(load_head(q, b, h), order, dim, q_tiled);
      gather_rows(load_head(k, b, h), order, dim, k_tiled);
      gather_rows(load_head(v, b, h), order, dim, v_tiled);
      if (config.method != MaskMethod::kDense) {
        const auto head_projection = [&](std::span<const float> all) {
          return estimator
                     ? all.subspan(static_cast<std::size_t>(h) * projection_size, projection_size)
                     : std::span<const float>{};
        };
        const std::vector<float> scores =
            score_head(config.method, q_tiled, k_tiled, dim, scale,
                       head_projection(config.q_projection), head_projection(config.k_projection));
        if (config.threshold > 0.0) {
          select_cumulative(scores, config.threshold, config.keep_own_tile, result.index, b, h);
        } else {
          select_top_k(scores, config.keep_own_tile, result.index, b, h);
        }
      }
      const BlockIndexView index = result.index.view();
      attend_head(q_tiled, k_tiled, v_tiled, dim, scale, index.counts + (b * heads + h) * tiles,
                  index.row(b, h, 0), index.budget, out_tiled, lse_tiled);
      scatter_rows(out_tiled, order, dim, out_frame);
      scatter_rows(lse_tiled, order, 1, lse_frame);
      for (std::int64_t n = 0; n < tokens; ++n) {
        std::copy_n(out_frame.data() + n * dim, dim,
                    result.out.data() + ((b * tokens + n) * heads + h) * dim);
        result.lse[static_cast<std::size_t>((b * tokens + n) * heads + h)] = lse_frame[n];
      }
    }
  }
  return result;
}

}  // namespace veda
