// The GPU oracle backend: all heads of a calibration item at once, on the current CUDA device.
//
// Per item: q, k (and v once the dense output is asked for) go up once, frame-major [N, Hb, D]
// (bf16; f16 kept; f32 rounded to bf16 on the host). One lse pass over them (oracle_lse_cuda:
// lse does not depend on the order of q's rows). Per pass p of tile_maps, q and k are gathered
// into each head's tile-major order of its shape (tile_gather_cuda, one group per distinct
// shape), lse is permuted to that order, and oracle_tile_maps_cuda writes heat and mass. The
// dense output is attention_cuda's dense mode; a mask's output is its block-sparse mode over
// tile-major q, k, v storing rows frame-major (out_order), compared per head with the dense
// output on the device. Host traffic per item: the operands up; per pass 2 Hb T^2 floats of maps
// down; per mask Hb T (budget + 1) index entries up and 2 Hb N / 256 partial sums down.
//
// Device memory, Hb heads, N tokens, T = ceil(N / 128), P passes in one tile_maps call:
//   q, k, v frame-major and their tile-major copies   6 x 2 Hb N D bytes
//   dense and masked outputs (f32)                    2 x 4 Hb N D
//   lse frame-major and tile-major                    2 x 4 Hb N
//   heat and mass of every pass                       8 P Hb T^2
//   index, orders, partial sums                       4 Hb T (budget + 1) + 4 P N + 16 Hb N / 256
// At Wan2.1-14B 720p (N = 75,600, Hb = 40, D = 128, 7 shapes): 4.65 + 3.10 + 0.02 + 0.78 +
// <= 0.06 GB = 8.6 GB, well inside an H200; heads_per_item lowers Hb where memory is short.
//
// Synchronisation: the pageable uploads, the end of tile_maps (maps come down) and the end of
// mask_errors (sums come down); never per head. Every output buffer is filled with NaN bytes
// before the kernels write it, and tile_maps rejects non-finite maps, so an entry a kernel
// misses cannot pass as a stale value of an earlier item.
#include <cuda_runtime_api.h>

#include <algorithm>
#include <cmath>
#include <string>

#include "oracle_backend_factories.h"
#include "oracle_backend_kernels.h"
#include "veda/attention.h"
#include "veda/cuda/attention.h"
#include "veda/cuda/oracle.h"
#include "veda/cuda/tile_front_end.h"
#include "veda/error.h"

namespace veda::method::detail {
namespace {

void check_cuda(cudaError_t status, const char* what) {
  if (status != cudaSuccess) {
    cudaGetLastError();  // clear it, so later calls do not report it again
    ::veda::detail::fail("GPU oracle: ", what, ": ", cudaGetErrorString(status));
  }
}

// "NVIDIA H200, sm_90"
std::string describe_device(int device) {
  cudaDeviceProp properties{};
  check_cuda(cudaGetDeviceProperties(&properties, device), "cudaGetDeviceProperties");
  return std::string(properties.name) + ", sm_" + std::to_string(properties.major) +
         std::to_string(properties.minor);
}

// Device memory that grows on demand (contents are not kept) and frees itself.
class DeviceArray {
 public:
  DeviceArray() = default;
  DeviceArray(const DeviceArray&) = delete;
  DeviceArray& operator=(const DeviceArray&) = delete;
  ~DeviceArray() { release(); }

  template <typename T = void>
  T* reserve(std::size_t bytes, const char* what) {
    if (data_ == nullptr || bytes > capacity_) {
      release();
      const std::size_t size = std::max<std::size_t>(bytes, 256);
      const cudaError_t status = cudaMalloc(&data_, size);
      if (status != cudaSuccess) {
        data_ = nullptr;
        cudaGetLastError();
        std::size_t free = 0, total = 0;
        cudaMemGetInfo(&free, &total);
        ::veda::detail::fail("GPU oracle: allocating ", size >> 20, " MB for ", what,
                             " failed: ", cudaGetErrorString(status), " (", free >> 20,
                             " MB free of ", total >> 20, ")");
      }
      capacity_ = size;
    }
    return static_cast<T*>(data_);
  }
  template <typename T = void>
  T* get() const {
    return static_cast<T*>(data_);
  }
  void release() {
    if (data_ != nullptr) cudaFree(data_);
    data_ = nullptr;
    capacity_ = 0;
  }

