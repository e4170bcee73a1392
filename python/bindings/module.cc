// veda._veda: the framework-free entry points of the Python layer. Tensors cross as raw pointers
// (ints) with shapes, strides in elements and dtype codes (veda::DType); a stream handle is taken
// for the GPU path and ignored on the CPU. No framework header: torch lives in python/veda/ops.py.
//
// Built with CUDA (VEDA_CUDA=ON), the module also has the GPU entries attention_cuda,
// sparse_attention_cuda and plan_workspace_bytes: device pointers, the caller's stream, outputs
// and workspace allocated by the caller (torch's caching allocator), nothing allocated per call.
// sparse_attention_cuda also takes the text tokens of joint-attention models (the plan attends
// them densely both ways in the same run). oracle_tile_maps_cuda and block_sparse_attention_cuda
// are the pieces of method "oracle" on the GPU, which veda/ops.py composes (evaluation, not the
// fast path).
#include <nanobind/nanobind.h>
#include <nanobind/stl/array.h>
#include <nanobind/stl/string.h>
#include <nanobind/stl/tuple.h>
#include <nanobind/stl/vector.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <compare>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <tuple>
#include <vector>

#include "veda/attention.h"
#include "veda/block_index.h"
#include "veda/dtype.h"
#include "veda/error.h"
#include "veda/selection.h"
#include "veda/sparse_attention.h"
#include "veda/tile_layout.h"
#include "veda/tokens.h"

#ifdef VEDA_PYTHON_HAS_CUDA
#include <cuda_runtime_api.h>

#include "veda/cuda/attention.h"
#include "veda/cuda/oracle.h"
#include "veda/cuda/sparse_attention_plan.h"
#endif

namespace nb = nanobind;

