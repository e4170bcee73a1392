// Times the core GPU kernels at the sizes of Wan2.1-1.3B 480p (32,760 tokens, 12 heads) and
// Wan2.1-14B 720p (75,600 tokens, 40 heads), bf16, D = 128, B = 1:
//   oracle      lse pass + heat/mass pass; TFLOP/s count the two Q K^T passes, 2 x 2 N^2 D
//   gather      tile-major gather of q, k and v with statistics of q and k (three passes);
//               GB/s count bytes read + written
//   stats       the statistics of q and k alone (the front end without copies); GB/s read
//   select@95%  projections + logits + top-k for the 95% budget, a full P ([3D, D] per head)
//   select-diag the same with a diagonal P given as [3, D] per head (the estimator's default
//               structure: an elementwise projection)
//   select@0.9  the full P with a cumulative threshold of 0.9 on every head (capped at the budget)
//   dense       attention_cuda without an index (the in-run baseline; bench/RESULTS.md has its
//               ratio to cuDNN from the attention benchmark)
//   copies@95%  attention_cuda over tile-major copies of q, k, v with select-diag's lists (TMA)
//   kvcopies95  the same reading q's rows through the order (read_queries_through_order), k and
//               v from their copies: the plan's kernel
//   rowscopy95  the same with row gathers of the copies' own rows (the load mechanism alone)
//   rows@95%    the same reading frame-major q, k, v through the order (read_through_order,
//               cp.async row gathers of every tile)
//   boxes@95%   the same loading the tiles that are full boxes by TMA (box_shapes; 525 and 440
//               of 591 tiles): the plan's kernel without reordered copies
//   plan@S      the whole SparseAttentionPlan::run at sparsity S (gather, selection, sparse
//               attention storing rows frame-major), with its speedup over `dense` and its
//               workspace, full P; -diag with a diagonal P, -rows without reordered copies
//               (attention gathers rows)
//   front-diag  the plan's front end with a diagonal P alone: one gather launch of q and k into
//               descriptors, then the selection
//   front[-rows] everything outside the kernel: plan@95%-diag[-rows] and its kernel alone on the
//               same lists timed alternately, the median of 21 differences, as a share of the
//               kernel (issue 5's bar)
//   front-diag+ the same difference for front-diag's launches placed before / after the kernel
//   host[-rows] host time to enqueue the plan and the kernel alone
// Milliseconds are medians of 5 runs after a warm-up, timed with CUDA events.
// Environment: VEDA_BENCH_SIZE=<substring> times only the sizes whose name contains it (the
// 147,600-token size, a 10-second 720p clip, only then);
// VEDA_BENCH_ORACLE=0 skips the oracle (seconds at 75,600 tokens), e.g. under a profiler;
// VEDA_BENCH_FRONT_END_ONLY=1 stops each size after the front end's rows (gather to select);
// VEDA_BENCH_BUSY_GB (default 1) sizes the memset queued ahead of each alternated timing.
#include <cuda_runtime_api.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <random>
#include <utility>
#include <vector>

#include "veda/attention.h"
#include "veda/cuda/attention.h"
#include "veda/cuda/oracle.h"
#include "veda/cuda/sparse_attention_plan.h"
#include "veda/cuda/tile_front_end.h"
#include "veda/selection.h"
#include "veda/tile_layout.h"

