// Internal: 16-float vectors (GCC/Clang vector extensions, one AVX-512 register, two AVX2 ones)
// and the dense products the multi-shape oracle and the distillation run on them.
#pragma once

#include <cstdint>
#include <cstring>

namespace veda::method::detail {

// aligned(4): loads and stores from any float address; may_alias: it reads float arrays.
typedef float Vec16 __attribute__((vector_size(64), aligned(4), may_alias));
typedef std::int32_t Int16 __attribute__((vector_size(64), aligned(4), may_alias));
inline constexpr std::int64_t kLanes = 16;

inline Vec16 load16(const float* p) { return *reinterpret_cast<const Vec16*>(p); }
inline void store16(float* p, Vec16 v) { *reinterpret_cast<Vec16*>(p) = v; }
inline Vec16 splat16(float x) { return Vec16{} + x; }
inline Vec16 max16(Vec16 a, Vec16 b) { return a > b ? a : b; }
inline float hmax16(Vec16 v) {
  float m = v[0];
  for (int i = 1; i < 16; ++i) m = v[i] > m ? v[i] : m;
  return m;
}
inline float hsum16(Vec16 v) {
  float s = 0;
  for (int i = 0; i < 16; ++i) s += v[i];
  return s;
}

// exp(x) to ~2 ulp for x in [-87, 88] (Cephes expf); below -87 it returns ~1e-38, not 0.
inline Vec16 exp16(Vec16 x) {
  x = x > splat16(88.0f) ? splat16(88.0f) : x;
  x = x < splat16(-87.0f) ? splat16(-87.0f) : x;
  // n = round(x / ln 2) by the 1.5 * 2^23 trick (default rounding mode, |n| < 2^22).
  const Vec16 magic = splat16(12582912.0f);
  const Vec16 n = (x * 1.44269504088896341f + magic) - magic;
  Vec16 r = x - n * 0.693359375f;
  r = r + n * 2.12194440e-4f;
  Vec16 p = splat16(1.9875691500e-4f);
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.0f;
  const Int16 bits = (__builtin_convertvector(n, Int16) + 127) << 23;
  Vec16 scale;
  std::memcpy(&scale, &bits, sizeof(scale));
  return p * scale;
}

}  // namespace veda::method::detail