namespace veda::python {
namespace {

// (data pointer, dtype code, shape [B, N, H, D], strides in elements [B, N, H, D]).
using TensorSpec =
    std::tuple<std::uintptr_t, int, std::array<std::int64_t, 4>, std::array<std::int64_t, 4>>;
// (data pointer, strides in elements [B, N, H]) of a float32 [B, N, H] lse.
using LseSpec = std::tuple<std::uintptr_t, std::array<std::int64_t, 3>>;

DType dtype_from_code(int code, const char* name) {
  VEDA_CHECK(code == static_cast<int>(DType::kF32) || code == static_cast<int>(DType::kF16) ||
                 code == static_cast<int>(DType::kBF16),
             name, " has dtype code ", code, "; expected ", static_cast<int>(DType::kF32),
             " (F32), ", static_cast<int>(DType::kF16), " (F16) or ",
             static_cast<int>(DType::kBF16), " (BF16)");
  return static_cast<DType>(code);
}

TokensView tokens_view(const TensorSpec& spec, const char* name) {
  const auto& [data, code, shape, strides] = spec;
  VEDA_CHECK(strides[3] == 1, name, " has stride ", strides[3],
             " in the head dim; expected 1 (D contiguous)");
  TokensView view;
  view.data = reinterpret_cast<const void*>(data);
  view.dtype = dtype_from_code(code, name);
  view.batch = shape[0];
  view.tokens = shape[1];
  view.heads = shape[2];
  view.dim = shape[3];
  view.stride_batch = strides[0];
  view.stride_token = strides[1];
  view.stride_head = strides[2];
  view.validate(name);
  return view;
}

void check_output(const TensorSpec& out, const TokensView& q) {
  const auto& [data, code, shape, strides] = out;
  VEDA_CHECK(data != 0, "out has no data");
  VEDA_CHECK(shape[0] == q.batch && shape[1] == q.tokens && shape[2] == q.heads &&
                 shape[3] == q.dim && strides[3] == 1,
             "out has shape [", shape[0], ", ", shape[1], ", ", shape[2], ", ", shape[3],
             "] and head-dim stride ", strides[3], "; expected q's shape [", q.batch, ", ",
             q.tokens, ", ", q.heads, ", ", q.dim, "] with stride 1");
  dtype_from_code(code, "out");
}

// Dense attention params over the specs: out [B, Nq, H, D] in out's dtype, lse [B, Nq, H].
AttentionParams dense_params(const TensorSpec& q, const TensorSpec& k, const TensorSpec& v,
                             const TensorSpec& out, const LseSpec& lse) {
  AttentionParams params;
  params.q = tokens_view(q, "q");
  params.k = tokens_view(k, "k");
  params.v = tokens_view(v, "v");
  check_output(out, params.q);
  params.scale = 1.0f / std::sqrt(static_cast<float>(params.q.dim));
  params.out = reinterpret_cast<void*>(std::get<0>(out));
  params.out_dtype = static_cast<DType>(std::get<1>(out));
  params.out_stride_batch = std::get<3>(out)[0];
  params.out_stride_token = std::get<3>(out)[1];
  params.out_stride_head = std::get<3>(out)[2];
  params.lse = reinterpret_cast<float*>(std::get<0>(lse));
  params.lse_stride_batch = std::get<1>(lse)[0];
  params.lse_stride_token = std::get<1>(lse)[1];
  params.lse_stride_head = std::get<1>(lse)[2];
  return params;
}

// Dense attention, Nq and Nk free: out [B, Nq, H, D] in out's dtype, lse [B, Nq, H] float32.
void attention(const TensorSpec& q, const TensorSpec& k, const TensorSpec& v, const TensorSpec& out,
               const LseSpec& lse, std::uintptr_t /*stream*/) {
  AttentionParams params = dense_params(q, k, v, out, lse);
  attention_cpu(params);
}

// Sparse self-attention over the video grid (veda::sparse_attention_cpu): q, k, v [B, N, H, D]
// with N = grid tokens; out [B, N, H, D] in out's dtype, lse [B, N, H] float32. Method veda:
// q_projection, k_projection point to `projection_values` float32 each, [H, 3D, D] for q's heads
// (0 and 0 otherwise). threshold: 0 (the fixed budget) or the cumulative mass, capped at the
// budget, for every head. Returns the sparsity of the index actually used (1 - kept tile pairs /
// all tile pairs).
double sparse_attention(const TensorSpec& q, const TensorSpec& k, const TensorSpec& v,
                        const TensorSpec& out, const LseSpec& lse, const std::string& method,
                        double sparsity, const std::array<std::int64_t, 3>& grid,
                        const std::array<int, 3>& tile, std::uintptr_t q_projection,
                        std::uintptr_t k_projection, std::int64_t projection_values,
                        double threshold, std::uintptr_t /*stream*/) {
  const TokensView q_view = tokens_view(q, "q");
  const TokensView k_view = tokens_view(k, "k");
  const TokensView v_view = tokens_view(v, "v");
  check_output(out, q_view);
  VEDA_CHECK(std::get<0>(lse) != 0, "lse has no data");
  VEDA_CHECK(sparsity >= 0.0 && sparsity < 1.0, "sparsity ", sparsity, "; expected [0, 1)");
  SparseAttentionConfig config;
  config.method = parse_mask_method(method);
  config.sparsity = sparsity;
  config.grid = Grid{grid[0], grid[1], grid[2]};
  config.grid.validate();
  config.tile = TileShape{tile[0], tile[1], tile[2]};
  config.threshold = threshold;
  const auto values = static_cast<std::size_t>(projection_values);
  config.q_projection = {reinterpret_cast<const float*>(q_projection), values};
  config.k_projection = {reinterpret_cast<const float*>(k_projection), values};
  const SparseAttentionResult result = sparse_attention_cpu(q_view, k_view, v_view, config);

  void* out_data = reinterpret_cast<void*>(std::get<0>(out));
  const auto out_dtype = static_cast<DType>(std::get<1>(out));
  const auto& out_strides = std::get<3>(out);
  auto* lse_data = reinterpret_cast<float*>(std::get<0>(lse));
  const auto& lse_strides = std::get<1>(lse);
  const std::int64_t heads = q_view.heads, tokens = q_view.tokens, dim = q_view.dim;
  for (std::int64_t b = 0; b < q_view.batch; ++b) {
    for (std::int64_t n = 0; n < tokens; ++n) {
      for (std::int64_t h = 0; h < heads; ++h) {
        const std::int64_t row = (b * tokens + n) * heads + h;
        const std::int64_t base = b * out_strides[0] + n * out_strides[1] + h * out_strides[2];
        for (std::int64_t d = 0; d < dim; ++d) {
          store_from_float(out_data, out_dtype, base + d,
                           result.out[static_cast<std::size_t>(row * dim + d)]);
        }
        lse_data[b * lse_strides[0] + n * lse_strides[1] + h * lse_strides[2]] =
            result.lse[static_cast<std::size_t>(row)];
      }
    }
  }
  return result.index.sparsity();
}

#ifdef VEDA_PYTHON_HAS_CUDA
// ----- GPU path -------------------------------------------------------------------------------

void check_cuda(cudaError_t status, const char* what) {
  VEDA_CHECK(status == cudaSuccess, what, ": ", cudaGetErrorString(status));
}

// Makes `device` current for one call and puts the caller's device back.
class DeviceScope {
 public:
  explicit DeviceScope(int device) : device_(device) {
    check_cuda(cudaGetDevice(&previous_), "cudaGetDevice");
    if (device_ != previous_) check_cuda(cudaSetDevice(device_), "cudaSetDevice");
  }
  ~DeviceScope() {
    if (device_ != previous_) cudaSetDevice(previous_);
  }
  DeviceScope(const DeviceScope&) = delete;
  DeviceScope& operator=(const DeviceScope&) = delete;

