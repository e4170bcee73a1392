#include "veda/dtype.h"

#include <bit>
#include <cmath>
#include <string>

#include "veda/error.h"

namespace veda {

std::size_t dtype_size(DType dtype) {
  switch (dtype) {
    case DType::kF32:
    case DType::kI32:
      return 4;
    case DType::kF16:
    case DType::kBF16:
      return 2;
    case DType::kI64:
      return 8;
  }
  return 0;
}

std::string_view dtype_name(DType dtype) {
  switch (dtype) {
    case DType::kF32:
      return "F32";
    case DType::kF16:
      return "F16";
    case DType::kBF16:
      return "BF16";
    case DType::kI32:
      return "I32";
    case DType::kI64:
      return "I64";
  }
  return "?";
}

DType dtype_from_name(std::string_view name) {
  for (DType dtype : {DType::kF32, DType::kF16, DType::kBF16, DType::kI32, DType::kI64}) {
    if (dtype_name(dtype) == name) return dtype;
  }
  detail::fail("dtype '", name, "' is not supported; expected one of F32, F16, BF16, I32, I64");
}

bool is_floating(DType dtype) {
  return dtype == DType::kF32 || dtype == DType::kF16 || dtype == DType::kBF16;
}

std::uint16_t float_to_bf16(float value) {
  const auto word = std::bit_cast<std::uint32_t>(value);
  if (std::isnan(value)) return static_cast<std::uint16_t>((word >> 16) | 0x40);  // stay NaN
  const std::uint32_t round = 0x7FFF + ((word >> 16) & 1);  // to nearest, ties to even
  return static_cast<std::uint16_t>((word + round) >> 16);
}

// IEEE binary16: 1 sign, 5 exponent (bias 15), 10 mantissa bits.
float f16_to_float(std::uint16_t bits) {
  const std::uint32_t sign = static_cast<std::uint32_t>(bits & 0x8000) << 16;
  const std::uint32_t exponent = (bits >> 10) & 0x1F;
  std::uint32_t mantissa = bits & 0x3FF;
  std::uint32_t word;
  if (exponent == 0x1F) {
    word = sign | 0x7F800000 | (mantissa << 13);  // inf / NaN
  } else if (exponent != 0) {
    word = sign | ((exponent + 112) << 23) | (mantissa << 13);
  } else if (mantissa == 0) {
    word = sign;
  } else {  // subnormal: value = mantissa * 2^-24
    const float magnitude = std::ldexp(static_cast<float>(mantissa), -24);
    return sign ? -magnitude : magnitude;
  }
  return std::bit_cast<float>(word);
}

std::uint16_t float_to_f16(float value) {
  const auto word = std::bit_cast<std::uint32_t>(value);
  const auto sign = static_cast<std::uint16_t>((word >> 16) & 0x8000);
  const float magnitude = std::fabs(value);
  if (std::isnan(value)) return static_cast<std::uint16_t>(sign | 0x7E00);
  if (magnitude >= 65520.0f) return static_cast<std::uint16_t>(sign | 0x7C00);  // rounds to inf
  if (magnitude < 6.103515625e-05f) {  // subnormal range: multiples of 2^-24, ties to even
    const float scaled = magnitude * 16777216.0f;
    return static_cast<std::uint16_t>(sign | static_cast<std::uint16_t>(std::nearbyint(scaled)));
  }
  const std::uint32_t abs_word = word & 0x7FFFFFFF;
  // Rebias the exponent (127 -> 15) and round the 23-bit mantissa to 10 bits, ties to even.
  const std::uint32_t rounded = abs_word + 0xFFF + ((abs_word >> 13) & 1);
  return static_cast<std::uint16_t>(sign | ((rounded - (112u << 23)) >> 13));
}

void store_from_float(void* data, DType dtype, std::int64_t index, float value) {
  switch (dtype) {
    case DType::kF32:
      static_cast<float*>(data)[index] = value;
      return;
    case DType::kBF16:
      static_cast<std::uint16_t*>(data)[index] = float_to_bf16(value);
      return;
    case DType::kF16:
      static_cast<std::uint16_t*>(data)[index] = float_to_f16(value);
      return;
    default:
      detail::fail("cannot store a float into a tensor of dtype ", dtype_name(dtype));
  }
}

}  // namespace veda
