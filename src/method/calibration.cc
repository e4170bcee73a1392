#include "veda/method/calibration.h"

#include <algorithm>
#include <cmath>

#include "veda/error.h"
#include "veda/method/multi_shape_oracle.h"
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

// The teacher and statistics of one item in one shape.
DistillSample distill_sample(std::span<const float> q, std::span<const float> k, std::int64_t dim,
                             const ShapeOracle& shape, const CalibrationConfig& config) {
  DistillSample sample;
  sample.q_tiles = shape.maps.q_tiles;
  sample.k_tiles = shape.maps.k_tiles;
  std::vector<float> tiled(q.size());
  gather_rows(q, shape.order, dim, tiled);
  sample.q_stats = tile_statistics(tiled, dim);
  gather_rows(k, shape.order, dim, tiled);
  sample.k_stats = tile_statistics(tiled, dim);
  sample.teacher = teacher_from_heat(
      config.teacher == CalibrationConfig::Teacher::kHeat ? shape.maps.heat : shape.maps.mass,
      sample.q_tiles, sample.k_tiles, config.temperature);
  return sample;
}

void record_report(const DistillReport& report, bool heldout, HeadProfile& head) {
  head.calibration["kl_train_before"] = report.train_before;
  head.calibration["kl_train_after"] = report.train_after;
  if (heldout) {
    head.calibration["kl_heldout_before"] = report.heldout_before;
    head.calibration["kl_heldout_after"] = report.heldout_after;
  }
  head.calibration["steps"] = report.steps;
  head.calibration["best_step"] = report.best_step;
}

// Search by the distilled estimator's own mask: per head, one multi-shape oracle pass per item
// (the dense output on the held-out last item), one distillation per candidate shape, and the
// output error of each candidate's estimated mask on the held-out item.
LayerProfile calibrate_by_estimator_mask(const std::vector<Item>& items, std::int64_t heads,
                                         std::int64_t dim, const CalibrationConfig& config,
                                         const ProgressCallback& progress) {
  const auto item_count = static_cast<std::int64_t>(items.size());
  VEDA_CHECK(item_count >= 2, "the estimator-mask tile search needs at least two samples (the ",
             "last is held out and measured); got ", item_count);
  const auto shape_count = static_cast<std::int64_t>(config.shapes.size());
  const float scale = 1.0f / std::sqrt(static_cast<float>(dim));
  std::vector<std::vector<EstimatorParams>> fitted(heads);
  std::vector<std::vector<DistillReport>> reports(heads);
  std::vector<std::vector<double>> errors(heads, std::vector<double>(shape_count));
  for (std::int64_t h = 0; h < heads; ++h) {
    std::vector<std::vector<DistillSample>> train(shape_count), heldout(shape_count);
    std::vector<float> q_held, k_held, v_held;
    MultiShapeOracle held_oracle;
    for (std::int64_t it = 0; it < item_count; ++it) {
      const CalibrationSample& sample = *items[it].sample;
      const std::int64_t b = items[it].batch;
      const bool held = it == item_count - 1;
      std::vector<float> q = load_head(sample.q, b, h), k = load_head(sample.k, b, h);
      std::vector<float> v = held ? load_head(sample.v, b, h) : std::vector<float>{};
      MultiShapeOracle oracle = multi_shape_oracle(q, k, v, dim, scale, sample.grid, config.shapes);
      for (std::int64_t s = 0; s < shape_count; ++s) {
        (held ? heldout : train)[s].push_back(distill_sample(q, k, dim, oracle.shapes[s], config));
      }
      if (held) {
        q_held = std::move(q);
        k_held = std::move(k);
        v_held = std::move(v);
        held_oracle = std::move(oracle);
      }
    }
    fitted[h].assign(shape_count, EstimatorParams::zeros(dim));
    reports[h].resize(shape_count);
#pragma omp parallel for schedule(dynamic, 1)
    for (std::int64_t s = 0; s < shape_count; ++s) {
      reports[h][s] = distill_estimator(train[s], heldout[s], scale, config.distill, fitted[h][s]);
    }
    const std::int64_t tiles = held_oracle.shapes[0].maps.q_tiles;
    std::vector<float> q_tiled(q_held.size()), k_tiled(k_held.size());
    for (std::int64_t s = 0; s < shape_count; ++s) {
      const ShapeOracle& shape = held_oracle.shapes[s];
      HeadProfile candidate;
      candidate.tile = config.shapes[s];
      candidate.sparsity = config.sparsity;
      candidate.estimator = fitted[h][s];
      gather_rows(q_held, shape.order, dim, q_tiled);
      gather_rows(k_held, shape.order, dim, k_tiled);
      BlockIndex index(1, 1, tiles, tiles, budget_for_sparsity(config.sparsity, tiles));
      veda_select_head(q_tiled, k_tiled, dim, scale, candidate, config.keep_own_tile, index, 0, 0);
      errors[h][s] =
          mask_output_error(q_held, k_held, v_held, dim, scale, shape.order, index, held_oracle.out)
              .relative();
    }
    if (progress) progress("search", h + 1, heads);
  }
  const std::vector<int> choice = choose_tile_shapes(errors, config.max_shapes_per_layer);
  LayerProfile layer;
  layer.heads.resize(heads);
  for (std::int64_t h = 0; h < heads; ++h) {
    HeadProfile& head = layer.heads[h];
    head.tile = config.shapes[choice[h]];
    head.sparsity = config.sparsity;
    head.estimator = std::move(fitted[h][choice[h]]);
    record_report(reports[h][choice[h]], true, head);
    for (std::int64_t s = 0; s < shape_count; ++s) {
      head.calibration["err_" + config.shapes[s].str()] = errors[h][s];
    }
    head.calibration["search_estimator_mask"] = 1;
  }
  if (progress) progress("distill", heads, heads);
  return layer;
}

}  // namespace

