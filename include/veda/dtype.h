// Element types of tensors crossing the library's boundary, and scalar conversions to float.
#pragma once

#include <cstdint>
#include <cstring>
#include <string_view>

namespace veda {

enum class DType : std::uint8_t { kF32, kF16, kBF16, kI32, kI64 };

std::size_t dtype_size(DType dtype);
// "F32", "F16", "BF16", "I32", "I64": the safetensors spelling.
std::string_view dtype_name(DType dtype);
// Inverse of dtype_name; throws veda::Error naming the text and the supported names.
DType dtype_from_name(std::string_view name);
bool is_floating(DType dtype);

// bf16 is the top half of an IEEE binary32; rounding to nearest even on the way down.
inline float bf16_to_float(std::uint16_t bits) {
  const std::uint32_t word = static_cast<std::uint32_t>(bits) << 16;
  float value;
  std::memcpy(&value, &word, sizeof(value));
  return value;
}
std::uint16_t float_to_bf16(float value);
float f16_to_float(std::uint16_t bits);
std::uint16_t float_to_f16(float value);

// Reads element `index` of a floating buffer of type `dtype` as float.
inline float load_as_float(const void* data, DType dtype, std::int64_t index) {
  switch (dtype) {
    case DType::kF32:
      return static_cast<const float*>(data)[index];
    case DType::kBF16:
      return bf16_to_float(static_cast<const std::uint16_t*>(data)[index]);
    case DType::kF16:
      return f16_to_float(static_cast<const std::uint16_t*>(data)[index]);
    default:
      return 0.0f;  // integer types are rejected by callers before any element is read
  }
}
void store_from_float(void* data, DType dtype, std::int64_t index, float value);

}  // namespace veda
