// Portable attention kernel instantiated for f16, head dim 128 (one file per instantiation so
// builds stay parallel and small).
#include "attention_portable.cuh"

namespace veda::attention_detail {
VEDA_INSTANTIATE_ATTENTION_PORTABLE(DType::kF16, 128)
}  // namespace veda::attention_detail
