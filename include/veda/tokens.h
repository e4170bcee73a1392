// Strided views of activations in the diffusers layout [B, N, H, D] (D contiguous), and the
// per-head float32 copies [N, D] that the CPU reference computes on.
#pragma once

#include <cstdint>
#include <vector>

#include "veda/dtype.h"

namespace veda {

struct TokensView {
  const void* data = nullptr;
  DType dtype = DType::kF32;
  std::int64_t batch = 0, tokens = 0, heads = 0, dim = 0;
  // Strides in elements; the head dim is always contiguous.
  std::int64_t stride_batch = 0, stride_token = 0, stride_head = 0;

  // A packed [B, N, H, D] tensor.
  static TokensView contiguous(const void* data, DType dtype, std::int64_t batch,
                               std::int64_t tokens, std::int64_t heads, std::int64_t dim);
  std::int64_t offset(std::int64_t b, std::int64_t n, std::int64_t h) const {
    return b * stride_batch + n * stride_token + h * stride_head;
  }
  // Throws veda::Error unless the view is non-empty, floating and has positive sizes.
  void validate(const char* name) const;
};

// Copies head (b, h) into a float32 [N, D] row-major matrix.
std::vector<float> load_head(const TokensView& view, std::int64_t b, std::int64_t h);

}  // namespace veda