 private:
  void* data_ = nullptr;
  std::size_t capacity_ = 0;
};

class CudaOracleBackend final : public OracleBackend {
 public:
  CudaOracleBackend() {
    check_cuda(cudaGetDevice(&device_), "cudaGetDevice");
    name_ = "cuda (" + describe_device(device_) + ")";
    check_cuda(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking), "creating a stream");
  }
  ~CudaOracleBackend() override {
    cudaStreamSynchronize(stream_);
    cudaStreamDestroy(stream_);
  }
  CudaOracleBackend(const CudaOracleBackend&) = delete;
  CudaOracleBackend& operator=(const CudaOracleBackend&) = delete;

  std::string name() const override { return name_; }

  std::int64_t heads_per_item(std::int64_t tokens, std::int64_t heads, std::int64_t dim,
                              std::int64_t shapes) override {
    // Measure with this backend's buffers given back; the current item (if any) is dropped.
    for (DeviceArray* array :
         {&q_, &k_, &v_, &q_tiled_, &k_tiled_, &v_tiled_, &dense_out_, &sparse_out_, &lse_,
          &lse_tiled_, &maps_, &orders_, &groups_, &counts_, &indices_, &partials_}) {
      array->release();
    }
    qk_loaded_ = v_loaded_ = lse_ready_ = dense_ready_ = false;
    std::size_t free = 0, total = 0;
    check_cuda(cudaMemGetInfo(&free, &total), "cudaMemGetInfo");
    const auto n = static_cast<double>(tokens), d = static_cast<double>(dim);
    const auto t = static_cast<double>(tile_count(tokens));
    const double per_head = n * d * (6 * 2 + 2 * 4) + n * 8 +
                            static_cast<double>(shapes) * t * t * 8 + t * (t + 1) * 4 +
                            static_cast<double>(error_chunks(tokens)) * 16;
    const double shared = static_cast<double>(shapes) * n * 4 + 256.0 * (1 << 20);  // + margin
    const double usable = 0.9 * static_cast<double>(free) - shared;
    const auto fit = static_cast<std::int64_t>(std::max(1.0, std::floor(usable / per_head)));
    return std::clamp<std::int64_t>(fit, 1, heads);
  }

  std::vector<float> lse(std::int64_t head) override {
    check_head(head);
    VEDA_CHECK(lse_ready_, "lse of the current item was not computed (call tile_maps first)");
    std::vector<float> host(static_cast<std::size_t>(tokens_));
    check_cuda(cudaMemcpyAsync(host.data(), lse_.get<float>() + head * tokens_, host.size() * 4,
                               cudaMemcpyDeviceToHost, stream_),
               "downloading lse");
    check_cuda(cudaStreamSynchronize(stream_), "lse download");
    return host;
  }

  std::vector<float> dense_output(std::int64_t head) override {
    check_head(head);
    VEDA_CHECK(dense_ready_, "dense output of the current item was not computed (tile_maps ",
               "without dense_output)");
    std::vector<float> host(static_cast<std::size_t>(tokens_ * dim_));
    const auto row = static_cast<std::size_t>(dim_) * 4;
    check_cuda(
        cudaMemcpy2DAsync(host.data(), row, dense_out_.get<float>() + head * dim_,
                          row * static_cast<std::size_t>(heads_), row,
                          static_cast<std::size_t>(tokens_), cudaMemcpyDeviceToHost, stream_),
        "downloading the dense output");
    check_cuda(cudaStreamSynchronize(stream_), "dense output download");
    return host;
  }