 private:
  int device_ = 0, previous_ = 0;
};

// "after" or "before": where the text tokens sit in q's L rows (veda.sparse_attention's names).
TextPosition text_position_from(const std::string& name) {
  VEDA_CHECK(name == "after" || name == "before", "text_position '", name,
             "' is not known; expected 'after' or 'before'");
  return name == "before" ? TextPosition::kBefore : TextPosition::kAfter;
}

// What a SparseAttentionPlan is built for. Projection pointers are part of the key: a plan holds
// them, so a new estimator upload gets a new plan. Text tokens and their position change the
// rows the plan takes (L = N + text_tokens) and its workspace, so they are part of it too, as is
// the low-memory mode (no tile-major copies: SparseLayerSettings::reordered_copies = false).
struct PlanKey {
  int device = 0;
  std::array<std::int64_t, 3> grid{};
  std::int64_t batch = 0, heads = 0, dim = 0;
  int dtype = 0;
  std::vector<std::array<int, 3>> tiles;  // one for all heads, or one per head
  double sparsity = 0.0;
  std::vector<double> thresholds;         // per head (0: fixed budget), or empty
  std::vector<std::int32_t> global_head;  // empty: identity
  std::uintptr_t q_projection = 0, k_projection = 0;
  bool diagonal_projection = false;  // the projections are [H, 3, D] diagonals
  std::int64_t text_tokens = 0;
  TextPosition text_position = TextPosition::kAfter;
  bool low_memory = true;
  auto operator<=>(const PlanKey&) const = default;
};

// Plans live as long as the module: building one uploads its order tables synchronously (never
// per call), and a captured CUDA graph keeps pointing at them. One plan per layer shape; its
// tables are 4 bytes per token and tile shape (0.3 MB per shape at Wan 720p).
std::mutex plans_mutex;
std::map<PlanKey, std::unique_ptr<SparseAttentionPlan>> plans;

const SparseAttentionPlan& plan_for(const PlanKey& key) {
  const std::lock_guard<std::mutex> lock(plans_mutex);
  auto found = plans.find(key);
  if (found != plans.end()) return *found->second;
  SparseLayerSettings settings;
  settings.grid = Grid{key.grid[0], key.grid[1], key.grid[2]};
  settings.batch = key.batch;
  settings.heads = key.heads;
  settings.dim = key.dim;
  settings.dtype = dtype_from_code(key.dtype, "q");
  VEDA_CHECK(!key.tiles.empty(), "sparse attention got no tile shape; expected one for all heads ",
             "or one per head");
  settings.head_tiles.clear();
  for (const auto& [pt, ph, pw] : key.tiles) settings.head_tiles.push_back(TileShape{pt, ph, pw});
  settings.sparsity = key.sparsity;
  settings.head_thresholds = key.thresholds;
  settings.global_head = key.global_head;
  settings.q_projection = reinterpret_cast<const float*>(key.q_projection);
  settings.k_projection = reinterpret_cast<const float*>(key.k_projection);
  settings.diagonal_projection = key.diagonal_projection;
  settings.text_tokens = key.text_tokens;
  settings.text_position = key.text_position;
  settings.reordered_copies = !key.low_memory;
  const DeviceScope scope(key.device);
  auto plan = std::make_unique<SparseAttentionPlan>(std::move(settings));
  return *plans.emplace(key, std::move(plan)).first->second;
}

PlanKey plan_key(int device, const std::array<std::int64_t, 3>& grid, std::int64_t batch,
                 std::int64_t heads, std::int64_t dim, int dtype,
                 const std::vector<std::array<int, 3>>& tiles, double sparsity,
                 const std::vector<double>& thresholds,
                 const std::vector<std::int32_t>& global_head, std::uintptr_t q_projection,
                 std::uintptr_t k_projection, std::int64_t projection_heads,
                 bool diagonal_projection, std::int64_t text_tokens,
                 const std::string& text_position, bool low_memory) {
  VEDA_CHECK(sparsity >= 0.0 && sparsity < 1.0, "sparsity ", sparsity, "; expected [0, 1)");
  VEDA_CHECK(text_tokens >= 0, "text_tokens is ", text_tokens, "; expected at least 0");
  const TextPosition position = text_position_from(text_position);
  VEDA_CHECK((q_projection == 0) == (k_projection == 0),
             "got one estimator projection; expected both p_q and p_k, or neither");
  if (q_projection != 0) {
    for (std::int32_t g : global_head) {
      VEDA_CHECK(g >= 0 && g < projection_heads, "global head ", g,
                 " has no estimator parameters; the projections hold ", projection_heads, " heads");
    }
    VEDA_CHECK(!global_head.empty() || heads <= projection_heads, "the projections hold ",
               projection_heads, " heads but q has ", heads, " and no global head indices");
  }
  return PlanKey{device,
                 grid,
                 batch,
                 heads,
                 dim,
                 dtype,
                 tiles,
                 sparsity,
                 thresholds,
                 global_head,
                 q_projection,
                 k_projection,
                 q_projection != 0 && diagonal_projection,
                 text_tokens,
                 position,
                 low_memory};
}

// Workspace bytes the sparse call of these settings needs (builds the plan if it is new); with
// text tokens 8 * B*N*H bytes more (the video rows' two lse partials).
std::size_t plan_workspace_bytes(int device, const std::array<std::int64_t, 3>& grid,
                                 std::int64_t batch, std::int64_t heads, std::int64_t dim,
                                 int dtype, const std::vector<std::array<int, 3>>& tiles,
                                 double sparsity, const std::vector<double>& thresholds,
                                 const std::vector<std::int32_t>& global_head,
                                 std::uintptr_t q_projection, std::uintptr_t k_projection,
                                 std::int64_t projection_heads, bool diagonal_projection,
                                 std::int64_t text_tokens, const std::string& text_position,
                                 bool low_memory) {
  const PlanKey key = plan_key(device, grid, batch, heads, dim, dtype, tiles, sparsity, thresholds,
                               global_head, q_projection, k_projection, projection_heads,
                               diagonal_projection, text_tokens, text_position, low_memory);
  return plan_for(key).workspace_bytes();
}

void check_packed(const std::array<std::int64_t, 4>& shape, const std::int64_t* strides, int dims,
                  const char* name) {
  std::int64_t expected = 1;
  for (int i = dims - 1; i >= 0; --i) {
    VEDA_CHECK(strides[i] == expected || shape[i] == 1, name, " has stride ", strides[i],
               " in dim ", i, "; the GPU path writes a contiguous ", name);
    expected *= shape[i];
  }
}

// Dense attention on the GPU (veda::attention_cuda without an index), Nq and Nk free: out
// [B, Nq, H, D] in out's dtype (F32, F16 or BF16), lse [B, Nq, H] float32.
void attention_gpu(const TensorSpec& q, const TensorSpec& k, const TensorSpec& v,
                   const TensorSpec& out, const LseSpec& lse, int device, std::uintptr_t stream) {
  AttentionParams params = dense_params(q, k, v, out, lse);
  const DeviceScope scope(device);
  attention_cuda(params, reinterpret_cast<cudaStream_t>(stream));
}

// Sparse self-attention over the video grid on the GPU (veda::SparseAttentionPlan::run): q, k, v
// [B, L, H, D] with L = N + text_tokens (text rows "after" or "before" the video, attended
// densely both ways in the same run), out contiguous [B, L, H, D] in q's dtype, lse contiguous
// [B, L, H] float32, workspace of at least plan_workspace_bytes(...) bytes; low_memory: a plan
// without tile-major copies (less workspace, attention gathers rows itself). Returns the key
// tiles kept per query tile (the budget).
std::int64_t sparse_attention_gpu(const TensorSpec& q, const TensorSpec& k, const TensorSpec& v,
                                  const TensorSpec& out, const LseSpec& lse,
                                  const std::array<std::int64_t, 3>& grid,
                                  const std::vector<std::array<int, 3>>& tiles, double sparsity,
                                  const std::vector<double>& thresholds,
                                  const std::vector<std::int32_t>& global_head,
                                  std::uintptr_t q_projection, std::uintptr_t k_projection,
                                  std::int64_t projection_heads, bool diagonal_projection,
                                  std::int64_t text_tokens, const std::string& text_position,
                                  bool low_memory, std::uintptr_t workspace,
                                  std::size_t workspace_size, int device, std::uintptr_t stream) {
  const TokensView q_view = tokens_view(q, "q");
  const TokensView k_view = tokens_view(k, "k");
  const TokensView v_view = tokens_view(v, "v");
  check_output(out, q_view);
  VEDA_CHECK(std::get<1>(out) == std::get<1>(q), "out has dtype code ", std::get<1>(out),
             "; the GPU path writes out in q's dtype (code ", std::get<1>(q), ")");
  check_packed(std::get<2>(out), std::get<3>(out).data(), 4, "out");
  VEDA_CHECK(std::get<0>(lse) != 0, "lse has no data");
  const std::array<std::int64_t, 4> lse_shape{q_view.batch, q_view.tokens, q_view.heads, 1};
  check_packed(lse_shape, std::get<1>(lse).data(), 3, "lse");
  const Grid video{grid[0], grid[1], grid[2]};
  video.validate();
  if (text_tokens == 0) {
    VEDA_CHECK(video.tokens() == q_view.tokens, "grid ", video.str(), " has ", video.tokens(),
               " tokens but q has N = ", q_view.tokens);
  } else {
    VEDA_CHECK(video.tokens() + text_tokens == q_view.tokens, "grid ", video.str(), " has ",
               video.tokens(), " tokens but q has L = ", q_view.tokens,
               " (text_tokens = ", text_tokens, ")");
  }
  // A named key: GCC 13's -Wdangling-reference flags a reference bound to plan_for(temporary).
  const PlanKey key =
      plan_key(device, grid, q_view.batch, q_view.heads, q_view.dim, std::get<1>(q), tiles,
               sparsity, thresholds, global_head, q_projection, k_projection, projection_heads,
               diagonal_projection, text_tokens, text_position, low_memory);
  const SparseAttentionPlan& plan = plan_for(key);
  const DeviceScope scope(device);
  plan.run(q_view, k_view, v_view, reinterpret_cast<void*>(std::get<0>(out)),
           reinterpret_cast<float*>(std::get<0>(lse)), reinterpret_cast<void*>(workspace),
           workspace_size, reinterpret_cast<cudaStream_t>(stream));
  return plan.budget();
}

// The oracle's maps of full attention on the GPU (veda::oracle_cuda): q, k [B, N, H, D] in
// tile-major order; lse [B, H, N] and heat, mass [B, H, T, T] float32, contiguous device memory of
// the caller (T = tiles of N).
void oracle_tile_maps_gpu(const TensorSpec& q, const TensorSpec& k, std::uintptr_t lse,
                          std::uintptr_t heat, std::uintptr_t mass, int device,
                          std::uintptr_t stream) {
  OracleParams params;
  params.q = tokens_view(q, "q");
  params.k = tokens_view(k, "k");
  params.scale = 1.0f / std::sqrt(static_cast<float>(params.q.dim));
  params.lse = reinterpret_cast<float*>(lse);
  params.heat = reinterpret_cast<float*>(heat);
  params.mass = reinterpret_cast<float*>(mass);  // oracle_cuda validates all of it
  const DeviceScope scope(device);
  oracle_cuda(params, reinterpret_cast<cudaStream_t>(stream));
}

// Block-sparse self-attention over the caller's lists on the GPU (veda::attention_cuda), in the
// tile-major order of each head's group and straight on frame-major tensors: q, k, v, out
// [B, N, H, D], lse [B, N, H] float32; counts [B, H, T] and indices [B, H, T, budget] int32
// (veda/block_index.h, padded form); order [G, N] int32 (frame-major row of each tile-major
// position), head_group [H] int32; all device memory.
void block_sparse_attention_gpu(const TensorSpec& q, const TensorSpec& k, const TensorSpec& v,
                                const TensorSpec& out, const LseSpec& lse, std::uintptr_t counts,
                                std::uintptr_t indices, std::int64_t budget, std::uintptr_t order,
                                std::uintptr_t head_group, int device, std::uintptr_t stream) {
  AttentionParams params = dense_params(q, k, v, out, lse);
  const std::int64_t tiles = tile_count(params.q.tokens);
  VEDA_CHECK(budget >= 1 && budget <= tiles, "budget ", budget, " is outside [1, ", tiles, "]");
  const BlockIndexView index{reinterpret_cast<const std::int32_t*>(counts),
                             reinterpret_cast<const std::int32_t*>(indices),
                             params.q.batch,
                             params.q.heads,
                             tiles,
                             tiles,
                             budget,
                             nullptr};
  params.index = &index;
  params.out_order = reinterpret_cast<const std::int32_t*>(order);
  params.out_head_group = reinterpret_cast<const std::int32_t*>(head_group);
  params.read_through_order = true;
  const DeviceScope scope(device);
  attention_cuda(params, reinterpret_cast<cudaStream_t>(stream));
}

std::size_t plan_count() {
  const std::lock_guard<std::mutex> lock(plans_mutex);
  return plans.size();
}
#endif  // VEDA_PYTHON_HAS_CUDA

}  // namespace
}  // namespace veda::python

