// GPU block-sparse attention (both kernels) against the CPU reference attention_cpu, with the
// same AttentionParams and index format. Skipped where no GPU is present (CI compiles it only).
//
// Tolerance (H200.md, FlashAttention-3's rule): with fp32 = attention_cpu on the same 16-bit
// inputs (float32 accumulation, float32 output) as the reference,
//   ||gpu - fp32|| / ||fp32|| <= 2 x ||plain - fp32|| / ||fp32||
// where plain is a straightforward 16-bit implementation: scores and softmax in float32, P
// rounded to the input type before P V, the output rounded to the output type (plus 1e-5 for
// cases where plain is exact, e.g. one key per row). The same bound,
// with 2.5x, holds per query tile so that one wrong tile cannot hide in a large tensor. lse
// within 1e-3 (absolute, natural log units) of fp32's; empty lists give O = 0 and lse = -inf
// exactly. Outputs are poisoned with NaN before each run, so unwritten elements fail.
#include <cuda_runtime_api.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "cuda_test_util.h"
#include "veda/attention.h"
#include "veda/block_index.h"
#include "veda/cuda/attention.h"
#include "veda/dtype.h"
#include "veda/tile_layout.h"

namespace veda {
namespace {

using testing::DeviceBuffer;
using testing::has_gpu;

enum class Lists {
  kDense,        // index = nullptr
  kFull,         // every row lists every key tile
  kEmpty,        // every row empty
  kRandom,       // random duplicate-free lists of random length (some empty), budget = Tk / 2 + 1
  kSameTile,     // every row lists the same key tile
  kLastTileOnly  // every row lists only the last (possibly partial) key tile
};

const char* lists_name(Lists lists) {
  switch (lists) {
    case Lists::kDense:
      return "dense";
    case Lists::kFull:
      return "full";
    case Lists::kEmpty:
      return "empty";
    case Lists::kRandom:
      return "random";
    case Lists::kSameTile:
      return "sametile";
    case Lists::kLastTileOnly:
      return "lasttile";
  }
  return "?";
}

struct AttentionCase {
  const char* tag;  // "small" cases also run under compute-sanitizer
  std::int64_t batch, tokens, heads, dim;
  Lists lists;
  DType dtype = DType::kBF16;
  DType out_dtype = DType::kBF16;
  bool padded_layout = false;  // token stride > H*D (q/k/v inside a larger buffer)
  // q, k, v read through random row orders (read_through_order; two head groups, h % 2), O and
  // lse stored through them.
  bool permuted = false;
  bool csr = false;  // the index in CSR form (offsets) instead of padded lists
  // With `permuted`: q alone read through its order (read_queries_through_order), k and v as
  // stored (the plan's default, over tile-major copies of k and v).
  bool queries_only = false;
  // With `permuted`: the orders are tile_major_order(grid, kBoxShapes[group]) (tokens = the
  // grid's), and the kernel is told so (box_grid, box_shapes): full boxes load by TMA.
  Grid grid = {};
  bool boxes = false;
};

const TileShape kBoxShapes[2] = {{1, 8, 16}, {8, 4, 4}};

// Rows of [B, N, H, D] float x per head: result row r of head h = x row order[(h % 2) N + r]
// (to_order), or the inverse (result row order[...] = x row r).
std::vector<float> permute_rows(const std::vector<float>& x, const AttentionCase& c,
                                const std::vector<std::int32_t>& order, bool to_order) {
  std::vector<float> out(x.size());
  const std::int64_t n = c.tokens, row = c.heads * c.dim;
  for (std::int64_t b = 0; b < c.batch; ++b)
    for (std::int64_t h = 0; h < c.heads; ++h)
      for (std::int64_t r = 0; r < n; ++r) {
        const std::int64_t other = order[(h % 2) * n + r];
        const std::int64_t dst = to_order ? r : other, src = to_order ? other : r;
        std::copy_n(x.begin() + (b * n + src) * row + h * c.dim, c.dim,
                    out.begin() + (b * n + dst) * row + h * c.dim);
      }
  return out;
}

BlockIndex make_index(const AttentionCase& c, std::int64_t tiles, std::mt19937& generator) {
  switch (c.lists) {
    case Lists::kDense:
    case Lists::kFull:
      return BlockIndex::dense(c.batch, c.heads, tiles, tiles);
    case Lists::kEmpty:
      return BlockIndex(c.batch, c.heads, tiles, tiles, std::max<std::int64_t>(1, tiles / 2));
    case Lists::kSameTile:
    case Lists::kLastTileOnly: {
      BlockIndex index(c.batch, c.heads, tiles, tiles, 2);
      std::uniform_int_distribution<std::int64_t> pick(0, tiles - 1);
      const auto tile =
          static_cast<std::int32_t>(c.lists == Lists::kLastTileOnly ? tiles - 1 : pick(generator));
      for (std::int64_t b = 0; b < c.batch; ++b)
        for (std::int64_t h = 0; h < c.heads; ++h)
          for (std::int64_t i = 0; i < tiles; ++i) {
            index.count(b, h, i) = 1;
            index.row(b, h, i)[0] = tile;
          }
      return index;
    }
    case Lists::kRandom: {
      const std::int64_t budget = std::min<std::int64_t>(tiles, tiles / 2 + 1);
      BlockIndex index(c.batch, c.heads, tiles, tiles, budget);
      std::vector<std::int32_t> all(static_cast<std::size_t>(tiles));
      std::iota(all.begin(), all.end(), 0);
      std::uniform_int_distribution<std::int64_t> length(0, budget);
      for (std::int64_t b = 0; b < c.batch; ++b)
        for (std::int64_t h = 0; h < c.heads; ++h)
          for (std::int64_t i = 0; i < tiles; ++i) {
            const std::int64_t count = length(generator);
            std::shuffle(all.begin(), all.end(), generator);
            std::int32_t* row = index.row(b, h, i);
            std::copy_n(all.begin(), count, row);
            std::sort(row, row + count);
            index.count(b, h, i) = static_cast<std::int32_t>(count);
          }
      return index;
    }
  }
  return {};
}

// The plain 16-bit implementation (see the top of the file), float32 everywhere except P
// (rounded to `dtype`) and the output (rounded to `out_dtype`). out: [B, N, H, D] float.
std::vector<float> plain_attention(const std::vector<float>& q, const std::vector<float>& k,
                                   const std::vector<float>& v, const AttentionCase& c,
                                   const BlockIndex* index, float scale) {
  const std::int64_t n = c.tokens, h_count = c.heads, d = c.dim, tiles = tile_count(n);
  std::vector<float> out(q.size(), 0.0f);
  auto round_to = [](DType dtype, float x) {
    switch (dtype) {
      case DType::kBF16:
        return bf16_to_float(float_to_bf16(x));
      case DType::kF16:
        return f16_to_float(float_to_f16(x));
      default:
        return x;
    }
  };
#pragma omp parallel for collapse(2) schedule(dynamic, 1)
  for (std::int64_t bh = 0; bh < c.batch * h_count; ++bh) {
    for (std::int64_t i = 0; i < tiles; ++i) {
      const std::int64_t b = bh / h_count, h = bh % h_count;
      std::vector<std::int64_t> keys;
      const std::int64_t count = index ? index->counts[(bh)*tiles + i] : tiles;
      for (std::int64_t slot = 0; slot < count; ++slot) {
        const std::int64_t tile =
            index ? index->indices[(bh * tiles + i) * index->budget + slot] : slot;
        for (std::int64_t key = tile * kTileTokens; key < std::min(n, (tile + 1) * kTileTokens);
             ++key)
          keys.push_back(key);
      }
      std::vector<float> scores(keys.size()), acc(static_cast<std::size_t>(d));
      for (std::int64_t r = i * kTileTokens; r < std::min(n, (i + 1) * kTileTokens); ++r) {
        const float* qr = q.data() + ((b * n + r) * h_count + h) * d;
        float* o = out.data() + ((b * n + r) * h_count + h) * d;
        if (keys.empty()) continue;
        float peak = -std::numeric_limits<float>::infinity();
        for (std::size_t j = 0; j < keys.size(); ++j) {
          const float* kr = k.data() + ((b * n + keys[j]) * h_count + h) * d;
          float dot = 0.0f;
          for (std::int64_t e = 0; e < d; ++e) dot += qr[e] * kr[e];
          scores[j] = scale * dot;
          peak = std::max(peak, scores[j]);
        }
        float sum = 0.0f;
        std::fill(acc.begin(), acc.end(), 0.0f);
        for (std::size_t j = 0; j < keys.size(); ++j) {
          const float p = std::exp(scores[j] - peak);
          sum += p;
          const float p16 = round_to(c.dtype, p);
          const float* vr = v.data() + ((b * n + keys[j]) * h_count + h) * d;
          for (std::int64_t e = 0; e < d; ++e) acc[e] += p16 * vr[e];
        }
        for (std::int64_t e = 0; e < d; ++e) o[e] = round_to(c.out_dtype, acc[e] / sum);
      }
    }
  }
  return out;
}

double squared_norm(const float* x, std::size_t count) {
  double total = 0.0;
  for (std::size_t i = 0; i < count; ++i) total += double(x[i]) * double(x[i]);
  return total;
}
double squared_distance(const float* x, const float* y, std::size_t count) {
  double total = 0.0;
  for (std::size_t i = 0; i < count; ++i) total += (double(x[i]) - y[i]) * (double(x[i]) - y[i]);
  return total;
}

class AttentionGpu : public ::testing::TestWithParam<std::tuple<AttentionKernel, AttentionCase>> {};

TEST_P(AttentionGpu, MatchesCpuReference) {
  if (!has_gpu()) GTEST_SKIP() << "no CUDA device";
  const auto& [kernel, c] = GetParam();
  const std::uint32_t seed = std::random_device{}();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937 generator(seed);

  const std::int64_t n = c.tokens, tiles = tile_count(n);
  const std::int64_t row = c.heads * c.dim;                            // packed token stride
  const std::int64_t token_stride = c.padded_layout ? row + 64 : row;  // multiple of 8
  const std::int64_t elements = c.batch * n * token_stride;
  const std::size_t in_bytes = static_cast<std::size_t>(elements) * dtype_size(c.dtype);

  // Random 16-bit q, k, v (scaled so softmax rows have peaks), and their float copies [B,N,H,D].
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<std::vector<std::byte>> host(3, std::vector<std::byte>(in_bytes));
  std::vector<std::vector<float>> packed(
      3, std::vector<float>(static_cast<std::size_t>(c.batch * n * row)));
  const float spread[3] = {1.5f, 1.5f, 1.0f};
  for (int t = 0; t < 3; ++t) {
    for (std::int64_t bn = 0; bn < c.batch * n; ++bn) {
      for (std::int64_t e = 0; e < token_stride; ++e) {
        const float x = normal(generator) * spread[t];
        store_from_float(host[t].data(), c.dtype, bn * token_stride + e, x);
        if (e < row)
          packed[t][bn * row + e] = load_as_float(host[t].data(), c.dtype, bn * token_stride + e);
      }
    }
  }
  auto view = [&](const void* data) {
    TokensView v = TokensView::contiguous(data, c.dtype, c.batch, n, c.heads, c.dim);
    v.stride_token = token_stride;
    v.stride_batch = n * token_stride;
    return v;
  };

  BlockIndex index = make_index(c, tiles, generator);
  const bool dense = c.lists == Lists::kDense;
  std::vector<std::int32_t> order, head_group;
  if (c.permuted) {
    for (int group = 0; group < 2; ++group) {
      std::vector<std::int32_t> rows(static_cast<std::size_t>(n));
      std::iota(rows.begin(), rows.end(), 0);
      std::shuffle(rows.begin(), rows.end(), generator);
      if (c.boxes) rows = tile_major_order(c.grid, kBoxShapes[group]);
      order.insert(order.end(), rows.begin(), rows.end());
    }
    for (std::int64_t h = 0; h < c.heads; ++h)
      head_group.push_back(static_cast<std::int32_t>(h % 2));
  }
  const float scale = 1.0f / std::sqrt(static_cast<float>(c.dim));

  // fp32 reference through attention_cpu with the same params struct.
  const std::size_t out_elements = static_cast<std::size_t>(c.batch * n * row);
  const std::size_t lse_elements = static_cast<std::size_t>(c.batch * n * c.heads);
  std::vector<float> reference(out_elements), reference_lse(lse_elements);
  const BlockIndexView host_index = index.view();
  AttentionParams params;
  params.q = view(host[0].data());
  params.k = view(host[1].data());
  params.v = view(host[2].data());
  params.index = dense ? nullptr : &host_index;
  params.scale = scale;
  params.out = reference.data();
  params.out_dtype = DType::kF32;
  params.out_stride_batch = n * row;
  params.out_stride_token = row;
  params.out_stride_head = c.dim;
  params.lse = reference_lse.data();
  params.lse_stride_batch = n * c.heads;
  params.lse_stride_token = c.heads;
  params.lse_stride_head = 1;
  if (c.permuted) {
    params.out_order = order.data(), params.out_head_group = head_group.data();
    (c.queries_only ? params.read_queries_through_order : params.read_through_order) = true;
    if (c.boxes) params.box_grid = c.grid, params.box_shapes = kBoxShapes;
  }
  attention_cpu(params);

  std::vector<float> plain;
  if (c.permuted) {
    const auto kv_rows = [&](const std::vector<float>& x) {
      return c.queries_only ? x : permute_rows(x, c, order, true);
    };
    plain =
        permute_rows(plain_attention(permute_rows(packed[0], c, order, true), kv_rows(packed[1]),
                                     kv_rows(packed[2]), c, dense ? nullptr : &index, scale),
                     c, order, false);
  } else {
    plain = plain_attention(packed[0], packed[1], packed[2], c, dense ? nullptr : &index, scale);
  }

  // The GPU run on device copies, outputs poisoned.
  DeviceBuffer q(in_bytes), k(in_bytes), v(in_bytes);
  const std::size_t out_bytes = out_elements * dtype_size(c.out_dtype);
  DeviceBuffer out(out_bytes), lse(lse_elements * sizeof(float));
  const CsrBlockIndex csr = index.csr();
  DeviceBuffer counts(index.counts.size() * sizeof(std::int32_t));
  DeviceBuffer indices(c.csr ? csr.indices.size() * sizeof(std::int32_t)
                             : index.indices.size() * sizeof(std::int32_t));
  DeviceBuffer offsets(csr.offsets.size() * sizeof(std::int64_t));
  ASSERT_TRUE(q.get() && k.get() && v.get() && out.get() && lse.get());
  q.upload(host[0].data());
  k.upload(host[1].data());
  v.upload(host[2].data());
  counts.upload(index.counts.data());
  indices.upload(c.csr ? csr.indices.data() : index.indices.data());
  offsets.upload(csr.offsets.data());
  out.poison();
  lse.poison();
  BlockIndexView device_index = c.csr ? csr.view() : host_index;
  device_index.counts = c.csr ? nullptr : static_cast<const std::int32_t*>(counts.get());
  device_index.indices = static_cast<const std::int32_t*>(indices.get());
  if (c.csr) device_index.offsets = static_cast<const std::int64_t*>(offsets.get());
  params.q.data = q.get();
  params.k.data = k.get();
  params.v.data = v.get();
  params.index = dense ? nullptr : &device_index;
  params.out = out.get();
  params.out_dtype = c.out_dtype;
  params.lse = static_cast<float*>(lse.get());
  DeviceBuffer order_device(order.size() * sizeof(std::int32_t));
  DeviceBuffer head_group_device(head_group.size() * sizeof(std::int32_t));
  if (c.permuted) {
    order_device.upload(order.data());
    head_group_device.upload(head_group.data());
    params.out_order = static_cast<const std::int32_t*>(order_device.get());
    params.out_head_group = static_cast<const std::int32_t*>(head_group_device.get());
  }

  int device = 0;
  ASSERT_EQ(cudaGetDevice(&device), cudaSuccess);
  const AttentionSupport support = can_implement(params, device, {kernel});
  if (!support) GTEST_SKIP() << support.reason;
  attention_cuda(params, nullptr, {kernel});
  ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);