 protected:
  void load_item(const CalibrationSample& sample, std::int64_t batch, std::int64_t head_begin,
                 std::int64_t head_end) override {
    const std::int64_t dim = sample.q.dim;
    VEDA_CHECK(dim == 64 || dim == 128, "the GPU oracle takes head dim 64 or 128; the sample has ",
               dim, " (use --device cpu)");
    if (sample_ == nullptr || sample.grid.t != grid_.t || sample.grid.h != grid_.h ||
        sample.grid.w != grid_.w) {
      order_cache_.clear();
    }
    sample_ = &sample;
    batch_ = batch;
    head_begin_ = head_begin;
    heads_ = head_end - head_begin;
    grid_ = sample.grid;
    tokens_ = grid_.tokens();
    tiles_ = tile_count(tokens_);
    dim_ = dim;
    scale_ = 1.0f / std::sqrt(static_cast<float>(dim));
    // f16 stays f16 (more mantissa than bf16); bf16 and f32 go to bf16.
    const bool all_f16 = sample.q.dtype == DType::kF16 && sample.k.dtype == DType::kF16 &&
                         sample.v.dtype == DType::kF16;
    dtype_ = all_f16 ? DType::kF16 : DType::kBF16;
    qk_loaded_ = v_loaded_ = lse_ready_ = dense_ready_ = false;
  }

  std::vector<std::vector<TileMaps>> compute_tile_maps(
      const std::vector<std::vector<TileShape>>& shapes, bool dense_output) override {
    const std::size_t passes = shapes[0].size();
    ensure_lse();
    if (dense_output) ensure_dense_output();

    // Orders and head groups of every pass, uploaded together before any pass runs.
    std::vector<std::int32_t> orders, groups(passes * static_cast<std::size_t>(heads_));
    std::vector<std::int64_t> first_group(passes), group_count(passes);
    for (std::size_t p = 0; p < passes; ++p) {
      std::vector<TileShape> distinct;
      first_group[p] = static_cast<std::int64_t>(orders.size()) / tokens_;
      for (std::int64_t h = 0; h < heads_; ++h) {
        const TileShape& shape = shapes[h][p];
        auto found = std::find(distinct.begin(), distinct.end(), shape);
        if (found == distinct.end()) {
          distinct.push_back(shape);
          const std::vector<std::int32_t>& order = order_for(shape);
          orders.insert(orders.end(), order.begin(), order.end());
          found = distinct.end() - 1;
        }
        groups[p * heads_ + h] = static_cast<std::int32_t>(found - distinct.begin());
      }
      group_count[p] = static_cast<std::int64_t>(distinct.size());
    }
    auto* orders_device = orders_.reserve<std::int32_t>(orders.size() * 4, "tile orders");
    auto* groups_device = groups_.reserve<std::int32_t>(groups.size() * 4, "head groups");
    upload(orders_device, orders.data(), orders.size() * 4, "tile orders");
    upload(groups_device, groups.data(), groups.size() * 4, "head groups");

    const std::size_t map_floats = static_cast<std::size_t>(heads_ * tiles_ * tiles_);
    auto* maps = maps_.reserve<float>(passes * 2 * map_floats * 4, "tile maps");
    poison(maps, passes * 2 * map_floats * 4);
    void* q_tiled = q_tiled_.reserve(operand_bytes(), "tile-major q");
    void* k_tiled = k_tiled_.reserve(operand_bytes(), "tile-major k");
    auto* lse_tiled = lse_tiled_.reserve<float>(lse_bytes(), "tile-major lse");
    for (std::size_t p = 0; p < passes; ++p) {
      const std::int32_t* order = orders_device + first_group[p] * tokens_;
      const std::int32_t* group = groups_device + p * heads_;
      const TileGatherParams gathers[] = {{frame(q_.get()), order, group_count[p], group, q_tiled},
                                          {frame(k_.get()), order, group_count[p], group, k_tiled}};
      tile_gather_cuda(gathers, stream_);
      poison(lse_tiled, lse_bytes());
      permute_lse_cuda(lse_.get<float>(), order, group, heads_, tokens_, lse_tiled, stream_);
      OracleParams params{tiled(q_tiled), tiled(k_tiled), scale_};
      params.lse = lse_tiled;
      params.heat = maps + 2 * p * map_floats;
      params.mass = params.heat + map_floats;
      oracle_tile_maps_cuda(params, stream_);
    }
    check_cuda(cudaStreamSynchronize(stream_), "oracle tile maps");

    // Down, straight into the per-head maps.
    const auto cells = static_cast<std::size_t>(tiles_ * tiles_);
    std::vector<std::vector<TileMaps>> result(heads_, std::vector<TileMaps>(passes));
    for (std::int64_t h = 0; h < heads_; ++h) {
      for (std::size_t p = 0; p < passes; ++p) {
        TileMaps& out = result[h][p];
        out.q_tiles = out.k_tiles = tiles_;
        const float* heat = maps + 2 * p * map_floats + h * cells;
        out.heat.resize(cells);
        out.mass.resize(cells);
        check_cuda(
            cudaMemcpyAsync(out.heat.data(), heat, cells * 4, cudaMemcpyDeviceToHost, stream_),
            "downloading tile heat");
        check_cuda(cudaMemcpyAsync(out.mass.data(), heat + map_floats, cells * 4,
                                   cudaMemcpyDeviceToHost, stream_),
                   "downloading tile mass");
      }
    }
    check_cuda(cudaStreamSynchronize(stream_), "tile maps download");
    for (std::int64_t h = 0; h < heads_; ++h) {
      for (std::size_t p = 0; p < passes; ++p) {
        for (const std::vector<float>* map : {&result[h][p].heat, &result[h][p].mass}) {
          const auto bad = std::find_if(map->begin(), map->end(),
                                        [](float value) { return !std::isfinite(value); });
          VEDA_CHECK(bad == map->end(), "GPU oracle: head ", head_begin_ + h, ", tile ",
                     shapes[h][p].str(), ": ", map == &result[h][p].heat ? "heat" : "mass",
                     " entry ", bad - map->begin(), " is ", *bad, " (a kernel left it unwritten ",
                     "or the inputs overflow)");
        }
      }
    }
    return result;
  }

