#include "dense_kernels.h"

#include <Eigen/Dense>

namespace veda::method::detail {
namespace {

// Row-major float views with a row stride; Eigen's GEMM does the products (single-threaded:
// EIGEN_DONT_PARALLELIZE, the callers run work items in parallel).
using Matrix = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
using Stride = Eigen::OuterStride<>;
using ConstView = Eigen::Map<const Matrix, Eigen::Unaligned, Stride>;
using View = Eigen::Map<Matrix, Eigen::Unaligned, Stride>;

}  // namespace

void score_rows(const float* q, std::int64_t rows, std::int64_t dims, const float* kt,
                std::int64_t kt_stride, std::int64_t col_begin, std::int64_t cols, float scale,
                float* s, std::int64_t s_stride) {
  const ConstView q_rows(q, rows, dims, Stride(dims));
  const ConstView k_columns(kt + col_begin, dims, cols, Stride(kt_stride));
  View(s, rows, cols, Stride(s_stride)).noalias() = scale * (q_rows * k_columns);
}

void accumulate_pv_rows(const float* p, std::int64_t p_stride, std::int64_t rows, const float* v,
                        std::int64_t row_begin, std::int64_t cols, std::int64_t dims, float* o) {
  const ConstView p_rows(p, rows, cols, Stride(p_stride));
  const ConstView v_rows(v + row_begin * dims, cols, dims, Stride(dims));
  View(o, rows, dims, Stride(dims)).noalias() += p_rows * v_rows;
}

}  // namespace veda::method::detail
