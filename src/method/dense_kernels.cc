#include "dense_kernels.h"

#include <algorithm>

#include "vector_math.h"

namespace veda::method::detail {

void score_rows(const float* q, std::int64_t rows, std::int64_t dims, const float* kt,
                std::int64_t kt_stride, std::int64_t col_begin, std::int64_t cols, float scale,
                float* s, std::int64_t s_stride) {
  // Block: 4 rows x 64 columns = 16 vector accumulators; the [dims, 64] slab of K^T (32 KB at
  // dims 128) stays in L1 while all row groups pass over it.
  for (std::int64_t c0 = 0; c0 < cols; c0 += 64) {
    const float* k_slab = kt + col_begin + c0;
    for (std::int64_t r0 = 0; r0 < rows; r0 += 4) {
      Vec16 acc[4][4] = {};
      for (std::int64_t d = 0; d < dims; ++d) {
        const float* k_row = k_slab + d * kt_stride;
        const Vec16 k0 = load16(k_row), k1 = load16(k_row + 16), k2 = load16(k_row + 32),
                    k3 = load16(k_row + 48);
        for (int i = 0; i < 4; ++i) {
          const float qv = q[(r0 + i) * dims + d];
          acc[i][0] += qv * k0;
          acc[i][1] += qv * k1;
          acc[i][2] += qv * k2;
          acc[i][3] += qv * k3;
        }
      }
      for (int i = 0; i < 4; ++i) {
        for (int j = 0; j < 4; ++j)
          store16(s + (r0 + i) * s_stride + c0 + 16 * j, acc[i][j] * scale);
      }
    }
  }
}

void accumulate_pv_rows(const float* p, std::int64_t p_stride, std::int64_t rows, const float* v,
                        std::int64_t row_begin, std::int64_t cols, std::int64_t dims, float* o) {
  // Keys in chunks of 256 (128 KB of V at dims 128, L2-resident) reused by every row group;
  // block: 4 rows x 64 channels = 16 vector accumulators.
  constexpr std::int64_t kKeyChunk = 256;
  for (std::int64_t c0 = 0; c0 < cols; c0 += kKeyChunk) {
    const std::int64_t c1 = std::min(cols, c0 + kKeyChunk);
    for (std::int64_t r0 = 0; r0 < rows; r0 += 4) {
      for (std::int64_t d0 = 0; d0 < dims; d0 += 64) {
        Vec16 acc[4][4];
        for (int i = 0; i < 4; ++i) {
          for (int j = 0; j < 4; ++j) acc[i][j] = load16(o + (r0 + i) * dims + d0 + 16 * j);
        }
        for (std::int64_t c = c0; c < c1; ++c) {
          const float* v_row = v + (row_begin + c) * dims + d0;
          const Vec16 v0 = load16(v_row), v1 = load16(v_row + 16), v2 = load16(v_row + 32),
                      v3 = load16(v_row + 48);
          for (int i = 0; i < 4; ++i) {
            const float pv = p[(r0 + i) * p_stride + c];
            acc[i][0] += pv * v0;
            acc[i][1] += pv * v1;
            acc[i][2] += pv * v2;
            acc[i][3] += pv * v3;
          }
        }
        for (int i = 0; i < 4; ++i) {
          for (int j = 0; j < 4; ++j) store16(o + (r0 + i) * dims + d0 + 16 * j, acc[i][j]);
        }
      }
    }
  }
}

}  // namespace veda::method::detail
