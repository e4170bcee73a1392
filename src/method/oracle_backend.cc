#include "veda/method/oracle_backend.h"

#include <chrono>
#include <string>

#include "oracle_backend_factories.h"
#include "veda/error.h"

namespace veda::method {
namespace {

using Clock = std::chrono::steady_clock;

// Adds the wall time of its scope to `total`, also when the scope ends by an exception.
class ScopeTimer {
 public:
  explicit ScopeTimer(double& total) : total_(total), start_(Clock::now()) {}
  ~ScopeTimer() { total_ += std::chrono::duration<double>(Clock::now() - start_).count(); }
  ScopeTimer(const ScopeTimer&) = delete;
  ScopeTimer& operator=(const ScopeTimer&) = delete;

 private:
  double& total_;
  Clock::time_point start_;
};

}  // namespace

OracleDevice parse_oracle_device(std::string_view text) {
  if (text == "auto") return OracleDevice::kAuto;
  if (text == "cpu") return OracleDevice::kCpu;
  if (text == "cuda") return OracleDevice::kCuda;
  ::veda::detail::fail("device '", text, "' is not known; expected auto, cpu or cuda");
}

std::string_view oracle_device_name(OracleDevice device) {
  switch (device) {
    case OracleDevice::kAuto:
      return "auto";
    case OracleDevice::kCpu:
      return "cpu";
    case OracleDevice::kCuda:
      return "cuda";
  }
  return "unknown";
}

std::string OracleDevices::describe() const {
  return gpus > 0 ? "cpu, cuda (" + gpu_name + ")" : "cpu";
}

OracleDevices available_oracle_devices() {
#ifdef VEDA_METHOD_CUDA
  return detail::cuda_oracle_devices();
#else
  return {};
#endif
}

OracleDeviceChoice resolve_oracle_device(OracleDevice requested, const OracleDevices& available,
                                         std::int64_t head_dim) {
  const bool dim_supported = head_dim == 64 || head_dim == 128;
  if (requested == OracleDevice::kCpu) return {OracleDevice::kCpu, "asked for"};
  if (requested == OracleDevice::kCuda) {
    VEDA_CHECK(available.cuda_built, "--device cuda: this veda was built without CUDA (VEDA_CUDA ",
               "off or no nvcc); available: ", available.describe());
    VEDA_CHECK(available.gpus > 0, "--device cuda: no usable CUDA GPU (", available.gpu_problem,
               "); available: ", available.describe());
    VEDA_CHECK(dim_supported, "--device cuda: the GPU oracle takes head dim 64 or 128; the ",
               "samples have ", head_dim, "; available for them: cpu");
    return {OracleDevice::kCuda, "asked for"};
  }
  if (!available.cuda_built) return {OracleDevice::kCpu, "built without CUDA"};
  if (available.gpus == 0) return {OracleDevice::kCpu, "no GPU: " + available.gpu_problem};
  if (!dim_supported) {
    return {OracleDevice::kCpu,
            "head dim " + std::to_string(head_dim) + " is not one the GPU kernels take (64, 128)"};
  }
  return {OracleDevice::kCuda, "GPU present"};
}

void OracleBackend::set_item(const CalibrationSample& sample, std::int64_t batch,
                             std::int64_t head_begin, std::int64_t head_end) {
  const ScopeTimer timer(seconds_);
  VEDA_CHECK(batch >= 0 && batch < sample.q.batch && head_begin >= 0 && head_begin < head_end &&
                 head_end <= sample.q.heads,
             "oracle item: batch ", batch, " of ", sample.q.batch, ", heads [", head_begin, ", ",
             head_end, ") of ", sample.q.heads);
  item_heads_ = 0;
  load_item(sample, batch, head_begin, head_end);
  item_heads_ = head_end - head_begin;
}

std::vector<std::vector<TileMaps>> OracleBackend::tile_maps(
    const std::vector<std::vector<TileShape>>& shapes, bool dense_output) {
  const ScopeTimer timer(seconds_);
  VEDA_CHECK(item_heads_ > 0, "oracle tile maps without a current item (call set_item first)");
  VEDA_CHECK(static_cast<std::int64_t>(shapes.size()) == item_heads_, "oracle tile maps got ",
             shapes.size(), " shape lists for an item of ", item_heads_, " heads");
  for (const auto& list : shapes) {
    VEDA_CHECK(!list.empty() && list.size() == shapes[0].size(), "oracle tile maps: every head ",
               "needs the same, positive number of shapes; got ", list.size(), " and ",
               shapes[0].size());
    for (const TileShape& shape : list) shape.validate();
  }
  return compute_tile_maps(shapes, dense_output);
}

std::vector<SquaredError> OracleBackend::mask_errors(const TileShape& shape,
                                                     const BlockIndex& index) {
  const ScopeTimer timer(seconds_);
  VEDA_CHECK(item_heads_ > 0, "oracle mask errors without a current item (call set_item first)");
  shape.validate();
  VEDA_CHECK(index.batch == 1 && index.heads == item_heads_ && index.q_tiles == index.k_tiles,
             "oracle mask errors got an index of ", index.batch, " batches, ", index.heads,
             " heads and ", index.q_tiles, " x ", index.k_tiles, " tiles for an item of ",
             item_heads_, " heads");
  return compute_mask_errors(shape, index);
}

std::unique_ptr<OracleBackend> make_oracle_backend(OracleDevice device) {
  VEDA_CHECK(device != OracleDevice::kAuto, "make_oracle_backend: resolve 'auto' first ",
             "(resolve_oracle_device)");
  if (device == OracleDevice::kCpu) return detail::make_cpu_oracle_backend();
#ifdef VEDA_METHOD_CUDA
  return detail::make_cuda_oracle_backend();
#else
  throw Error("the cuda oracle backend is not in this build (built without CUDA); available: cpu");
#endif
}

}  // namespace veda::method