namespace {

void check(cudaError_t status) {
  if (status != cudaSuccess) {
    std::fprintf(stderr, "CUDA error: %s\n", cudaGetErrorString(status));
    std::exit(1);
  }
}

std::vector<void*> allocations;  // freed after each size

template <typename T = void>
T* device_alloc(std::size_t bytes) {
  void* pointer = nullptr;
  check(cudaMalloc(&pointer, bytes));
  allocations.push_back(pointer);
  return static_cast<T*>(pointer);
}

// One call of `run` timed by CUDA events on the default stream.
double elapsed_ms(const std::function<void()>& run) {
  static cudaEvent_t start = nullptr, stop = nullptr;
  if (start == nullptr) {
    check(cudaEventCreate(&start));
    check(cudaEventCreate(&stop));
  }
  check(cudaEventRecord(start));
  run();
  check(cudaEventRecord(stop));
  check(cudaEventSynchronize(stop));
  float ms = 0.0f;
  check(cudaEventElapsedTime(&ms, start, stop));
  return ms;
}

double median(std::vector<double> times) {
  std::sort(times.begin(), times.end());
  return times[times.size() / 2];
}

double median_ms(const std::function<void()>& run) {
  run();  // warm-up
  std::vector<double> times;
  for (int repeat = 0; repeat < 5; ++repeat) times.push_back(elapsed_ms(run));
  return median(times);
}

// GPU work queued ahead of a timing (a memset of `busy_bytes`, ~0.3 ms a GB), so that, as inside
// a model's forward pass, a call's host-side preparation overlaps the GPU rather than delaying
// its first launch.
std::size_t busy_bytes() {
  const char* gigabytes = std::getenv("VEDA_BENCH_BUSY_GB");
  return (gigabytes != nullptr ? std::strtoull(gigabytes, nullptr, 10) : 1) << 30;
}

// `a` and `b` timed alternately, 21 times each, each behind busy_bytes() of queued memset: the
// median of b's times and the median of the 21 differences a - b, which cancels the clock drift
// between two separate series and most of the pair-to-pair noise of two long calls.
struct PairedTimes {
  double b_ms, difference_ms;
};
PairedTimes paired_difference_ms(const std::function<void()>& a, const std::function<void()>& b) {
  const std::size_t kBusyBytes = busy_bytes();
  void* busy = nullptr;
  check(cudaMalloc(&busy, kBusyBytes));
  const auto queued = [&](const std::function<void()>& run) {
    check(cudaMemsetAsync(busy, 0, kBusyBytes));
    return elapsed_ms(run);
  };
  a(), b();  // warm-up
  std::vector<double> times_b, differences;
  for (int repeat = 0; repeat < 21; ++repeat) {
    const double time_a = queued(a);
    times_b.push_back(queued(b));
    differences.push_back(time_a - times_b.back());
  }
  check(cudaFree(busy));
  return {median(times_b), median(differences)};
}

// Median host time of enqueueing `run` (microseconds, 11 calls), each behind ~1 ms of queued
// memset so that no launch waits for room in the queue.
double host_enqueue_us(const std::function<void()>& run) {
  constexpr std::size_t kBusyBytes = std::size_t{3} << 30;
  void* busy = nullptr;
  check(cudaMalloc(&busy, kBusyBytes));
  std::vector<double> times;
  for (int repeat = 0; repeat < 11; ++repeat) {
    check(cudaMemsetAsync(busy, 0, kBusyBytes));
    const auto start = std::chrono::steady_clock::now();
    run();
    const std::chrono::duration<double, std::micro> host = std::chrono::steady_clock::now() - start;
    times.push_back(host.count());
    check(cudaDeviceSynchronize());
  }
  check(cudaFree(busy));
  return median(times);
}

struct Size {
  const char* name;
  veda::Grid grid;
  std::int64_t heads;
  bool named_only = false;  // timed only when VEDA_BENCH_SIZE names it
};

// Two shape groups on alternate heads (head h in group h % 2), as a profile limited to 2 shapes
// per layer would have.
constexpr veda::TileShape kShapes[2] = {{1, 8, 16}, {8, 4, 4}};

bool env_is(const char* name, const char* value) {
  const char* set = std::getenv(name);
  return set != nullptr && std::strcmp(set, value) == 0;
}

}  // namespace

