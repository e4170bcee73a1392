#include "veda/metrics.h"

#include <cmath>
#include <limits>

#include "veda/error.h"

namespace veda {

double relative_l2(std::span<const float> x, std::span<const float> ref) {
  VEDA_CHECK(x.size() == ref.size(), "relative L2 of ", x.size(), " against ", ref.size(),
             " values; expected equal sizes");
  double error = 0.0, norm = 0.0;
  for (std::size_t n = 0; n < x.size(); ++n) {
    const double difference = static_cast<double>(x[n]) - static_cast<double>(ref[n]);
    error += difference * difference;
    norm += static_cast<double>(ref[n]) * static_cast<double>(ref[n]);
  }
  if (norm == 0.0) return error == 0.0 ? 0.0 : std::numeric_limits<double>::infinity();
  return std::sqrt(error / norm);
}

double cosine_similarity(std::span<const float> a, std::span<const float> b) {
  VEDA_CHECK(a.size() == b.size(), "cosine of ", a.size(), " and ", b.size(),
             " values; expected equal sizes");
  double dot = 0.0, norm_a = 0.0, norm_b = 0.0;
  for (std::size_t n = 0; n < a.size(); ++n) {
    dot += static_cast<double>(a[n]) * static_cast<double>(b[n]);
    norm_a += static_cast<double>(a[n]) * static_cast<double>(a[n]);
    norm_b += static_cast<double>(b[n]) * static_cast<double>(b[n]);
  }
  if (norm_a == 0.0 || norm_b == 0.0) return norm_a == norm_b ? 1.0 : 0.0;
  return dot / std::sqrt(norm_a * norm_b);
}

double tile_recall(const BlockIndexView& selected, const BlockIndexView& oracle) {
  VEDA_CHECK(selected.batch == oracle.batch && selected.heads == oracle.heads &&
                 selected.q_tiles == oracle.q_tiles && selected.k_tiles == oracle.k_tiles,
             "tile recall of an index over ", selected.batch, "x", selected.heads, "x",
             selected.q_tiles, "x", selected.k_tiles, " against an oracle over ", oracle.batch, "x",
             oracle.heads, "x", oracle.q_tiles, "x", oracle.k_tiles,
             "; expected the same batches, heads and tiles");
  double recall = 0.0;
  std::int64_t rows = 0;
  for (std::int64_t b = 0; b < oracle.batch; ++b) {
    for (std::int64_t h = 0; h < oracle.heads; ++h) {
      for (std::int64_t i = 0; i < oracle.q_tiles; ++i) {
        const std::int32_t wanted = oracle.count(b, h, i);
        if (wanted == 0) continue;
        // Both lists are ascending: a merge counts the common tiles.
        const std::int32_t* a = selected.row(b, h, i);
        const std::int32_t* o = oracle.row(b, h, i);
        std::int32_t x = 0, y = 0, common = 0;
        while (x < selected.count(b, h, i) && y < wanted) {
          if (a[x] == o[y])
            ++common, ++x, ++y;
          else if (a[x] < o[y])
            ++x;
          else
            ++y;
        }
        recall += static_cast<double>(common) / wanted;
        ++rows;
      }
    }
  }
  return rows == 0 ? 1.0 : recall / static_cast<double>(rows);
}

double mass_recall(const BlockIndexView& selected, std::int64_t b, std::int64_t h,
                   std::span<const float> mass) {
  VEDA_CHECK(static_cast<std::int64_t>(mass.size()) == selected.q_tiles * selected.k_tiles,
             "mass map of ", mass.size(), " values; expected Tq x Tk = ", selected.q_tiles, " x ",
             selected.k_tiles);
  double covered = 0.0;
  for (std::int64_t i = 0; i < selected.q_tiles; ++i) {
    const std::int32_t* row = selected.row(b, h, i);
    for (std::int32_t s = 0; s < selected.count(b, h, i); ++s) {
      covered += mass[i * selected.k_tiles + row[s]];
    }
  }
  return covered / static_cast<double>(selected.q_tiles);
}

}  // namespace veda
