// C ABI over veda::attention_cuda for callers without C++ (Python ctypes in bench/). Every
// pointer is device memory except `strides` and `error`; strides are in elements.
#include <cuda_runtime_api.h>

#include <cstdint>
#include <cstdio>
#include <exception>

#include "veda/cuda/attention.h"

namespace {

void write_error(char* error, std::int64_t capacity, const char* text) {
  if (error != nullptr && capacity > 0) {
    std::snprintf(error, static_cast<std::size_t>(capacity), "%s", text);
  }
}

}  // namespace

extern "C" {

// dtype / out_dtype: 0 = F32, 1 = F16, 2 = BF16 (veda::DType order). kernel: -1 = best for the
// device, 0 = Hopper, 1 = portable. strides: 15 values, (batch, token, head) for q, k, v, out,
// lse. counts/indices null: dense. Returns 0, or 1 with the reason in `error`.
int veda_attention_forward(const void* q, const void* k, const void* v, int dtype,
                           std::int64_t batch, std::int64_t q_tokens, std::int64_t k_tokens,
                           std::int64_t heads, std::int64_t dim, const std::int64_t* strides,
                           const std::int32_t* counts, const std::int32_t* indices,
                           std::int64_t budget, float scale, void* out, int out_dtype, float* lse,
                           int kernel, void* stream, char* error, std::int64_t error_capacity) {
  try {
    using veda::DType;
    const auto input_type = static_cast<DType>(dtype);
    auto view = [&](const void* data, std::int64_t tokens, int which) {
      veda::TokensView tokens_view =
          veda::TokensView::contiguous(data, input_type, batch, tokens, heads, dim);
      tokens_view.stride_batch = strides[3 * which];
      tokens_view.stride_token = strides[3 * which + 1];
      tokens_view.stride_head = strides[3 * which + 2];
      return tokens_view;
    };
    veda::AttentionParams params;
    params.q = view(q, q_tokens, 0);
    params.k = view(k, k_tokens, 1);
    params.v = view(v, k_tokens, 2);
    const veda::BlockIndexView index{
        counts, indices, batch, heads, (q_tokens + 127) / 128, (k_tokens + 127) / 128, budget};
    params.index = counts != nullptr ? &index : nullptr;
    params.scale = scale;
    params.out = out;
    params.out_dtype = static_cast<DType>(out_dtype);
    params.out_stride_batch = strides[9];
    params.out_stride_token = strides[10];
    params.out_stride_head = strides[11];
    params.lse = lse;
    params.lse_stride_batch = strides[12];
    params.lse_stride_token = strides[13];
    params.lse_stride_head = strides[14];
    veda::AttentionOptions options;
    if (kernel >= 0) options.kernel = static_cast<veda::AttentionKernel>(kernel);
    veda::attention_cuda(params, static_cast<cudaStream_t>(stream), options);
    return 0;
  } catch (const std::exception& failure) {
    write_error(error, error_capacity, failure.what());
    return 1;
  }
}

}  // extern "C"
