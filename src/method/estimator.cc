#include "veda/method/estimator.h"

#include <Eigen/Dense>
#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>

#include "veda/error.h"
#include "veda/tile_statistics.h"

namespace veda::method {
namespace {

// Row-major float matrices over the samples' flat vectors; Eigen's GEMM (vectorised, cache
// blocked) does the distillation's products, single-threaded (EIGEN_DONT_PARALLELIZE, set for
// veda_method): callers run heads in parallel.
using Matrix = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
using ConstMap = Eigen::Map<const Matrix>;
using Map = Eigen::Map<Matrix>;

// Descriptors x^ [T, D] = mean + stats P from stats [T, 3D]: project_tiles (veda/tile_scoring.h)
// as one GEMM, since the distillation evaluates it every step. Diagonal P uses only its
// diagonal blocks, P[c * D + d, d]: x^[t, d] = mean[t, d] + sum_c stats[t, c, d] P[c * D + d, d].
Matrix descriptors(const ConstMap& stats, std::int64_t dim, const std::vector<float>& p,
                   ProjectionStructure structure) {
  Matrix out = stats.middleCols(kTileMean * dim, dim);
  if (structure == ProjectionStructure::kFull) {
    out.noalias() += stats * ConstMap(p.data(), 3 * dim, dim);
    return out;
  }
  for (std::int64_t c = 0; c < 3; ++c) {
    const Eigen::Map<const Eigen::VectorXf, 0, Eigen::InnerStride<>> weights(
        p.data() + c * dim * dim, dim, Eigen::InnerStride<>(dim + 1));
    out += stats.middleCols(c * dim, dim) * weights.asDiagonal();
  }
  return out;
}

// grad P += stats^T dx^ over the trained entries: all of them, or the diagonal blocks'
// diagonals, grad P[c * D + d, d] += sum_t stats[t, c, d] dx^[t, d].
void add_projection_gradient(const ConstMap& stats, const Matrix& dx, std::int64_t dim,
                             ProjectionStructure structure, std::vector<float>& grad) {
  if (structure == ProjectionStructure::kFull) {
    Map(grad.data(), 3 * dim, dim).noalias() += stats.transpose() * dx;
    return;
  }
  for (std::int64_t c = 0; c < 3; ++c) {
    const Eigen::VectorXf sums =
        (stats.middleCols(c * dim, dim).array() * dx.array()).colwise().sum().transpose();
    for (std::int64_t d = 0; d < dim; ++d) grad[(c * dim + d) * dim + d] += sums[d];
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

// One structure's fit (distill_estimator's loop body): Adam from params, early stopping on the
// held-out (else train) loss; params left at the best step's values.
DistillReport fit_structure(std::span<const DistillSample> train,
                            std::span<const DistillSample> heldout, float scale,
                            const DistillConfig& config, ProjectionStructure structure,
                            EstimatorParams& params) {
  const std::int64_t dim = params.dim, size = 3 * dim * dim;
  auto mean_loss = [&](std::span<const DistillSample> samples, const EstimatorParams& p) {
    double total = 0;
    for (const DistillSample& sample : samples) {
      total += estimator_kl(p, sample, scale, nullptr, structure);
    }
    return samples.empty() ? 0.0 : total / static_cast<double>(samples.size());
  };
  DistillReport report;
  report.structure = structure;
  report.train_before = mean_loss(train, params);
  report.heldout_before = mean_loss(heldout, params);
  const bool use_heldout = !heldout.empty();
  double best = use_heldout ? report.heldout_before : report.train_before;
  EstimatorParams best_params = params;

  // Adam (beta 0.9, 0.999) on the trained entries of both matrices as one vector (entry k of
  // `trained` in P_q, then in P_k); decoupled weight decay. Diagonal: the entries (c D + d, d).
  std::vector<std::int64_t> trained;
  if (structure == ProjectionStructure::kDiagonal) {
    for (std::int64_t c = 0; c < 3; ++c) {
      for (std::int64_t d = 0; d < dim; ++d) trained.push_back((c * dim + d) * dim + d);
    }
  } else {
    trained.resize(static_cast<std::size_t>(size));
    std::iota(trained.begin(), trained.end(), std::int64_t{0});
  }
  const auto entries = static_cast<std::int64_t>(trained.size());
  const double beta1 = 0.9, beta2 = 0.999, epsilon = 1e-8;
  std::vector<double> m(2 * entries, 0.0), v(2 * entries, 0.0);
  EstimatorParams grad = EstimatorParams::zeros(dim);
  int stale = 0;
  for (int step = 1; step <= config.max_steps; ++step) {
    std::fill(grad.p_q.begin(), grad.p_q.end(), 0.0f);
    std::fill(grad.p_k.begin(), grad.p_k.end(), 0.0f);
    for (const DistillSample& sample : train) {
      estimator_kl(params, sample, scale, &grad, structure);
    }
    const double inverse_samples = 1.0 / static_cast<double>(train.size());
    const double correction1 = 1.0 - std::pow(beta1, step);
    const double correction2 = 1.0 - std::pow(beta2, step);
    for (std::int64_t k = 0; k < 2 * entries; ++k) {
      const std::int64_t i = trained[k % entries];
      float& p = k < entries ? params.p_q[i] : params.p_k[i];
      const double g = (k < entries ? grad.p_q[i] : grad.p_k[i]) * inverse_samples;
      m[k] = beta1 * m[k] + (1 - beta1) * g;
      v[k] = beta2 * v[k] + (1 - beta2) * g * g;
      const double update = (m[k] / correction1) / (std::sqrt(v[k] / correction2) + epsilon);
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
      } else if (++stale >= config.patience && step >= config.warmup_steps) {
        break;
      }
    }
  }
  params = std::move(best_params);
  report.train_after = mean_loss(train, params);
  report.heldout_after = mean_loss(heldout, params);
  return report;
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
  const ConstMap q_stats(sample.q_stats.data(), tq, 3 * dim);
  const ConstMap k_stats(sample.k_stats.data(), tk, 3 * dim);
  const ConstMap teacher(sample.teacher.data(), tq, tk);
  const Matrix q_hat = descriptors(q_stats, dim, params.p_q, structure);
  const Matrix k_hat = descriptors(k_stats, dim, params.p_k, structure);
  // Scaled logits s q^ k^T [Tq, Tk]; per row i, softmax_i = exp(z_i - m_i) / n_i with the row
  // max m_i and n_i = sum_j exp(z_ij - m_i); then
  //   loss = 1/Tq sum_i [sum_j t_ij log t_ij - sum_j t_ij z_ij + (m_i + log n_i) sum_j t_ij].
  Matrix z(tq, tk);
  z.noalias() = (scale * q_hat) * k_hat.transpose();
  Matrix softmax(tq, tk);
  double loss = 0;
  for (std::int64_t i = 0; i < tq; ++i) {
    // Row sums in float (vectorised; Tk terms each), the rows' totals in double.
    const auto t = teacher.row(i).array();
    const float row_max = z.row(i).maxCoeff();
    softmax.row(i) = (z.row(i).array() - row_max).exp().matrix();
    const float norm = softmax.row(i).sum();
    softmax.row(i) /= norm;
    // t log t with 0 log 0 = 0: t = 0 times the finite log of the smallest normal float.
    const float negentropy = (t * t.max(std::numeric_limits<float>::min()).log()).sum();
    const float cross = (t * z.row(i).array()).sum();
    loss += static_cast<double>(negentropy) - cross +
            (static_cast<double>(row_max) + std::log(static_cast<double>(norm))) * t.sum();
  }
  loss /= static_cast<double>(tq);
  if (grad != nullptr) {
    // G = (softmax - t) / Tq, times s for the descriptors: dq^ = s G k^, dk^ = s G^T q^.
    Matrix& g = softmax;
    g = (g - teacher) * (scale / static_cast<float>(tq));
    const Matrix dq = g * k_hat;
    const Matrix dk = g.transpose() * q_hat;
    add_projection_gradient(q_stats, dq, dim, structure, grad->p_q);
    add_projection_gradient(k_stats, dk, dim, structure, grad->p_k);
  }
  return loss;
}

const char* structure_name(ProjectionStructure structure) {
  return structure == ProjectionStructure::kFull ? "full" : "diagonal";
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
  VEDA_CHECK(!config.structures.empty(), "distillation config lists no projection structure");

  DistillReport kept;
  EstimatorParams kept_params;
  std::vector<double> heldout_after_each;
  for (std::size_t i = 0; i < config.structures.size(); ++i) {
    EstimatorParams fitted = params;
    const DistillReport report =
        fit_structure(train, heldout, scale, config, config.structures[i], fitted);
    heldout_after_each.push_back(report.heldout_after);
    if (i == 0 || (!heldout.empty() && report.heldout_after < kept.heldout_after)) {
      kept = report;
      kept_params = std::move(fitted);
    }
  }
  kept.heldout_after_each = std::move(heldout_after_each);
  params = std::move(kept_params);
  return kept;
}

}  // namespace veda::method