  std::vector<SquaredError> compute_mask_errors(const TileShape& shape,
                                                const BlockIndex& index) override {
    VEDA_CHECK(dense_ready_, "mask errors need the dense output: call tile_maps with ",
               "dense_output on this item first");
    VEDA_CHECK(index.q_tiles == tiles_ && index.budget >= 1 && index.budget <= tiles_,
               "mask errors: index of ", index.q_tiles, " tiles and budget ", index.budget,
               " for grid ", grid_.str(), " (", tiles_, " tiles)");
    const std::vector<std::int32_t>& order = order_for(shape);
    auto* order_device = orders_.reserve<std::int32_t>(order.size() * 4, "tile order");
    auto* counts = counts_.reserve<std::int32_t>(index.counts.size() * 4, "index counts");
    auto* indices = indices_.reserve<std::int32_t>(index.indices.size() * 4, "index lists");
    upload(order_device, order.data(), order.size() * 4, "tile order");
    upload(counts, index.counts.data(), index.counts.size() * 4, "index counts");
    upload(indices, index.indices.data(), index.indices.size() * 4, "index lists");

    void* q_tiled = q_tiled_.reserve(operand_bytes(), "tile-major q");
    void* k_tiled = k_tiled_.reserve(operand_bytes(), "tile-major k");
    void* v_tiled = v_tiled_.reserve(operand_bytes(), "tile-major v");
    const TileGatherParams gathers[] = {{frame(q_.get()), order_device, 1, nullptr, q_tiled},
                                        {frame(k_.get()), order_device, 1, nullptr, k_tiled},
                                        {frame(v_.get()), order_device, 1, nullptr, v_tiled}};
    tile_gather_cuda(gathers, stream_);
    auto* out = sparse_out_.reserve<float>(output_bytes(), "masked output");
    poison(out, output_bytes());
    const BlockIndexView view{counts, indices, 1, heads_, tiles_, tiles_, index.budget};
    AttentionParams attention = frame_output_params(out);
    attention.q = tiled(q_tiled), attention.k = tiled(k_tiled), attention.v = tiled(v_tiled);
    attention.index = &view;
    attention.out_order = order_device;  // row i of the tile-major order -> frame-major order[i]
    attention_cuda(attention, stream_);

    const std::int64_t chunks = error_chunks(tokens_);
    auto* partials =
        partials_.reserve<double>(static_cast<std::size_t>(heads_ * chunks * 2) * 8, "error sums");
    squared_error_partials_cuda(out, dense_out_.get<float>(), tokens_, heads_, dim_, partials,
                                stream_);
    std::vector<double> host(static_cast<std::size_t>(heads_ * chunks * 2));
    check_cuda(
        cudaMemcpyAsync(host.data(), partials, host.size() * 8, cudaMemcpyDeviceToHost, stream_),
        "downloading error sums");
    check_cuda(cudaStreamSynchronize(stream_), "mask errors");
    std::vector<SquaredError> errors(heads_);
    for (std::int64_t h = 0; h < heads_; ++h) {
      for (std::int64_t c = 0; c < chunks; ++c) {
        errors[h].error += host[(h * chunks + c) * 2];
        errors[h].norm += host[(h * chunks + c) * 2 + 1];
      }
      VEDA_CHECK(std::isfinite(errors[h].error) && std::isfinite(errors[h].norm),
                 "GPU oracle: head ", head_begin_ + h, ", tile ", shape.str(),
                 ": non-finite mask error ", errors[h].error, " / ", errors[h].norm);
    }
    return errors;
  }

