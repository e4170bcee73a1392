#include "veda/method/estimator.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "veda/error.h"
#include "veda/tile_scoring.h"

namespace veda::method {
namespace {

// c[m, n] = a[m, k] b[k, n]
void matmul_nn(const float* a, const float* b, float* c, std::int64_t m, std::int64_t k,
               std::int64_t n) {
  std::fill(c, c + m * n, 0.0f);
  for (std::int64_t i = 0; i < m; ++i) {
    for (std::int64_t p = 0; p < k; ++p) {
      const float x = a[i * k + p];
      if (x == 0.0f) continue;
      const float* b_row = b + p * n;
      float* c_row = c + i * n;
      for (std::int64_t j = 0; j < n; ++j) c_row[j] += x * b_row[j];
    }
  }
}

// c[m, n] += a[k, m]^T b[k, n]
void matmul_tn_add(const float* a, const float* b, float* c, std::int64_t k, std::int64_t m,
                   std::int64_t n) {
  for (std::int64_t p = 0; p < k; ++p) {
    for (std::int64_t i = 0; i < m; ++i) {
      const float x = a[p * m + i];
      if (x == 0.0f) continue;
      const float* b_row = b + p * n;
      float* c_row = c + i * n;
      for (std::int64_t j = 0; j < n; ++j) c_row[j] += x * b_row[j];
    }
  }
}

// c[m, n] = a[m, k] b[n, k]^T
void matmul_nt(const float* a, const float* b, float* c, std::int64_t m, std::int64_t k,
               std::int64_t n) {
  for (std::int64_t i = 0; i < m; ++i) {
    for (std::int64_t j = 0; j < n; ++j) {
      float sum = 0;
      for (std::int64_t p = 0; p < k; ++p) sum += a[i * k + p] * b[j * k + p];
      c[i * n + j] = sum;
    }
  }
}

// Diagonal P: x^[t, d] = mean[t, d] + sum_c stats[t, c, d] P[c * D + d, d].
std::vector<float> diagonal_descriptors(const std::vector<float>& stats, std::int64_t tiles,
                                        std::int64_t dim, const std::vector<float>& p) {
  std::vector<float> out(tiles * dim);
  for (std::int64_t t = 0; t < tiles; ++t) {
    const float* row = stats.data() + t * 3 * dim;
    for (std::int64_t d = 0; d < dim; ++d) {
      out[t * dim + d] = row[d] + row[d] * p[d * dim + d] + row[dim + d] * p[(dim + d) * dim + d] +
                         row[2 * dim + d] * p[(2 * dim + d) * dim + d];
    }
  }
  return out;
}

// grad P[c * D + d, d] += sum_t stats[t, c, d] dx^[t, d]
void add_diagonal_gradient(const std::vector<float>& stats, const std::vector<float>& dx,
                           std::int64_t tiles, std::int64_t dim, std::vector<float>& grad) {
  for (std::int64_t t = 0; t < tiles; ++t) {
    for (std::int64_t c = 0; c < 3; ++c) {
      for (std::int64_t d = 0; d < dim; ++d) {
        grad[(c * dim + d) * dim + d] += stats[t * 3 * dim + c * dim + d] * dx[t * dim + d];
      }
    }
  }
}

void check_sample(const DistillSample& sample, std::int64_t dim) {
  VEDA_CHECK(
      sample.q_tiles > 0 && sample.k_tiles > 0 &&
          static_cast<std::int64_t>(sample.q_stats.size()) == sample.q_tiles * 3 * dim &&
          static_cast<std::int64_t>(sample.k_stats.size()) == sample.k_tiles * 3 * dim &&
          static_cast<std::int64_t>(sample.teacher.size()) == sample.q_tiles * sample.k_tiles,
      "distillation sample with ", sample.q_tiles, " x ", sample.k_tiles, " tiles has ",
      sample.q_stats.size(), " / ", sample.k_stats.size(), " statistics and ",
      sample.teacher.size(), " teacher entries; expected [Tq, 3, ", dim, "], [Tk, 3, ", dim,
      "] and [Tq, Tk]");
}

}  // namespace

std::vector<float> teacher_from_heat(std::span<const float> heat, std::int64_t q_tiles,
                                     std::int64_t k_tiles, double temperature) {
  VEDA_CHECK(temperature > 0 && std::isfinite(temperature), "teacher temperature ", temperature,
             " is not a positive number");
  VEDA_CHECK(static_cast<std::int64_t>(heat.size()) == q_tiles * k_tiles, "heat map of ",
             heat.size(), " entries; expected ", q_tiles, " x ", k_tiles);
  std::vector<float> teacher(heat.size());
  for (std::int64_t i = 0; i < q_tiles; ++i) {
    // heat is a probability in (0, 1]; 1e-30 guards log(0) from an underflowed exp.
    double max_logit = -std::numeric_limits<double>::infinity();
    for (std::int64_t j = 0; j < k_tiles; ++j) {
      max_logit = std::max(max_logit,
                           std::log(std::max<double>(heat[i * k_tiles + j], 1e-30)) / temperature);
    }
    double sum = 0;
    for (std::int64_t j = 0; j < k_tiles; ++j) {
      sum += std::exp(std::log(std::max<double>(heat[i * k_tiles + j], 1e-30)) / temperature -
                      max_logit);
    }
    for (std::int64_t j = 0; j < k_tiles; ++j) {
      teacher[i * k_tiles + j] = static_cast<float>(
          std::exp(std::log(std::max<double>(heat[i * k_tiles + j], 1e-30)) / temperature -
                   max_logit) /
          sum);
    }
  }
  return teacher;
}

EstimatorParams EstimatorParams::zeros(std::int64_t dim) {
  EstimatorParams params;
  params.dim = dim;
  params.p_q.assign(3 * dim * dim, 0.0f);
  params.p_k.assign(3 * dim * dim, 0.0f);
  return params;
}

double estimator_kl(const EstimatorParams& params, const DistillSample& sample, float scale,
                    EstimatorParams* grad, ProjectionStructure structure) {
  const std::int64_t dim = params.dim, tq = sample.q_tiles, tk = sample.k_tiles;
  check_sample(sample, dim);
  const bool diagonal = structure == ProjectionStructure::kDiagonal;
  const std::vector<float> q_hat = diagonal
                                       ? diagonal_descriptors(sample.q_stats, tq, dim, params.p_q)
                                       : project_tiles(sample.q_stats, dim, params.p_q);
  const std::vector<float> k_hat = diagonal
                                       ? diagonal_descriptors(sample.k_stats, tk, dim, params.p_k)
                                       : project_tiles(sample.k_stats, dim, params.p_k);
  std::vector<float> z(tq * tk);
  matmul_nt(q_hat.data(), k_hat.data(), z.data(), tq, dim, tk);

  // Row softmax of z; loss sum_j t (log t - log softmax); g = (softmax - t) / Tq, then scaled by s
  // for the descriptors (z = s q^.k^).
  double loss = 0;
  std::vector<float> g(tq * tk);
  for (std::int64_t i = 0; i < tq; ++i) {
    float* row = z.data() + i * tk;
    double row_max = -std::numeric_limits<double>::infinity();
    for (std::int64_t j = 0; j < tk; ++j) row_max = std::max<double>(row_max, scale * row[j]);
    double sum = 0;
    for (std::int64_t j = 0; j < tk; ++j) sum += std::exp(scale * row[j] - row_max);
    const double log_sum = row_max + std::log(sum);
    for (std::int64_t j = 0; j < tk; ++j) {
      const double t = sample.teacher[i * tk + j];
      const double log_p = scale * row[j] - log_sum;
      if (t > 0) loss += t * (std::log(t) - log_p);
      g[i * tk + j] = static_cast<float>((std::exp(log_p) - t) / static_cast<double>(tq) * scale);
    }
  }
  loss /= static_cast<double>(tq);
  if (grad != nullptr) {
    std::vector<float> dq(tq * dim), dk(tk * dim, 0.0f);
    matmul_nn(g.data(), k_hat.data(), dq.data(), tq, tk, dim);      // s G k^
    matmul_tn_add(g.data(), q_hat.data(), dk.data(), tq, tk, dim);  // s G^T q^
    if (diagonal) {
      add_diagonal_gradient(sample.q_stats, dq, tq, dim, grad->p_q);
      add_diagonal_gradient(sample.k_stats, dk, tk, dim, grad->p_k);
    } else {
      matmul_tn_add(sample.q_stats.data(), dq.data(), grad->p_q.data(), tq, 3 * dim, dim);
      matmul_tn_add(sample.k_stats.data(), dk.data(), grad->p_k.data(), tk, 3 * dim, dim);
    }
  }
  return loss;
}

DistillReport distill_estimator(std::span<const DistillSample> train,
                                std::span<const DistillSample> heldout, float scale,
                                const DistillConfig& config, EstimatorParams& params) {
  VEDA_CHECK(!train.empty(), "distillation needs at least one training sample");
  VEDA_CHECK(config.max_steps >= 0 && config.learning_rate > 0 && config.eval_every > 0,
             "distillation config: steps ", config.max_steps, ", learning rate ",
             config.learning_rate, ", eval period ", config.eval_every,
             "; expected steps >= 0, learning rate > 0, period > 0");
  const std::int64_t dim = params.dim;
  const std::int64_t size = 3 * dim * dim;
  VEDA_CHECK(static_cast<std::int64_t>(params.p_q.size()) == size &&
                 static_cast<std::int64_t>(params.p_k.size()) == size,
             "estimator parameters of ", params.p_q.size(), " and ", params.p_k.size(),
             " floats; expected [3D, D] = ", size, " each at D = ", dim);

  auto mean_loss = [&](std::span<const DistillSample> samples, const EstimatorParams& p) {
    double total = 0;
    for (const DistillSample& sample : samples) {
      total += estimator_kl(p, sample, scale, nullptr, config.structure);
    }
    return samples.empty() ? 0.0 : total / static_cast<double>(samples.size());
  };
  DistillReport report;
  report.train_before = mean_loss(train, params);
  report.heldout_before = mean_loss(heldout, params);
  const bool use_heldout = !heldout.empty();
  double best = use_heldout ? report.heldout_before : report.train_before;
  EstimatorParams best_params = params;

  // Adam (beta 0.9, 0.999) on both matrices as one vector; decoupled weight decay.
  const double beta1 = 0.9, beta2 = 0.999, epsilon = 1e-8;
  std::vector<double> m(2 * size, 0.0), v(2 * size, 0.0);
  int stale = 0;
  for (int step = 1; step <= config.max_steps; ++step) {
    EstimatorParams grad = EstimatorParams::zeros(dim);
    for (const DistillSample& sample : train) {
      estimator_kl(params, sample, scale, &grad, config.structure);
    }
    const double inverse_samples = 1.0 / static_cast<double>(train.size());
    const double correction1 = 1.0 - std::pow(beta1, step);
    const double correction2 = 1.0 - std::pow(beta2, step);
    const bool diagonal = config.structure == ProjectionStructure::kDiagonal;
    for (std::int64_t i = 0; i < 2 * size; ++i) {
      // Entry (f, d) of [3D, D] is on a diagonal block when f mod D == d.
      if (diagonal && ((i % size) / dim) % dim != (i % size) % dim) continue;
      float& p = i < size ? params.p_q[i] : params.p_k[i - size];
      const double g = (i < size ? grad.p_q[i] : grad.p_k[i - size]) * inverse_samples;
      m[i] = beta1 * m[i] + (1 - beta1) * g;
      v[i] = beta2 * v[i] + (1 - beta2) * g * g;
      const double update = (m[i] / correction1) / (std::sqrt(v[i] / correction2) + epsilon);
      p = static_cast<float>(p - config.learning_rate * (update + config.weight_decay * p));
    }
    report.steps = step;
    if (step % config.eval_every == 0 || step == config.max_steps) {
      const double loss = use_heldout ? mean_loss(heldout, params) : mean_loss(train, params);
      if (loss < best) {
        best = loss;
        best_params = params;
        report.best_step = step;
        stale = 0;
      } else if (++stale >= config.patience) {
        break;
      }
    }
  }
  params = std::move(best_params);
  report.train_after = mean_loss(train, params);
  report.heldout_after = mean_loss(heldout, params);
  return report;
}

}  // namespace veda::method
