// Calibration of one layer: the head-aware tile search and the distillation of every head's
// estimator, from captured q, k, v (DESIGN.md section 2, "Calibration" in section 3).
//
// Phase 1 (tile search), per block of heads and search sample: the oracle maps of every candidate
// with the dense output, then the oracle-mask output error of every candidate; the shapes are
// chosen (optionally at most max_shapes per layer). Phase 2, per block of heads: the teacher in
// each head's chosen shape on every sample, then the distillation on all samples but every 8th
// counted back from the last (held out for early stopping and for the choice between a diagonal
// and a full P; with a single sample there is none). Host memory holds one
// block's samples: with the CPU backend one head's, with the GPU backend all heads' (teachers
// and statistics, ~130 MB per sample at 75,600 tokens x 40 heads x D 128).
#pragma once

#include <cstdint>
#include <functional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "veda/method/estimator.h"
#include "veda/method/profile.h"
#include "veda/tile_layout.h"
#include "veda/tokens.h"

namespace veda::method {

// q, k, v [B, N, H, D] of one layer over `grid`; every batch item is one sample.
struct CalibrationSample {
  Grid grid;
  TokensView q, k, v;
};

struct CalibrationConfig {
  double sparsity = 0.9;  // target sparsity of the tile search and of the written profile
  std::vector<TileShape> shapes = standard_tile_shapes();
  int max_shapes_per_layer = 0;  // 0: no limit
  int search_samples = 1;        // samples (first ones) on which output errors are measured
  // What the tile search measures per candidate shape:
  //   kOracleMask     the oracle mask's output error on the search samples (DESIGN.md);
  //   kEstimatorMask  the output error of the estimator distilled in that shape, on the held-out
  //                   (last) sample: one distillation per candidate, at least two samples. It
  //                   picks the shape the estimator reproduces best, which need not be the one
  //                   the oracle does best with (the demo's sink head: 1x8x16 by the oracle
  //                   mask, 0.249 rel-L2 for Veda, against 0.189 with 2x8x8).
  enum class Search { kOracleMask, kEstimatorMask } search = Search::kOracleMask;
  // Teacher map: the oracle tile heat (the paper's teacher, DESIGN.md) or the tile mass (what the
  // output error depends on; see the demo's per-head numbers on diffuse heads).
  enum class Teacher { kHeat, kMass } teacher = Teacher::kHeat;
  double temperature = 1.0;  // teacher = softmax(log map / temperature) per row
  bool keep_own_tile = true;
  DistillConfig distill;
};

// stage ("search": heads x search samples, "distill": heads), units done, units in the stage.
using ProgressCallback = std::function<void(std::string_view, std::int64_t, std::int64_t)>;

class OracleBackend;  // veda/method/oracle_backend.h

// Returns the layer's profile (tile, sparsity and estimator per head, with diagnostics in
// `calibration`: kl_train_before/after, kl_heldout_before/after, steps, best_step, err_<shape>
// (rel-MSE of the searched mask; search_estimator_mask = 1 when that mask was the estimator's)).
// `backend` runs the oracle work (nullptr: the CPU reference, made for this call); items are
// taken in blocks of backend->heads_per_item heads (cpu: 1, cuda: all).
LayerProfile calibrate_layer(std::span<const CalibrationSample> samples,
                             const CalibrationConfig& config, const ProgressCallback& progress = {},
                             OracleBackend* backend = nullptr);

// One line on a calibrated head's distillation, from its `calibration` diagnostics: "KL train
// 1.416 -> 0.154, held-out 1.328 -> 0.262, diagonal P (full 0.642)", the last the held-out loss
// of the structure not kept.
std::string describe_distillation(const HeadProfile& head);

}  // namespace veda::method