int main() {
  constexpr std::int64_t kDim = 128;
  const char* size_filter = std::getenv("VEDA_BENCH_SIZE");
  const bool time_oracle = !env_is("VEDA_BENCH_ORACLE", "0");
  std::printf("%-26s %-11s %10s %12s\n", "size", "kernel", "ms", "rate");
  for (const Size& size : {Size{"wan1.3b-480p n32760 h12", {21, 30, 52}, 12},
                           Size{"wan14b-720p n75600 h40", {21, 45, 80}, 40},
                           Size{"wan14b-720p-10s n147600 h40", {41, 45, 80}, 40, true}}) {
    if (size_filter != nullptr ? std::strstr(size.name, size_filter) == nullptr : size.named_only) {
      continue;
    }
    const std::int64_t tokens = size.grid.tokens(), heads = size.heads;
    const std::int64_t elements = tokens * heads * kDim, tiles = veda::tile_count(tokens);
    std::vector<std::uint16_t> host(static_cast<std::size_t>(elements));
    std::mt19937 generator(7);
    std::normal_distribution<float> normal(0.0f, 1.0f);
    for (auto& value : host) value = veda::float_to_bf16(normal(generator));
    auto* q = device_alloc(host.size() * 2);
    auto* k = device_alloc(host.size() * 2);
    auto* v = device_alloc(host.size() * 2);
    for (void* x : {q, k, v})
      check(cudaMemcpy(x, host.data(), host.size() * 2, cudaMemcpyHostToDevice));
    const auto view = [&](void* x) {
      return veda::TokensView::contiguous(x, veda::DType::kBF16, 1, tokens, heads, kDim);
    };
    const float scale = 1.0f / std::sqrt(static_cast<float>(kDim));

    auto* lse = device_alloc<float>(static_cast<std::size_t>(heads * tokens) * 4);
    auto* heat = device_alloc<float>(static_cast<std::size_t>(heads * tiles * tiles) * 4);
    auto* mass = device_alloc<float>(static_cast<std::size_t>(heads * tiles * tiles) * 4);
    const veda::OracleParams oracle{view(q), view(k), scale, lse, heat, mass};
    const double oracle_flop = 8.0 * static_cast<double>(tokens * tokens * kDim * heads);
    if (time_oracle) {
      const double oracle_ms = median_ms([&] { veda::oracle_cuda(oracle, nullptr); });
      std::printf("%-26s %-11s %10.2f %8.1f TF/s\n", size.name, "oracle", oracle_ms,
                  oracle_flop / (oracle_ms * 1e-3) / 1e12);
    }

    std::vector<std::int32_t> order = veda::tile_major_order(size.grid, kShapes[0]);
    const std::vector<std::int32_t> second = veda::tile_major_order(size.grid, kShapes[1]);
    order.insert(order.end(), second.begin(), second.end());
    std::vector<std::int32_t> head_group(static_cast<std::size_t>(heads));
    for (std::int64_t h = 0; h < heads; ++h) head_group[h] = static_cast<std::int32_t>(h % 2);
    auto* order_device = device_alloc<std::int32_t>(order.size() * 4);
    auto* group_device = device_alloc<std::int32_t>(head_group.size() * 4);
    check(cudaMemcpy(order_device, order.data(), order.size() * 4, cudaMemcpyHostToDevice));
    check(
        cudaMemcpy(group_device, head_group.data(), head_group.size() * 4, cudaMemcpyHostToDevice));
    void* tiled[3] = {device_alloc(host.size() * 2), device_alloc(host.size() * 2),
                      device_alloc(host.size() * 2)};
    const std::size_t stats_floats = static_cast<std::size_t>(heads * tiles * 3 * kDim);
    float* stats[2] = {device_alloc<float>(stats_floats * 4),
                       device_alloc<float>(stats_floats * 4)};
    const double gather_ms = median_ms([&] {
      void* inputs[3] = {q, k, v};
      for (int x = 0; x < 3; ++x) {
        veda::tile_gather_cuda(
            {view(inputs[x]), order_device, 2, group_device, tiled[x], x < 2 ? stats[x] : nullptr},
            nullptr);
      }
    });
    std::printf("%-26s %-11s %10.2f %8.0f GB/s\n", size.name, "gather", gather_ms,
                6.0 * static_cast<double>(elements) * 2 / (gather_ms * 1e-3) / 1e9);
    const double stats_ms = median_ms([&] {
      void* inputs[2] = {q, k};
      for (int x = 0; x < 2; ++x) {
        veda::tile_gather_cuda({view(inputs[x]), order_device, 2, group_device, nullptr, stats[x]},
                               nullptr);
      }
    });
    std::printf("%-26s %-11s %10.2f %8.0f GB/s\n", size.name, "stats", stats_ms,
                2.0 * static_cast<double>(elements) * 2 / (stats_ms * 1e-3) / 1e9);

    std::vector<float> projection(static_cast<std::size_t>(heads * 3 * kDim * kDim));
    for (float& value : projection) value = 0.01f * normal(generator);
    auto* projection_device = device_alloc<float>(projection.size() * 4);
    check(cudaMemcpy(projection_device, projection.data(), projection.size() * 4,
                     cudaMemcpyHostToDevice));
    veda::TileSelectionParams select;
    select.q_stats = stats[0], select.k_stats = stats[1];
    select.q_projection = select.k_projection = projection_device;
    select.batch = 1, select.heads = heads, select.q_tiles = select.k_tiles = tiles;
    select.dim = kDim, select.scale = scale, select.budget = veda::budget_for_sparsity(0.95, tiles);
    select.counts = device_alloc<std::int32_t>(static_cast<std::size_t>(heads * tiles) * 4);
    select.indices =
        device_alloc<std::int32_t>(static_cast<std::size_t>(heads * tiles * select.budget) * 4);
    select.workspace = device_alloc(veda::tile_selection_workspace_bytes(select));
    const double select_ms = median_ms([&] { veda::tile_selection_cuda(select, nullptr); });
    std::printf("%-26s %-11s %10.2f %8lld kept\n", size.name, "select@95%", select_ms,
                static_cast<long long>(select.budget));
    std::vector<float> diagonals(static_cast<std::size_t>(heads * 3 * kDim));
    for (float& value : diagonals) value = 0.5f * normal(generator);
    auto* diagonal_device = device_alloc<float>(diagonals.size() * 4);
    check(cudaMemcpy(diagonal_device, diagonals.data(), diagonals.size() * 4,
                     cudaMemcpyHostToDevice));
    select.q_projection = select.k_projection = diagonal_device;
    select.diagonal_projection = true;
    const double diagonal_ms = median_ms([&] { veda::tile_selection_cuda(select, nullptr); });
    std::printf("%-26s %-11s %10.2f %8lld kept\n", size.name, "select-diag", diagonal_ms,
                static_cast<long long>(select.budget));
    // The plan's front end with diagonal P: q and k gathered by one launch straight into
    // descriptors (no statistics in memory), then the selection on them.
    const std::size_t descriptor_floats =
        static_cast<std::size_t>(heads * tiles * veda::descriptor_width(kDim));
    float* descriptors[2] = {device_alloc<float>(descriptor_floats * 4),
                             device_alloc<float>(descriptor_floats * 4)};
    veda::TileSelectionParams fused = select;
    fused.q_descriptors = descriptors[0], fused.k_descriptors = descriptors[1];
    const auto run_front_diag = [&] {
      veda::TileGatherParams gathers[2];
      void* inputs[2] = {q, k};
      for (int x = 0; x < 2; ++x) {
        gathers[x] = {view(inputs[x]), order_device,  2, group_device, nullptr,
                      nullptr,         descriptors[x]};
        gathers[x].diagonal_projection = diagonal_device;
      }
      veda::tile_gather_cuda(gathers, nullptr);
      veda::tile_selection_cuda(fused, nullptr);
    };
    const double front_ms = median_ms(run_front_diag);
    std::printf("%-26s %-11s %10.2f %8lld kept\n", size.name, "front-diag", front_ms,
                static_cast<long long>(select.budget));
    select.q_projection = select.k_projection = projection_device;
    select.diagonal_projection = false;
    // The same with every head's cumulative threshold at 0.9 (capped at the 95% budget).
    const std::vector<double> thresholds(static_cast<std::size_t>(heads), 0.9);
    auto* thresholds_device = device_alloc<double>(thresholds.size() * 8);
    check(cudaMemcpy(thresholds_device, thresholds.data(), thresholds.size() * 8,
                     cudaMemcpyHostToDevice));
    select.thresholds = thresholds_device;
    const double cumulative_ms = median_ms([&] { veda::tile_selection_cuda(select, nullptr); });
    select.thresholds = nullptr;
    std::printf("%-26s %-11s %10.2f %8s\n", size.name, "select@0.9", cumulative_ms, "mass");
    if (env_is("VEDA_BENCH_FRONT_END_ONLY", "1")) continue;
    // The kernel timings below use select-diag's lists: the ones plan@95%-diag computes (same
    // statistics, same P), so plan minus kernel is the plan's front end.
    select.q_projection = select.k_projection = diagonal_device;
    select.diagonal_projection = true;
    veda::tile_selection_cuda(select, nullptr);

    auto* out = device_alloc(host.size() * 2);
    veda::AttentionParams dense;
    dense.q = view(q), dense.k = view(k), dense.v = view(v), dense.scale = scale;
    dense.out = out, dense.out_dtype = veda::DType::kBF16;
    dense.out_stride_batch = tokens * heads * kDim, dense.out_stride_token = heads * kDim;
    dense.out_stride_head = kDim;
    const double dense_ms = median_ms([&] { veda::attention_cuda(dense, nullptr); });
    std::printf("%-26s %-11s %10.2f %8.1f TF/s\n", size.name, "dense", dense_ms,
                oracle_flop / 2 / (dense_ms * 1e-3) / 1e12);
    // The sparse kernel alone with the 95% lists: over the copies, then through the order.
    const veda::BlockIndexView index{select.counts, select.indices, 1, heads, tiles,
                                     tiles,         select.budget};
    veda::AttentionParams sparse = dense;
    sparse.index = &index;
    sparse.out_order = order_device, sparse.out_head_group = group_device;
    const auto tiled_view = [&](int x) {  // the copies [1, H, N, D]
      return veda::TokensView{tiled[x], veda::DType::kBF16,    1,    tokens,       heads,
                              kDim,     heads * tokens * kDim, kDim, tokens * kDim};
    };
    sparse.q = tiled_view(0), sparse.k = tiled_view(1), sparse.v = tiled_view(2);
    const double copies_ms = median_ms([&] { veda::attention_cuda(sparse, nullptr); });
    // q frame-major through the order, k and v from the copies: the plan's kernel.
    sparse.q = view(q);
    sparse.read_queries_through_order = true;
    const double kv_copies_ms = median_ms([&] { veda::attention_cuda(sparse, nullptr); });
    const veda::AttentionParams kv_copies_kernel = sparse;
    sparse.read_queries_through_order = false;
    sparse.q = tiled_view(0);
    // Row gathers of the copies' own (contiguous) rows: the load mechanism alone.
    std::vector<std::int32_t> identity(order.size());
    for (std::size_t i = 0; i < identity.size(); ++i)
      identity[i] = static_cast<std::int32_t>(i % tokens);
    auto* identity_device = device_alloc<std::int32_t>(identity.size() * 4);
    check(
        cudaMemcpy(identity_device, identity.data(), identity.size() * 4, cudaMemcpyHostToDevice));
    sparse.out_order = identity_device;
    sparse.read_through_order = true;
    const double identity_ms = median_ms([&] { veda::attention_cuda(sparse, nullptr); });
    sparse.out_order = order_device;
    sparse.q = view(q), sparse.k = view(k), sparse.v = view(v);
    const double rows_ms = median_ms([&] { veda::attention_cuda(sparse, nullptr); });
    // The same with full boxes loaded by TMA, the other tiles by row gathers: the plan's kernel.
    sparse.box_grid = size.grid, sparse.box_shapes = kShapes;
    const double boxes_ms = median_ms([&] { veda::attention_cuda(sparse, nullptr); });
    const veda::AttentionParams rows_kernel = sparse;
    std::printf("%-26s %-11s %10.2f %7.2fx dense\n", size.name, "rowscopy95", identity_ms,
                dense_ms / identity_ms);
    std::printf("%-26s %-11s %10.2f %7.2fx dense\n", size.name, "copies@95%", copies_ms,
                dense_ms / copies_ms);
    std::printf("%-26s %-11s %10.2f %7.2fx dense\n", size.name, "kvcopies95", kv_copies_ms,
                dense_ms / kv_copies_ms);
    std::printf("%-26s %-11s %10.2f %7.2fx dense\n", size.name, "rows@95%", rows_ms,
                dense_ms / rows_ms);
    std::printf("%-26s %-11s %10.2f %7.2fx dense\n", size.name, "boxes@95%", boxes_ms,
                dense_ms / boxes_ms);
    struct PlanCase {
      double sparsity;
      bool copies, diagonal;
    };
    for (const auto& [sparsity, copies, diagonal] :
         {PlanCase{0.9, true, true}, PlanCase{0.95, true, false}, PlanCase{0.95, true, true},
          PlanCase{0.95, false, true}}) {
      veda::SparseLayerSettings settings;
      settings.grid = size.grid, settings.heads = heads, settings.dim = kDim;
      settings.head_tiles.clear();
      for (std::int64_t h = 0; h < heads; ++h) settings.head_tiles.push_back(kShapes[h % 2]);
      settings.sparsity = sparsity;
      settings.q_projection = settings.k_projection =
          diagonal ? diagonal_device : projection_device;
      settings.diagonal_projection = diagonal;
      settings.reordered_copies = copies;
      const veda::SparseAttentionPlan plan(settings);
      void* workspace = device_alloc(plan.workspace_bytes());
      const double plan_ms = median_ms([&] {
        plan.run(view(q), view(k), view(v), out, nullptr, workspace, plan.workspace_bytes(),
                 nullptr);
      });
      char label[32];
      std::snprintf(label, sizeof(label), "plan@%.0f%%%s%s", sparsity * 100, copies ? "" : "-rows",
                    diagonal ? "-diag" : "");
      std::printf("%-26s %-11s %10.2f %7.2fx dense %7.0f MB workspace\n", size.name, label, plan_ms,
                  dense_ms / plan_ms, static_cast<double>(plan.workspace_bytes()) / 1e6);
      if (sparsity != 0.95 || !diagonal) continue;
      // The plan's front end (everything but the attention kernel): the plan and its kernel
      // alone on the same lists (select-diag's), timed alternately: the median difference.
      const veda::AttentionParams& kernel = copies ? kv_copies_kernel : rows_kernel;
      const auto run_plan = [&] {
        plan.run(view(q), view(k), view(v), out, nullptr, workspace, plan.workspace_bytes(),
                 nullptr);
      };
      const auto run_kernel = [&] { veda::attention_cuda(kernel, nullptr); };
      const auto [alone_ms, outside_ms] = paired_difference_ms(run_plan, run_kernel);
      std::snprintf(label, sizeof(label), "front%s", copies ? "" : "-rows");
      std::printf("%-26s %-11s %10.2f ms = %.1f%% of the kernel alone (%.2f ms)\n", size.name,
                  label, outside_ms, 100 * outside_ms / alone_ms, alone_ms);
      if (!copies) {
        // The same kernels as the plan's, launched here: front-diag before the kernel, and after.
        const PairedTimes before =
            paired_difference_ms([&] { run_front_diag(), run_kernel(); }, run_kernel);
        const PairedTimes after =
            paired_difference_ms([&] { run_kernel(), run_front_diag(); }, run_kernel);
        std::printf("%-26s %-11s %10.2f ms before the kernel, %.2f ms after it\n", size.name,
                    "front-diag+", before.difference_ms, after.difference_ms);
      }
      const double plan_us = host_enqueue_us(run_plan), kernel_us = host_enqueue_us(run_kernel);
      std::printf("%-26s %-11s %7.0f us to enqueue the plan, %.0f us the kernel alone\n", size.name,
                  copies ? "host" : "host-rows", plan_us, kernel_us);
    }
    check(cudaDeviceSynchronize());
    for (void* pointer : allocations) check(cudaFree(pointer));
    allocations.clear();
  }
  return 0;
}
