// TMA tensor maps through the driver's cuTensorMapEncodeTiled, reached with
// cudaGetDriverEntryPointByVersion so the library links against the runtime only (no -lcuda).
#include "attention_tma.h"

#include <cuda_runtime_api.h>

#include <initializer_list>
#include <string>

#include "veda/error.h"

namespace veda::attention_detail {
namespace {

using EncodeTiled = decltype(&cuTensorMapEncodeTiled);

EncodeTiled encode_tiled() {
  static const EncodeTiled function = [] {
    void* entry = nullptr;
    cudaDriverEntryPointQueryResult query{};
    const cudaError_t status = cudaGetDriverEntryPointByVersion("cuTensorMapEncodeTiled", &entry,
                                                                12000, cudaEnableDefault, &query);
    VEDA_CHECK(status == cudaSuccess && query == cudaDriverEntryPointSuccess && entry != nullptr,
               "cuTensorMapEncodeTiled is not available from the CUDA driver (",
               cudaGetErrorString(status), "); the Hopper attention kernel needs CUDA 12 or newer");
    return reinterpret_cast<EncodeTiled>(entry);
  }();
  return function;
}

// A tiled map of `rank` dimensions with 128-byte swizzle; strides in bytes.
CUtensorMap encode(const void* base, DType dtype, cuuint32_t rank, const cuuint64_t* sizes,
                   const cuuint64_t* strides, const cuuint32_t* box, const char* what) {
  const cuuint32_t element_strides[5] = {1, 1, 1, 1, 1};
  CUtensorMap map{};
  const CUresult result = encode_tiled()(
      &map,
      dtype == DType::kBF16 ? CU_TENSOR_MAP_DATA_TYPE_BFLOAT16 : CU_TENSOR_MAP_DATA_TYPE_FLOAT16,
      rank, const_cast<void*>(base), sizes, strides, box, element_strides,
      CU_TENSOR_MAP_INTERLEAVE_NONE, CU_TENSOR_MAP_SWIZZLE_128B, CU_TENSOR_MAP_L2_PROMOTION_L2_256B,
      CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE);
  VEDA_CHECK(result == CUDA_SUCCESS, "cuTensorMapEncodeTiled failed (CUresult ",
             static_cast<int>(result), ") for ", what);
  return map;
}

std::string shape_text(std::initializer_list<std::int64_t> values) {
  std::string text;
  for (const std::int64_t value : values)
    text += (text.empty() ? "" : ", ") + std::to_string(value);
  return text;
}

}  // namespace

CUtensorMap make_token_tensor_map(const void* base, DType dtype, std::int64_t batch,
                                  std::int64_t tokens, std::int64_t heads, std::int64_t dim,
                                  std::int64_t stride_batch, std::int64_t stride_token,
                                  std::int64_t stride_head) {
  const std::int64_t bytes = static_cast<std::int64_t>(dtype_size(dtype));
  // A dimension of size 1 is never stepped over; give it a legal stride (multiple of 16 bytes).
  auto legal = [&](std::int64_t size, std::int64_t stride) {
    return size == 1 && stride * bytes < 16 ? std::int64_t{16} : stride * bytes;
  };
  const cuuint64_t sizes[4] = {static_cast<cuuint64_t>(dim), static_cast<cuuint64_t>(tokens),
                               static_cast<cuuint64_t>(heads), static_cast<cuuint64_t>(batch)};
  const cuuint64_t strides[3] = {static_cast<cuuint64_t>(legal(tokens, stride_token)),
                                 static_cast<cuuint64_t>(legal(heads, stride_head)),
                                 static_cast<cuuint64_t>(legal(batch, stride_batch))};
  const cuuint32_t box[4] = {64, 128, 1, 1};
  const std::string what = "a [" + shape_text({batch, tokens, heads, dim}) +
                           "] tensor with element strides (" +
                           shape_text({stride_batch, stride_token, stride_head}) + ")";
  return encode(base, dtype, 4, sizes, strides, box, what.c_str());
}

CUtensorMap make_box_tensor_map(const void* base, DType dtype, std::int64_t batch, int grid_t,
                                int grid_h, int grid_w, std::int64_t heads, std::int64_t dim,
                                std::int64_t stride_batch, std::int64_t stride_token,
                                const BoxGroup& box) {
  const auto bytes = static_cast<std::int64_t>(dtype_size(dtype));
  const std::int64_t row = stride_token * bytes;  // one token: H heads x D channels and more
  const cuuint64_t sizes[5] = {static_cast<cuuint64_t>(heads * dim),
                               static_cast<cuuint64_t>(grid_w), static_cast<cuuint64_t>(grid_h),
                               static_cast<cuuint64_t>(grid_t), static_cast<cuuint64_t>(batch)};
  // A batch of one is never stepped over: any legal stride.
  const std::int64_t frame = row * grid_h * grid_w;
  const cuuint64_t strides[4] = {
      static_cast<cuuint64_t>(row), static_cast<cuuint64_t>(row * grid_w),
      static_cast<cuuint64_t>(frame),
      static_cast<cuuint64_t>(batch == 1 ? frame * grid_t : stride_batch * bytes)};
  const cuuint32_t box_size[5] = {64, static_cast<cuuint32_t>(box.pw),
                                  static_cast<cuuint32_t>(box.ph), static_cast<cuuint32_t>(box.pt),
                                  1};
  const std::string what = "boxes " + shape_text({box.pt, box.ph, box.pw}) + " of a [" +
                           shape_text({batch, grid_t, grid_h, grid_w, heads, dim}) +
                           "] tensor with element strides (" +
                           shape_text({stride_batch, stride_token}) + ")";
  return encode(base, dtype, 5, sizes, strides, box_size, what.c_str());
}

}  // namespace veda::attention_detail
