// `veda demo`: dense / oracle / meanpool on a synthetic clip built in memory, as a table of
// quality against dense attention and against the oracle. A placeholder until the method demo
// on an embedded clip (DESIGN.md section 3) replaces it.
//
// The clip: B = 1, grid 4x16x16 (1024 tokens, 8 tiles of 1x8x16), 4 heads, D = 64, from
// std::mt19937 with a fixed seed. q and k carry a random Fourier encoding of the token position,
// so q_r.k_c ~ sum_f cos(w_f . (p_r - p_c)) peaks at p_r = p_c and attention is local, with a
// different length scale per axis per head (spatial, temporal, isotropic, wide), plus noise.
#include <cmath>
#include <cstdio>
#include <iostream>
#include <random>
#include <vector>

#include "attention_evaluation.h"
#include "commands.h"
#include "veda/metrics.h"
#include "veda/sparse_attention.h"

namespace veda::cli {
namespace {

constexpr std::int64_t kHeads = 4;
constexpr std::int64_t kDim = 64;
constexpr Grid kGrid{4, 16, 16};
constexpr unsigned kSeed = 20260530;

struct SyntheticClip {
  std::vector<float> q, k, v;  // [1, N, H, D]
};

SyntheticClip build_clip() {
  // Correlation length in tokens along (t, h, w) per head: small = attention stays close.
  constexpr double kLengths[kHeads][3] = {
      {0.3, 3.0, 3.0},  // spatial: within the frame
      {4.0, 1.0, 1.0},  // temporal: same place, other frames
      {1.5, 2.0, 2.0},  // isotropic
      {0.5, 1.5, 6.0},  // wide along w
  };
  // s * A^2 * (D / 2) = 8: the logit of a token with itself stands ~8 above the background.
  const double amplitude = std::sqrt(8.0 * std::sqrt(static_cast<double>(kDim)) / (kDim / 2));
  constexpr double kNoise = 0.3;

  const std::int64_t tokens = kGrid.tokens();
  const auto size = static_cast<std::size_t>(tokens * kHeads * kDim);
  SyntheticClip clip{std::vector<float>(size), std::vector<float>(size), std::vector<float>(size)};
  std::mt19937 random(kSeed);
  std::normal_distribution<double> normal(0.0, 1.0);
  for (std::int64_t h = 0; h < kHeads; ++h) {
    double frequencies[kDim / 2][3];
    for (auto& frequency : frequencies) {
      for (int axis = 0; axis < 3; ++axis) frequency[axis] = normal(random) / kLengths[h][axis];
    }
    for (std::int64_t n = 0; n < tokens; ++n) {
      const double position[3] = {static_cast<double>(n / (kGrid.h * kGrid.w)),
                                  static_cast<double>(n / kGrid.w % kGrid.h),
                                  static_cast<double>(n % kGrid.w)};
      const std::size_t base = static_cast<std::size_t>((n * kHeads + h) * kDim);
      for (std::int64_t f = 0; f < kDim / 2; ++f) {
        const double phase = frequencies[f][0] * position[0] + frequencies[f][1] * position[1] +
                             frequencies[f][2] * position[2];
        const double encoding[2] = {amplitude * std::cos(phase), amplitude * std::sin(phase)};
        for (int part = 0; part < 2; ++part) {
          const std::size_t index = base + static_cast<std::size_t>(2 * f + part);
          clip.q[index] = static_cast<float>(encoding[part] + kNoise * normal(random));
          clip.k[index] = static_cast<float>(encoding[part] + kNoise * normal(random));
        }
      }
      for (std::int64_t d = 0; d < kDim; ++d) {
        clip.v[base + static_cast<std::size_t>(d)] = static_cast<float>(normal(random));
      }
    }
  }
  return clip;
}

void print_row(const char* method, double requested, const TimedResult& run,
               const TimedResult& dense, const TimedResult* oracle,
               const std::vector<std::vector<float>>& mass) {
  const double recall =
      oracle == nullptr ? 1.0 : tile_recall(run.result.index.view(), oracle->result.index.view());
  std::printf("%-9s %9.2f %9.3f %12.3f %12.3f %11.3e %9.6f %9.4f\n", method, requested,
              run.result.index.sparsity(), recall, mean_mass_recall(run.result.index, mass),
              relative_l2(run.result.out, dense.result.out),
              cosine_similarity(run.result.out, dense.result.out), run.seconds);
}

void run_demo() {
  const SyntheticClip clip = build_clip();
  const TokensView q =
      TokensView::contiguous(clip.q.data(), DType::kF32, 1, kGrid.tokens(), kHeads, kDim);
  const TokensView k =
      TokensView::contiguous(clip.k.data(), DType::kF32, 1, kGrid.tokens(), kHeads, kDim);
  const TokensView v =
      TokensView::contiguous(clip.v.data(), DType::kF32, 1, kGrid.tokens(), kHeads, kDim);
  SparseAttentionConfig config;
  config.grid = kGrid;
  const auto mass = oracle_tile_mass(q, k, config);

  std::printf("veda demo: synthetic clip, grid %s (%lld tokens), %lld heads, D = %lld, tile %s\n",
              kGrid.str().c_str(), static_cast<long long>(kGrid.tokens()),
              static_cast<long long>(kHeads), static_cast<long long>(kDim),
              config.tile.str().c_str());
  std::printf("recalls are against the oracle at the same sparsity; errors against dense\n\n");
  std::printf("%-9s %9s %9s %12s %12s %11s %9s %9s\n", "method", "sparsity", "used", "tile recall",
              "mass recall", "rel-L2", "cosine", "seconds");
  const TimedResult dense = run_timed(q, k, v, config);
  print_row("dense", 0.0, dense, dense, nullptr, mass);
  for (const double sparsity : {0.5, 0.75, 0.9}) {
    config.sparsity = sparsity;
    config.method = MaskMethod::kOracle;
    const TimedResult oracle = run_timed(q, k, v, config);
    print_row("oracle", sparsity, oracle, dense, &oracle, mass);
    config.method = MaskMethod::kMeanPool;
    print_row("meanpool", sparsity, run_timed(q, k, v, config), dense, &oracle, mass);
  }
}

}  // namespace

void add_demo_command(CLI::App& app) {
  CLI::App* command = app.add_subcommand(
      "demo",
      "Dense / oracle / meanpool at sparsity 0.5, 0.75, 0.9 on a synthetic 4x16x16 clip "
      "(4 heads, D = 64) built in memory");
  command->callback(run_demo);
}

}  // namespace veda::cli
