#include "veda/attention.h"

#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <set>

#include "expect_error.h"
#include "reference.h"
#include "veda/error.h"
#include "veda/tile_layout.h"

namespace veda {
namespace {

using testing::random_matrix;
using testing::reference_attention;
using testing::relative_error;

// Rounds a float32 matrix through dtype, keeping both the encoded buffer and the values it holds.
struct EncodedMatrix {
  std::vector<std::uint16_t> half;  // f16 / bf16 encoding
  std::vector<float> values;        // what the encoded buffer decodes to
  const void* data(DType dtype) const {
    return dtype == DType::kF32 ? static_cast<const void*>(values.data()) : half.data();
  }
};
EncodedMatrix encode(const std::vector<float>& x, DType dtype) {
  EncodedMatrix encoded{std::vector<std::uint16_t>(x.size()), x};
  for (std::size_t n = 0; n < x.size(); ++n) {
    if (dtype == DType::kF32) continue;
    encoded.half[n] = dtype == DType::kBF16 ? float_to_bf16(x[n]) : float_to_f16(x[n]);
    encoded.values[n] =
        dtype == DType::kBF16 ? bf16_to_float(encoded.half[n]) : f16_to_float(encoded.half[n]);
  }
  return encoded;
}

// Every row of query tile i lists the key tiles in `lists[i]`.
BlockIndex index_from_lists(const std::vector<std::vector<std::int32_t>>& lists,
                            std::int64_t k_tiles, std::int64_t budget) {
  BlockIndex index(1, 1, static_cast<std::int64_t>(lists.size()), k_tiles, budget);
  for (std::size_t i = 0; i < lists.size(); ++i) {
    std::set<std::int32_t> sorted(lists[i].begin(), lists[i].end());
    index.count(0, 0, i) = static_cast<std::int32_t>(sorted.size());
    std::copy(sorted.begin(), sorted.end(), index.row(0, 0, i));
  }
  index.validate();
  return index;
}

struct DenseCase {
  std::int64_t nq, nk, dim;
  DType dtype;
};

class DenseAttention : public ::testing::TestWithParam<DenseCase> {};

// The CPU reference at f32 accumulation against float64 on the same (rounded) inputs.
TEST_P(DenseAttention, MatchesFloat64Reference) {
  const auto [nq, nk, dim, dtype] = GetParam();
  const int heads = 2;
  const auto q = encode(random_matrix(nq * heads, dim, 1), dtype);
  const auto k = encode(random_matrix(nk * heads, dim, 2), dtype);
  const auto v = encode(random_matrix(nk * heads, dim, 3), dtype);
  AttentionParams params;
  params.q = TokensView::contiguous(q.data(dtype), dtype, 1, nq, heads, dim);
  params.k = TokensView::contiguous(k.data(dtype), dtype, 1, nk, heads, dim);
  params.v = TokensView::contiguous(v.data(dtype), dtype, 1, nk, heads, dim);
  params.scale = 1.0f / std::sqrt(static_cast<float>(dim));
  std::vector<float> out(static_cast<std::size_t>(nq * heads * dim), std::nanf(""));
  std::vector<float> lse(static_cast<std::size_t>(nq * heads), std::nanf(""));
  params.out = out.data();
  params.out_stride_batch = nq * heads * dim;
  params.out_stride_token = heads * dim;
  params.out_stride_head = dim;
  params.lse = lse.data();
  params.lse_stride_batch = nq * heads;
  params.lse_stride_token = heads;
  params.lse_stride_head = 1;
  attention_cpu(params);

  for (int h = 0; h < heads; ++h) {
    const auto head = [&](const std::vector<float>& x, std::int64_t n) {
      std::vector<float> one(static_cast<std::size_t>(n * dim));
      for (std::int64_t t = 0; t < n; ++t) {
        std::copy_n(x.data() + (t * heads + h) * dim, dim, one.data() + t * dim);
      }
      return one;
    };
    const auto reference =
        reference_attention(head(q.values, nq), head(k.values, nk), head(v.values, nk), dim,
                            params.scale, [](auto, auto) { return true; });
    std::vector<float> got_out = head(out, nq), got_lse(static_cast<std::size_t>(nq));
    for (std::int64_t t = 0; t < nq; ++t) got_lse[t] = lse[t * heads + h];
    EXPECT_LT(relative_error(got_out, reference.out), 1e-5) << "head " << h;
    EXPECT_LT(relative_error(got_lse, reference.lse), 1e-6) << "head " << h;
  }
}

INSTANTIATE_TEST_SUITE_P(
    Shapes, DenseAttention,
    ::testing::Values(DenseCase{1, 1, 64, DType::kF32}, DenseCase{127, 129, 64, DType::kF32},
                      DenseCase{129, 127, 128, DType::kF32}, DenseCase{300, 300, 32, DType::kF16},
                      DenseCase{256, 384, 128, DType::kBF16}, DenseCase{200, 70, 8, DType::kBF16},
                      DenseCase{130, 130, 96, DType::kF32}),
    [](const auto& test) {
      const DenseCase& c = test.param;
      return "nq" + std::to_string(c.nq) + "_nk" + std::to_string(c.nk) + "_d" +
             std::to_string(c.dim) + "_" + std::string(dtype_name(c.dtype));
    });

struct SparseCase {
  const char* name;
  std::int64_t tokens;
  std::function<std::vector<std::vector<std::int32_t>>(std::int64_t tiles)> lists;
};

class BlockSparseAttention : public ::testing::TestWithParam<SparseCase> {};

// Block-sparse attention equals dense attention with the unlisted tiles masked to -inf.
TEST_P(BlockSparseAttention, EqualsDenseWithMaskedTiles) {
  const SparseCase& c = GetParam();
  const std::int64_t dim = 64, tiles = tile_count(c.tokens);
  const auto lists = c.lists(tiles);
  std::int64_t budget = 0;
  for (const auto& list : lists) budget = std::max<std::int64_t>(budget, list.size());
  const BlockIndex index = index_from_lists(lists, tiles, budget);
  const auto q = random_matrix(c.tokens, dim, 11, 2.0f), k = random_matrix(c.tokens, dim, 12),
             v = random_matrix(c.tokens, dim, 13);
  std::vector<float> out(q.size(), std::nanf("")),
      lse(static_cast<std::size_t>(c.tokens), std::nanf(""));
  attend_head(q, k, v, dim, 0.125f, index.counts.data(), index.indices.data(), index.budget, out,
              lse);
  const auto reference = reference_attention(q, k, v, dim, 0.125, [&](auto r, auto col) {
    const auto& list = lists[r / kTileTokens];
    return std::find(list.begin(), list.end(), col / kTileTokens) != list.end();
  });
  for (std::int64_t r = 0; r < c.tokens; ++r) {
    if (lists[r / kTileTokens].empty()) {
      ASSERT_EQ(lse[r], -std::numeric_limits<float>::infinity()) << "row " << r;
      for (std::int64_t d = 0; d < dim; ++d) ASSERT_EQ(out[r * dim + d], 0.0f) << "row " << r;
    } else {
      ASSERT_NEAR(lse[r], reference.lse[r], 1e-5 * std::abs(reference.lse[r]) + 1e-5);
    }
  }
  const bool all_empty = std::all_of(lists.begin(), lists.end(), [](auto& l) { return l.empty(); });
  if (!all_empty) {
    EXPECT_LT(relative_error(out, reference.out), 1e-5);
  }
}

std::vector<std::vector<std::int32_t>> random_lists(std::int64_t tiles, std::uint32_t seed) {
  std::mt19937 generator(seed);
  std::vector<std::vector<std::int32_t>> lists(tiles);
  for (auto& list : lists) {
    for (std::int32_t j = 0; j < tiles; ++j) {
      if (generator() % 3 == 0) list.push_back(j);
    }
  }
  return lists;
}

INSTANTIATE_TEST_SUITE_P(
    Lists, BlockSparseAttention,
    ::testing::Values(SparseCase{"EmptyLists", 300,
                                 [](std::int64_t tiles) {
                                   return std::vector<std::vector<std::int32_t>>(tiles);
                                 }},
                      SparseCase{"FullLists", 300,
                                 [](std::int64_t tiles) {
                                   std::vector<std::int32_t> all(tiles);
                                   std::iota(all.begin(), all.end(), 0);
                                   return std::vector<std::vector<std::int32_t>>(tiles, all);
                                 }},
                      SparseCase{"RandomLists", 1000,
                                 [](std::int64_t tiles) { return random_lists(tiles, 5); }},
                      SparseCase{"SameTileEveryRow", 700,
                                 [](std::int64_t tiles) {
                                   return std::vector<std::vector<std::int32_t>>(tiles, {2});
                                 }},
                      SparseCase{"OnlyTheShortLastTile", 129,
                                 [](std::int64_t tiles) {
                                   return std::vector<std::vector<std::int32_t>>(tiles, {1});
                                 }},
                      SparseCase{"SomeRowsEmpty", 640,
                                 [](std::int64_t tiles) {
                                   auto lists = random_lists(tiles, 9);
                                   lists[0].clear();
                                   lists[3].clear();
                                   return lists;
                                 }}),
    [](const auto& test) { return std::string(test.param.name); });

TEST(AttentionParams, OutOrderStoresEachRowAtItsFrameMajorPlace) {
  const Grid grid{2, 9, 20};
  const std::int64_t tokens = grid.tokens(), heads = 2, dim = 16;
  const auto q = random_matrix(tokens * heads, dim, 21), k = random_matrix(tokens * heads, dim, 22),
             v = random_matrix(tokens * heads, dim, 23);
  std::vector<std::int32_t> order = tile_major_order(grid, {2, 8, 8});
  const std::vector<std::int32_t> second = tile_major_order(grid, {1, 8, 16});
  order.insert(order.end(), second.begin(), second.end());
  const std::vector<std::int32_t> head_group = {1, 0};
  AttentionParams params;
  params.q = TokensView::contiguous(q.data(), DType::kF32, 1, tokens, heads, dim);
  params.k = TokensView::contiguous(k.data(), DType::kF32, 1, tokens, heads, dim);
  params.v = TokensView::contiguous(v.data(), DType::kF32, 1, tokens, heads, dim);
  params.scale = 0.25f;
  std::vector<float> plain(q.size()), plain_lse(static_cast<std::size_t>(tokens * heads));
  params.out = plain.data(), params.lse = plain_lse.data();
  params.out_stride_batch = tokens * heads * dim, params.out_stride_token = heads * dim;
  params.out_stride_head = dim;
  params.lse_stride_batch = tokens * heads, params.lse_stride_token = heads;
  params.lse_stride_head = 1;
  attention_cpu(params);
  std::vector<float> permuted(q.size(), std::nanf("")),
      permuted_lse(plain_lse.size(), std::nanf(""));
  params.out = permuted.data(), params.lse = permuted_lse.data();
  params.out_order = order.data(), params.out_head_group = head_group.data();
  attention_cpu(params);
  for (std::int64_t h = 0; h < heads; ++h) {
    for (std::int64_t r = 0; r < tokens; ++r) {
      const std::int64_t n = order[head_group[h] * tokens + r];
      ASSERT_EQ(permuted_lse[n * heads + h], plain_lse[r * heads + h]) << "head " << h;
      for (std::int64_t d = 0; d < dim; ++d) {
        ASSERT_EQ(permuted[(n * heads + h) * dim + d], plain[(r * heads + h) * dim + d]);
      }
    }
  }
}

TEST(AttentionParams, CsrIndexGivesTheSameOutputAsThePaddedOne) {
  const std::int64_t tokens = 700, dim = 32, tiles = tile_count(tokens);
  auto lists = random_lists(tiles, 17);
  lists[2].clear();  // an empty row: O = 0, lse = -inf in both forms
  const BlockIndex padded = index_from_lists(lists, tiles, tiles);
  const CsrBlockIndex csr = padded.csr();
  ASSERT_EQ(csr.offsets.size(), static_cast<std::size_t>(tiles + 1));
  const BlockIndexView padded_view = padded.view(), csr_view = csr.view();
  for (std::int64_t i = 0; i < tiles; ++i) {
    ASSERT_EQ(csr_view.count(0, 0, i), padded_view.count(0, 0, i));
    for (std::int32_t s = 0; s < csr_view.count(0, 0, i); ++s)
      ASSERT_EQ(csr_view.row(0, 0, i)[s], padded_view.row(0, 0, i)[s]);
  }

  const auto q = random_matrix(tokens, dim, 41), k = random_matrix(tokens, dim, 42),
             v = random_matrix(tokens, dim, 43);
  AttentionParams params;
  params.q = TokensView::contiguous(q.data(), DType::kF32, 1, tokens, 1, dim);
  params.k = TokensView::contiguous(k.data(), DType::kF32, 1, tokens, 1, dim);
  params.v = TokensView::contiguous(v.data(), DType::kF32, 1, tokens, 1, dim);
  params.scale = 0.2f;
  params.out_stride_batch = tokens * dim, params.out_stride_token = dim,
  params.out_stride_head = dim;
  params.lse_stride_batch = tokens, params.lse_stride_token = 1, params.lse_stride_head = 1;
  const auto run = [&](const BlockIndexView& index, std::vector<float>& out,
                       std::vector<float>& lse) {
    out.assign(q.size(), std::nanf("")), lse.assign(static_cast<std::size_t>(tokens), 0.0f);
    params.index = &index, params.out = out.data(), params.lse = lse.data();
    attention_cpu(params);
  };
  std::vector<float> out_padded, lse_padded, out_csr, lse_csr;
  run(padded_view, out_padded, lse_padded);
  run(csr_view, out_csr, lse_csr);
  EXPECT_EQ(out_csr, out_padded);
  EXPECT_EQ(lse_csr, lse_padded);

  // A malformed CSR index is refused with a message that names the problem.
  CsrBlockIndex broken = csr;
  std::swap(broken.offsets[3], broken.offsets[4]);
  const BlockIndexView broken_view = broken.view();
  params.index = &broken_view;
  testing::expect_error_naming([&] { attention_cpu(params); }, "never decreasing");
}

TEST(AttentionParams, ReadThroughOrderEqualsAttentionOverReorderedCopies) {
  const Grid grid{3, 9, 20};
  const std::int64_t tokens = grid.tokens(), heads = 2, dim = 16, tiles = tile_count(tokens);
  const std::vector<std::vector<float>> qkv = {random_matrix(tokens * heads, dim, 31),
                                               random_matrix(tokens * heads, dim, 32),
                                               random_matrix(tokens * heads, dim, 33)};
  std::vector<std::int32_t> order = tile_major_order(grid, {2, 8, 8});
  const std::vector<std::int32_t> second = tile_major_order(grid, {1, 8, 16});
  order.insert(order.end(), second.begin(), second.end());
  const std::vector<std::int32_t> head_group = {1, 0};
  // Key tiles {1, 3} for every query tile: a sparse index, so the order decides the result.
  BlockIndex index(1, heads, tiles, tiles, 2);
  for (std::int64_t h = 0; h < heads; ++h)
    for (std::int64_t i = 0; i < tiles; ++i) {
      index.count(0, h, i) = 2;
      index.row(0, h, i)[0] = 1, index.row(0, h, i)[1] = 3;
    }
  const BlockIndexView index_view = index.view();

  // Reordered copies [1, H, N, D]: head h's rows in its group's tile-major order.
  std::vector<std::vector<float>> tiled(3, std::vector<float>(qkv[0].size()));
  for (int t = 0; t < 3; ++t)
    for (std::int64_t h = 0; h < heads; ++h)
      for (std::int64_t r = 0; r < tokens; ++r)
        for (std::int64_t d = 0; d < dim; ++d)
          tiled[t][(h * tokens + r) * dim + d] =
              qkv[t][(order[head_group[h] * tokens + r] * heads + h) * dim + d];

  AttentionParams params;
  params.index = &index_view;
  params.scale = 0.25f;
  params.out_stride_batch = tokens * heads * dim, params.out_stride_token = heads * dim;
  params.out_stride_head = dim;
  params.lse_stride_batch = tokens * heads, params.lse_stride_token = heads;
  params.lse_stride_head = 1;
  params.out_order = order.data(), params.out_head_group = head_group.data();
  const auto run = [&](std::vector<float>& out, std::vector<float>& lse) {
    out.assign(qkv[0].size(), std::nanf(""));
    lse.assign(static_cast<std::size_t>(tokens * heads), std::nanf(""));
    params.out = out.data(), params.lse = lse.data();
    attention_cpu(params);
  };
  for (int t = 0; t < 3; ++t) {
    TokensView view{tiled[t].data(),      DType::kF32, 1,           tokens, heads, dim,
                    heads * tokens * dim, dim,         tokens * dim};
    (t == 0 ? params.q : t == 1 ? params.k : params.v) = view;
  }
  std::vector<float> copies, copies_lse, direct, direct_lse;
  run(copies, copies_lse);
  params.q = TokensView::contiguous(qkv[0].data(), DType::kF32, 1, tokens, heads, dim);
  params.k = TokensView::contiguous(qkv[1].data(), DType::kF32, 1, tokens, heads, dim);
  params.v = TokensView::contiguous(qkv[2].data(), DType::kF32, 1, tokens, heads, dim);
  params.read_through_order = true;
  run(direct, direct_lse);
  EXPECT_EQ(direct, copies);
  EXPECT_EQ(direct_lse, copies_lse);
  // q alone through the order, k and v from their copies (the sparse call's default).
  params.read_through_order = false;
  params.read_queries_through_order = true;
  params.k = {tiled[1].data(),      DType::kF32, 1,           tokens, heads, dim,
              heads * tokens * dim, dim,         tokens * dim};
  params.v = {tiled[2].data(),      DType::kF32, 1,           tokens, heads, dim,
              heads * tokens * dim, dim,         tokens * dim};
  std::vector<float> queries, queries_lse;
  run(queries, queries_lse);
  EXPECT_EQ(queries, copies);
  EXPECT_EQ(queries_lse, copies_lse);

  params.out_order = nullptr;
  testing::expect_error_naming([&] { attention_cpu(params); }, "out_order is null");
  params.read_queries_through_order = false;
  params.read_through_order = true;
  testing::expect_error_naming([&] { attention_cpu(params); }, "out_order is null");
}

TEST(AttentionParams, RejectsMismatchedShapesWithAClearMessage) {
  std::vector<float> data(2 * 10 * 64, 0.0f), out(data.size());
  AttentionParams params;
  params.q = TokensView::contiguous(data.data(), DType::kF32, 1, 10, 2, 64);
  params.k = TokensView::contiguous(data.data(), DType::kF32, 1, 10, 1, 128);
  params.v = params.k;
  params.scale = 0.125f;
  params.out = out.data();
  testing::expect_error_naming([&] { attention_cpu(params); }, "k [1, 10, 1, 128]");
  params.k = params.q;
  params.v = params.q;
  const BlockIndex wrong(1, 2, 3, 1, 1);  // q needs 1 query tile
  const BlockIndexView view = wrong.view();
  params.index = &view;
  EXPECT_THROW(attention_cpu(params), Error);
}

}  // namespace
}  // namespace veda
