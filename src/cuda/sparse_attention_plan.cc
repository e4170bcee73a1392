#include "veda/cuda/sparse_attention_plan.h"

#include <algorithm>
#include <cmath>
#include <span>
#include <string>
#include <utility>

#include "veda/attention.h"
#include "veda/block_index.h"
#include "veda/cuda/attention.h"
#include "veda/cuda/attention_merge.h"
#include "veda/cuda/tile_front_end.h"
#include "veda/error.h"
#include "veda/selection.h"

namespace veda {
namespace {

void check_cuda(cudaError_t status, const char* what) {
  VEDA_CHECK(status == cudaSuccess, what, ": ", cudaGetErrorString(status));
}

template <typename T>
T* upload(const std::vector<T>& host) {
  void* device = nullptr;
  check_cuda(cudaMalloc(&device, host.size() * sizeof(T)), "sparse attention plan allocation");
  check_cuda(cudaMemcpy(device, host.data(), host.size() * sizeof(T), cudaMemcpyHostToDevice),
             "sparse attention plan upload");
  return static_cast<T*>(device);
}

// Carves the caller's workspace into 256-byte aligned pieces, in a fixed order.
class WorkspaceCarver {
 public:
  explicit WorkspaceCarver(void* base) : base_(static_cast<std::byte*>(base)) {}
  template <typename T = std::byte>
  T* take(std::size_t bytes) {
    T* piece = base_ ? reinterpret_cast<T*>(base_ + used_) : nullptr;
    used_ += (bytes + 255) / 256 * 256;
    return piece;
  }
  std::size_t used() const { return used_; }

