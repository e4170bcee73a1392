// Independent float64 references and random inputs for the CPU tests.
#pragma once

#include <cmath>
#include <cstdint>
#include <functional>
#include <limits>
#include <random>
#include <vector>

namespace veda::testing {

inline std::vector<float> random_matrix(std::int64_t rows, std::int64_t cols, std::uint32_t seed,
                                        float scale = 1.0f) {
  std::mt19937 generator(seed);
  std::normal_distribution<float> normal(0.0f, scale);
  std::vector<float> values(static_cast<std::size_t>(rows * cols));
  for (float& value : values) value = normal(generator);
  return values;
}

// Full estimator matrices [H, 3D, D] from their diagonals [H, 3, D]: P[h, f, f % D] =
// diagonal[h, f], zeros elsewhere.
inline std::vector<float> full_from_diagonal(const std::vector<float>& diagonal, std::int64_t dim) {
  std::vector<float> full(diagonal.size() * static_cast<std::size_t>(dim), 0.0f);
  for (std::size_t i = 0; i < diagonal.size(); ++i) {  // i = h * 3D + f
    full[i * static_cast<std::size_t>(dim) + i % static_cast<std::size_t>(dim)] = diagonal[i];
  }
  return full;
}

struct ReferenceAttention {
  std::vector<double> out;  // [Nq, D]
  std::vector<double> lse;  // [Nq]
};

// Softmax attention of one head in float64 over the keys where allowed(row, col) holds
// (the mask applied as -inf); rows with no allowed key give O = 0, lse = -inf.
inline ReferenceAttention reference_attention(
    const std::vector<float>& q, const std::vector<float>& k, const std::vector<float>& v,
    std::int64_t dim, double scale,
    const std::function<bool(std::int64_t, std::int64_t)>& allowed) {
  const auto nq = static_cast<std::int64_t>(q.size()) / dim;
  const auto nk = static_cast<std::int64_t>(k.size()) / dim;
  ReferenceAttention result{std::vector<double>(q.size(), 0.0), std::vector<double>(nq)};
  std::vector<double> logits(static_cast<std::size_t>(nk));
  for (std::int64_t r = 0; r < nq; ++r) {
    double peak = -std::numeric_limits<double>::infinity();
    for (std::int64_t c = 0; c < nk; ++c) {
      double dot = 0.0;
      for (std::int64_t d = 0; d < dim; ++d) dot += double(q[r * dim + d]) * double(k[c * dim + d]);
      logits[c] = allowed(r, c) ? scale * dot : -std::numeric_limits<double>::infinity();
      peak = std::max(peak, logits[c]);
    }
    if (std::isinf(peak)) {
      result.lse[r] = -std::numeric_limits<double>::infinity();
      continue;
    }
    double sum = 0.0;
    for (std::int64_t c = 0; c < nk; ++c) sum += std::exp(logits[c] - peak);
    for (std::int64_t c = 0; c < nk; ++c) {
      const double p = std::exp(logits[c] - peak) / sum;
      for (std::int64_t d = 0; d < dim; ++d) result.out[r * dim + d] += p * double(v[c * dim + d]);
    }
    result.lse[r] = peak + std::log(sum);
  }
  return result;
}

// ||x - ref|| / ||ref|| with a float64 reference.
inline double relative_error(const std::vector<float>& x, const std::vector<double>& ref) {
  double error = 0.0, norm = 0.0;
  for (std::size_t n = 0; n < x.size(); ++n) {
    error += (double(x[n]) - ref[n]) * (double(x[n]) - ref[n]);
    norm += ref[n] * ref[n];
  }
  return std::sqrt(error / norm);
}

}  // namespace veda::testing