  std::vector<std::byte> got_raw(out_bytes);
  std::vector<float> got_lse(lse_elements);
  out.download(got_raw.data());
  lse.download(got_lse.data());
  std::vector<float> got(out_elements);
  for (std::size_t i = 0; i < out_elements; ++i)
    got[i] = load_as_float(got_raw.data(), c.out_dtype, static_cast<std::int64_t>(i));

  for (std::size_t i = 0; i < out_elements; ++i) {
    ASSERT_FALSE(std::isnan(got[i])) << "out element " << i << " is NaN (unwritten?)";
  }

  // Whole tensor, then per (batch, query tile) block of rows.
  const double ref_norm = squared_norm(reference.data(), out_elements);
  const double gpu_error = std::sqrt(squared_distance(got.data(), reference.data(), out_elements) /
                                     std::max(ref_norm, 1e-30));
  const double plain_error = std::sqrt(
      squared_distance(plain.data(), reference.data(), out_elements) / std::max(ref_norm, 1e-30));
  RecordProperty("gpu_rel_error", std::to_string(gpu_error));
  RecordProperty("plain_rel_error", std::to_string(plain_error));
  if (ref_norm == 0.0) {
    for (std::size_t i = 0; i < out_elements; ++i) ASSERT_EQ(got[i], 0.0f) << "element " << i;
  } else {
    EXPECT_LE(gpu_error, 2.0 * plain_error + 1e-5)
        << "kernel " << attention_kernel_name(kernel) << " rel error " << gpu_error
        << " vs plain 16-bit " << plain_error;
    const std::size_t tile_elements = static_cast<std::size_t>(kTileTokens * row);
    for (std::int64_t b = 0; b < c.batch; ++b) {
      for (std::int64_t i = 0; i < tiles; ++i) {
        const std::size_t begin = static_cast<std::size_t>((b * n + i * kTileTokens) * row);
        const std::size_t count =
            std::min(tile_elements, static_cast<std::size_t>((b + 1) * n * row) - begin);
        const double norm = squared_norm(reference.data() + begin, count);
        if (norm == 0.0) continue;
        const double tile_gpu =
            std::sqrt(squared_distance(got.data() + begin, reference.data() + begin, count) / norm);
        const double tile_plain = std::sqrt(
            squared_distance(plain.data() + begin, reference.data() + begin, count) / norm);
        ASSERT_LE(tile_gpu, 2.5 * tile_plain + 1e-5)
            << "batch " << b << " query tile " << i << " of " << tiles;
      }
    }
  }

