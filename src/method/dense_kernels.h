// Internal: the float32 products (Eigen's GEMM) shared by the multi-shape oracle and the two-pass
// block-sparse attention, on zero-padded operands. Operand layouts:
//   q rows   [rows, dims]          rows a multiple of 4, dims a multiple of 64
//   K^T      [dims, stride]        a key's channels down a column, so a score row streams
//   V        [keys, dims]
// Zero padding leaves every real dot product unchanged.
#pragma once

#include <cstdint>

namespace veda::method::detail {

// s[r, c] = scale * q[r, :] . kt[:, col_begin + c] for r < rows, c < cols (a multiple of 64);
// s has row stride s_stride.
void score_rows(const float* q, std::int64_t rows, std::int64_t dims, const float* kt,
                std::int64_t kt_stride, std::int64_t col_begin, std::int64_t cols, float scale,
                float* s, std::int64_t s_stride);

// o[r, :] += sum_c p[r, c] v[row_begin + c, :] for r < rows, c < cols; p has row stride
// p_stride, o and v have `dims` columns.
void accumulate_pv_rows(const float* p, std::int64_t p_stride, std::int64_t rows, const float* v,
                        std::int64_t row_begin, std::int64_t cols, std::int64_t dims, float* o);

}  // namespace veda::method::detail
