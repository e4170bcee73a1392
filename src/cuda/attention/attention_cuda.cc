// The one selector of the CUDA attention kernels: can_implement decides both whether params are
// supported and which kernel launches, and attention_cuda launches exactly that.
#include <cuda_runtime_api.h>

#include <algorithm>
#include <cstdint>
#include <limits>
#include <string>
#include <type_traits>
#include <utility>

#include "attention_launch.h"
#include "veda/cuda/attention.h"
#include "veda/error.h"
#include "veda/tile_layout.h"

namespace veda {
namespace {

using attention_detail::AttentionLaunch;

// CMake defines VEDA_ATTENTION_SM90A when CMAKE_CUDA_ARCHITECTURES contains 90a: only then
// does the Hopper kernel hold wgmma code (other passes compile it to a trap).
#ifdef VEDA_ATTENTION_SM90A
constexpr bool kBuiltForSm90a = true;
#else
constexpr bool kBuiltForSm90a = false;
#endif

std::string text(const auto&... parts) {
  std::string out;
  ((out +=
    [](const auto& part) {
      if constexpr (std::is_arithmetic_v<std::decay_t<decltype(part)>>) {
        return std::to_string(part);
      } else {
        return std::string(part);
      }
    }(parts)),
   ...);
  return out;
}

// "" when the view can be read by both kernels (16-byte loads), else why not.
std::string check_tokens_alignment(const TokensView& view, const char* name) {
  const auto address = reinterpret_cast<std::uintptr_t>(view.data);
  if (address % 16 != 0) {
    return text(name, " data pointer is not 16-byte aligned; the attention kernels load ", name,
                " in 16-byte pieces");
  }
  const std::int64_t strides[3] = {view.stride_batch, view.stride_token, view.stride_head};
  const char* stride_names[3] = {"batch", "token", "head"};
  for (int i = 0; i < 3; ++i) {
    if (strides[i] % 8 != 0) {
      return text(name, " stride_", stride_names[i], " is ", strides[i],
                  " elements; the attention kernels need multiples of 8 (16 bytes)");
    }
  }
  if (view.tokens > std::numeric_limits<std::int32_t>::max() / 2) {
    return text(name, " has ", view.tokens, " tokens; the attention kernels support at most ",
                std::numeric_limits<std::int32_t>::max() / 2);
  }
  return {};
}

template <DType kType, int kDim>
bool has_image(AttentionKernel kernel) {
  return kernel == AttentionKernel::kHopper
             ? attention_detail::attention_hopper_has_image<kType, kDim>()
             : attention_detail::attention_portable_has_image<kType, kDim>();
}

bool has_image(AttentionKernel kernel, DType dtype, std::int64_t dim) {
  if (dtype == DType::kBF16) {
    return dim == 64 ? has_image<DType::kBF16, 64>(kernel) : has_image<DType::kBF16, 128>(kernel);
  }
  return dim == 64 ? has_image<DType::kF16, 64>(kernel) : has_image<DType::kF16, 128>(kernel);
}

template <DType kType, int kDim>
cudaError_t launch(AttentionKernel kernel, const AttentionLaunch& launch, cudaStream_t stream) {
  return kernel == AttentionKernel::kHopper
             ? attention_detail::launch_attention_hopper<kType, kDim>(launch, stream)
             : attention_detail::launch_attention_portable<kType, kDim>(launch, stream);
}

AttentionLaunch make_launch(const AttentionParams& p) {
  AttentionLaunch launch;
  launch.q = p.q.data;
  launch.k = p.k.data;
  launch.v = p.v.data;
  launch.q_stride_batch = p.q.stride_batch;
  launch.q_stride_token = p.q.stride_token;
  launch.q_stride_head = p.q.stride_head;
  launch.k_stride_batch = p.k.stride_batch;
  launch.k_stride_token = p.k.stride_token;
  launch.k_stride_head = p.k.stride_head;
  launch.v_stride_batch = p.v.stride_batch;
  launch.v_stride_token = p.v.stride_token;
  launch.v_stride_head = p.v.stride_head;
  launch.batch = static_cast<int>(p.q.batch);
  launch.heads = static_cast<int>(p.q.heads);
  launch.q_tokens = static_cast<int>(p.q.tokens);
  launch.k_tokens = static_cast<int>(p.k.tokens);
  launch.q_tiles = static_cast<int>(tile_count(p.q.tokens));
  launch.k_tiles = static_cast<int>(tile_count(p.k.tokens));
  if (p.index != nullptr) {
    launch.rows = p.index->indices;
    if (p.index->offsets != nullptr) {
      launch.offsets = p.index->offsets;
    } else {
      launch.counts = p.index->counts;
      launch.budget = static_cast<int>(p.index->budget);
    }
  }
  launch.scale = p.scale;
  launch.scale_log2 = p.scale * 1.4426950408889634f;
  launch.out = p.out;
  launch.out_dtype = p.out_dtype;
  launch.out_stride_batch = p.out_stride_batch;
  launch.out_stride_token = p.out_stride_token;
  launch.out_stride_head = p.out_stride_head;
  launch.lse = p.lse;
  launch.lse_stride_batch = p.lse_stride_batch;
  launch.lse_stride_token = p.lse_stride_token;
  launch.lse_stride_head = p.lse_stride_head;
  launch.out_order = p.out_order;
  launch.out_head_group = p.out_head_group;
  launch.read_through_order = p.read_through_order;
  launch.read_queries_through_order = p.read_queries_through_order;
  // Full boxes by TMA where a token row holds the heads contiguously (the box maps index
  // (H*D, W, H_grid, T, B), one dimension for head and channel) and the grid's corners pack
  // into 31 bits (full_box_corner in attention_hopper.cuh); else every tile by row gathers.
  const bool heads_contiguous =
      p.q.stride_head == p.q.dim && p.k.stride_head == p.k.dim && p.v.stride_head == p.v.dim;
  const bool corners_pack = p.box_grid.t <= 512 && p.box_grid.h <= 2048 && p.box_grid.w <= 2048;
  if (p.read_through_order && heads_contiguous && corners_pack) {
    const Grid& grid = p.box_grid;
    launch.grid_t = static_cast<int>(grid.t);
    launch.grid_h = static_cast<int>(grid.h);
    launch.grid_w = static_cast<int>(grid.w);
    launch.box_groups = static_cast<int>(
        std::min<std::size_t>(p.box_shapes.size(), attention_detail::kMaxBoxGroups));
    for (int g = 0; g < launch.box_groups; ++g) {
      const TileShape& shape = p.box_shapes[g];
      const auto across_w = static_cast<int>(grid.w / shape.pw);
      const auto across_hw = static_cast<int>(grid.h / shape.ph) * across_w;
      launch.box[g] = {shape.pt, shape.ph,  shape.pw,
                       across_w, across_hw, static_cast<int>(full_box_count(grid, shape))};
    }
  }
  return launch;
}

// Restores the caller's current device on scope exit.
class DeviceScope {
 public:
  explicit DeviceScope(int device) {
    cudaGetDevice(&previous_);
    if (device != previous_) cudaSetDevice(device);
  }
  ~DeviceScope() { cudaSetDevice(previous_); }
  DeviceScope(const DeviceScope&) = delete;
  DeviceScope& operator=(const DeviceScope&) = delete;

