#include "veda/method/calibration.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <exception>
#include <map>
#include <memory>

#include "veda/error.h"
#include "veda/method/oracle_backend.h"
#include "veda/method/tiling_search.h"
#include "veda/method/veda_attention.h"
#include "veda/selection.h"
#include "veda/tile_statistics.h"

namespace veda::method {

namespace {

struct Item {
  const CalibrationSample* sample;
  std::int64_t batch;
};

// Items held out of the distillation, for early stopping and the choice of P's structure: every
// kHeldOutStride-th counted back from the last (the last alone below 9 items, none of one item),
// so that they span the captures' files (often one per timestep) rather than one clip.
constexpr std::int64_t kHeldOutStride = 8;
bool held_out(std::int64_t item, std::int64_t item_count) {
  return item_count > 1 && (item_count - 1 - item) % kHeldOutStride == 0;
}

// The tile-major order of every shape over `grid`.
std::vector<std::vector<std::int32_t>> shape_orders(const Grid& grid,
                                                    std::span<const TileShape> shapes) {
  std::vector<std::vector<std::int32_t>> orders;
  for (const TileShape& shape : shapes) orders.push_back(tile_major_order(grid, shape));
  return orders;
}

// The teacher and statistics of one item in one shape: q, k the head's float32 [N, D]
// frame-major, order the shape's tile-major order, maps its oracle maps.
DistillSample distill_sample(std::span<const float> q, std::span<const float> k, std::int64_t dim,
                             std::span<const std::int32_t> order, const TileMaps& maps,
                             const CalibrationConfig& config) {
  DistillSample sample;
  sample.q_tiles = maps.q_tiles;
  sample.k_tiles = maps.k_tiles;
  std::vector<float> tiled(q.size());
  gather_rows(q, order, dim, tiled);
  sample.q_stats = tile_statistics(tiled, dim);
  gather_rows(k, order, dim, tiled);
  sample.k_stats = tile_statistics(tiled, dim);
  sample.teacher =
      teacher_from_heat(config.teacher == CalibrationConfig::Teacher::kHeat ? maps.heat : maps.mass,
                        sample.q_tiles, sample.k_tiles, config.temperature);
  return sample;
}

void record_report(const DistillReport& report, bool heldout, const DistillConfig& config,
                   HeadProfile& head) {
  head.calibration["kl_train_before"] = report.train_before;
  head.calibration["kl_train_after"] = report.train_after;
  head.calibration["full_projection"] = report.structure == ProjectionStructure::kFull;
  if (heldout) {
    head.calibration["kl_heldout_before"] = report.heldout_before;
    head.calibration["kl_heldout_after"] = report.heldout_after;
    if (config.structures.size() > 1) {  // each structure's loss, where there was a choice
      for (std::size_t i = 0; i < config.structures.size(); ++i) {
        const std::string key =
            std::string("kl_heldout_after_") + structure_name(config.structures[i]);
        head.calibration[key] = report.heldout_after_each[i];
      }
    }
  }
  head.calibration["steps"] = report.steps;
  head.calibration["best_step"] = report.best_step;
}

// Runs body(i) for i in [0, count) on OpenMP threads; the first exception is rethrown here
// (an exception may not leave an OpenMP region). A single task runs outside any parallel region,
// so the parallel loops inside it keep their threads (the CPU backend's blocks of one head).
template <typename Body>
void parallel_for(std::int64_t count, const Body& body) {
  std::vector<std::exception_ptr> failures(static_cast<std::size_t>(count));
#pragma omp parallel for schedule(dynamic, 1) if (count > 1)
  for (std::int64_t i = 0; i < count; ++i) {
    try {
      body(i);
    } catch (...) {
      failures[i] = std::current_exception();
    }
  }
  for (const std::exception_ptr& failure : failures) {
    if (failure) std::rethrow_exception(failure);
  }
}

// The oracle-mask output error of every head of the backend's current item (`heads` heads) in
// every candidate shape, [head][shape]: the maps of all shapes with the dense output, top-k by
// heat on the CPU (as oracle_mask_error), the masked outputs' errors on the backend.
std::vector<std::vector<SquaredError>> oracle_mask_errors(OracleBackend& backend,
                                                          std::int64_t heads,
                                                          std::span<const TileShape> shapes,
                                                          double sparsity, bool keep_own_tile) {
  const std::vector<std::vector<TileShape>> lists(heads, {shapes.begin(), shapes.end()});
  const std::vector<std::vector<TileMaps>> maps = backend.tile_maps(lists, true);
  std::vector<std::vector<SquaredError>> errors(heads, std::vector<SquaredError>(shapes.size()));
  for (std::size_t s = 0; s < shapes.size(); ++s) {
    const std::int64_t q_tiles = maps[0][s].q_tiles, k_tiles = maps[0][s].k_tiles;
    BlockIndex index(1, heads, q_tiles, k_tiles, budget_for_sparsity(sparsity, k_tiles));
#pragma omp parallel for schedule(static) if (heads > 1)
    for (std::int64_t h = 0; h < heads; ++h) {
      select_top_k(maps[h][s].heat, keep_own_tile, index, 0, h);  // rows (0, h) only
    }
    const std::vector<SquaredError> shape_errors = backend.mask_errors(shapes[s], index);
    for (std::int64_t h = 0; h < heads; ++h) errors[h][s] = shape_errors[h];
  }
  return errors;
}

// Search by the distilled estimator's own mask: per block of heads, the oracle maps of every
// candidate on every item (the dense output on the held-out last item), one distillation per
// (head, candidate shape), and the output error of each candidate's estimated mask on the
// held-out item. Host memory holds the block's samples in every candidate shape.
LayerProfile calibrate_by_estimator_mask(const std::vector<Item>& items, std::int64_t heads,
                                         std::int64_t dim, const CalibrationConfig& config,
                                         const ProgressCallback& progress, OracleBackend& backend,
                                         std::int64_t block) {
  const auto item_count = static_cast<std::int64_t>(items.size());
  VEDA_CHECK(item_count >= 2, "the estimator-mask tile search needs at least two samples (the ",
             "last is held out and measured); got ", item_count);
  const auto shape_count = static_cast<std::int64_t>(config.shapes.size());
  const float scale = 1.0f / std::sqrt(static_cast<float>(dim));
  std::vector<std::vector<EstimatorParams>> fitted(heads);
  std::vector<std::vector<DistillReport>> reports(heads);
  std::vector<std::vector<double>> errors(heads, std::vector<double>(shape_count));
  for (std::int64_t h0 = 0; h0 < heads; h0 += block) {
    const std::int64_t h1 = std::min(heads, h0 + block), block_heads = h1 - h0;
    // [head in block][shape]: the distillation samples.
    std::vector<std::vector<std::vector<DistillSample>>> train(
        block_heads, std::vector<std::vector<DistillSample>>(shape_count));
    auto heldout = train;
    const std::vector<std::vector<TileShape>> lists(block_heads, config.shapes);
    for (std::int64_t it = 0; it < item_count; ++it) {
      const CalibrationSample& sample = *items[it].sample;
      const std::int64_t b = items[it].batch;
      const bool held = held_out(it, item_count);
      backend.set_item(sample, b, h0, h1);
      const std::vector<std::vector<TileMaps>> maps =
          backend.tile_maps(lists, it == item_count - 1);  // the last: dense output, measured
      const std::vector<std::vector<std::int32_t>> orders =
          shape_orders(sample.grid, config.shapes);
      parallel_for(block_heads, [&](std::int64_t h) {
        const std::vector<float> q = load_head(sample.q, b, h0 + h),
                                 k = load_head(sample.k, b, h0 + h);
        for (std::int64_t s = 0; s < shape_count; ++s) {
          (held ? heldout : train)[h][s].push_back(
              distill_sample(q, k, dim, orders[s], maps[h][s], config));
        }
      });
    }
    for (std::int64_t h = h0; h < h1; ++h) {
      fitted[h].assign(shape_count, EstimatorParams::zeros(dim));
      reports[h].resize(shape_count);
    }
    parallel_for(block_heads * shape_count, [&](std::int64_t task) {
      const std::int64_t h = task / shape_count, s = task % shape_count;
      reports[h0 + h][s] =
          distill_estimator(train[h][s], heldout[h][s], scale, config.distill, fitted[h0 + h][s]);
    });
    // The held-out item is still the backend's current item: each candidate's estimated mask.
    const CalibrationSample& held = *items.back().sample;
    const std::int64_t held_batch = items.back().batch;
    const std::int64_t tiles = tile_count(held.grid.tokens());
    std::vector<BlockIndex> indices(
        shape_count,
        BlockIndex(1, block_heads, tiles, tiles, budget_for_sparsity(config.sparsity, tiles)));
    const std::vector<std::vector<std::int32_t>> held_orders =
        shape_orders(held.grid, config.shapes);
    parallel_for(block_heads, [&](std::int64_t h) {
      const std::vector<float> q = load_head(held.q, held_batch, h0 + h),
                               k = load_head(held.k, held_batch, h0 + h);
      std::vector<float> q_tiled(q.size()), k_tiled(k.size());
      for (std::int64_t s = 0; s < shape_count; ++s) {
        const std::vector<std::int32_t>& order = held_orders[s];
        HeadProfile candidate;
        candidate.tile = config.shapes[s];
        candidate.sparsity = config.sparsity;
        candidate.estimator = fitted[h0 + h][s];
        gather_rows(q, order, dim, q_tiled);
        gather_rows(k, order, dim, k_tiled);
        veda_select_head(q_tiled, k_tiled, dim, scale, candidate, config.keep_own_tile, indices[s],
                         0, h);  // rows (0, h) only
      }
    });
    for (std::int64_t s = 0; s < shape_count; ++s) {
      const std::vector<SquaredError> shape_errors =
          backend.mask_errors(config.shapes[s], indices[s]);
      for (std::int64_t h = 0; h < block_heads; ++h) {
        errors[h0 + h][s] = shape_errors[h].relative();
      }
    }
    if (progress) progress("search", h1, heads);
  }
  const std::vector<int> choice = choose_tile_shapes(errors, config.max_shapes_per_layer);
  LayerProfile layer;
  layer.heads.resize(heads);
  for (std::int64_t h = 0; h < heads; ++h) {
    HeadProfile& head = layer.heads[h];
    head.tile = config.shapes[choice[h]];
    head.sparsity = config.sparsity;
    head.estimator = std::move(fitted[h][choice[h]]);
    record_report(reports[h][choice[h]], true, config.distill, head);
    for (std::int64_t s = 0; s < shape_count; ++s) {
      head.calibration["err_" + config.shapes[s].str()] = errors[h][s];
    }
    head.calibration["search_estimator_mask"] = 1;
  }
  if (progress) progress("distill", heads, heads);
  return layer;
}

}  // namespace

std::string describe_distillation(const HeadProfile& head) {
  const auto& c = head.calibration;
  const auto value = [&](const char* key) {
    const auto found = c.find(key);
    if (found == c.end()) return std::string("?");
    char text[32];
    std::snprintf(text, sizeof text, "%.3f", found->second);
    return std::string(text);
  };
  std::string line = "KL train " + value("kl_train_before") + " -> " + value("kl_train_after");
  if (c.count("kl_heldout_before")) {
    line += ", held-out " + value("kl_heldout_before") + " -> " + value("kl_heldout_after");
  }
  if (!c.count("full_projection")) return line;
  const bool full = c.at("full_projection") != 0;
  line += full ? ", full P" : ", diagonal P";
  // The other structure's held-out loss, where both were fitted.
  const char* other = full ? "kl_heldout_after_diagonal" : "kl_heldout_after_full";
  if (c.count(other)) line += std::string(full ? " (diagonal " : " (full ") + value(other) + ")";
  return line;
}

LayerProfile calibrate_layer(std::span<const CalibrationSample> samples,
                             const CalibrationConfig& config, const ProgressCallback& progress,
                             OracleBackend* backend_in) {
  VEDA_CHECK(!samples.empty(), "calibration needs at least one sample");
  VEDA_CHECK(config.sparsity >= 0 && config.sparsity < 1, "calibration sparsity ", config.sparsity,
             " is not in [0, 1)");
  VEDA_CHECK(!config.shapes.empty(), "calibration needs at least one candidate tile shape");
  for (const TileShape& shape : config.shapes) shape.validate();
  const std::int64_t heads = samples[0].q.heads, dim = samples[0].q.dim;
  // Items: (sample, batch) pairs, each one calibration input.
  std::vector<Item> items;
  std::int64_t max_tokens = 0;
  for (const CalibrationSample& sample : samples) {
    sample.grid.validate();
    for (const auto* view : {&sample.q, &sample.k, &sample.v}) view->validate("calibration input");
    VEDA_CHECK(sample.q.heads == heads && sample.q.dim == dim && sample.k.heads == heads &&
                   sample.v.heads == heads && sample.k.dim == dim && sample.v.dim == dim,
               "calibration samples disagree: heads ", sample.q.heads, " and head dim ",
               sample.q.dim, " where the first sample has ", heads, " and ", dim);
    VEDA_CHECK(sample.q.tokens == sample.grid.tokens() && sample.k.tokens == sample.q.tokens &&
                   sample.v.tokens == sample.q.tokens,
               "calibration sample with ", sample.q.tokens, " tokens on grid ", sample.grid.str(),
               " (", sample.grid.tokens(), " tokens); q, k, v must cover the grid");
    VEDA_CHECK(sample.k.batch == sample.q.batch && sample.v.batch == sample.q.batch,
               "calibration sample with batch sizes ", sample.q.batch, ", ", sample.k.batch, ", ",
               sample.v.batch, " for q, k, v");
    for (std::int64_t b = 0; b < sample.q.batch; ++b) items.push_back({&sample, b});
    max_tokens = std::max(max_tokens, sample.grid.tokens());
  }
  const auto item_count = static_cast<std::int64_t>(items.size());
  const auto shape_count = static_cast<std::int64_t>(config.shapes.size());
  const float scale = 1.0f / std::sqrt(static_cast<float>(dim));

  std::unique_ptr<OracleBackend> own_backend;
  if (backend_in == nullptr) own_backend = make_oracle_backend(OracleDevice::kCpu);
  OracleBackend& backend = backend_in != nullptr ? *backend_in : *own_backend;
  // Heads per backend item: 1 on the CPU (memory holds one head), all on the GPU.
  const std::int64_t block = std::clamp<std::int64_t>(
      backend.heads_per_item(max_tokens, heads, dim, shape_count), 1, heads);

  if (config.search == CalibrationConfig::Search::kEstimatorMask) {
    return calibrate_by_estimator_mask(items, heads, dim, config, progress, backend, block);
  }

  // Phase 1, the tile search: per block of heads and search item, the maps of every candidate
  // with the dense output, then every candidate's oracle-mask output error.
  const std::int64_t search_items = std::min<std::int64_t>(config.search_samples, item_count);
  std::vector<std::vector<SquaredError>> errors(heads, std::vector<SquaredError>(shape_count));
  std::int64_t done = 0;
  for (std::int64_t h0 = 0; h0 < heads && search_items > 0; h0 += block) {
    const std::int64_t h1 = std::min(heads, h0 + block);
    for (std::int64_t it = 0; it < search_items; ++it) {
      backend.set_item(*items[it].sample, items[it].batch, h0, h1);
      const std::vector<std::vector<SquaredError>> item_errors = oracle_mask_errors(
          backend, h1 - h0, config.shapes, config.sparsity, config.keep_own_tile);
      for (std::int64_t h = h0; h < h1; ++h) {
        for (std::int64_t s = 0; s < shape_count; ++s) {
          errors[h][s].error += item_errors[h - h0][s].error;
          errors[h][s].norm += item_errors[h - h0][s].norm;
        }
      }
      done += h1 - h0;
      if (progress) progress("search", done, heads * search_items);
    }
  }
  std::vector<std::vector<double>> relative(heads, std::vector<double>(shape_count));
  for (std::int64_t h = 0; h < heads; ++h) {
    for (std::int64_t s = 0; s < shape_count; ++s) relative[h][s] = errors[h][s].relative();
  }
  const std::vector<int> choice = choose_tile_shapes(relative, config.max_shapes_per_layer);

  // Phase 2, per block of heads: the teacher in each head's chosen shape on every item (one
  // oracle map each), then the distillation on all items but the held-out ones (held_out). Only the
  // block's samples are held, so with the CPU backend (blocks of one head) memory does not grow
  // with heads.
  LayerProfile layer;
  layer.heads.resize(heads);
  for (std::int64_t h0 = 0; h0 < heads; h0 += block) {
    const std::int64_t h1 = std::min(heads, h0 + block), block_heads = h1 - h0;
    std::vector<std::vector<DistillSample>> train(block_heads), heldout(block_heads);
    std::vector<std::vector<TileShape>> lists(block_heads);
    for (std::int64_t h = h0; h < h1; ++h) lists[h - h0] = {config.shapes[choice[h]]};
    for (std::int64_t it = 0; it < item_count; ++it) {
      const CalibrationSample& sample = *items[it].sample;
      const std::int64_t b = items[it].batch;
      backend.set_item(sample, b, h0, h1);
      const std::vector<std::vector<TileMaps>> maps = backend.tile_maps(lists, false);
      std::map<int, std::vector<std::int32_t>> orders;  // candidate -> order on this grid
      for (std::int64_t h = h0; h < h1; ++h) {
        if (orders.count(choice[h]) == 0) {
          orders.emplace(choice[h], tile_major_order(sample.grid, config.shapes[choice[h]]));
        }
      }
      const bool held = held_out(it, item_count);
      parallel_for(block_heads, [&](std::int64_t h) {
        const std::vector<float> q = load_head(sample.q, b, h0 + h),
                                 k = load_head(sample.k, b, h0 + h);
        (held ? heldout : train)[h].push_back(
            distill_sample(q, k, dim, orders.at(choice[h0 + h]), maps[h][0], config));
      });
    }
    std::vector<DistillReport> reports(block_heads);
    for (std::int64_t h = h0; h < h1; ++h) layer.heads[h].estimator = EstimatorParams::zeros(dim);
    // Heads are independent; distill_estimator is single-threaded.
    parallel_for(block_heads, [&](std::int64_t h) {
      reports[h] = distill_estimator(train[h], heldout[h], scale, config.distill,
                                     layer.heads[h0 + h].estimator);
    });
    for (std::int64_t h = h0; h < h1; ++h) {
      HeadProfile& head = layer.heads[h];
      head.tile = config.shapes[choice[h]];
      head.sparsity = config.sparsity;
      record_report(reports[h - h0], !heldout[h - h0].empty(), config.distill, head);
      if (search_items > 0) {
        for (std::int64_t c = 0; c < shape_count; ++c) {
          head.calibration["err_" + config.shapes[c].str()] = relative[h][c];
        }
      }
      if (progress) progress("distill", h + 1, heads);
    }
  }
  return layer;
}

}  // namespace veda::method