 private:
  std::byte* base_;
  std::size_t used_ = 0;
};

// Whether the gather makes x's descriptors itself (no projection or a diagonal one), so that
// its statistics never go to memory.
bool descriptors_in_gather(const SparseLayerSettings& s, const float* projection) {
  return projection == nullptr || s.diagonal_projection;
}

struct Workspace {
  void *k_tiled, *v_tiled;  // reordered_copies only, else nullptr (q is never copied)
  // Per tensor either its statistics, projected by the selection into `selection`, or its
  // descriptors made by the gather (descriptors_in_gather).
  float *q_stats, *k_stats, *q_descriptors, *k_descriptors;
  void* selection;
  std::int32_t *counts, *indices;
  // Text tokens only (else nullptr): the video rows' partials. out_vt [B, N, H, D] float32
  // overlays k_tiled and v_tiled when they exist (free once the sparse attention has run);
  // lse [B, N, H].
  float *out_vt, *lse_vv, *lse_vt;
};

// "grid 3x10x21" or "grid 3x10x21: 630 video tokens and 77 text tokens before them".
std::string rows_description(const SparseLayerSettings& s) {
  std::string text = "grid " + s.grid.str();
  if (s.text_tokens > 0) {
    text += ": " + std::to_string(s.grid.tokens()) + " video tokens and " +
            std::to_string(s.text_tokens) + " text tokens " +
            (s.text_position == TextPosition::kBefore ? "before" : "after") + " them";
  }
  return text;
}

// Rows [first, first + count) of a [B, L, H, D] view: the same strides, the data pointer moved.
TokensView token_rows(const TokensView& x, std::int64_t first, std::int64_t count) {
  TokensView rows = x;
  rows.data = static_cast<const std::byte*>(x.data) +
              first * x.stride_token * static_cast<std::int64_t>(dtype_size(x.dtype));
  rows.tokens = count;
  return rows;
}

}  // namespace

SparseAttentionPlan::SparseAttentionPlan(SparseLayerSettings settings)
    : settings_(std::move(settings)) {
  const SparseLayerSettings& s = settings_;
  s.grid.validate();
  VEDA_CHECK(s.batch > 0 && s.heads > 0, "sparse attention plan for ", s.batch, " batches and ",
             s.heads, " heads; expected both positive");
  VEDA_CHECK(s.dtype == DType::kBF16 || s.dtype == DType::kF16, "sparse attention on the GPU ",
             "takes BF16 or F16 q, k, v; got ", dtype_name(s.dtype));
  VEDA_CHECK(s.head_tiles.size() == 1 || static_cast<std::int64_t>(s.head_tiles.size()) == s.heads,
             "sparse attention plan got ", s.head_tiles.size(), " tile shapes for ", s.heads,
             " heads; expected one per head or one for all");
  VEDA_CHECK(s.global_head.empty() || static_cast<std::int64_t>(s.global_head.size()) == s.heads,
             "sparse attention plan got ", s.global_head.size(), " global head indices for ",
             s.heads, " local heads");
  VEDA_CHECK(
      s.head_thresholds.empty() || static_cast<std::int64_t>(s.head_thresholds.size()) == s.heads,
      "sparse attention plan got ", s.head_thresholds.size(), " cumulative thresholds for ",
      s.heads, " local heads; expected none or one per head");
  for (std::size_t h = 0; h < s.head_thresholds.size(); ++h) {
    const double threshold = s.head_thresholds[h];
    VEDA_CHECK(threshold == 0.0 || (threshold > 0.0 && threshold <= 1.0), "head ", h,
               " has cumulative threshold ", threshold, "; expected 0 (fixed budget) or (0, 1]");
  }
  VEDA_CHECK(s.text_tokens >= 0, "sparse attention plan got text_tokens = ", s.text_tokens,
             "; expected 0 (video only) or more");
  VEDA_CHECK(s.text_position == TextPosition::kAfter || s.text_position == TextPosition::kBefore,
             "sparse attention plan got text position ", static_cast<int>(s.text_position),
             "; expected TextPosition::kAfter (0) or TextPosition::kBefore (1)");
  tokens_ = s.grid.tokens();
  tiles_ = tile_count(tokens_);
  budget_ = budget_for_sparsity(s.sparsity, tiles_);

  // One shape group per distinct tile shape, in order of first use.
  std::vector<std::int32_t> head_group(static_cast<std::size_t>(s.heads));
  for (std::int64_t h = 0; h < s.heads; ++h) {
    const TileShape& shape = s.head_tiles.size() == 1 ? s.head_tiles[0] : s.head_tiles[h];
    shape.validate();
    const auto found = std::find(shapes_.begin(), shapes_.end(), shape);
    head_group[h] = static_cast<std::int32_t>(found - shapes_.begin());
    if (found == shapes_.end()) shapes_.push_back(shape);
  }
  std::vector<std::int32_t> order;
  for (const TileShape& shape : shapes_) {
    const std::vector<std::int32_t> group_order = tile_major_order(s.grid, shape);
    order.insert(order.end(), group_order.begin(), group_order.end());
  }
  order_ = upload(order);
  head_group_ = upload(head_group);
  if (!s.global_head.empty()) global_head_ = upload(s.global_head);
  if (!s.head_thresholds.empty()) thresholds_ = upload(s.head_thresholds);
}

SparseAttentionPlan::~SparseAttentionPlan() {
  cudaFree(order_);
  cudaFree(head_group_);
  cudaFree(global_head_);
  cudaFree(thresholds_);
}

namespace {

Workspace carve(WorkspaceCarver& carver, const SparseLayerSettings& s, std::int64_t tokens,
                std::int64_t tiles, std::int64_t budget) {
  const auto elements = static_cast<std::size_t>(s.batch * s.heads * tokens * s.dim);
  const auto rows = static_cast<std::size_t>(s.batch * s.heads * tiles);
  const auto stats = rows * static_cast<std::size_t>(3 * s.dim);
  const auto descriptors = rows * static_cast<std::size_t>(descriptor_width(s.dim));
  Workspace w{};
  if (s.reordered_copies) {
    // k_tiled and v_tiled are adjacent: together elements * 4 bytes, room for out_vt.
    w.k_tiled = carver.take(elements * 2);
    w.v_tiled = carver.take(elements * 2);
  }
  const bool q_gathered = descriptors_in_gather(s, s.q_projection);
  const bool k_gathered = descriptors_in_gather(s, s.k_projection);
  if (q_gathered) {
    w.q_descriptors = carver.take<float>(descriptors * 4);
  } else {
    w.q_stats = carver.take<float>(stats * 4);
  }
  if (k_gathered) {
    w.k_descriptors = carver.take<float>(descriptors * 4);
  } else {
    w.k_stats = carver.take<float>(stats * 4);
  }
  // The selection's scratch: the descriptors it projects (tile_selection_workspace_bytes).
  w.selection = carver.take(((q_gathered ? 0 : 1) + (k_gathered ? 0 : 1)) * descriptors * 4);
  w.counts = carver.take<std::int32_t>(rows * 4);
  w.indices = carver.take<std::int32_t>(rows * static_cast<std::size_t>(budget) * 4);
  if (s.text_tokens > 0) {
    const auto video_rows = static_cast<std::size_t>(s.batch * tokens * s.heads);
    w.out_vt =
        s.reordered_copies ? static_cast<float*>(w.k_tiled) : carver.take<float>(elements * 4);
    w.lse_vv = carver.take<float>(video_rows * 4);
    w.lse_vt = carver.take<float>(video_rows * 4);
  }
  return w;
}

}  // namespace

std::size_t SparseAttentionPlan::workspace_bytes() const {
  WorkspaceCarver carver(nullptr);
  carve(carver, settings_, tokens_, tiles_, budget_);
  return carver.used();
}

void SparseAttentionPlan::run(const TokensView& q, const TokensView& k, const TokensView& v,
                              void* out, float* lse, void* workspace, std::size_t workspace_size,
                              cudaStream_t stream) const {
  const SparseLayerSettings& s = settings_;
  const std::int64_t text = s.text_tokens, length = tokens_ + text;
  validate_qkv(q, k, v);
  for (const auto& [x, name] : {std::pair{&q, "q"}, std::pair{&k, "k"}, std::pair{&v, "v"}}) {
    VEDA_CHECK(x->batch == s.batch && x->tokens == length && x->heads == s.heads &&
                   x->dim == s.dim && x->dtype == s.dtype,
               "sparse attention run got ", name, " [", x->batch, ", ", x->tokens, ", ", x->heads,
               ", ", x->dim, "] ", dtype_name(x->dtype), "; the plan is for [", s.batch, ", ",
               length, ", ", s.heads, ", ", s.dim, "] ", dtype_name(s.dtype), " (",
               rows_description(s), ")");
  }
  VEDA_CHECK(out != nullptr, "sparse attention run has no output");
  VEDA_CHECK(workspace != nullptr && workspace_size >= workspace_bytes(),
             "sparse attention run got a workspace of ", workspace_size, " bytes; the plan needs ",
             workspace_bytes());

  WorkspaceCarver carver(workspace);
  const Workspace w = carve(carver, s, tokens_, tiles_, budget_);

  // First rows of the video and the text tokens among the L rows of q, k, v, out and lse.
  const bool text_first = s.text_position == TextPosition::kBefore;
  const std::int64_t video0 = text_first ? text : 0, text0 = text_first ? 0 : tokens_;
  const TokensView q_video = token_rows(q, video0, tokens_);
  const TokensView k_video = token_rows(k, video0, tokens_);
  const TokensView v_video = token_rows(v, video0, tokens_);
  // out [B, L, H, D] and lse [B, L, H], contiguous: row r of batch b at (b*L + r)*H.
  const std::int64_t row_elements = s.heads * s.dim;
  const auto out_rows = [&](std::int64_t first) {
    return static_cast<std::byte*>(out) +
           first * row_elements * static_cast<std::int64_t>(dtype_size(s.dtype));
  };
  const auto lse_rows = [&](std::int64_t first) {
    return lse == nullptr ? nullptr : lse + first * s.heads;
  };
  const auto set_out = [&](AttentionParams& a, std::int64_t first) {
    a.out = out_rows(first), a.out_dtype = s.dtype;
    a.out_stride_batch = length * row_elements;
    a.out_stride_token = row_elements;
    a.out_stride_head = s.dim;
  };
  const auto set_lse = [&](AttentionParams& a, float* first, std::int64_t rows_per_batch) {
    a.lse = first;
    a.lse_stride_batch = rows_per_batch * s.heads;
    a.lse_stride_token = s.heads;
    a.lse_stride_head = 1;
  };

  // Per-tile statistics or descriptors of q and k, and tile-major copies of k and v when the
  // plan makes them (attention reads q, else q, k and v, in tile-major order through order_).
  // One launch for all of them.
  const auto gather = [&](const TokensView& x, void* x_tiled, float* stats, float* descriptors,
                          const float* projection) {
    const auto groups = static_cast<std::int64_t>(shapes_.size());
    TileGatherParams params{x, order_, groups, head_group_, x_tiled, stats, descriptors};
    if (descriptors != nullptr) {
      params.diagonal_projection = projection, params.global_head = global_head_;
    }
    return params;
  };
  const TileGatherParams gathers[] = {
      gather(q_video, nullptr, w.q_stats, w.q_descriptors, s.q_projection),
      gather(k_video, w.k_tiled, w.k_stats, w.k_descriptors, s.k_projection),
      gather(v_video, w.v_tiled, nullptr, nullptr, nullptr)};
  tile_gather_cuda(std::span(gathers, s.reordered_copies ? 3 : 2), stream);

  TileSelectionParams selection;
  selection.batch = s.batch, selection.heads = s.heads;
  selection.q_tiles = selection.k_tiles = tiles_, selection.dim = s.dim;
  selection.q_stats = w.q_stats, selection.k_stats = w.k_stats;
  selection.q_descriptors = w.q_descriptors, selection.k_descriptors = w.k_descriptors;
  selection.q_projection = s.q_projection, selection.k_projection = s.k_projection;
  selection.diagonal_projection = s.diagonal_projection;
  selection.global_head = global_head_;
  selection.thresholds = thresholds_;
  selection.scale = 1.0f / std::sqrt(static_cast<float>(s.dim));
  selection.keep_own_tile = s.keep_own_tile;
  selection.budget = budget_;
  selection.counts = w.counts, selection.indices = w.indices;
  selection.workspace = w.selection;
  tile_selection_cuda(selection, stream);

  const BlockIndexView index{w.counts, w.indices, s.batch, s.heads, tiles_, tiles_, budget_};
  AttentionParams sparse;
  sparse.q = q_video, sparse.k = k_video, sparse.v = v_video;
  if (s.reordered_copies) {
    // The copies are [B, H, N, D]: token stride D, head stride N*D.
    const auto tiled = [&](const void* data) {
      return TokensView{
          data,  s.dtype,        s.batch, tokens_, s.heads, s.dim, s.heads * tokens_ * s.dim,
          s.dim, tokens_ * s.dim};
    };
    sparse.k = tiled(w.k_tiled), sparse.v = tiled(w.v_tiled);
    sparse.read_queries_through_order = true;
  } else {
    // Full boxes by TMA, the other tiles by row gathers.
    sparse.read_through_order = true;
    sparse.box_grid = s.grid, sparse.box_shapes = shapes_;
  }
  sparse.index = &index;
  sparse.scale = selection.scale;
  // O_vv goes straight to its frame-major rows of out; lse to the caller's rows when there is no
  // text to merge, else to the workspace.
  set_out(sparse, video0);
  if (text == 0) {
    set_lse(sparse, lse, length);
  } else {
    set_lse(sparse, w.lse_vv, tokens_);
  }
  sparse.out_order = order_;
  sparse.out_head_group = head_group_;
  attention_cuda(sparse, stream);
  if (text == 0) return;

  const TokensView k_text = token_rows(k, text0, text), v_text = token_rows(v, text0, text);
  // Video rows over the text keys: float32 O_vt, then merged into out.
  AttentionParams video_text;
  video_text.q = q_video, video_text.k = k_text, video_text.v = v_text;
  video_text.scale = selection.scale;
  video_text.out = w.out_vt, video_text.out_dtype = DType::kF32;
  video_text.out_stride_batch = tokens_ * row_elements;
  video_text.out_stride_token = row_elements;
  video_text.out_stride_head = s.dim;
  set_lse(video_text, w.lse_vt, tokens_);
  attention_cuda(video_text, stream);

  AttentionMergeParams merge;
  merge.batch = s.batch, merge.tokens = tokens_, merge.heads = s.heads, merge.dim = s.dim;
  merge.out = out_rows(video0), merge.out_dtype = s.dtype;
  merge.out_stride_batch = length * row_elements;
  merge.out_stride_token = row_elements;
  merge.out_stride_head = s.dim;
  merge.lse_a = w.lse_vv, merge.out_b = w.out_vt, merge.lse_b = w.lse_vt;
  merge.lse = lse_rows(video0);
  merge.lse_stride_batch = length * s.heads;
  merge.lse_stride_token = s.heads;
  merge.lse_stride_head = 1;
  attention_merge_cuda(merge, stream);

  // Text rows over all L keys, straight into out and lse.
  AttentionParams text_all;
  text_all.q = token_rows(q, text0, text), text_all.k = k, text_all.v = v;
  text_all.scale = selection.scale;
  set_out(text_all, text0);
  set_lse(text_all, lse_rows(text0), length);
  attention_cuda(text_all, stream);
}

}  // namespace veda