NB_MODULE(_veda, m) {
  using namespace veda::python;
  m.doc() = "Framework-free entry points of Veda (raw pointers, shapes, strides, dtype codes)";
  nb::register_exception_translator([](const std::exception_ptr& error, void*) {
    try {
      std::rethrow_exception(error);
    } catch (const veda::Error& e) {
      PyErr_SetString(PyExc_ValueError, e.what());
    }
  });
  m.attr("DTYPE_F32") = static_cast<int>(veda::DType::kF32);
  m.attr("DTYPE_F16") = static_cast<int>(veda::DType::kF16);
  m.attr("DTYPE_BF16") = static_cast<int>(veda::DType::kBF16);
  m.attr("TILE_TOKENS") = veda::kTileTokens;
#ifdef VEDA_PYTHON_HAS_CUDA
  m.attr("BUILT_WITH_CUDA") = true;
#else
  m.attr("BUILT_WITH_CUDA") = false;
#endif
  m.def("attention", &attention, nb::arg("q"), nb::arg("k"), nb::arg("v"), nb::arg("out"),
        nb::arg("lse"), nb::arg("stream"), nb::call_guard<nb::gil_scoped_release>(),
        "Dense attention on the CPU; tensors as (ptr, dtype, shape, strides).");
  m.def("sparse_attention", &sparse_attention, nb::arg("q"), nb::arg("k"), nb::arg("v"),
        nb::arg("out"), nb::arg("lse"), nb::arg("method"), nb::arg("sparsity"), nb::arg("grid"),
        nb::arg("tile"), nb::arg("q_projection"), nb::arg("k_projection"),
        nb::arg("projection_values"), nb::arg("threshold"), nb::arg("stream"),
        nb::call_guard<nb::gil_scoped_release>(),
        "Sparse self-attention over a video grid on the CPU; returns the sparsity used.");
  m.def(
      "tile_major_order",
      [](const std::array<std::int64_t, 3>& grid, const std::array<int, 3>& tile) {
        const std::vector<std::int32_t> order = veda::tile_major_order(
            veda::Grid{grid[0], grid[1], grid[2]}, veda::TileShape{tile[0], tile[1], tile[2]});
        nb::list result;
        for (std::int32_t index : order) result.append(index);
        return result;
      },
      nb::arg("grid"), nb::arg("tile"),
      "order[i] = frame-major index of the token at tile-major position i.");
  m.def("budget_for_sparsity", &veda::budget_for_sparsity, nb::arg("sparsity"), nb::arg("k_tiles"),
        "Key tiles kept per query tile: ceil((1 - sparsity) * k_tiles).");
#ifdef VEDA_PYTHON_HAS_CUDA
  m.def("attention_cuda", &attention_gpu, nb::arg("q"), nb::arg("k"), nb::arg("v"), nb::arg("out"),
        nb::arg("lse"), nb::arg("device"), nb::arg("stream"),
        nb::call_guard<nb::gil_scoped_release>(),
        "Dense attention on the GPU (device pointers); launches on `stream`.");
  m.def("plan_workspace_bytes", &plan_workspace_bytes, nb::arg("device"), nb::arg("grid"),
        nb::arg("batch"), nb::arg("heads"), nb::arg("dim"), nb::arg("dtype"), nb::arg("tiles"),
        nb::arg("sparsity"), nb::arg("thresholds"), nb::arg("global_head"), nb::arg("q_projection"),
        nb::arg("k_projection"), nb::arg("projection_heads"), nb::arg("diagonal_projection"),
        nb::arg("text_tokens"), nb::arg("text_position"), nb::arg("low_memory") = true,
        nb::call_guard<nb::gil_scoped_release>(),
        "Workspace bytes of sparse_attention_cuda for these settings (builds and caches the "
        "plan on first use: synchronous, once per shape).");
  m.def("sparse_attention_cuda", &sparse_attention_gpu, nb::arg("q"), nb::arg("k"), nb::arg("v"),
        nb::arg("out"), nb::arg("lse"), nb::arg("grid"), nb::arg("tiles"), nb::arg("sparsity"),
        nb::arg("thresholds"), nb::arg("global_head"), nb::arg("q_projection"),
        nb::arg("k_projection"), nb::arg("projection_heads"), nb::arg("diagonal_projection"),
        nb::arg("text_tokens"), nb::arg("text_position"), nb::arg("low_memory"),
        nb::arg("workspace"), nb::arg("workspace_size"), nb::arg("device"), nb::arg("stream"),
        nb::call_guard<nb::gil_scoped_release>(),
        "Sparse self-attention over a video grid (and text tokens before or after it, dense "
        "both ways) on the GPU through a cached SparseAttentionPlan; returns the key tiles kept "
        "per query tile.");
  m.def("oracle_tile_maps_cuda", &oracle_tile_maps_gpu, nb::arg("q"), nb::arg("k"), nb::arg("lse"),
        nb::arg("heat"), nb::arg("mass"), nb::arg("device"), nb::arg("stream"),
        nb::call_guard<nb::gil_scoped_release>(),
        "Row lse, tile heat and tile mass of full attention over tile-major q, k on the GPU.");
  m.def("block_sparse_attention_cuda", &block_sparse_attention_gpu, nb::arg("q"), nb::arg("k"),
        nb::arg("v"), nb::arg("out"), nb::arg("lse"), nb::arg("counts"), nb::arg("indices"),
        nb::arg("budget"), nb::arg("order"), nb::arg("head_group"), nb::arg("device"),
        nb::arg("stream"), nb::call_guard<nb::gil_scoped_release>(),
        "Block-sparse self-attention over given lists, read and written through tile orders.");
  m.def("plan_count", &plan_count, "Number of cached sparse attention plans.");
#endif
}