  for (std::size_t i = 0; i < lse_elements; ++i) {
    if (std::isinf(reference_lse[i])) {
      ASSERT_TRUE(std::isinf(got_lse[i]) && got_lse[i] < 0) << "lse " << i << " = " << got_lse[i];
      const std::size_t base = i * static_cast<std::size_t>(c.dim);
      for (std::int64_t e = 0; e < c.dim; ++e) ASSERT_EQ(got[base + e], 0.0f) << "empty row " << i;
    } else {
      ASSERT_NEAR(got_lse[i], reference_lse[i], 1e-3) << "lse " << i;
    }
  }
}

// A case read through the tile-major orders of `grid` (kBoxShapes), told of its full boxes.
AttentionCase boxes_case(const char* tag, std::int64_t batch, Grid grid, std::int64_t heads,
                         std::int64_t dim, Lists lists, DType dtype, DType out_dtype,
                         bool padded_layout) {
  AttentionCase c{tag, batch, grid.tokens(), heads, dim, lists, dtype, out_dtype, padded_layout};
  c.permuted = true, c.grid = grid, c.boxes = true;
  return c;
}

// Awkward shapes: N = 1, 127, 129, 1000, 32760; 1 and 40 heads; every list kind.
const AttentionCase kCases[] = {
    {"small", 1, 1, 1, 128, Lists::kDense},
    {"small", 1, 1, 2, 64, Lists::kFull, DType::kF16, DType::kF32},
    {"small", 1, 127, 1, 64, Lists::kDense},
    {"small", 2, 129, 3, 128, Lists::kRandom},
    {"small", 1, 129, 2, 64, Lists::kLastTileOnly, DType::kBF16, DType::kF32},
    {"small", 1, 300, 2, 128, Lists::kEmpty},
    {"small", 2, 300, 2, 64, Lists::kRandom, DType::kF16, DType::kF16, true},
    {"small", 1, 383, 1, 128, Lists::kSameTile, DType::kBF16, DType::kBF16, true},
    {"mid", 1, 129, 40, 128, Lists::kFull},
    {"mid", 1, 1000, 40, 128, Lists::kRandom},
    {"mid", 2, 1000, 3, 64, Lists::kRandom, DType::kF16, DType::kBF16},
    {"mid", 1, 1000, 2, 128, Lists::kDense, DType::kF16, DType::kF32},
    {"mid", 1, 1000, 4, 64, Lists::kSameTile},
    {"mid", 1, 1000, 4, 128, Lists::kLastTileOnly},
    {"mid", 1, 1000, 40, 64, Lists::kFull},
    {"big", 1, 32760, 1, 128, Lists::kRandom},
    {"big", 1, 32760, 1, 64, Lists::kSameTile},
    // Read through row orders (the plan's path: frame-major inputs, no reordered copies).
    {"small", 2, 300, 3, 128, Lists::kRandom, DType::kBF16, DType::kBF16, false, true},
    {"small", 1, 129, 2, 64, Lists::kLastTileOnly, DType::kF16, DType::kF32, true, true},
    {"mid", 1, 1000, 40, 128, Lists::kRandom, DType::kBF16, DType::kBF16, false, true},
    {"mid", 2, 1000, 3, 64, Lists::kFull, DType::kBF16, DType::kF32, true, true},
    {"big", 1, 32760, 2, 128, Lists::kRandom, DType::kBF16, DType::kBF16, false, true},
    // q alone through the order, k and v as stored (the plan's default path).
    {"small", 2, 300, 3, 128, Lists::kRandom, DType::kBF16, DType::kBF16, false, true, false, true},
    {"small", 1, 129, 2, 64, Lists::kLastTileOnly, DType::kF16, DType::kF32, true, true, false,
     true},
    {"mid", 1, 1000, 40, 128, Lists::kRandom, DType::kBF16, DType::kBF16, false, true, false, true},
    {"big", 1, 32760, 2, 128, Lists::kRandom, DType::kBF16, DType::kBF16, false, true, false, true},
    // Tile-major orders with full boxes, loaded by TMA (8x9x20: 8 and 10 of 12 tiles; 9x18x36:
    // 36 of 46), the edge tiles by row gathers; a padded token stride.
    boxes_case("small", 2, {8, 9, 20}, 2, 128, Lists::kRandom, DType::kBF16, DType::kBF16, false),
    boxes_case("small", 1, {8, 9, 20}, 3, 64, Lists::kFull, DType::kF16, DType::kF32, true),
    boxes_case("mid", 2, {9, 18, 36}, 3, 128, Lists::kRandom, DType::kBF16, DType::kBF16, false),
    boxes_case("mid", 1, {9, 18, 36}, 2, 64, Lists::kSameTile, DType::kF16, DType::kBF16, true),
    // The index in CSR form.
    {"small", 2, 300, 3, 128, Lists::kRandom, DType::kBF16, DType::kBF16, false, false, true},
    {"small", 1, 129, 2, 64, Lists::kEmpty, DType::kF16, DType::kF32, false, false, true},
    {"mid", 1, 1000, 40, 128, Lists::kRandom, DType::kBF16, DType::kBF16, false, true, true},
    {"big", 1, 32760, 1, 128, Lists::kRandom, DType::kBF16, DType::kBF16, false, false, true},
};

std::string case_name(
    const ::testing::TestParamInfo<std::tuple<AttentionKernel, AttentionCase>>& info) {
  const auto& [kernel, c] = info.param;
  std::string name = std::string(c.tag) + "_" + attention_kernel_name(kernel) + "_B" +
                     std::to_string(c.batch) + "_N" + std::to_string(c.tokens) + "_H" +
                     std::to_string(c.heads) + "_D" + std::to_string(c.dim) + "_" +
                     lists_name(c.lists) + "_" + std::string(dtype_name(c.dtype)) + "_out" +
                     std::string(dtype_name(c.out_dtype)) + (c.padded_layout ? "_strided" : "") +
                     (c.permuted ? (c.queries_only ? "_qpermuted" : "_permuted") : "") +
                     (c.csr ? "_csr" : "") + (c.boxes ? "_boxes" : "");
  return name + "_" + std::to_string(info.index);
}

INSTANTIATE_TEST_SUITE_P(Shapes, AttentionGpu,
                         ::testing::Combine(::testing::Values(AttentionKernel::kHopper,
                                                              AttentionKernel::kPortable),
                                            ::testing::ValuesIn(kCases)),
                         case_name);

// can_implement's errors name what was given and what is supported (no GPU needed: these are
// rejected before the device is asked).
TEST(AttentionGpuSupport, RejectsWithClearErrors) {
  alignas(16) static std::uint16_t data[2 * 96 * 8];
  alignas(16) static float out[2 * 96 * 8];
  AttentionParams params;
  params.q = TokensView::contiguous(data, DType::kBF16, 1, 2, 1, 96);
  params.k = params.q;
  params.v = params.q;
  params.scale = 0.1f;
  params.out = out;
  params.out_dtype = DType::kF32;
  params.out_stride_batch = 2 * 96;
  params.out_stride_token = 96;
  params.out_stride_head = 96;
  AttentionSupport support = can_implement(params, 0);
  EXPECT_FALSE(support);
  EXPECT_EQ(support.reason, "q has head dim 96; this build supports 64 and 128");

  params.q = TokensView::contiguous(data, DType::kF32, 1, 2, 1, 64);
  params.k = params.q;
  params.v = params.q;
  support = can_implement(params, 0);
  EXPECT_FALSE(support);
  EXPECT_NE(support.reason.find("q has dtype F32"), std::string::npos) << support.reason;

  params.q = TokensView::contiguous(data, DType::kBF16, 1, 2, 1, 64);
  params.q.stride_token = 68;
  params.k = params.q;
  params.v = params.q;
  support = can_implement(params, 0);
  EXPECT_FALSE(support);
  EXPECT_NE(support.reason.find("stride_token is 68"), std::string::npos) << support.reason;

  params.q.stride_token = 64;
  params.k = params.q;
  params.v = params.q;
  params.scale = -0.1f;
  support = can_implement(params, 0);
  EXPECT_FALSE(support);
  EXPECT_NE(support.reason.find("scale"), std::string::npos) << support.reason;
}

}  // namespace
}  // namespace veda
