#include "veda/method/demo.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <fstream>
#include <iomanip>
#include <nlohmann/json.hpp>
#include <sstream>

#include "veda/error.h"
#include "veda/method/baseline_masks.h"
#include "veda/method/multi_shape_oracle.h"
#include "veda/method/two_pass_attention.h"
#include "veda/method/veda_attention.h"
#include "veda/metrics.h"
#include "veda/selection.h"
#include "veda/tile_scoring.h"
#include "veda/tile_statistics.h"

namespace veda::method {
namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

// Clip c of a seed: distinct seeds never share a clip.
std::uint64_t clip_seed(std::uint64_t seed, int clip) {
  return seed * 0x9E3779B97F4A7C15ull + static_cast<std::uint64_t>(clip) + 1;
}

const char* const kMethods[] = {"oracle", "veda", "stats", "meanpool", "window"};
constexpr int kMethodCount = 5;

// Layer-level accumulators of one (method, sparsity) row.
struct RowSums {
  double error = 0, norm = 0, dot = 0, out_norm = 0, tile_recall = 0, mass_recall = 0;
  double seconds = 0, kept = 0, pairs = 0;
};

}  // namespace

DemoResult run_demo(const DemoConfig& config, const ProgressCallback& progress) {
  VEDA_CHECK(config.calibration_seed != config.evaluation_seed, "demo calibration seed ",
             config.calibration_seed, " equals the evaluation seed; they must differ");
  VEDA_CHECK(config.calibration_clips >= 1, "demo needs at least one calibration clip");
  VEDA_CHECK(!config.sparsities.empty(), "demo needs at least one sparsity");
  for (double s : config.sparsities) {
    VEDA_CHECK(s >= 0 && s < 1, "demo sparsity ", s, " is not in [0, 1)");
  }
  config.baseline_tile.validate();
  DemoResult result;
  result.grid = config.clip.grid;

  // Calibration on clips of the calibration seed.
  const auto calibration_start = Clock::now();
  std::vector<SyntheticVideo> clips;
  for (int c = 0; c < config.calibration_clips; ++c) {
    SyntheticVideoConfig clip = config.clip;
    clip.seed = clip_seed(config.calibration_seed, c);
    clips.push_back(generate_synthetic_video(clip));
    if (progress) progress("clips", c + 1, config.calibration_clips);
  }
  std::vector<CalibrationSample> samples;
  for (const SyntheticVideo& clip : clips) {
    samples.push_back({clip.grid, clip.q_view(), clip.k_view(), clip.v_view()});
  }
  LayerProfile layer = calibrate_layer(samples, config.calibration, progress);
  result.calibration_seconds = seconds_since(calibration_start);
  result.profile.model = "synthetic-video";
  result.profile.head_dim = config.clip.dim;
  result.profile.layers.push_back(layer);
  clips.clear();

  // Evaluation clip.
  SyntheticVideoConfig eval_config = config.clip;
  eval_config.seed = clip_seed(config.evaluation_seed, 0);
  const SyntheticVideo video = generate_synthetic_video(eval_config);
  result.kinds = video.kinds;
  const Grid grid = video.grid;
  const std::int64_t n = grid.tokens(), dim = video.dim, heads = video.heads;
  const std::int64_t tiles = tile_count(n);
  const float scale = 1.0f / std::sqrt(static_cast<float>(dim));
  const auto sparsity_count = static_cast<std::int64_t>(config.sparsities.size());
  std::vector<RowSums> sums(sparsity_count * kMethodCount);

  for (std::int64_t h = 0; h < heads; ++h) {
    const HeadProfile& head = layer.heads[h];
    const std::vector<float> q = load_head(video.q_view(), 0, h);
    const std::vector<float> k = load_head(video.k_view(), 0, h);
    const std::vector<float> v = load_head(video.v_view(), 0, h);
    std::vector<TileShape> shapes = {head.tile};
    if (!(config.baseline_tile == head.tile)) shapes.push_back(config.baseline_tile);
    const auto oracle_start = Clock::now();
    const MultiShapeOracle oracle = multi_shape_oracle(q, k, v, dim, scale, grid, shapes);
    const double oracle_seconds = seconds_since(oracle_start);
    const ShapeOracle& head_shape = oracle.shapes[0];
    const ShapeOracle& base_shape = oracle.shapes.back();

    for (std::int64_t si = 0; si < sparsity_count; ++si) {
      const double sparsity = config.sparsities[si];
      const std::int64_t budget = budget_for_sparsity(sparsity, tiles);
      for (int m = 0; m < kMethodCount; ++m) {
        const std::string method = kMethods[m];
        const bool head_aware = m <= 2;
        const ShapeOracle& shape = head_aware ? head_shape : base_shape;
        const auto start = Clock::now();
        std::vector<float> qt(n * dim), kt(n * dim), vt(n * dim);
        gather_rows(q, shape.order, dim, qt);
        gather_rows(k, shape.order, dim, kt);
        gather_rows(v, shape.order, dim, vt);
        BlockIndex index(1, 1, tiles, tiles, budget);
        const bool keep_own = config.calibration.keep_own_tile;
        if (method == "oracle") {
          select_top_k(shape.maps.heat, keep_own, index, 0, 0);
        } else if (method == "veda") {
          HeadProfile at_sparsity = head;
          at_sparsity.threshold.reset();
          veda_select_head(qt, kt, dim, scale, at_sparsity, keep_own, index, 0, 0);
        } else if (method == "stats") {
          select_top_k(
              extrema_bound_logits(tile_statistics(qt, dim), tile_statistics(kt, dim), dim, scale),
              keep_own, index, 0, 0);
        } else if (method == "meanpool") {
          select_top_k(tile_logits(project_tiles(tile_statistics(qt, dim), dim, {}),
                                   project_tiles(tile_statistics(kt, dim), dim, {}), dim, scale),
                       keep_own, index, 0, 0);
        } else {
          select_window(grid, shape.shape, index, 0, 0);
        }
        std::vector<float> out(n * dim), lse(n);
        attend_head_two_pass(qt, kt, vt, dim, scale, index.counts.data(), index.indices.data(),
                             index.budget, out, lse);
        double seconds = seconds_since(start);
        if (method == "oracle") seconds += oracle_seconds;

        // Metrics against the oracle of the same tiling and against dense, in tile-major rows.
        BlockIndex reference(1, 1, tiles, tiles, budget);
        select_top_k(shape.maps.heat, keep_own, reference, 0, 0);
        const double recall = tile_recall(index.view(), reference.view());
        const double mass = mass_recall(index.view(), 0, 0, shape.maps.mass);
        double error = 0, norm = 0, dot = 0, out_norm = 0;
        for (std::int64_t i = 0; i < n; ++i) {
          const float* want = oracle.out.data() + static_cast<std::int64_t>(shape.order[i]) * dim;
          for (std::int64_t d = 0; d < dim; ++d) {
            const double got = out[i * dim + d], ref = want[d];
            error += (got - ref) * (got - ref);
            norm += ref * ref;
            dot += got * ref;
            out_norm += got * got;
          }
        }
        RowSums& row = sums[si * kMethodCount + m];
        row.error += error;
        row.norm += norm;
        row.dot += dot;
        row.out_norm += out_norm;
        row.tile_recall += recall;
        row.mass_recall += mass;
        row.seconds += seconds;
        for (std::int64_t i = 0; i < tiles; ++i) row.kept += index.count(0, 0, i);
        row.pairs += static_cast<double>(tiles * tiles);
        result.head_rows.push_back(
            {method, sparsity, h, recall, mass, norm > 0 ? std::sqrt(error / norm) : 0.0});

        if (h == config.picture_head && std::abs(sparsity - config.picture_sparsity) < 1e-9 &&
            (method == "oracle" || method == "veda")) {
          DemoPicture& picture = result.picture;
          picture.head = h;
          picture.tiles = tiles;
          picture.heat = shape.maps.heat;
          std::vector<std::uint8_t>& mask = method == "oracle" ? picture.oracle : picture.veda;
          mask.assign(tiles * tiles, 0);
          for (std::int64_t i = 0; i < tiles; ++i) {
            for (std::int64_t s = 0; s < index.count(0, 0, i); ++s) {
              mask[i * tiles + index.row(0, 0, i)[s]] = 1;
            }
          }
          std::ostringstream caption;
          caption << "head " << h << " (" << head_kind_name(video.kinds[h]) << "), tile "
                  << shape.shape.str() << ", sparsity " << sparsity;
          picture.caption = caption.str();
        }
      }
    }
    if (progress) progress("evaluate", h + 1, heads);
  }

  for (std::int64_t si = 0; si < sparsity_count; ++si) {
    for (int m = 0; m < kMethodCount; ++m) {
      const RowSums& s = sums[si * kMethodCount + m];
      DemoRow row;
      row.method = kMethods[m];
      row.sparsity = config.sparsities[si];
      row.tile_recall = s.tile_recall / static_cast<double>(heads);
      row.mass_recall = s.mass_recall / static_cast<double>(heads);
      row.rel_l2 = s.norm > 0 ? std::sqrt(s.error / s.norm) : 0.0;
      row.cosine = s.norm > 0 && s.out_norm > 0 ? s.dot / std::sqrt(s.norm * s.out_norm) : 0.0;
      row.seconds = s.seconds;
      row.actual_sparsity = 1.0 - s.kept / s.pairs;
      result.rows.push_back(row);
    }
  }
  return result;
}

