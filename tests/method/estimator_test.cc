// The distillation loss and its hand-derived gradient (checked by central finite differences),
// the teacher, and that training lowers the loss on train and held-out samples.
#include "veda/method/estimator.h"

#include <gtest/gtest.h>

#include <cmath>
#include <random>

#include "veda/error.h"
#include "veda/tile_scoring.h"

namespace veda::method {
namespace {

std::vector<float> random_vector(std::int64_t size, float sigma, std::mt19937& rng) {
  std::normal_distribution<float> normal(0.0f, sigma);
  std::vector<float> x(size);
  for (float& value : x) value = normal(rng);
  return x;
}

// Statistics with max >= mean >= min per channel, as tile_statistics gives.
std::vector<float> random_stats(std::int64_t tiles, std::int64_t dim, std::mt19937& rng) {
  std::vector<float> stats = random_vector(tiles * 3 * dim, 1.0f, rng);
  for (std::int64_t t = 0; t < tiles; ++t) {
    for (std::int64_t d = 0; d < dim; ++d) {
      float* s = stats.data() + t * 3 * dim;
      s[dim + d] = s[d] + std::abs(s[dim + d]);
      s[2 * dim + d] = s[d] - std::abs(s[2 * dim + d]);
    }
  }
  return stats;
}

DistillSample random_sample(std::int64_t tq, std::int64_t tk, std::int64_t dim, std::mt19937& rng) {
  DistillSample sample;
  sample.q_tiles = tq;
  sample.k_tiles = tk;
  sample.q_stats = random_stats(tq, dim, rng);
  sample.k_stats = random_stats(tk, dim, rng);
  std::uniform_real_distribution<float> uniform(1e-4f, 1.0f);
  std::vector<float> heat(tq * tk);
  for (float& h : heat) h = uniform(rng);
  sample.teacher = teacher_from_heat(heat, tq, tk, 0.5);
  return sample;
}

TEST(Estimator, TeacherIsRowNormalisedHeatAtTemperatureOne) {
  const std::vector<float> heat = {0.1f, 0.3f, 0.6f, 0.5f, 0.5f, 0.0f};
  const std::vector<float> teacher = teacher_from_heat(heat, 2, 3, 1.0);
  const std::vector<float> want = {0.1f, 0.3f, 0.6f, 0.5f, 0.5f, 0.0f};
  for (std::size_t i = 0; i < want.size(); ++i) EXPECT_NEAR(teacher[i], want[i], 1e-6) << i;
  // Temperature 0.5 squares the heat before normalising.
  const std::vector<float> sharp = teacher_from_heat(heat, 2, 3, 0.5);
  EXPECT_NEAR(sharp[2], 0.36 / (0.01 + 0.09 + 0.36), 1e-6);
  EXPECT_THROW(teacher_from_heat(heat, 2, 3, 0.0), Error);
  EXPECT_THROW(teacher_from_heat(heat, 3, 3, 1.0), Error);
}

// Full P_q, P_k with normal(0, 0.1) entries.
EstimatorParams random_full_params(std::int64_t dim, std::mt19937& rng) {
  EstimatorParams params = EstimatorParams::zeros(dim);
  params.p_q = random_vector(3 * dim * dim, 0.1f, rng);
  params.p_k = random_vector(3 * dim * dim, 0.1f, rng);
  return params;
}

// The KL of a sample with descriptors from the core's project_tiles, computed directly in double.
double reference_kl(const DistillSample& sample, const EstimatorParams& params, float scale) {
  const std::int64_t dim = params.dim, tq = sample.q_tiles, tk = sample.k_tiles;
  const std::vector<float> z =
      tile_logits(project_tiles(sample.q_stats, dim, params.p_q),
                  project_tiles(sample.k_stats, dim, params.p_k), dim, scale);
  double kl = 0;
  for (std::int64_t i = 0; i < tq; ++i) {
    double max = -1e30, sum = 0;
    for (std::int64_t j = 0; j < tk; ++j) max = std::max<double>(max, z[i * tk + j]);
    for (std::int64_t j = 0; j < tk; ++j) sum += std::exp(z[i * tk + j] - max);
    for (std::int64_t j = 0; j < tk; ++j) {
      const double t = sample.teacher[i * tk + j];
      kl += t * (std::log(t) - (z[i * tk + j] - max - std::log(sum)));
    }
  }
  return kl / static_cast<double>(tq);
}

TEST(Estimator, ZeroProjectionIsMeanPooling) {
  std::mt19937 rng(1);
  const std::int64_t dim = 16;
  DistillSample sample = random_sample(5, 7, dim, rng);
  const float scale = 0.25f;
  // KL(t || softmax(z)) with z from the core's mean-pooled logits.
  const EstimatorParams zeros = EstimatorParams::zeros(dim);
  EXPECT_NEAR(estimator_kl(zeros, sample, scale, nullptr), reference_kl(sample, zeros, scale),
              1e-5);
}

TEST(Estimator, FullProjectionIsTheCoresProjection) {
  std::mt19937 rng(3);
  const std::int64_t dim = 16;
  const DistillSample sample = random_sample(5, 7, dim, rng);
  EstimatorParams params = random_full_params(dim, rng);
  EXPECT_NEAR(estimator_kl(params, sample, 0.25f, nullptr, ProjectionStructure::kFull),
              reference_kl(sample, params, 0.25f), 1e-5);
}

TEST(Estimator, GradientMatchesFiniteDifferences) {
  std::mt19937 rng(2);
  const std::int64_t dim = 8;
  const DistillSample sample = random_sample(6, 5, dim, rng);
  EstimatorParams params = random_full_params(dim, rng);
  const float scale = 0.35f;
  EstimatorParams grad = EstimatorParams::zeros(dim);
  estimator_kl(params, sample, scale, &grad);
  // Central differences in float32 parameters (step 1e-2, loss in float64): the truncation error
  // is O(h^2 * third derivative) ~ 1e-5 here, far below the gradient entries (~1e-2).
  const float step = 1e-2f;
  for (int which = 0; which < 2; ++which) {
    std::vector<float>& p = which == 0 ? params.p_q : params.p_k;
    const std::vector<float>& g = which == 0 ? grad.p_q : grad.p_k;
    for (std::int64_t i = 0; i < 3 * dim * dim; i += 7) {
      const float saved = p[i];
      p[i] = saved + step;
      const double up = estimator_kl(params, sample, scale, nullptr);
      p[i] = saved - step;
      const double down = estimator_kl(params, sample, scale, nullptr);
      p[i] = saved;
      const double numeric = (up - down) / (2.0 * step);
      EXPECT_NEAR(g[i], numeric, 2e-4 + 1e-2 * std::abs(numeric))
          << (which == 0 ? "p_q[" : "p_k[") << i << "]";
    }
  }
}

TEST(Estimator, DiagonalPathEqualsFullPathOnDiagonalParameters) {
  std::mt19937 rng(7);
  const std::int64_t dim = 8;
  const DistillSample sample = random_sample(6, 7, dim, rng);
  EstimatorParams params = EstimatorParams::zeros(dim);
  std::normal_distribution<float> normal(0.0f, 0.2f);
  for (std::int64_t c = 0; c < 3; ++c) {
    for (std::int64_t d = 0; d < dim; ++d) {
      params.p_q[(c * dim + d) * dim + d] = normal(rng);
      params.p_k[(c * dim + d) * dim + d] = normal(rng);
    }
  }
  EstimatorParams full = EstimatorParams::zeros(dim), diagonal = EstimatorParams::zeros(dim);
  const double full_loss = estimator_kl(params, sample, 0.3f, &full, ProjectionStructure::kFull);
  const double diagonal_loss =
      estimator_kl(params, sample, 0.3f, &diagonal, ProjectionStructure::kDiagonal);
  EXPECT_NEAR(full_loss, diagonal_loss, 1e-6);
  for (std::int64_t c = 0; c < 3; ++c) {
    for (std::int64_t d = 0; d < dim; ++d) {
      const std::int64_t i = (c * dim + d) * dim + d;
      EXPECT_NEAR(full.p_q[i], diagonal.p_q[i], 1e-6);
      EXPECT_NEAR(full.p_k[i], diagonal.p_k[i], 1e-6);
    }
  }
}

// Samples whose teacher is the softmax of a hidden estimator's logits (times `sign`) on random
// statistics: learnable (exactly so in the hidden estimator's structure, at sign 1).
std::vector<DistillSample> hidden_teacher_samples(const EstimatorParams& hidden, int count,
                                                  float scale, std::mt19937& rng,
                                                  float sign = 1.0f) {
  const std::int64_t dim = hidden.dim;
  std::vector<DistillSample> samples;
  for (int s = 0; s < count; ++s) {
    DistillSample sample = random_sample(32, 32, dim, rng);
    const std::vector<float> z =
        tile_logits(project_tiles(sample.q_stats, dim, hidden.p_q),
                    project_tiles(sample.k_stats, dim, hidden.p_k), dim, scale);
    std::vector<float> heat(z.size());
    for (std::size_t i = 0; i < z.size(); ++i) heat[i] = std::exp(sign * z[i] - 30.0f);
    sample.teacher = teacher_from_heat(heat, 32, 32, 1.0);
    samples.push_back(std::move(sample));
  }
  return samples;
}

EstimatorParams random_full_estimator(std::int64_t dim, std::mt19937& rng) {
  EstimatorParams hidden = EstimatorParams::zeros(dim);
  hidden.p_q = random_vector(3 * dim * dim, 0.3f, rng);
  hidden.p_k = random_vector(3 * dim * dim, 0.3f, rng);
  return hidden;
}

bool is_diagonal(const EstimatorParams& params) {
  for (std::int64_t f = 0; f < 3 * params.dim; ++f) {
    for (std::int64_t d = 0; d < params.dim; ++d) {
      if (f % params.dim != d &&
          (params.p_q[f * params.dim + d] != 0 || params.p_k[f * params.dim + d] != 0)) {
        return false;
      }
    }
  }
  return true;
}

// The two fits below: 9 samples of a hidden full estimator at D = 16, scale 0.25 (8 to train,
// the last held out), 200 Adam steps without weight decay.
constexpr std::int64_t kFitDim = 16;
constexpr float kFitScale = 0.25f;

std::vector<DistillSample> learnable_samples(std::uint32_t seed) {
  std::mt19937 rng(seed);
  return hidden_teacher_samples(random_full_estimator(kFitDim, rng), 9, kFitScale, rng);
}

DistillConfig fit_config(std::vector<ProjectionStructure> structures) {
  DistillConfig config;
  config.structures = std::move(structures);
  config.max_steps = 200;
  config.weight_decay = 0;
  return config;
}

TEST(Estimator, DistillationLowersTrainAndHeldOutLoss) {
  const std::int64_t dim = kFitDim;
  const float scale = kFitScale;
  const std::vector<DistillSample> samples = learnable_samples(3);
  EstimatorParams params = EstimatorParams::zeros(dim);
  const DistillConfig config = fit_config({ProjectionStructure::kFull});
  const DistillReport report = distill_estimator(std::span(samples).first(8),
                                                 std::span(samples).last(1), scale, config, params);
  EXPECT_LT(report.train_after, 0.5 * report.train_before);
  EXPECT_LT(report.heldout_after, 0.7 * report.heldout_before);
  EXPECT_GT(report.best_step, 0);
}

// Both structures listed: both fitted, the one of the lower held-out loss kept (the full P where
// the teacher needs it), with the parameters and report of that fit.
TEST(Estimator, BothStructuresKeepTheOneOfLowerHeldOutLoss) {
  const std::int64_t dim = kFitDim;
  const float scale = kFitScale;
  const std::vector<DistillSample> samples = learnable_samples(4);
  DistillConfig config = fit_config({ProjectionStructure::kDiagonal, ProjectionStructure::kFull});
  const auto train = std::span(samples).first(8), heldout = std::span(samples).last(1);
  EstimatorParams params = EstimatorParams::zeros(dim);
  const DistillReport report = distill_estimator(train, heldout, scale, config, params);
  ASSERT_EQ(report.heldout_after_each.size(), 2u);
  EXPECT_LT(report.heldout_after_each[1], 0.7 * report.heldout_after_each[0]);
  EXPECT_EQ(report.structure, ProjectionStructure::kFull);
  EXPECT_EQ(report.heldout_after, report.heldout_after_each[1]);
  EXPECT_FALSE(is_diagonal(params));

  // The full fit alone gives the same parameters; the diagonal alone a diagonal P.
  for (const ProjectionStructure structure :
       {ProjectionStructure::kFull, ProjectionStructure::kDiagonal}) {
    config.structures = {structure};
    EstimatorParams single = EstimatorParams::zeros(dim);
    const DistillReport alone = distill_estimator(train, heldout, scale, config, single);
    EXPECT_EQ(alone.structure, structure);
    EXPECT_EQ(is_diagonal(single), structure == ProjectionStructure::kDiagonal);
    if (structure == ProjectionStructure::kFull) {
      EXPECT_EQ(single.p_q, params.p_q);
      EXPECT_EQ(alone.heldout_after, report.heldout_after);
    }
  }
}

// Without held-out samples the train loss cannot judge (it always favours the full P): the first
// listed structure is kept.
TEST(Estimator, WithoutHeldOutSamplesKeepsTheFirstStructure) {
  std::mt19937 rng(5);
  const std::int64_t dim = 8;
  const std::vector<DistillSample> samples =
      hidden_teacher_samples(random_full_estimator(dim, rng), 2, 0.3f, rng);
  DistillConfig config;
  config.structures = {ProjectionStructure::kDiagonal, ProjectionStructure::kFull};
  config.max_steps = 30;
  EstimatorParams params = EstimatorParams::zeros(dim);
  const DistillReport report = distill_estimator(samples, {}, 0.3f, config, params);
  ASSERT_EQ(report.heldout_after_each.size(), 2u);
  EXPECT_EQ(report.structure, ProjectionStructure::kDiagonal);
  EXPECT_TRUE(is_diagonal(params));
  config.structures.clear();
  EXPECT_THROW(distill_estimator(samples, {}, 0.3f, config, params), Error);
}

// Early stopping waits for warmup_steps: a held-out loss that only rises (the held-out teacher
// is the training teacher's opposite) stops the fit after `patience` evaluations, but not
// before the warm-up; the parameters kept are the initial ones.
TEST(Estimator, EarlyStoppingWaitsForTheWarmUp) {
  std::mt19937 rng(7);
  const std::int64_t dim = 8;
  const float scale = 0.3f;
  const EstimatorParams hidden = random_full_estimator(dim, rng);
  const std::vector<DistillSample> train = hidden_teacher_samples(hidden, 2, scale, rng);
  const std::vector<DistillSample> opposite = hidden_teacher_samples(hidden, 1, scale, rng, -1.0f);
  DistillConfig config;
  config.structures = {ProjectionStructure::kFull};
  config.max_steps = 300;
  for (const int warmup : {0, 100}) {
    config.warmup_steps = warmup;
    EstimatorParams params = EstimatorParams::zeros(dim);
    const DistillReport report = distill_estimator(train, opposite, scale, config, params);
    EXPECT_EQ(report.best_step, 0);
    EXPECT_EQ(report.steps, std::max(warmup, config.patience * config.eval_every));
    EXPECT_EQ(report.heldout_after, report.heldout_before);
    EXPECT_EQ(report.train_after, report.train_before);
    EXPECT_EQ(params.p_q, EstimatorParams::zeros(dim).p_q);
  }
}

TEST(Estimator, DiagonalStructureTrainsOnlyDiagonalBlocks) {
  std::mt19937 rng(6);
  const std::int64_t dim = 8;
  const std::vector<DistillSample> samples = {random_sample(10, 10, dim, rng)};
  EstimatorParams params = EstimatorParams::zeros(dim);
  DistillConfig config;
  config.structures = {ProjectionStructure::kDiagonal};
  config.max_steps = 20;
  const DistillReport report = distill_estimator(samples, {}, 0.35f, config, params);
  EXPECT_LT(report.train_after, report.train_before);
  EXPECT_TRUE(is_diagonal(params));
  int nonzero = 0;
  for (std::int64_t f = 0; f < 3 * dim; ++f) {
    for (const auto* p : {&params.p_q, &params.p_k}) nonzero += (*p)[f * dim + f % dim] != 0.0f;
  }
  EXPECT_GT(nonzero, 0);
}

TEST(Estimator, RejectsMisshapedSamples) {
  DistillSample sample;
  sample.q_tiles = 2;
  sample.k_tiles = 2;
  sample.q_stats.resize(10);
  EXPECT_THROW(estimator_kl(EstimatorParams::zeros(4), sample, 0.5f, nullptr), Error);
}

}  // namespace
}  // namespace veda::method