 private:
  std::size_t operand_bytes() const {
    return static_cast<std::size_t>(tokens_ * heads_ * dim_) * 2;
  }
  std::size_t output_bytes() const { return static_cast<std::size_t>(tokens_ * heads_ * dim_) * 4; }
  std::size_t lse_bytes() const { return static_cast<std::size_t>(heads_ * tokens_) * 4; }

  // The uploaded operands, [1, N, Hb, D] frame-major.
  TokensView frame(const void* data) const {
    return {data, dtype_, 1, tokens_, heads_, dim_, tokens_ * heads_ * dim_, heads_ * dim_, dim_};
  }
  // Tile-major copies, [1, Hb, N, D] (as tile_gather_cuda writes them).
  TokensView tiled(const void* data) const {
    return {data, dtype_, 1, tokens_, heads_, dim_, heads_ * tokens_ * dim_, dim_, tokens_ * dim_};
  }
  // Attention of the frame-major operands into f32 out [1, N, Hb, D]; no lse.
  AttentionParams frame_output_params(float* out) const {
    AttentionParams params;
    params.q = frame(q_.get()), params.k = frame(k_.get()), params.v = frame(v_.get());
    params.scale = scale_;
    params.out = out;
    params.out_dtype = DType::kF32;
    params.out_stride_batch = tokens_ * heads_ * dim_;
    params.out_stride_token = heads_ * dim_;
    params.out_stride_head = dim_;
    return params;
  }

  void check_head(std::int64_t head) const {
    VEDA_CHECK(sample_ != nullptr && head >= 0 && head < heads_, "head ", head,
               " is not in the current item's ", heads_, " heads");
  }

  void poison(void* device, std::size_t bytes) {
    check_cuda(cudaMemsetAsync(device, 0xFF, bytes, stream_), "poisoning an output");
  }

  void upload(void* device, const void* host, std::size_t bytes, const char* what) {
    check_cuda(cudaMemcpyAsync(device, host, bytes, cudaMemcpyHostToDevice, stream_), what);
  }

  // One of q, k, v of the current item into `array` as [N, Hb, D] of dtype_: one copy when the
  // file already holds exactly that, else converted on the host (OpenMP over tokens).
  void upload_operand(const TokensView& view, DeviceArray& array, const char* what) {
    void* device = array.reserve(operand_bytes(), what);
    const bool direct = view.dtype == dtype_ && view.stride_head == dim_ &&
                        view.stride_token == view.heads * dim_ && head_begin_ == 0 &&
                        heads_ == view.heads;
    if (direct) {
      upload(device, static_cast<const std::uint16_t*>(view.data) + batch_ * view.stride_batch,
             operand_bytes(), what);
      return;
    }
    staging_.resize(static_cast<std::size_t>(tokens_ * heads_ * dim_));
    const bool bf16 = dtype_ == DType::kBF16;
#pragma omp parallel for schedule(static)
    for (std::int64_t n = 0; n < tokens_; ++n) {
      for (std::int64_t h = 0; h < heads_; ++h) {
        const std::int64_t source = view.offset(batch_, n, head_begin_ + h);
        std::uint16_t* row = staging_.data() + (n * heads_ + h) * dim_;
        for (std::int64_t d = 0; d < dim_; ++d) {
          const float value = load_as_float(view.data, view.dtype, source + d);
          row[d] = bf16 ? float_to_bf16(value) : float_to_f16(value);
        }
      }
    }
    // A pageable copy returns once the data is staged, so staging_ may be refilled next.
    upload(device, staging_.data(), operand_bytes(), what);
  }

