#include "veda/attention.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include "tile_products.h"
#include "veda/error.h"
#include "veda/tile_layout.h"

namespace veda {
namespace {

constexpr float kNegativeInfinity = -std::numeric_limits<float>::infinity();

// Online-softmax state of one query tile: running max m, running sum l, unnormalised O.
struct TileAccumulator {
  std::vector<float> scores, out, max, sum;
  explicit TileAccumulator(std::int64_t padded_dim)
      : scores(kTileTokens * kTileTokens),
        out(static_cast<std::size_t>(kTileTokens * padded_dim), 0.0f),
        max(kTileTokens, kNegativeInfinity),
        sum(kTileTokens, 0.0f) {}

  // scores holds s for key tile columns [0, valid_cols); turn it into p and rescale O.
  void softmax_step(std::int64_t valid_cols, std::int64_t padded_dim) {
    for (std::int64_t r = 0; r < kTileTokens; ++r) {
      float* s = scores.data() + r * kTileTokens;
      float row_max = max[r];
      for (std::int64_t c = 0; c < valid_cols; ++c) row_max = std::max(row_max, s[c]);
      const float alpha = max[r] == kNegativeInfinity ? 0.0f : std::exp(max[r] - row_max);
      float row_sum = 0.0f;
      for (std::int64_t c = 0; c < valid_cols; ++c) row_sum += s[c] = std::exp(s[c] - row_max);
      std::fill(s + valid_cols, s + kTileTokens, 0.0f);
      sum[r] = sum[r] * alpha + row_sum;
      max[r] = row_max;
      float* o = out.data() + r * padded_dim;
      for (std::int64_t d = 0; d < padded_dim; ++d) o[d] *= alpha;
    }
  }
};

void check_head_operands(std::span<const float> q, std::span<const float> k,
                         std::span<const float> v, std::int64_t dim, std::span<float> out,
                         std::span<float> lse) {
  const auto row = static_cast<std::size_t>(dim);
  VEDA_CHECK(dim > 0 && !q.empty() && !k.empty() && q.size() % row == 0 && k.size() % row == 0 &&
                 v.size() == k.size(),
             "attention of q, k, v with ", q.size(), ", ", k.size(), ", ", v.size(),
             " floats and head dim ", dim, "; expected [Nq, D], [Nk, D], [Nk, D]");
  VEDA_CHECK(out.size() == q.size() && lse.size() == q.size() / row, "attention outputs of ",
             out.size(), " and ", lse.size(), " floats; expected ", q.size(), " and ",
             q.size() / row);
}

// Head (b, h) of an index in the padded layout attend_head takes: counts [Tq], rows [Tq, budget]
// (either form of the view).
struct HeadLists {
  std::vector<std::int32_t> counts, rows;
  std::int64_t budget = 0;
};
HeadLists head_lists(const BlockIndexView& index, std::int64_t b, std::int64_t h) {
  HeadLists lists;
  lists.counts.resize(static_cast<std::size_t>(index.q_tiles));
  for (std::int64_t i = 0; i < index.q_tiles; ++i) {
    lists.counts[i] = index.count(b, h, i);
    lists.budget = std::max<std::int64_t>(lists.budget, lists.counts[i]);
  }
  lists.rows.assign(static_cast<std::size_t>(index.q_tiles * lists.budget), kPaddedSlot);
  for (std::int64_t i = 0; i < index.q_tiles; ++i) {
    std::copy_n(index.row(b, h, i), lists.counts[i], lists.rows.begin() + i * lists.budget);
  }
  return lists;
}

}  // namespace

void attend_head(std::span<const float> q, std::span<const float> k, std::span<const float> v,
                 std::int64_t dim, float scale, const std::int32_t* counts,
                 const std::int32_t* rows, std::int64_t budget, std::span<float> out,
                 std::span<float> lse) {
  check_head_operands(q, k, v, dim, out, lse);
  const detail::PaddedRows q_padded = detail::pad_rows(q, dim);
  const detail::PaddedColumns k_transposed = detail::pad_transposed(k, dim);
  const detail::PaddedRows v_padded = detail::pad_rows(v, dim);
  const std::int64_t q_rows = q_padded.rows, k_rows = k_transposed.cols;
  const std::int64_t k_tiles = k_transposed.tiles, padded_dim = q_padded.padded_dim;

#pragma omp parallel for schedule(dynamic, 1)
  for (std::int64_t i = 0; i < q_padded.tiles; ++i) {
    TileAccumulator tile(padded_dim);
    const std::int64_t count = counts ? counts[i] : k_tiles;
    for (std::int64_t slot = 0; slot < count; ++slot) {
      const std::int64_t j = counts ? rows[i * budget + slot] : slot;
      detail::score_tile(q_padded.tile(i), k_transposed, j, scale, tile.scores.data());
      tile.softmax_step(std::min(kTileTokens, k_rows - j * kTileTokens), padded_dim);
      detail::accumulate_pv(tile.scores.data(), v_padded.tile(j), padded_dim, tile.out.data());
    }
    const std::int64_t valid_rows = std::min(kTileTokens, q_rows - i * kTileTokens);
    for (std::int64_t r = 0; r < valid_rows; ++r) {
      const std::int64_t n = i * kTileTokens + r;
      const float sum = tile.sum[r];
      // An empty list leaves sum = 0: O = 0 and lse = -inf, never 0/0.
      const float inverse = sum > 0.0f ? 1.0f / sum : 0.0f;
      for (std::int64_t d = 0; d < dim; ++d)
        out[n * dim + d] = tile.out[r * padded_dim + d] * inverse;
      lse[n] = sum > 0.0f ? tile.max[r] + std::log(sum) : kNegativeInfinity;
    }
  }
}

void validate_qkv(const TokensView& q, const TokensView& k, const TokensView& v) {
  q.validate("q");
  k.validate("k");
  v.validate("v");
  VEDA_CHECK(k.batch == q.batch && v.batch == q.batch && k.heads == q.heads && v.heads == q.heads &&
                 k.dim == q.dim && v.dim == q.dim && v.tokens == k.tokens,
             "q [", q.batch, ", ", q.tokens, ", ", q.heads, ", ", q.dim, "], k [", k.batch, ", ",
             k.tokens, ", ", k.heads, ", ", k.dim, "] and v [", v.batch, ", ", v.tokens, ", ",
             v.heads, ", ", v.dim, "] do not agree; expected equal B, H, D and equal N for k, v");
}

void AttentionParams::validate() const {
  validate_qkv(q, k, v);
  VEDA_CHECK(std::isfinite(scale) && scale != 0.0f, "softmax scale ", scale,
             " is not a finite non-zero number");
  VEDA_CHECK(out != nullptr && is_floating(out_dtype), "attention output is ",
             out ? "of dtype " : "null", out ? dtype_name(out_dtype) : "",
             "; expected F32, F16 or BF16 memory");
  if (index != nullptr) {
    VEDA_CHECK(index->batch == q.batch && index->heads == q.heads &&
                   index->q_tiles == tile_count(q.tokens) && index->k_tiles == tile_count(k.tokens),
               "block index covers ", index->batch, " batches x ", index->heads, " heads x ",
               index->q_tiles, " query tiles x ", index->k_tiles, " key tiles; q and k need ",
               q.batch, " x ", q.heads, " x ", tile_count(q.tokens), " x ", tile_count(k.tokens));
  }
  VEDA_CHECK(!read_through_order || (out_order != nullptr && q.tokens == k.tokens),
             "attention reads q, k, v through out_order, but ",
             out_order == nullptr ? "out_order is null"
                                  : "q has " + std::to_string(q.tokens) + " tokens and k " +
                                        std::to_string(k.tokens),
             "; expected an out_order and as many query as key tokens");
  VEDA_CHECK(!read_queries_through_order || out_order != nullptr,
             "attention reads q through out_order, but out_order is null; expected an out_order");
  if (!box_shapes.empty()) {
    box_grid.validate();
    VEDA_CHECK(read_through_order && box_grid.tokens() == q.tokens,
               "attention got the tile shapes of its orders for grid ", box_grid.str(), " (",
               box_grid.tokens(), " tokens) ",
               read_through_order ? "" : "without read_through_order ", "and q of ", q.tokens,
               " tokens; expected read_through_order and a grid of q's tokens");
    for (const TileShape& shape : box_shapes) shape.validate();
  }
}

void attention_cpu(const AttentionParams& params) {
  params.validate();
  if (params.index != nullptr) params.index->validate();
  const TokensView& q = params.q;
  const std::int64_t dim = q.dim;
  std::vector<float> out(static_cast<std::size_t>(q.tokens * dim));
  std::vector<float> lse(static_cast<std::size_t>(q.tokens));
  for (std::int64_t b = 0; b < q.batch; ++b) {
    for (std::int64_t h = 0; h < q.heads; ++h) {
      const std::int32_t* order =
          params.out_order
              ? params.out_order + (params.out_head_group ? params.out_head_group[h] : 0) * q.tokens
              : nullptr;
      // Row r of the head as attention sees it: row order[r] when reading through the order.
      const auto head_rows = [&](const TokensView& x, bool through_order) {
        std::vector<float> rows = load_head(x, b, h);
        if (!through_order) return rows;
        std::vector<float> permuted(rows.size());
        gather_rows(rows, {order, static_cast<std::size_t>(x.tokens)}, dim, permuted);
        return permuted;
      };
      const HeadLists lists = params.index ? head_lists(*params.index, b, h) : HeadLists{};
      const bool all = params.read_through_order;
      attend_head(head_rows(q, all || params.read_queries_through_order), head_rows(params.k, all),
                  head_rows(params.v, all), dim, params.scale,
                  params.index ? lists.counts.data() : nullptr, lists.rows.data(), lists.budget,
                  out, lse);
      for (std::int64_t r = 0; r < q.tokens; ++r) {
        const std::int64_t n = order ? order[r] : r;  // the row this result is stored at
        const std::int64_t base =
            b * params.out_stride_batch + n * params.out_stride_token + h * params.out_stride_head;
        for (std::int64_t d = 0; d < dim; ++d) {
          store_from_float(params.out, params.out_dtype, base + d, out[r * dim + d]);
        }
        if (params.lse != nullptr) {
          params.lse[b * params.lse_stride_batch + n * params.lse_stride_token +
                     h * params.lse_stride_head] = lse[r];
        }
      }
    }
  }
}

}  // namespace veda