LayerProfile calibrate_layer(std::span<const CalibrationSample> samples,
                             const CalibrationConfig& config, const ProgressCallback& progress) {
  VEDA_CHECK(!samples.empty(), "calibration needs at least one sample");
  VEDA_CHECK(config.sparsity >= 0 && config.sparsity < 1, "calibration sparsity ", config.sparsity,
             " is not in [0, 1)");
  VEDA_CHECK(!config.shapes.empty(), "calibration needs at least one candidate tile shape");
  for (const TileShape& shape : config.shapes) shape.validate();
  const std::int64_t heads = samples[0].q.heads, dim = samples[0].q.dim;
  // Items: (sample, batch) pairs, each one calibration input.
  std::vector<Item> items;
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
  }
  const auto item_count = static_cast<std::int64_t>(items.size());
  const auto shape_count = static_cast<std::int64_t>(config.shapes.size());
  const float scale = 1.0f / std::sqrt(static_cast<float>(dim));

  if (config.search == CalibrationConfig::Search::kEstimatorMask) {
    return calibrate_by_estimator_mask(items, heads, dim, config, progress);
  }

  // Phase 1, the tile search: per head and search item, one multi-shape oracle pass with the
  // dense output, then every candidate's oracle-mask output error.
  const std::int64_t search_items = std::min<std::int64_t>(config.search_samples, item_count);
  std::vector<std::vector<SquaredError>> errors(heads, std::vector<SquaredError>(shape_count));
  std::int64_t done = 0;
  for (std::int64_t h = 0; h < heads; ++h) {
    for (std::int64_t it = 0; it < search_items; ++it) {
      const CalibrationSample& sample = *items[it].sample;
      const std::int64_t b = items[it].batch;
      const std::vector<float> q = load_head(sample.q, b, h), k = load_head(sample.k, b, h),
                               v = load_head(sample.v, b, h);
      const MultiShapeOracle oracle =
          multi_shape_oracle(q, k, v, dim, scale, sample.grid, config.shapes);
      for (std::int64_t s = 0; s < shape_count; ++s) {
        const SquaredError e = oracle_mask_error(q, k, v, dim, scale, oracle.shapes[s], oracle.out,
                                                 config.sparsity, config.keep_own_tile);
        errors[h][s].error += e.error;
        errors[h][s].norm += e.norm;
      }
      if (progress) progress("search", ++done, heads * search_items);
    }
  }
  std::vector<std::vector<double>> relative(heads, std::vector<double>(shape_count));
  for (std::int64_t h = 0; h < heads; ++h) {
    for (std::int64_t s = 0; s < shape_count; ++s) relative[h][s] = errors[h][s].relative();
  }
  const std::vector<int> choice = choose_tile_shapes(relative, config.max_shapes_per_layer);

  // Phase 2, per head: the teacher in the chosen shape on every item (one single-shape oracle
  // pass each; only this head's samples are held, so memory does not grow with heads), then the
  // distillation (all items but the last; the last is held out when there are several).
  LayerProfile layer;
  layer.heads.resize(heads);
  for (std::int64_t h = 0; h < heads; ++h) {
    const TileShape shape = config.shapes[choice[h]];
    std::vector<DistillSample> train, heldout;
    for (std::int64_t it = 0; it < item_count; ++it) {
      const CalibrationSample& sample = *items[it].sample;
      const std::int64_t b = items[it].batch;
      const std::vector<float> q = load_head(sample.q, b, h), k = load_head(sample.k, b, h);
      const TileShape shapes[] = {shape};
      const MultiShapeOracle oracle = multi_shape_oracle(q, k, {}, dim, scale, sample.grid, shapes);
      DistillSample distill = distill_sample(q, k, dim, oracle.shapes[0], config);
      (item_count > 1 && it == item_count - 1 ? heldout : train).push_back(std::move(distill));
    }
    HeadProfile& head = layer.heads[h];
    head.tile = shape;
    head.sparsity = config.sparsity;
    head.estimator = EstimatorParams::zeros(dim);
    const DistillReport report =
        distill_estimator(train, heldout, scale, config.distill, head.estimator);
    record_report(report, !heldout.empty(), head);
    if (search_items > 0) {
      for (std::int64_t c = 0; c < shape_count; ++c) {
        head.calibration["err_" + config.shapes[c].str()] = relative[h][c];
      }
    }
    if (progress) progress("distill", h + 1, heads);
  }
  return layer;
}

}  // namespace veda::method
