// Hopper attention kernel instantiated for bf16, head dim 64 (one file per instantiation so
// builds stay parallel and small).
#include "attention_hopper.cuh"

namespace veda::attention_detail {
VEDA_INSTANTIATE_ATTENTION_HOPPER(DType::kBF16, 64)
}  // namespace veda::attention_detail
