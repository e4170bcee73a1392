// The CPU oracle backend: the float32 reference, one head at a time (multi_shape_oracle for all
// of a head's shapes in one pass, mask_output_error for the masked outputs). Calibration with it
// computes exactly what it computed before backends existed.
#include <omp.h>

#include <algorithm>
#include <cmath>

#include "oracle_backend_factories.h"
#include "veda/error.h"
#include "veda/method/multi_shape_oracle.h"

namespace veda::method::detail {
namespace {

class CpuOracleBackend final : public OracleBackend {
 public:
  std::string name() const override {
    return "cpu (" + std::to_string(omp_get_max_threads()) + " threads)";
  }

  std::int64_t heads_per_item(std::int64_t, std::int64_t, std::int64_t, std::int64_t) override {
    return 1;
  }

  std::vector<float> lse(std::int64_t head) override { return current(head).lse; }

  std::vector<float> dense_output(std::int64_t head) override {
    VEDA_CHECK(!current(head).out.empty(), "dense output of head ", head,
               " was not computed (tile_maps without dense_output)");
    return current(head).out;
  }

 protected:
  void load_item(const CalibrationSample& sample, std::int64_t batch, std::int64_t head_begin,
                 std::int64_t head_end) override {
    sample_ = &sample;
    batch_ = batch;
    head_begin_ = head_begin;
    heads_.assign(static_cast<std::size_t>(head_end - head_begin), Head{});
  }

  std::vector<std::vector<TileMaps>> compute_tile_maps(
      const std::vector<std::vector<TileShape>>& shapes, bool dense_output) override {
    const std::int64_t dim = sample_->q.dim;
    const float scale = 1.0f / std::sqrt(static_cast<float>(dim));
    std::vector<std::vector<TileMaps>> maps(heads_.size());
    for (std::size_t h = 0; h < heads_.size(); ++h) {
      Head& head = heads_[h];
      const std::int64_t global = head_begin_ + static_cast<std::int64_t>(h);
      // q, k, v stay for mask_errors only when the dense output is asked for.
      std::vector<float> q = load_head(sample_->q, batch_, global);
      std::vector<float> k = load_head(sample_->k, batch_, global);
      std::vector<float> v =
          dense_output ? load_head(sample_->v, batch_, global) : std::vector<float>{};
      MultiShapeOracle oracle = multi_shape_oracle(q, k, v, dim, scale, sample_->grid, shapes[h]);
      head.lse = std::move(oracle.lse);
      if (dense_output) {
        head.out = std::move(oracle.out);
        head.q = std::move(q), head.k = std::move(k), head.v = std::move(v);
      }
      for (ShapeOracle& shape : oracle.shapes) maps[h].push_back(std::move(shape.maps));
    }
    return maps;
  }

  std::vector<SquaredError> compute_mask_errors(const TileShape& shape,
                                                const BlockIndex& index) override {
    const std::int64_t dim = sample_->q.dim;
    const float scale = 1.0f / std::sqrt(static_cast<float>(dim));
    const std::vector<std::int32_t> order = tile_major_order(sample_->grid, shape);
    VEDA_CHECK(index.q_tiles == tile_count(sample_->grid.tokens()), "mask errors: index of ",
               index.q_tiles, " tiles for grid ", sample_->grid.str());
    std::vector<SquaredError> errors(heads_.size());
    for (std::size_t h = 0; h < heads_.size(); ++h) {
      const Head& head = heads_[h];
      VEDA_CHECK(!head.out.empty(), "mask errors need the dense output: call tile_maps with ",
                 "dense_output on this item first");
      // This head's rows as a one-head index, as oracle_mask_error builds it.
      BlockIndex one(1, 1, index.q_tiles, index.k_tiles, index.budget);
      const auto rows = static_cast<std::size_t>(index.q_tiles);
      const auto h_index = static_cast<std::int64_t>(h);
      std::copy_n(index.counts.begin() + h_index * index.q_tiles, rows, one.counts.begin());
      std::copy_n(index.indices.begin() + h_index * index.q_tiles * index.budget,
                  rows * static_cast<std::size_t>(index.budget), one.indices.begin());
      errors[h] = mask_output_error(head.q, head.k, head.v, dim, scale, order, one, head.out);
    }
    return errors;
  }

 private:
  struct Head {
    std::vector<float> q, k, v;  // [N, D] frame-major, kept for mask_errors
    std::vector<float> lse;      // [N]
    std::vector<float> out;      // [N, D] dense output
  };

  const Head& current(std::int64_t head) const {
    VEDA_CHECK(head >= 0 && head < static_cast<std::int64_t>(heads_.size()), "head ", head,
               " is not in the current item's ", heads_.size(), " heads");
    return heads_[static_cast<std::size_t>(head)];
  }

  const CalibrationSample* sample_ = nullptr;
  std::int64_t batch_ = 0, head_begin_ = 0;
  std::vector<Head> heads_;
};

}  // namespace

std::unique_ptr<OracleBackend> make_cpu_oracle_backend() {
  return std::make_unique<CpuOracleBackend>();
}

}  // namespace veda::method::detail
