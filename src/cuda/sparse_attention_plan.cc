#include "veda/cuda/sparse_attention_plan.h"

#include <algorithm>
#include <cmath>

#include "veda/attention.h"
#include "veda/block_index.h"
#include "veda/cuda/attention.h"
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

struct Workspace {
  void *q_tiled, *k_tiled, *v_tiled;
  float *q_stats, *k_stats;
  void* selection;
  std::int32_t *counts, *indices;
};

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
  tokens_ = s.grid.tokens();
  tiles_ = tile_count(tokens_);
  budget_ = budget_for_sparsity(s.sparsity, tiles_);

  // One shape group per distinct tile shape, in order of first use.
  std::vector<TileShape> shapes;
  std::vector<std::int32_t> head_group(static_cast<std::size_t>(s.heads));
  for (std::int64_t h = 0; h < s.heads; ++h) {
    const TileShape& shape = s.head_tiles.size() == 1 ? s.head_tiles[0] : s.head_tiles[h];
    shape.validate();
    const auto found = std::find(shapes.begin(), shapes.end(), shape);
    head_group[h] = static_cast<std::int32_t>(found - shapes.begin());
    if (found == shapes.end()) shapes.push_back(shape);
  }
  groups_ = static_cast<std::int64_t>(shapes.size());
  std::vector<std::int32_t> order;
  for (const TileShape& shape : shapes) {
    const std::vector<std::int32_t> group_order = tile_major_order(s.grid, shape);
    order.insert(order.end(), group_order.begin(), group_order.end());
  }
  order_ = upload(order);
  head_group_ = upload(head_group);
  if (!s.global_head.empty()) global_head_ = upload(s.global_head);
}

SparseAttentionPlan::~SparseAttentionPlan() {
  cudaFree(order_);
  cudaFree(head_group_);
  cudaFree(global_head_);
}

namespace {

Workspace carve(WorkspaceCarver& carver, const SparseLayerSettings& s, std::int64_t tokens,
                std::int64_t tiles, std::int64_t budget, std::size_t selection_bytes) {
  const auto elements = static_cast<std::size_t>(s.batch * s.heads * tokens * s.dim);
  const auto stats = static_cast<std::size_t>(s.batch * s.heads * tiles * 3 * s.dim);
  const auto rows = static_cast<std::size_t>(s.batch * s.heads * tiles);
  Workspace w;
  w.q_tiled = carver.take(elements * 2);
  w.k_tiled = carver.take(elements * 2);
  w.v_tiled = carver.take(elements * 2);
  w.q_stats = carver.take<float>(stats * 4);
  w.k_stats = carver.take<float>(stats * 4);
  w.selection = carver.take(selection_bytes);
  w.counts = carver.take<std::int32_t>(rows * 4);
  w.indices = carver.take<std::int32_t>(rows * static_cast<std::size_t>(budget) * 4);
  return w;
}

}  // namespace

std::size_t SparseAttentionPlan::workspace_bytes() const {
  TileSelectionParams selection;
  selection.batch = settings_.batch, selection.heads = settings_.heads;
  selection.q_tiles = selection.k_tiles = tiles_, selection.dim = settings_.dim;
  WorkspaceCarver carver(nullptr);
  carve(carver, settings_, tokens_, tiles_, budget_, tile_selection_workspace_bytes(selection));
  return carver.used();
}

void SparseAttentionPlan::run(const TokensView& q, const TokensView& k, const TokensView& v,
                              void* out, float* lse, void* workspace, std::size_t workspace_size,
                              cudaStream_t stream) const {
  const SparseLayerSettings& s = settings_;
  validate_qkv(q, k, v);
  for (const TokensView* x : {&q, &k, &v}) {
    VEDA_CHECK(x->batch == s.batch && x->tokens == tokens_ && x->heads == s.heads &&
                   x->dim == s.dim && x->dtype == s.dtype,
               "sparse attention run got [", x->batch, ", ", x->tokens, ", ", x->heads, ", ",
               x->dim, "] ", dtype_name(x->dtype), "; the plan is for [", s.batch, ", ", tokens_,
               ", ", s.heads, ", ", s.dim, "] ", dtype_name(s.dtype), " (grid ", s.grid.str(), ")");
  }
  VEDA_CHECK(out != nullptr, "sparse attention run has no output");
  VEDA_CHECK(workspace != nullptr && workspace_size >= workspace_bytes(),
             "sparse attention run got a workspace of ", workspace_size, " bytes; the plan needs ",
             workspace_bytes());

  TileSelectionParams selection;
  selection.batch = s.batch, selection.heads = s.heads;
  selection.q_tiles = selection.k_tiles = tiles_, selection.dim = s.dim;
  WorkspaceCarver carver(workspace);
  const Workspace w =
      carve(carver, s, tokens_, tiles_, budget_, tile_selection_workspace_bytes(selection));

  tile_gather_cuda({q, order_, groups_, head_group_, w.q_tiled, w.q_stats}, stream);
  tile_gather_cuda({k, order_, groups_, head_group_, w.k_tiled, w.k_stats}, stream);
  tile_gather_cuda({v, order_, groups_, head_group_, w.v_tiled, nullptr}, stream);

  selection.q_stats = w.q_stats, selection.k_stats = w.k_stats;
  selection.q_projection = s.q_projection, selection.k_projection = s.k_projection;
  selection.global_head = global_head_;
  selection.scale = 1.0f / std::sqrt(static_cast<float>(s.dim));
  selection.keep_own_tile = s.keep_own_tile;
  selection.budget = budget_;
  selection.counts = w.counts, selection.indices = w.indices;
  selection.workspace = w.selection;
  tile_selection_cuda(selection, stream);

  // The tile-major copies are [B, H, N, D]: token stride D, head stride N*D.
  const auto tiled = [&](const void* data) {
    return TokensView{
        data,  s.dtype,        s.batch, tokens_, s.heads, s.dim, s.heads * tokens_ * s.dim,
        s.dim, tokens_ * s.dim};
  };
  const BlockIndexView index{w.counts, w.indices, s.batch, s.heads, tiles_, tiles_, budget_};
  AttentionParams attention;
  attention.q = tiled(w.q_tiled), attention.k = tiled(w.k_tiled), attention.v = tiled(w.v_tiled);
  attention.index = &index;
  attention.scale = selection.scale;
  // Results go straight to their frame-major rows of out [B, N, H, D] and lse [B, N, H].
  attention.out = out, attention.out_dtype = s.dtype;
  attention.out_stride_batch = tokens_ * s.heads * s.dim;
  attention.out_stride_token = s.heads * s.dim;
  attention.out_stride_head = s.dim;
  attention.lse = lse;
  attention.lse_stride_batch = tokens_ * s.heads;
  attention.lse_stride_token = s.heads;
  attention.lse_stride_head = 1;
  attention.out_order = order_;
  attention.out_head_group = head_group_;
  attention_cuda(attention, stream);
}

}  // namespace veda
