// Veda profiles: what calibration produces and `veda attention --method veda` consumes. One JSON
// file per model, versioned, with the estimator parameters in a .safetensors file beside it:
//
//   {"format": "veda-profile", "version": 1, "model": "synthetic-video", "head_dim": 128,
//    "estimator_file": "model.estimator.safetensors",
//    "layers": [{"layer": 0, "heads": [
//       {"head": 0, "tile": "1x8x16", "sparsity": 0.9,            // fixed budget per query tile
//        "threshold": 0.95,                                         // optional: cumulative mass,
//                                                                   //   capped at the budget
//        "p_q": "layer0.head0.p_q", "p_k": "layer0.head0.p_k",    // F32 [3D, D] tensors
//        "calibration": {...}}]}]}                                  // optional, informational
//
// Reading validates everything and throws veda::Error naming the file and the field: unknown
// format or version, missing fields, tile shapes whose product is not 128, sparsity outside
// [0, 1), threshold outside (0, 1], heads not numbered 0..H-1, missing or misshaped tensors.
#pragma once

#include <cstdint>
#include <filesystem>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "veda/method/estimator.h"
#include "veda/tile_layout.h"

namespace veda::method {

inline constexpr int kProfileVersion = 1;

struct HeadProfile {
  TileShape tile;
  double sparsity = 0.9;
  std::optional<double> threshold;  // set: select_cumulative(threshold), budget from sparsity
  EstimatorParams estimator;
  std::map<std::string, double> calibration;  // diagnostics: losses, shape errors
};

struct LayerProfile {
  std::int64_t layer = 0;
  std::vector<HeadProfile> heads;  // index = head
};

struct Profile {
  std::string model = "unnamed";
  std::int64_t head_dim = 128;
  std::vector<LayerProfile> layers;

  // Throws naming the layers present when `layer` is not one of them.
  const LayerProfile& layer(std::int64_t layer) const;
};

// Writes json_path and, beside it, <stem>.estimator.safetensors (both via temporary files).
void write_profile(const std::filesystem::path& json_path, const Profile& profile);

Profile read_profile(const std::filesystem::path& json_path);

}  // namespace veda::method