std::string format_demo_tables(const DemoResult& result) {
  std::ostringstream text;
  std::vector<double> sparsities;
  for (const DemoRow& row : result.rows) {
    if (std::find(sparsities.begin(), sparsities.end(), row.sparsity) == sparsities.end()) {
      sparsities.push_back(row.sparsity);
    }
  }
  for (double sparsity : sparsities) {
    text << "\nsparsity " << std::fixed << std::setprecision(0) << sparsity * 100 << "%";
    for (const DemoRow& row : result.rows) {
      if (row.sparsity == sparsity) {
        text << " (" << std::setprecision(1) << row.actual_sparsity * 100
             << "% of tile pairs skipped)";
        break;
      }
    }
    text << "\n  method    tile recall  mass recall   rel-L2   cosine  seconds\n";
    for (const DemoRow& row : result.rows) {
      if (row.sparsity != sparsity) continue;
      text << "  " << std::left << std::setw(9) << row.method << std::right << std::setprecision(3)
           << std::setw(12) << row.tile_recall << std::setw(13) << row.mass_recall
           << std::setprecision(4) << std::setw(9) << row.rel_l2 << std::setw(9) << row.cosine
           << std::setprecision(2) << std::setw(9) << row.seconds << "\n";
    }
  }
  return text.str();
}

