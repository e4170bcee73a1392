#include "veda/oracle.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "tile_products.h"
#include "veda/error.h"

namespace veda {
namespace {

void check_qk(std::span<const float> q, std::span<const float> k, std::int64_t dim) {
  const auto row = static_cast<std::size_t>(dim);
  VEDA_CHECK(dim > 0 && !q.empty() && !k.empty() && q.size() % row == 0 && k.size() % row == 0,
             "oracle of q, k with ", q.size(), " and ", k.size(), " floats and head dim ", dim,
             "; expected [Nq, D] and [Nk, D]");
}

}  // namespace

std::vector<float> row_lse(std::span<const float> q, std::span<const float> k, std::int64_t dim,
                           float scale) {
  check_qk(q, k, dim);
  const detail::PaddedRows q_padded = detail::pad_rows(q, dim);
  const detail::PaddedColumns k_transposed = detail::pad_transposed(k, dim);
  std::vector<float> lse(static_cast<std::size_t>(q_padded.rows));
#pragma omp parallel for schedule(dynamic, 1)
  for (std::int64_t i = 0; i < q_padded.tiles; ++i) {
    std::vector<float> scores(kTileTokens * kTileTokens);
    std::vector<float> max(kTileTokens, -std::numeric_limits<float>::infinity());
    std::vector<double> sum(kTileTokens, 0.0);  // float64 sums: N up to 250k terms
    for (std::int64_t j = 0; j < k_transposed.tiles; ++j) {
      detail::score_tile(q_padded.tile(i), k_transposed, j, scale, scores.data());
      const std::int64_t cols = std::min(kTileTokens, k_transposed.cols - j * kTileTokens);
      for (std::int64_t r = 0; r < kTileTokens; ++r) {
        const float* s = scores.data() + r * kTileTokens;
        const float row_max = std::max(max[r], *std::max_element(s, s + cols));
        float row_sum = 0.0f;  // <= 128 terms, each <= 1
        for (std::int64_t c = 0; c < cols; ++c) row_sum += std::exp(s[c] - row_max);
        sum[r] = sum[r] * std::exp(static_cast<double>(max[r]) - row_max) + row_sum;
        max[r] = row_max;
      }
    }
    const std::int64_t rows = std::min(kTileTokens, q_padded.rows - i * kTileTokens);
    for (std::int64_t r = 0; r < rows; ++r) {
      lse[i * kTileTokens + r] = static_cast<float>(max[r] + std::log(sum[r]));
    }
  }
  return lse;
}

TileMaps tile_heat_and_mass(std::span<const float> q, std::span<const float> k, std::int64_t dim,
                            float scale, std::span<const float> lse) {
  check_qk(q, k, dim);
  VEDA_CHECK(lse.size() == q.size() / static_cast<std::size_t>(dim), "lse has ", lse.size(),
             " rows; q has ", q.size() / static_cast<std::size_t>(dim));
  const detail::PaddedRows q_padded = detail::pad_rows(q, dim);
  const detail::PaddedColumns k_transposed = detail::pad_transposed(k, dim);
  TileMaps maps;
  maps.q_tiles = q_padded.tiles;
  maps.k_tiles = k_transposed.tiles;
  maps.heat.assign(static_cast<std::size_t>(maps.q_tiles * maps.k_tiles), 0.0f);
  maps.mass.assign(maps.heat.size(), 0.0f);
#pragma omp parallel for schedule(dynamic, 1)
  for (std::int64_t i = 0; i < maps.q_tiles; ++i) {
    std::vector<float> scores(kTileTokens * kTileTokens);
    const std::int64_t rows = std::min(kTileTokens, q_padded.rows - i * kTileTokens);
    for (std::int64_t j = 0; j < maps.k_tiles; ++j) {
      detail::score_tile(q_padded.tile(i), k_transposed, j, scale, scores.data());
      const std::int64_t cols = std::min(kTileTokens, k_transposed.cols - j * kTileTokens);
      float heat = 0.0f;
      double mass = 0.0;
      for (std::int64_t r = 0; r < rows; ++r) {
        const float* s = scores.data() + r * kTileTokens;
        const float row_lse = lse[i * kTileTokens + r];
        for (std::int64_t c = 0; c < cols; ++c) {
          const float p = std::exp(s[c] - row_lse);
          heat = std::max(heat, p);
          mass += p;
        }
      }
      maps.heat[i * maps.k_tiles + j] = heat;
      maps.mass[i * maps.k_tiles + j] = static_cast<float>(mass / static_cast<double>(rows));
    }
  }
  return maps;
}

void OracleParams::validate() const {
  q.validate("q");
  k.validate("k");
  VEDA_CHECK(k.batch == q.batch && k.heads == q.heads && k.dim == q.dim, "q [", q.batch, ", ",
             q.tokens, ", ", q.heads, ", ", q.dim, "] and k [", k.batch, ", ", k.tokens, ", ",
             k.heads, ", ", k.dim, "] do not agree; expected equal B, H and D");
  VEDA_CHECK(std::isfinite(scale) && scale != 0.0f, "softmax scale ", scale,
             " is not a finite non-zero number");
  VEDA_CHECK(lse != nullptr && heat != nullptr && mass != nullptr,
             "oracle outputs lse, heat and mass must all be given");
}

void oracle_cpu(const OracleParams& params) {
  params.validate();
  const TokensView& q = params.q;
  const std::int64_t q_tiles = tile_count(q.tokens), k_tiles = tile_count(params.k.tokens);
  for (std::int64_t b = 0; b < q.batch; ++b) {
    for (std::int64_t h = 0; h < q.heads; ++h) {
      const std::vector<float> q_head = load_head(q, b, h), k_head = load_head(params.k, b, h);
      const std::vector<float> lse = row_lse(q_head, k_head, q.dim, params.scale);
      const TileMaps maps = tile_heat_and_mass(q_head, k_head, q.dim, params.scale, lse);
      const std::int64_t head = b * q.heads + h;
      std::copy(lse.begin(), lse.end(), params.lse + head * q.tokens);
      std::copy(maps.heat.begin(), maps.heat.end(), params.heat + head * q_tiles * k_tiles);
      std::copy(maps.mass.begin(), maps.mass.end(), params.mass + head * q_tiles * k_tiles);
    }
  }
}

}  // namespace veda
