#include "veda/tokens.h"

#include "veda/error.h"

namespace veda {

TokensView TokensView::contiguous(const void* data, DType dtype, std::int64_t batch,
                                  std::int64_t tokens, std::int64_t heads, std::int64_t dim) {
  return {data, dtype, batch, tokens, heads, dim, tokens * heads * dim, heads * dim, dim};
}

void TokensView::validate(const char* name) const {
  VEDA_CHECK(data != nullptr, name, " has no data");
  VEDA_CHECK(is_floating(dtype), name, " has dtype ", dtype_name(dtype),
             "; expected F32, F16 or BF16");
  VEDA_CHECK(batch > 0 && tokens > 0 && heads > 0 && dim > 0, name, " has shape [", batch, ", ",
             tokens, ", ", heads, ", ", dim, "]; expected [B, N, H, D] with every size positive");
}

std::vector<float> load_head(const TokensView& view, std::int64_t b, std::int64_t h) {
  std::vector<float> head(static_cast<std::size_t>(view.tokens * view.dim));
  for (std::int64_t n = 0; n < view.tokens; ++n) {
    const std::int64_t base = view.offset(b, n, h);
    float* row = head.data() + n * view.dim;
    for (std::int64_t d = 0; d < view.dim; ++d)
      row[d] = load_as_float(view.data, view.dtype, base + d);
  }
  return head;
}

}  // namespace veda
