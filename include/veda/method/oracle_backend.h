// Where the oracle work of calibration runs (DESIGN.md section 2; "Calibration" in section 3).
//
// Per calibration item (one batch element of a captured sample) and block of heads, a backend
// computes the oracle's tile heat and mass in candidate tile shapes, the dense output, and the
// output error of block-sparse attention under a given mask. Everything else of calibration (the
// selection of masks, teachers, tile statistics, distillation, the search's choices, profiles)
// stays on the CPU and is the same for both backends:
//   cpu   per head: multi_shape_oracle (one float32 pass for all shapes) and
//         attend_head_two_pass; the reference.
//   cuda  all heads of an item at once: one lse pass, then per tile shape a gather into
//         tile-major order and oracle_cuda's heat/mass pass; the dense output and the masked
//         outputs with attention_cuda. Operands are bf16 (f32 captures are rounded to bf16,
//         exact when they hold bf16 activations; otherwise ~3 significant digits, so near-equal
//         shapes may swap against the f32 CPU path) or f16 (kept). Only per-tile maps and
//         per-head sums come back to the host.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "veda/block_index.h"
#include "veda/method/calibration.h"
#include "veda/method/tiling_search.h"
#include "veda/oracle.h"
#include "veda/tile_layout.h"

namespace veda::method {

enum class OracleDevice { kAuto, kCpu, kCuda };

// "auto", "cpu" or "cuda"; anything else is a veda::Error naming the text.
OracleDevice parse_oracle_device(std::string_view text);
std::string_view oracle_device_name(OracleDevice device);

// What this build and machine offer.
struct OracleDevices {
  bool cuda_built = false;  // the library holds the CUDA backend (VEDA_CUDA with nvcc)
  int gpus = 0;             // CUDA devices visible
  std::string gpu_name;     // the current device, e.g. "NVIDIA H200, sm_90", when gpus > 0
  std::string gpu_problem;  // why no GPU, when cuda_built and gpus == 0
  // "cpu", or "cpu, cuda (NVIDIA H200, sm_90)".
  std::string describe() const;
};
OracleDevices available_oracle_devices();

struct OracleDeviceChoice {
  OracleDevice device = OracleDevice::kCpu;  // kCpu or kCuda
  std::string reason;                        // why auto chose what it chose
};

// auto: cuda when a GPU is present and the head dim is one the GPU kernels take (64 or 128),
// else cpu. cpu: cpu. cuda: cuda, or a veda::Error naming what was asked and what is available.
OracleDeviceChoice resolve_oracle_device(OracleDevice requested, const OracleDevices& available,
                                         std::int64_t head_dim);

class OracleBackend {
 public:
  virtual ~OracleBackend() = default;

  // "cpu (2 threads)", "cuda (NVIDIA H200, sm_90)".
  virtual std::string name() const = 0;
  // Heads to give set_item at once for items of `tokens` tokens, head dim `dim` and up to
  // `shapes` tile shapes per tile_maps call: cpu 1 (memory holds one head), cuda all `heads`
  // unless the device memory holds fewer. May release buffers held from earlier items.
  virtual std::int64_t heads_per_item(std::int64_t tokens, std::int64_t heads, std::int64_t dim,
                                      std::int64_t shapes) = 0;

  // Makes heads [head_begin, head_end) of batch element `batch` of `sample` the current item.
  // `sample`'s tensors must stay alive while it is current.
  void set_item(const CalibrationSample& sample, std::int64_t batch, std::int64_t head_begin,
                std::int64_t head_end);

  // maps[h][p]: heat and mass (as tile_heat_and_mass) of head head_begin + h of the current
  // item in tile shape shapes[h][p]; every head lists the same number of shapes. With
  // dense_output the dense output is computed too (once per item), for mask_errors.
  std::vector<std::vector<TileMaps>> tile_maps(const std::vector<std::vector<TileShape>>& shapes,
                                               bool dense_output);

  // Per head of the current item: ||O_sparse - O_dense||^2 and ||O_dense||^2 of block-sparse
  // attention with `index` (batch 1, the item's heads, tiles of `shape` in its tile-major order)
  // against the dense output. Needs tile_maps(..., dense_output = true) on this item first.
  std::vector<SquaredError> mask_errors(const TileShape& shape, const BlockIndex& index);

  // For tests and evaluation, after tile_maps on the current item: head `head` (0-based within
  // the item's heads), frame-major: lse [N]; the dense output [N, D] (needs dense_output).
  virtual std::vector<float> lse(std::int64_t head) = 0;
  virtual std::vector<float> dense_output(std::int64_t head) = 0;

  // Wall time spent in set_item, tile_maps and mask_errors so far (the oracle phase).
  double seconds() const { return seconds_; }

 protected:
  virtual void load_item(const CalibrationSample& sample, std::int64_t batch,
                         std::int64_t head_begin, std::int64_t head_end) = 0;
  virtual std::vector<std::vector<TileMaps>> compute_tile_maps(
      const std::vector<std::vector<TileShape>>& shapes, bool dense_output) = 0;
  virtual std::vector<SquaredError> compute_mask_errors(const TileShape& shape,
                                                        const BlockIndex& index) = 0;

  // Set by set_item for the implementations.
  std::int64_t item_heads() const { return item_heads_; }

 private:
  double seconds_ = 0;
  std::int64_t item_heads_ = 0;
};

// The backend of `device` (kCpu or kCuda; resolve kAuto first). kCuda without a GPU, or in a
// build without CUDA, is a veda::Error naming what is available.
std::unique_ptr<OracleBackend> make_oracle_backend(OracleDevice device);

}  // namespace veda::method