  void ensure_lse() {
    if (!qk_loaded_) {
      upload_operand(sample_->q, q_, "q");
      upload_operand(sample_->k, k_, "k");
      qk_loaded_ = true;
    }
    if (lse_ready_) return;
    auto* lse = lse_.reserve<float>(lse_bytes(), "lse");
    poison(lse, lse_bytes());
    OracleParams params{frame(q_.get()), frame(k_.get()), scale_};
    params.lse = lse;  // [1, Hb, N] frame-major
    oracle_lse_cuda(params, stream_);
    lse_ready_ = true;
  }

  void ensure_dense_output() {
    if (dense_ready_) return;
    if (!v_loaded_) {
      upload_operand(sample_->v, v_, "v");
      v_loaded_ = true;
    }
    auto* out = dense_out_.reserve<float>(output_bytes(), "dense output");
    poison(out, output_bytes());
    attention_cuda(frame_output_params(out), stream_);
    dense_ready_ = true;
  }

  // Tile-major order of `shape` on the current grid, computed once per grid.
  const std::vector<std::int32_t>& order_for(const TileShape& shape) {
    for (const auto& [cached, order] : order_cache_) {
      if (cached == shape) return order;
    }
    order_cache_.emplace_back(shape, tile_major_order(grid_, shape));
    return order_cache_.back().second;
  }

  int device_ = 0;
  std::string name_;
  cudaStream_t stream_ = nullptr;

  // The current item.
  const CalibrationSample* sample_ = nullptr;
  Grid grid_;
  std::int64_t batch_ = 0, head_begin_ = 0, heads_ = 0, tokens_ = 0, tiles_ = 0, dim_ = 0;
  float scale_ = 1.0f;
  DType dtype_ = DType::kBF16;
  bool qk_loaded_ = false, v_loaded_ = false, lse_ready_ = false, dense_ready_ = false;

  DeviceArray q_, k_, v_;                    // [N, Hb, D] frame-major, dtype_
  DeviceArray q_tiled_, k_tiled_, v_tiled_;  // [Hb, N, D] tile-major, dtype_
  DeviceArray dense_out_, sparse_out_;       // [N, Hb, D] f32 frame-major
  DeviceArray lse_, lse_tiled_;              // [Hb, N] f32
  DeviceArray maps_;                         // [P, 2 (heat, mass), Hb, T, T] f32
  DeviceArray orders_, groups_;              // [groups, N], [P, Hb] int32
  DeviceArray counts_, indices_;             // [Hb, T], [Hb, T, budget] int32
  DeviceArray partials_;                     // [Hb, chunks, 2] f64
  std::vector<std::uint16_t> staging_;       // host [N, Hb, D] for converted uploads
  std::vector<std::pair<TileShape, std::vector<std::int32_t>>> order_cache_;
};

}  // namespace

std::unique_ptr<OracleBackend> make_cuda_oracle_backend() {
  const OracleDevices devices = cuda_oracle_devices();
  VEDA_CHECK(devices.gpus > 0, "the cuda oracle backend needs a CUDA GPU (", devices.gpu_problem,
             "); available: ", devices.describe());
  return std::make_unique<CudaOracleBackend>();
}

OracleDevices cuda_oracle_devices() {
  OracleDevices devices;
  devices.cuda_built = true;
  int count = 0;
  const cudaError_t status = cudaGetDeviceCount(&count);
  if (status != cudaSuccess) {
    cudaGetLastError();
    devices.gpu_problem = cudaGetErrorString(status);
    return devices;
  }
  if (count == 0) {
    devices.gpu_problem = "no CUDA device";
    return devices;
  }
  devices.gpus = count;
  int current = 0;
  check_cuda(cudaGetDevice(&current), "cudaGetDevice");
  devices.gpu_name = describe_device(current);
  return devices;
}

}  // namespace veda::method::detail
