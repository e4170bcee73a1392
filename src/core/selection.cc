#include "veda/selection.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <vector>

#include "veda/error.h"

namespace veda {
namespace {

void check_scores(std::span<const float> scores, const BlockIndex& index, std::int64_t b,
                  std::int64_t h) {
  VEDA_CHECK(static_cast<std::int64_t>(scores.size()) == index.q_tiles * index.k_tiles,
             "scores hold ", scores.size(), " values; expected Tq x Tk = ", index.q_tiles, " x ",
             index.k_tiles);
  VEDA_CHECK(b >= 0 && b < index.batch && h >= 0 && h < index.heads, "selection for batch ", b,
             ", head ", h, " of an index with ", index.batch, " batches and ", index.heads,
             " heads");
  for (float score : scores) {
    VEDA_CHECK(!std::isnan(score), "scores contain NaN; selection needs ordered scores");
  }
}

// Key tiles of one row by descending score, ties to the lower index; the own tile first if kept.
std::vector<std::int32_t> ranked_tiles(const float* row, std::int64_t k_tiles, std::int64_t own) {
  std::vector<std::int32_t> order(static_cast<std::size_t>(k_tiles));
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](std::int32_t a, std::int32_t c) {
    if (a == own || c == own) return a == own && c != own;
    return row[a] > row[c];
  });
  return order;
}

void write_row(std::vector<std::int32_t> chosen, BlockIndex& index, std::int64_t b, std::int64_t h,
               std::int64_t i) {
  std::sort(chosen.begin(), chosen.end());
  std::int32_t* slots = index.row(b, h, i);
  std::fill_n(slots, index.budget, kPaddedSlot);
  std::copy(chosen.begin(), chosen.end(), slots);
  index.count(b, h, i) = static_cast<std::int32_t>(chosen.size());
}

}  // namespace

std::int64_t budget_for_sparsity(double sparsity, std::int64_t k_tiles) {
  VEDA_CHECK(sparsity >= 0.0 && sparsity < 1.0, "sparsity ", sparsity, " is outside [0, 1)");
  VEDA_CHECK(k_tiles > 0, "budget for ", k_tiles, " key tiles; expected at least 1");
  // The small epsilon keeps (1 - 0.9) * 10 = 1.0000000000000002 from rounding up to 2.
  const double kept = std::ceil((1.0 - sparsity) * static_cast<double>(k_tiles) - 1e-9);
  return std::clamp(static_cast<std::int64_t>(kept), std::int64_t{1}, k_tiles);
}

void select_top_k(std::span<const float> scores, bool keep_own_tile, BlockIndex& index,
                  std::int64_t b, std::int64_t h) {
  check_scores(scores, index, b, h);
  const std::int64_t k_tiles = index.k_tiles;
#pragma omp parallel for schedule(static)
  for (std::int64_t i = 0; i < index.q_tiles; ++i) {
    const std::int64_t own = keep_own_tile && i < k_tiles ? i : -1;
    std::vector<std::int32_t> order = ranked_tiles(scores.data() + i * k_tiles, k_tiles, own);
    order.resize(static_cast<std::size_t>(index.budget));
    write_row(std::move(order), index, b, h, i);
  }
}

void select_cumulative(std::span<const float> scores, double threshold, bool keep_own_tile,
                       BlockIndex& index, std::int64_t b, std::int64_t h) {
  check_scores(scores, index, b, h);
  VEDA_CHECK(threshold > 0.0 && threshold <= 1.0, "cumulative threshold ", threshold,
             " is outside (0, 1]");
  const std::int64_t k_tiles = index.k_tiles;
#pragma omp parallel for schedule(static)
  for (std::int64_t i = 0; i < index.q_tiles; ++i) {
    const float* row = scores.data() + i * k_tiles;
    const std::int64_t own = keep_own_tile && i < k_tiles ? i : -1;
    const std::vector<std::int32_t> order = ranked_tiles(row, k_tiles, own);
    // softmax(row) in float64, max-shifted; -inf scores carry no mass.
    const double peak = *std::max_element(row, row + k_tiles);
    std::vector<double> weight(static_cast<std::size_t>(k_tiles), 0.0);
    double total = 0.0;
    if (std::isfinite(peak)) {
      for (std::int64_t j = 0; j < k_tiles; ++j) total += weight[j] = std::exp(row[j] - peak);
    }
    std::vector<std::int32_t> chosen;
    double covered = 0.0;
    for (std::int32_t j : order) {
      if (static_cast<std::int64_t>(chosen.size()) == index.budget) break;
      if (!chosen.empty() && total > 0.0 && covered >= threshold * total) break;
      if (chosen.empty() || weight[j] > 0.0) chosen.push_back(j);
      covered += weight[j];
    }
    write_row(std::move(chosen), index, b, h, i);
  }
}

}  // namespace veda
