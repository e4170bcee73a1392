#include "veda/method/two_pass_attention.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "dense_kernels.h"
#include "vector_math.h"
#include "veda/error.h"
#include "veda/tile_layout.h"

namespace veda::method {

void attend_head_two_pass(std::span<const float> q, std::span<const float> k,
                          std::span<const float> v, std::int64_t dim, float scale,
                          const std::int32_t* counts, const std::int32_t* rows, std::int64_t budget,
                          std::span<float> out, std::span<float> lse) {
  const auto row = static_cast<std::size_t>(dim);
  VEDA_CHECK(dim > 0 && !q.empty() && !k.empty() && q.size() % row == 0 && k.size() % row == 0 &&
                 v.size() == k.size() && out.size() == q.size() && lse.size() == q.size() / row,
             "two-pass attention got q, k, v, out, lse of ", q.size(), ", ", k.size(), ", ",
             v.size(), ", ", out.size(), ", ", lse.size(), " floats with head dim ", dim,
             "; expected [Nq, D], [Nk, D], [Nk, D], [Nq, D], [Nq]");
  const auto nq = static_cast<std::int64_t>(q.size() / row);
  const auto nk = static_cast<std::int64_t>(k.size() / row);
  const std::int64_t q_tiles = tile_count(nq), k_tiles = tile_count(nk);
  const std::int64_t dims = (dim + 63) / 64 * 64, cols = k_tiles * kTileTokens;
  const std::int64_t width = counts ? budget : k_tiles;  // most key tiles of one query tile

  // Zero-padded operands: q [Tq*128, dims], K^T [dims, Tk*128], v [Tk*128, dims].
  std::vector<float> qp(q_tiles * kTileTokens * dims, 0.0f), kt(dims * cols, 0.0f),
      vp(cols * dims, 0.0f);
  for (std::int64_t r = 0; r < nq; ++r) std::copy_n(q.data() + r * dim, dim, qp.data() + r * dims);
  for (std::int64_t c = 0; c < nk; ++c) {
    std::copy_n(v.data() + c * dim, dim, vp.data() + c * dims);
    for (std::int64_t d = 0; d < dim; ++d) kt[d * cols + c] = k[c * dim + d];
  }

#pragma omp parallel
  {
    const std::int64_t s_stride = std::max<std::int64_t>(width, 1) * kTileTokens;
    std::vector<float> s(kTileTokens * s_stride), o(kTileTokens * dims);
#pragma omp for schedule(dynamic, 1)
    for (std::int64_t i = 0; i < q_tiles; ++i) {
      const std::int64_t count = counts ? counts[i] : k_tiles;
      const std::int64_t valid_rows = std::min(kTileTokens, nq - i * kTileTokens);
      if (count == 0) {
        for (std::int64_t r = 0; r < valid_rows; ++r) {
          std::fill_n(out.data() + (i * kTileTokens + r) * dim, dim, 0.0f);
          lse[i * kTileTokens + r] = -std::numeric_limits<float>::infinity();
        }
        continue;
      }
      const float* q_tile = qp.data() + i * kTileTokens * dims;
      for (std::int64_t slot = 0; slot < count; ++slot) {
        const std::int64_t j = counts ? rows[i * budget + slot] : slot;
        float* s_slot = s.data() + slot * kTileTokens;
        detail::score_rows(q_tile, kTileTokens, dims, kt.data(), cols, j * kTileTokens, kTileTokens,
                           scale, s_slot, s_stride);
        const std::int64_t valid_cols = std::min(kTileTokens, nk - j * kTileTokens);
        for (std::int64_t r = 0; r < kTileTokens; ++r) {
          std::fill(s_slot + r * s_stride + valid_cols, s_slot + r * s_stride + kTileTokens,
                    -std::numeric_limits<float>::infinity());
        }
      }
      const std::int64_t used = count * kTileTokens;
      std::vector<float> sums(kTileTokens);
      for (std::int64_t r = 0; r < valid_rows; ++r) {
        float* srow = s.data() + r * s_stride;
        const float row_max = *std::max_element(srow, srow + used);
        detail::Vec16 sum{};
        for (std::int64_t c = 0; c < used; c += detail::kLanes) {
          // Masked keys: exp16(-inf) is ~1e-38 against a row sum >= 1.
          const detail::Vec16 e = detail::exp16(detail::load16(srow + c) - row_max);
          detail::store16(srow + c, e);
          sum += e;
        }
        sums[r] = detail::hsum16(sum);
        lse[i * kTileTokens + r] = row_max + std::log(sums[r]);
      }
      for (std::int64_t r = valid_rows; r < kTileTokens; ++r) {
        std::fill_n(s.data() + r * s_stride, used, 0.0f);
      }
      std::fill(o.begin(), o.end(), 0.0f);
      for (std::int64_t slot = 0; slot < count; ++slot) {
        const std::int64_t j = counts ? rows[i * budget + slot] : slot;
        detail::accumulate_pv_rows(s.data() + slot * kTileTokens, s_stride, kTileTokens, vp.data(),
                                   j * kTileTokens, kTileTokens, dims, o.data());
      }
      for (std::int64_t r = 0; r < valid_rows; ++r) {
        const float inverse = 1.0f / sums[r];
        for (std::int64_t d = 0; d < dim; ++d) {
          out[(i * kTileTokens + r) * dim + d] = o[r * dims + d] * inverse;
        }
      }
    }
  }
}

}  // namespace veda::method
