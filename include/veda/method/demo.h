// `veda demo`: calibrate on synthetic clips of one seed, evaluate on a clip of another seed, and
// compare five masks per sparsity on the whole layer:
//   oracle   top-k by the oracle tile heat, in each head's calibrated tile shape
//   veda     the distilled estimator, in each head's calibrated tile shape (head-aware tiling)
//   stats    untrained statistics (extrema_bound_logits), in the same head-aware shapes
//   meanpool mean-pooled logits (P = 0), fixed 4x4x8 tiles (VSA-style)
//   window   static local 3D window of the same budget, fixed 4x4x8 tiles (STA-style)
// Tile and mass recall are against the oracle of the same tiling and sparsity; rel-L2 and cosine
// of the layer output [N, H, D] against dense attention. Seconds: mask preparation (reorder,
// statistics, scores, selection) plus block-sparse attention (attend_head_two_pass) for all
// heads; the oracle row also counts its dense pass (lse, heat, and here the dense output).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "veda/method/calibration.h"
#include "veda/method/profile.h"
#include "veda/method/synthetic_video.h"

namespace veda::method {

struct DemoConfig {
  SyntheticVideoConfig clip;  // grid and model; its seed is replaced per clip
  std::uint64_t calibration_seed = 1;
  std::uint64_t evaluation_seed = 2;
  int calibration_clips = 3;  // clips drawn from the calibration seed; the last is held out
  std::vector<double> sparsities = {0.8, 0.9, 0.95};
  CalibrationConfig calibration;  // its sparsity is the tile search's target
  TileShape baseline_tile{4, 4, 8};
  std::int64_t picture_head = 5;  // head drawn in the heat picture (the sink head by default)
  double picture_sparsity = 0.9;
};

struct DemoRow {
  std::string method;   // oracle, veda, stats, meanpool, window
  double sparsity = 0;  // target
  double tile_recall = 0, mass_recall = 0, rel_l2 = 0, cosine = 0, seconds = 0;
  double actual_sparsity = 0;  // 1 - kept / all tile pairs
};

struct DemoHeadRow {  // one head of one row, for the analysis
  std::string method;
  double sparsity = 0;
  std::int64_t head = 0;
  double tile_recall = 0, mass_recall = 0, rel_l2 = 0;
};

struct DemoPicture {
  std::int64_t head = 0, tiles = 0;
  std::string caption;
  std::vector<float> heat;                 // [T, T] oracle tile heat
  std::vector<std::uint8_t> oracle, veda;  // [T, T] 1 where selected
};

struct DemoResult {
  Grid grid;
  std::vector<HeadKind> kinds;
  Profile profile;
  double calibration_seconds = 0;
  std::vector<DemoRow> rows;
  std::vector<DemoHeadRow> head_rows;
  DemoPicture picture;
};

// stage, done, total (stages: "clips", "search", "distill", "evaluate").
DemoResult run_demo(const DemoConfig& config, const ProgressCallback& progress = {});

// One table per sparsity, as printed by `veda demo`.
std::string format_demo_tables(const DemoResult& result);

// Per head at one sparsity: rel-L2 (and tile recall) of every method, one line per head.
std::string format_demo_heads(const DemoResult& result, double sparsity);

// JSON list of {method, sparsity, tile_recall, mass_recall, rel_l2, cosine, seconds}.
void write_demo_json(const std::string& path, const DemoResult& result);

}  // namespace veda::method