 private:
  int previous_ = 0;
};

}  // namespace

const char* attention_kernel_name(AttentionKernel kernel) {
  return kernel == AttentionKernel::kHopper ? "hopper" : "portable";
}

AttentionSupport can_implement(const AttentionParams& params, int device,
                               const AttentionOptions& options) {
  AttentionSupport support;
  auto unsupported = [&](std::string reason) {
    support.supported = false;
    support.reason = std::move(reason);
    return support;
  };
  try {
    params.validate();
  } catch (const Error& error) {
    return unsupported(error.what());
  }

  if (!(params.scale > 0.0f)) {
    // The kernels track the running max of raw scores q.k, which is the max of s q.k only for
    // s > 0.
    return unsupported(text("softmax scale is ", params.scale,
                            "; the CUDA attention kernels need a positive scale"));
  }
  const DType dtype = params.q.dtype;
  if (dtype != DType::kBF16 && dtype != DType::kF16) {
    return unsupported(text("q has dtype ", std::string(dtype_name(dtype)),
                            "; the CUDA attention kernels support BF16 and F16"));
  }
  if (params.k.dtype != dtype || params.v.dtype != dtype) {
    return unsupported(text("k and v have dtypes ", std::string(dtype_name(params.k.dtype)),
                            " and ", std::string(dtype_name(params.v.dtype)),
                            "; expected q's dtype ", std::string(dtype_name(dtype))));
  }
  if (params.q.dim != 64 && params.q.dim != 128) {
    return unsupported(text("q has head dim ", params.q.dim, "; this build supports 64 and 128"));
  }
  if (params.k.dim != params.q.dim || params.v.dim != params.q.dim) {
    return unsupported(text("k and v have head dims ", params.k.dim, " and ", params.v.dim,
                            "; expected q's ", params.q.dim));
  }
  if (params.out_dtype != DType::kF32 && params.out_dtype != DType::kBF16 &&
      params.out_dtype != DType::kF16) {
    return unsupported(text("out has dtype ", std::string(dtype_name(params.out_dtype)),
                            "; the CUDA attention kernels write F32, BF16 or F16"));
  }
  for (const auto& [view, name] :
       {std::pair{&params.q, "q"}, std::pair{&params.k, "k"}, std::pair{&params.v, "v"}}) {
    std::string problem = check_tokens_alignment(*view, name);
    if (!problem.empty()) return unsupported(problem);
  }
  const std::size_t out_element = dtype_size(params.out_dtype);
  if (reinterpret_cast<std::uintptr_t>(params.out) % (2 * out_element) != 0 ||
      params.out_stride_batch % 2 != 0 || params.out_stride_token % 2 != 0 ||
      params.out_stride_head % 2 != 0) {
    return unsupported(text("out must be aligned to 2 elements (", 2 * out_element,
                            " bytes) with even strides; got strides (", params.out_stride_batch,
                            ", ", params.out_stride_token, ", ", params.out_stride_head, ")"));
  }
  if (params.index != nullptr && (params.index->indices == nullptr ||
                                  (params.index->counts == nullptr && !params.index->offsets))) {
    return unsupported(
        "index has a null indices pointer or neither counts nor offsets; pass index = nullptr "
        "for dense");
  }
  if (params.index != nullptr && params.index->budget > std::numeric_limits<std::int32_t>::max()) {
    return unsupported(text("index budget is ", params.index->budget, "; at most 2^31 - 1"));
  }

  int major = 0, minor = 0;
  if (cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device) != cudaSuccess ||
      cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, device) != cudaSuccess) {
    cudaGetLastError();
    return unsupported(text("CUDA device ", device, " cannot be queried"));
  }
  const int arch = 10 * major + minor;
  if (arch < 80) {
    return unsupported(text("device ", device, " is sm_", arch,
                            "; the CUDA attention kernels need sm_80 or newer"));
  }

  DeviceScope scope(device);
  const bool hopper_ok =
      kBuiltForSm90a && arch == 90 && has_image(AttentionKernel::kHopper, dtype, params.q.dim);
  const bool portable_ok = has_image(AttentionKernel::kPortable, dtype, params.q.dim);
  AttentionKernel choice = hopper_ok ? AttentionKernel::kHopper : AttentionKernel::kPortable;
  if (options.kernel) choice = *options.kernel;
  support.kernel = choice;
  if (choice == AttentionKernel::kHopper && !hopper_ok) {
    return unsupported(
        text("the Hopper attention kernel needs an sm_90 device and a build whose "
             "CMAKE_CUDA_ARCHITECTURES contains 90a; device ",
             device, " is sm_", arch, kBuiltForSm90a ? "" : " and this build has no 90a"));
  }
  if (choice == AttentionKernel::kPortable && !portable_ok) {
    return unsupported(text("this build has no attention kernel image for device ", device, " (sm_",
                            arch, "); add ", arch, " (or 80) to CMAKE_CUDA_ARCHITECTURES"));
  }
  support.supported = true;
  return support;
}

void attention_cuda(const AttentionParams& params, cudaStream_t stream,
                    const AttentionOptions& options) {
  int device = 0;
  const cudaError_t device_status = cudaGetDevice(&device);
  VEDA_CHECK(device_status == cudaSuccess, "attention_cuda: no current CUDA device (",
             cudaGetErrorString(device_status), ")");
  const AttentionSupport support = can_implement(params, device, options);
  VEDA_CHECK(support.supported, "attention_cuda: ", support.reason);

  const AttentionLaunch launch_params = make_launch(params);
  const AttentionKernel kernel = support.kernel;
  cudaError_t status;
  if (params.q.dtype == DType::kBF16) {
    status = params.q.dim == 64 ? launch<DType::kBF16, 64>(kernel, launch_params, stream)
                                : launch<DType::kBF16, 128>(kernel, launch_params, stream);
  } else {
    status = params.q.dim == 64 ? launch<DType::kF16, 64>(kernel, launch_params, stream)
                                : launch<DType::kF16, 128>(kernel, launch_params, stream);
  }
  VEDA_CHECK(status == cudaSuccess, "attention_cuda: the ", attention_kernel_name(kernel),
             " kernel failed to launch: ", cudaGetErrorString(status));
}

}  // namespace veda