std::string format_demo_heads(const DemoResult& result, double sparsity) {
  std::ostringstream text;
  text << "per head at sparsity " << std::fixed << std::setprecision(0) << sparsity * 100
       << "%: rel-L2 (tile recall)\n  head               ";
  for (const char* method : kMethods) text << std::setw(16) << method;
  text << "\n";
  for (std::size_t h = 0; h < result.kinds.size(); ++h) {
    text << "  " << std::left << std::setw(2) << h << " " << std::setw(16)
         << head_kind_name(result.kinds[h]) << std::right;
    for (const char* method : kMethods) {
      for (const DemoHeadRow& row : result.head_rows) {
        if (row.head == static_cast<std::int64_t>(h) && row.method == method &&
            std::abs(row.sparsity - sparsity) < 1e-9) {
          text << std::setprecision(4) << std::setw(9) << row.rel_l2 << " (" << std::setprecision(2)
               << row.tile_recall << ")";
        }
      }
    }
    text << "\n";
  }
  return text.str();
}

void write_demo_json(const std::string& path, const DemoResult& result) {
  nlohmann::ordered_json rows = nlohmann::ordered_json::array();
  for (const DemoRow& row : result.rows) {
    rows.push_back({{"method", row.method},
                    {"sparsity", row.sparsity},
                    {"tile_recall", row.tile_recall},
                    {"mass_recall", row.mass_recall},
                    {"rel_l2", row.rel_l2},
                    {"cosine", row.cosine},
                    {"seconds", row.seconds}});
  }
  const std::string temporary = path + ".tmp";
  {
    std::ofstream out(temporary);
    VEDA_CHECK(out.good(), path, ": cannot open for writing");
    out << rows.dump(2) << "\n";
    VEDA_CHECK(out.good(), path, ": write failed");
  }
  VEDA_CHECK(std::rename(temporary.c_str(), path.c_str()) == 0, path,
             ": cannot move the written file into place");
}

}  // namespace veda::method
