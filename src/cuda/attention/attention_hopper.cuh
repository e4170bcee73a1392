// Hopper (sm_90a) block-sparse attention forward: TMA + wgmma, warp-specialised, persistent.
//
// Design notes
// ------------
// Building blocks: our own one-instruction PTX wrappers (hopper_ptx.cuh) rather than CUTLASS/CuTe.
//   Why: the kernel needs six instruction kinds (mbarrier, cp.async.bulk.tensor, wgmma SS and RS,
//   setmaxnreg, fences), ~150 lines of wrappers; CuTe would add a pinned third-party header tree
//   (nvidia-cutlass 4.x from PyPI) to every build, including CI's 2-core machine where CuTe-heavy
//   translation units take minutes each, and the layouts here are fixed (128-byte swizzle,
//   128-token tiles), so CuTe's layout algebra buys little. CCCL's cuda::ptx would cover most
//   wrappers but not the wgmma operand lists, so we keep one style throughout.
//
// Work: one item = (batch b, head h, query tile i); items are numbered head-major
//   item = (b * H + h) * Tq + i, so the ~132 CTAs in flight work on neighbouring query tiles of
//   one head and share its K/V in L2 (Wan-14B 720p: K+V of one head = 75,600 x 128 x 2 x 2 B =
//   38.7 MB, under the 60 MB L2). Persistent grid of min(items, SMs) CTAs, item += gridDim.x.
//
// CTA = 3 warpgroups (384 threads), one CTA per SM (__launch_bounds__(384, 1)):
//   WG0 producer: one thread issues every TMA load (Q tile, then K[idx], V[idx] of each listed
//       key tile); setmaxnreg 40 so the consumers can take 232 (128 x 40 + 256 x 232 = 64,512
//       of the 65,536 registers). With read_through_order (frame-major q, k, v read in
//       tile-major order: the plan without reordered copies) a tile's rows are scattered, which
//       TMA boxes cannot gather: all 128 producer threads copy them with 16-byte cp.async into
//       the same swizzled layout (copy_rows), and the consumers add a proxy fence. Measured
//       ~12% slower than TMA at 95% sparsity, the same on contiguous rows (the load mechanism,
//       not the layout: ~20% more instructions issued next to the consumers; polling with
//       sleeps and hoisted row lookups did not change it; bench/RESULTS.md). One TMA box per
//       run of consecutive rows (tile-major orders are runs of 4-16 rows) was no faster: TMA
//       costs ~20-50 cycles per box, so 8-32 boxes per tile lose what they save (RESULTS 18:37
//       UTC, branch experiment/tma-runs). What does pay: with AttentionLaunch::box_groups, a
//       tile that is a full box of the grid (tile_major_order puts those first) loads as one 5-D
//       box per panel (make_box_tensor_map), thread 0 issuing it and arriving for all 128
//       loaders, and the consumers skip the proxy fence for it; only edge tiles gather rows
//       (11-25% of tiles at 21x45x80; the kernel 9% faster than all-rows, RESULTS 08:45-10:10;
//       the producer spills 48 bytes at its 40 registers since). With read_queries_through_order
//       (the plan with reordered_copies: tile-major copies of k and v only) warp 0 gathers each
//       Q tile's rows and its lane 0 issues the K and V TMA loads: Q is loaded once per item, K
//       and V once per listed tile.
//   WG1, WG2 consumers: query rows 0-63 and 64-127 of the tile. Per key tile:
//       S[64 x 128] = Q K^T       wgmma m64n128k16 SS (A = Q, B = K, both K-major in smem), D/16
//                                 instructions; fp32 accumulators, 64 registers.
//       online softmax in registers (exp2, scale folded into one FMA), P rounded to bf16/f16.
//       O[64 x D] += P V          wgmma m64nDk16 RS (A = P from registers, B = V in smem read
//                                 transposed, MN-major), 8 instructions; D/2 registers.
//   D = 128: software-pipelined (FlashAttention-3's intra-warpgroup overlap): iteration j
//       issues S_j = Q K_j^T and O += P_{j-1} V_{j-1} together and runs softmax(S_j) while the
//       second GEMM runs; plus pingpong: the two consumer warpgroups take turns issuing GEMMs
//       (named barriers 1 and 2), so one's softmax hides under the other's GEMMs.
//   D = 64: the sequential loop (S_j, softmax, P_j V_j), which measured faster at high
//       sparsity; the choice is HopperTile::kOverlapSoftmax / kPingpong, from measurements.
//   Empty list: O = 0, lse = -inf. Keys past N in the last tile: TMA reads zeros, scores masked
//   to -inf. Query rows past N: computed on zeros, not stored.
//
// Shared memory (1024-byte aligned; 128-byte swizzle atoms are 8 rows x 128 B):
//   a "tile" = 128 tokens x D, stored as D/64 panels of [128 rows][64 elements] (16 KB each);
//   Q: 1 tile; K and V: 3 stages of one tile each; then the mbarriers.
//   D = 128: 32 KB x (1 + 2 x 3) = 224 KB (of 227).  D = 64: 16 KB x 7 = 112 KB.
// Barriers: q_full (TMA tx), q_empty (8 consumer warps), k_full[s], v_full[s] (TMA tx; separate
//   so QK^T starts before V lands), kv_empty[s] (8 consumer warps). Phases are tracked by a
//   running stage counter shared by producer and consumers (both walk the same items and lists).
//
// Where the time went (bench/RESULTS.md, 16:50-17:10 UTC; bench/ncu_stalls.sh): the key-tile
// loop is issue-bound. With pingpong one warpgroup's softmax has to fit under the other's GEMMs,
// so every instruction of the loop counts: exp2f's denormal handling and per-k-step descriptor
// rebuilding were a quarter of it (821 instructions per warp per tile); fast_exp2 and
// advance_descriptor took 95% sparsity from 84.5% to 89.5% of cuDNN and dense to 102%; the
// warpgroup index made warp-uniform (descriptors in uniform registers) to 96% and 109%.
// Tried and not the fixed cost per query tile (RESULTS 15:15 UTC, branch
// experiment/cross-item-pipeline): a second Q slot and carrying the pipeline across items.
// Keep every wgmma batch waited before control flow joins: ptxas otherwise serialises all
// wgmma of the kernel (messages C7518/C7520) and dense speed drops ~18%.
#pragma once

#include <cuda.h>
#include <cuda_runtime.h>

#include <cmath>
#include <cstdint>

#include "attention_common.cuh"
#include "attention_launch.h"
#include "attention_tma.h"
#include "hopper_ptx.cuh"

// A/B switch for timing runs only (bench/run_variants.sh): 1 prefetches the next item's Q tile
// into L2 when the current one is loaded.
#ifndef VEDA_ATTENTION_Q_PREFETCH
#define VEDA_ATTENTION_Q_PREFETCH 0
#endif

namespace veda::attention_detail {

template <int kDim>
struct HopperTile {
  static constexpr int kPanels = kDim / 64;                 // 64-element (128-byte) panels
  static constexpr int kPanelBytes = kTileTokens * 128;     // 128 rows x 128 B = 16 KB
  static constexpr int kTileBytes = kPanels * kPanelBytes;  // one 128-token tile of Q, K or V
  // Three K/V stages: D = 128 takes 32 KB x 7 = 224 KB of the 227 KB; D = 64 112 KB. With the
  // software-pipelined loop a stage is freed only halfway through the next tile, so two stages
  // left the loads exposed (run 2 in bench/RESULTS.md: 389 -> 460 TFLOP/s dense at D = 128).
  static constexpr int kStages = 3;
  // Measured choices (bench/RESULTS.md, run 2, N = 75,600): at D = 128 the software-pipelined
  // loop with pingpong reaches 96% of cuDNN dense (sequential, no pingpong: 93%); at D = 64 the
  // sequential loop without pingpong is faster at high sparsity (95%: 379 vs 361 TFLOP/s).
  static constexpr bool kOverlapSoftmax = kDim == 128;
  static constexpr bool kPingpong = kDim == 128;
  static constexpr int kThreads = 384;
  static constexpr int kConsumerWarps = 8;
  static constexpr int kBarrierBytes = 8 * (2 + 3 * kStages);
  static constexpr int kSmemBytes = kTileBytes * (1 + 2 * kStages) + kBarrierBytes + 1024;
};

template <DType kType, int kDim>
struct HopperMma;

template <>
struct HopperMma<DType::kBF16, 128> {
  static __device__ __forceinline__ void qk(float (&d)[64], std::uint64_t a, std::uint64_t b,
                                            int accumulate) {
    sm90::wgmma_ss_m64n128k16_bf16(d, a, b, accumulate);
  }
  static __device__ __forceinline__ void pv(float (&d)[64], const std::uint32_t (&a)[4],
                                            std::uint64_t b) {
    sm90::wgmma_rs_m64n128k16_bf16(d, a, b, 1);
  }
};
template <>
struct HopperMma<DType::kBF16, 64> {
  static __device__ __forceinline__ void qk(float (&d)[64], std::uint64_t a, std::uint64_t b,
                                            int accumulate) {
    sm90::wgmma_ss_m64n128k16_bf16(d, a, b, accumulate);
  }
  static __device__ __forceinline__ void pv(float (&d)[32], const std::uint32_t (&a)[4],
                                            std::uint64_t b) {
    sm90::wgmma_rs_m64n64k16_bf16(d, a, b, 1);
  }
};
template <>
struct HopperMma<DType::kF16, 128> {
  static __device__ __forceinline__ void qk(float (&d)[64], std::uint64_t a, std::uint64_t b,
                                            int accumulate) {
    sm90::wgmma_ss_m64n128k16_f16(d, a, b, accumulate);
  }
  static __device__ __forceinline__ void pv(float (&d)[64], const std::uint32_t (&a)[4],
                                            std::uint64_t b) {
    sm90::wgmma_rs_m64n128k16_f16(d, a, b, 1);
  }
};
template <>
struct HopperMma<DType::kF16, 64> {
  static __device__ __forceinline__ void qk(float (&d)[64], std::uint64_t a, std::uint64_t b,
                                            int accumulate) {
    sm90::wgmma_ss_m64n128k16_f16(d, a, b, accumulate);
  }
  static __device__ __forceinline__ void pv(float (&d)[32], const std::uint32_t (&a)[4],
                                            std::uint64_t b) {
    sm90::wgmma_rs_m64n64k16_f16(d, a, b, 1);
  }
};

// (b, h, query tile) of a head-major item number.
struct HopperItem {
  int b, h, q_tile;
};
__device__ __forceinline__ HopperItem decode_item(const AttentionLaunch& p, int item) {
  const int bh = item / p.q_tiles;
  return {bh / p.heads, bh % p.heads, item % p.q_tiles};
}

// Full-box loads (AttentionLaunch::box_groups): per head group, the q, k and v maps whose box is
// one 64-channel panel of one head's full box (make_box_tensor_map).
struct BoxTensorMaps {
  CUtensorMap map[3][kMaxBoxGroups];  // [q, k, v][group]
};

// How many of head h's first tiles are full boxes that load by TMA (0 where its group has none
// or is past box_groups).
__device__ __forceinline__ int full_box_tiles(const AttentionLaunch& p, int h) {
  const int group = p.out_head_group ? __ldg(p.out_head_group + h) : 0;
  return group < p.box_groups ? p.box[group].full : 0;
}

// A full box's corner (t, h, w) in the grid packed as t << 22 | h << 11 | w (make_launch keeps
// box loads to grids of T <= 512, H and W <= 2048: non-negative): what the producer carries from a
// tile's lookup, one tile ahead, to its load in the register of a gathered tile's source row.
__device__ __forceinline__ int full_box_corner(const BoxGroup& box, int tile) {
  const int across_h = box.across_hw / box.across_w;
  return tile / box.across_hw * box.pt << 22 | tile / box.across_w % across_h * box.ph << 11 |
         tile % box.across_w * box.pw;
}

// Row-gather loads (AttentionLaunch::read_through_order, read_queries_through_order): a
// tile-major tile of frame-major q, k or v is 128 scattered rows, which TMA cannot gather, so
// producer threads copy it with 16-byte cp.async into the layout TMA's 128-byte swizzle writes:
// chunk c (16 bytes) of row r in panel n lands at n * 16 KB + 128 r + 16 (c ^ (r % 8)). A warp
// copies a group of 32 rows, 4 rows x 128 contiguous bytes per instruction; lane l has looked up
// the source row of the group's row l (lookup_row) and shuffles it to the lanes that copy it.
// All four producer warps copy a group each of every q, k and v tile (read_through_order), or
// warp 0 alone the four groups of every q tile (read_queries_through_order).
//
// The frame-major row of tile-major row `row`, or -1 past the end.
__device__ __forceinline__ int lookup_row(const std::int32_t* order, int row, int tokens) {
  return row < tokens ? __ldg(order + row) : -1;
}

// Copies rows 32 group .. 32 group + 31 of a tile, whose source rows lookup_row gave (`source`,
// this lane's), from `head` (the (b, h) base, in bytes) into dst; rows of source -1 become
// zeros. The caller then arrives on the tile's barrier (cp_async_mbarrier_arrive_noinc).
template <int kDim>
__device__ __forceinline__ void copy_rows(std::uint32_t dst, const char* head,
                                          std::int64_t row_bytes, int source, int group) {
  const int lane = threadIdx.x % 32, chunk = lane % 8;
#pragma unroll
  for (int i = 0; i < 8; ++i) {
    const int r_in_warp = 4 * i + lane / 8;
    const int r = 32 * group + r_in_warp;
    const int row = __shfl_sync(0xffffffffu, source, r_in_warp);
    const char* src = head + (row >= 0 ? row * row_bytes : 0) + 16 * chunk;
    const std::uint32_t row_dst = dst + 128 * r + 16 * (chunk ^ (r % 8));
#pragma unroll
    for (int panel = 0; panel < HopperTile<kDim>::kPanels; ++panel) {
      sm90::cp_async_16(row_dst + panel * HopperTile<kDim>::kPanelBytes, src + 128 * panel,
                        row >= 0 ? 16 : 0);
    }
  }
}

template <DType kType, int kDim>
__global__ void __launch_bounds__(HopperTile<kDim>::kThreads, 1)
    attention_hopper_kernel(const __grid_constant__ AttentionLaunch p,
                            const __grid_constant__ CUtensorMap q_map,
                            const __grid_constant__ CUtensorMap k_map,
                            const __grid_constant__ CUtensorMap v_map,
                            const __grid_constant__ BoxTensorMaps box_maps) {
#if defined(__CUDA_ARCH__) && defined(__CUDA_ARCH_FEAT_SM90_ALL)
  using Tile = HopperTile<kDim>;
  using Mma = HopperMma<kType, kDim>;
  using namespace sm90;
  constexpr int kStages = Tile::kStages;

  extern __shared__ unsigned char smem_raw[];
  // 128-byte swizzle atoms need 1024-byte alignment; dynamic smem guarantees only 16.
  const std::uint32_t smem_base = (smem_address(smem_raw) + 1023u) & ~1023u;
  const std::uint32_t q_smem = smem_base;
  const std::uint32_t k_smem = q_smem + Tile::kTileBytes;              // + stage * kTileBytes
  const std::uint32_t v_smem = k_smem + kStages * Tile::kTileBytes;    // + stage * kTileBytes
  const std::uint32_t barriers = v_smem + kStages * Tile::kTileBytes;  // 8 bytes each
  const std::uint32_t q_full = barriers;
  const std::uint32_t q_empty = barriers + 8;
  auto k_full = [&](int stage) { return barriers + 16 + 8 * stage; };
  auto v_full = [&](int stage) { return barriers + 16 + 8 * (kStages + stage); };
  auto kv_empty = [&](int stage) { return barriers + 16 + 8 * (2 * kStages + stage); };

  // Who loads (row gathers above): with read_through_order all 128 producer threads gather q, k
  // and v; with read_queries_through_order warp 0 gathers q and its lane 0 loads k and v by TMA;
  // otherwise thread 0 loads all three by TMA. Loads complete on q_full, k_full, v_full.
  const bool gather_all = p.read_through_order;
  const bool gather_queries = gather_all || p.read_queries_through_order;
  const std::uint32_t query_loaders = gather_all ? 128 : gather_queries ? 32 : 1;
  const std::uint32_t key_loaders = gather_all ? 128 : 1;
  if (threadIdx.x == 0) {
    mbarrier_init(q_full, query_loaders);
    mbarrier_init(q_empty, Tile::kConsumerWarps);
    for (int s = 0; s < kStages; ++s) {
      mbarrier_init(k_full(s), key_loaders);
      mbarrier_init(v_full(s), key_loaders);
      mbarrier_init(kv_empty(s), Tile::kConsumerWarps);
    }
    fence_barrier_init();
  }
  __syncthreads();

  const int items = p.batch * p.heads * p.q_tiles;
  // At D = 128 the index is broadcast from lane 0, so the compiler knows it is warp-uniform and
  // builds every wgmma descriptor in uniform registers (loop 729 -> 674 SASS instructions; 95%
  // sparsity 92.4 -> 94.8% of cuDNN). At D = 64 the same measured slower (dense 104 -> 100%).
  const int warpgroup = kDim == 128
                            ? __shfl_sync(0xffffffffu, static_cast<int>(threadIdx.x) / 128, 0)
                            : static_cast<int>(threadIdx.x) / 128;

  if (warpgroup == 0) {
    // ---------------- producer ----------------
    setmaxnreg_dec<40>();
    // read_queries_through_order: warp 0 runs the loop, its 32 lanes gathering Q's rows and
    // lane 0 alone issuing the K and V TMA loads (one loop: a second one for the Q gathers
    // made ptxas spill the producer's 40 registers).
    const bool queries_apart = p.read_queries_through_order && !p.read_through_order;
    if (!p.read_through_order && threadIdx.x >= (queries_apart ? 32u : 1u)) return;
    if (!p.read_through_order && threadIdx.x == 0) {
      if (!queries_apart) prefetch_tensor_map(&q_map);
      prefetch_tensor_map(&k_map);
      prefetch_tensor_map(&v_map);
    }
    int stage = 0;
    std::uint32_t phase = 0;
    int round = 0;
    for (int item = blockIdx.x; item < items; item += gridDim.x, ++round) {
      const HopperItem it = decode_item(p, item);
      const TileList list = tile_list(p, it.b, it.h, it.q_tile);
      const std::int32_t* order = key_order(p, it.h);  // q's too when it gathers q here
      // The head's group, and how many of its first tiles are full boxes loaded by TMA (0: none).
      const auto head_group = [&] { return p.out_head_group ? __ldg(p.out_head_group + it.h) : 0; };
      const int full_tiles = order != nullptr ? full_box_tiles(p, it.h) : 0;
      const auto full_box = [&](int tile) { return tile < full_tiles; };
      // One 128-token tile of q, k or v into dst, completing on bar: TMA boxes at tile-major
      // rows [first, first + 128), a full box by TMA (box_maps of tensor 0-2 = q, k, v, at the
      // corner in `rows`; thread 0 loads and arrives for the 128 loaders), or row gathers of the
      // rows in `rows` (lookup_row).
      auto load_tile = [&](std::uint32_t dst, const CUtensorMap* map, int tensor, const void* x,
                           std::int64_t stride_batch, std::int64_t stride_token,
                           std::int64_t stride_head, int first, int rows, std::uint32_t bar) {
        if (order != nullptr && full_box(first / kTileTokens)) {
          if (threadIdx.x != 0) return;
          const int group = head_group();
          mbarrier_expect_tx_arrive(bar, Tile::kTileBytes, 128);  // for all 128 loaders
#pragma unroll
          for (int panel = 0; panel < Tile::kPanels; ++panel) {
            tma_load_5d(dst + panel * Tile::kPanelBytes, &box_maps.map[tensor][group], bar,
                        it.h * kDim + panel * 64, rows & 0x7FF, rows >> 11 & 0x7FF, rows >> 22,
                        it.b);
          }
          return;
        }
        if (order != nullptr) {
          const char* head = static_cast<const char*>(x) +
                             2 * (it.b * stride_batch + it.h * stride_head);  // 16-bit elements
          copy_rows<kDim>(dst, head, 2 * stride_token, rows, static_cast<int>(threadIdx.x) / 32);
          cp_async_mbarrier_arrive_noinc(bar);
          return;
        }
        if (threadIdx.x != 0) return;  // lane 0 of warp 0 issues TMA
        mbarrier_arrive_expect_tx(bar, Tile::kTileBytes);
#pragma unroll
        for (int panel = 0; panel < Tile::kPanels; ++panel) {
          tma_load_4d(dst + panel * Tile::kPanelBytes, map, bar, panel * 64, first, it.h, it.b);
        }
      };
      // Through the order only: a tile's source row of this thread's row (row gathers), or its
      // corner (full_box_corner, thread 0) where it loads as a full box (q_tokens == k_tokens).
      auto tile_source = [&](int tile) {
        if (full_box(tile))
          return threadIdx.x == 0 ? full_box_corner(p.box[head_group()], tile) : 0;
        return lookup_row(order, tile * kTileTokens + static_cast<int>(threadIdx.x), p.k_tokens);
      };
      auto lookup_key_tile = [&](int j) {
        return order != nullptr && j < list.count ? tile_source(list.tile(j)) : 0;
      };
      const int q0 = it.q_tile * kTileTokens;
      const int q_rows = order != nullptr ? tile_source(it.q_tile) : 0;
      // Key tiles' rows are looked up one tile ahead, hiding the lookup's latency.
      int next_rows = lookup_key_tile(0);
      // The consumers release Q after their last QK^T of the previous item.
      mbarrier_wait(q_empty, (round & 1) ^ 1);
      if (queries_apart) {
        const std::int32_t* q_order = query_order(p, it.h);
        const char* head =
            static_cast<const char*>(p.q) + 2 * (it.b * p.q_stride_batch + it.h * p.q_stride_head);
        for (int group = 0; group < 4; ++group) {
          copy_rows<kDim>(
              q_smem, head, 2 * p.q_stride_token,
              lookup_row(q_order, q0 + 32 * group + static_cast<int>(threadIdx.x), p.q_tokens),
              group);
        }
        cp_async_mbarrier_arrive_noinc(q_full);
      } else {
        load_tile(q_smem, &q_map, 0, p.q, p.q_stride_batch, p.q_stride_token, p.q_stride_head, q0,
                  q_rows, q_full);
      }
      if constexpr (VEDA_ATTENTION_Q_PREFETCH != 0) {
        if (order == nullptr && !queries_apart && item + static_cast<int>(gridDim.x) < items) {
          const HopperItem next = decode_item(p, item + gridDim.x);
#pragma unroll
          for (int panel = 0; panel < Tile::kPanels; ++panel) {
            tma_prefetch_l2_4d(&q_map, panel * 64, next.q_tile * kTileTokens, next.h, next.b);
          }
        }
      }
      for (int j = 0; j < list.count; ++j) {
        const int key0 = list.tile(j) * kTileTokens;
        const int rows = next_rows;
        next_rows = lookup_key_tile(j + 1);
        mbarrier_wait(kv_empty(stage), phase ^ 1);
        load_tile(k_smem + stage * Tile::kTileBytes, &k_map, 1, p.k, p.k_stride_batch,
                  p.k_stride_token, p.k_stride_head, key0, rows, k_full(stage));
        load_tile(v_smem + stage * Tile::kTileBytes, &v_map, 2, p.v, p.v_stride_batch,
                  p.v_stride_token, p.v_stride_head, key0, rows, v_full(stage));
        if (++stage == kStages) {
          stage = 0;
          phase ^= 1;
        }
      }
    }
    return;
  }

  // ---------------- consumers ----------------
  setmaxnreg_inc<232>();
  const int consumer = warpgroup - 1;       // query rows 64 * consumer .. + 63
  const int warp = (threadIdx.x / 32) % 4;  // warp inside the warpgroup: 16 rows each
  const int lane = threadIdx.x % 32;
  const std::uint32_t q_rows = q_smem + consumer * 64 * 128;  // 64 rows x 128 B, 1024-aligned
  // Operand descriptors of this consumer's Q rows and of K and V stage 0 (advance_descriptor
  // moves them to a stage and k step). K is K-major; V is MN-major: 8 keys x 128 B per
  // 1024-byte group (stride 1024), panels of 64 channels 16 KB apart (leading offset).
  const std::uint64_t q_descriptor = smem_descriptor(q_rows, 16, 1024);
  const std::uint64_t k_descriptor = smem_descriptor(k_smem, 16, 1024);
  const std::uint64_t v_descriptor = smem_descriptor(v_smem, Tile::kPanelBytes, 1024);
  int stage = 0;
  std::uint32_t phase = 0;
  int round = 0;

  // Pingpong: named barrier 1 + c is consumer c's turn to issue GEMMs (256 = both warpgroups:
  // 128 waiting + 128 arriving). Both warpgroups issue the same number of GEMM batches (they
  // share every item and list), so turns alternate strictly; consumer 1 opens the first turn.
  auto take_turn = [&]() {
    if constexpr (Tile::kPingpong) named_barrier_sync(1 + consumer, 256);
  };
  auto pass_turn = [&]() {
    if constexpr (Tile::kPingpong) named_barrier_arrive(2 - consumer, 256);
  };
  if (consumer == 1) pass_turn();
  // Waits until a Q, K or V tile has landed. Row-gather loads write it through the generic
  // proxy (cp.async) and wgmma reads it through the async proxy: a proxy fence between them.
  // (`gathered` from the launch parameters, not from registers: the consumers are at their limit.)
  auto wait_loaded = [&](std::uint32_t bar, std::uint32_t parity, bool gathered) {
    mbarrier_wait(bar, parity);
    if (gathered) fence_proxy_async_shared();
  };

  for (int item = blockIdx.x; item < items; item += gridDim.x, ++round) {
    const HopperItem it = decode_item(p, item);
    const TileList list = tile_list(p, it.b, it.h, it.q_tile);

    float o[kDim / 2];  // O[64 x D]: d[4n + 2i + e] = O[16 warp + lane/4 + 8i][8n + 2(lane%4) + e]
#pragma unroll
    for (int r = 0; r < kDim / 2; ++r) o[r] = 0.0f;
    float row_max[2] = {-INFINITY, -INFINITY};
    float row_sum[2] = {0.0f, 0.0f};

    // Tiles read through the order at or past `gathered_from` were gathered (full boxes before
    // it came by TMA and need no proxy fence); never, when k and v are not read through it.
    const int gathered_from = p.read_through_order ? full_box_tiles(p, it.h) : 0x7FFFFFFF;
    wait_loaded(q_full, round & 1, p.read_queries_through_order || it.q_tile >= gathered_from);
    if (list.count == 0) {
      __syncwarp();
      if (lane == 0) mbarrier_arrive(q_empty);
    }

    // Software pipeline inside the warpgroup (FlashAttention-3's intra-warpgroup overlap):
    // iteration j issues S_j = Q K_j^T and O += P_{j-1} V_{j-1} back to back, waits for S_j
    // only, and runs softmax(S_j) on the CUDA cores while the tensor cores do P_{j-1} V_{j-1}.
    // O is rescaled to the new running max once that GEMM has landed.
    float s[64];             // S_j [64 x 128]: same layout as o, 16 groups of 8 keys
    std::uint32_t pf[8][4];  // P_{j-1} as RS A fragments, k step kk = keys 16 kk .. + 15
    float rescale[2];
    int previous_stage = 0;
    std::uint32_t previous_phase = 0;

    auto issue_qk = [&](int tile_stage) {
#pragma unroll
      for (int kk = 0; kk < kDim / 16; ++kk) {
        // k step kk: panel kk / 4, 32 bytes (16 elements) per step inside the 128-byte row.
        const std::uint32_t offset = (kk / 4) * Tile::kPanelBytes + (kk % 4) * 32;
        Mma::qk(s, advance_descriptor(q_descriptor, offset),
                advance_descriptor(k_descriptor, tile_stage * Tile::kTileBytes + offset), kk > 0);
      }
      wgmma_commit();
    };
    auto issue_pv = [&](int tile_stage) {
#pragma unroll
      for (int kk = 0; kk < 8; ++kk) {
        // V is [keys][D] (D contiguous): 16 keys = 2048 bytes per k step.
        Mma::pv(o, pf[kk],
                advance_descriptor(v_descriptor, tile_stage * Tile::kTileBytes + kk * 2048));
      }
      wgmma_commit();
    };
    // Masks keys past N, turns s into unnormalised probabilities against the new running max,
    // and leaves in rescale[i] the factor that moves O and the row sums to that max.
    auto softmax = [&](int key0) {
      if (key0 + kTileTokens > p.k_tokens) {  // the last, partial key tile
#pragma unroll
        for (int n = 0; n < 16; ++n) {
#pragma unroll
          for (int e = 0; e < 4; ++e) {
            if (key0 + 8 * n + 2 * (lane % 4) + (e & 1) >= p.k_tokens) s[4 * n + e] = -INFINITY;
          }
        }
      }
#pragma unroll
      for (int i = 0; i < 2; ++i) {
        float tile_max = -INFINITY;
#pragma unroll
        for (int n = 0; n < 16; ++n) {
          tile_max = fmaxf(tile_max, fmaxf(s[4 * n + 2 * i], s[4 * n + 2 * i + 1]));
        }
        const float new_max = fmaxf(row_max[i], quad_max(tile_max));
        const float base = new_max == -INFINITY ? 0.0f : new_max * p.scale_log2;
        rescale[i] = fast_exp2(row_max[i] * p.scale_log2 - base);
        row_max[i] = new_max;
        float sum = 0.0f;
#pragma unroll
        for (int n = 0; n < 16; ++n) {
#pragma unroll
          for (int e = 0; e < 2; ++e) {
            float& x = s[4 * n + 2 * i + e];
            x = fast_exp2(fmaf(x, p.scale_log2, -base));
            sum += x;
          }
        }
        row_sum[i] = row_sum[i] * rescale[i] + sum;
      }
    };
    auto pack_p = [&]() {
#pragma unroll
      for (int kk = 0; kk < 8; ++kk) {
        pf[kk][0] = ElementTraits<kType>::pack(s[8 * kk + 0], s[8 * kk + 1]);
        pf[kk][1] = ElementTraits<kType>::pack(s[8 * kk + 2], s[8 * kk + 3]);
        pf[kk][2] = ElementTraits<kType>::pack(s[8 * kk + 4], s[8 * kk + 5]);
        pf[kk][3] = ElementTraits<kType>::pack(s[8 * kk + 6], s[8 * kk + 7]);
      }
    };
    auto rescale_o = [&]() {
#pragma unroll
      for (int n = 0; n < kDim / 8; ++n) {
        o[4 * n] *= rescale[0];
        o[4 * n + 1] *= rescale[0];
        o[4 * n + 2] *= rescale[1];
        o[4 * n + 3] *= rescale[1];
      }
    };
    auto release_stage = [&](int tile_stage) {
      __syncwarp();
      if (lane == 0) mbarrier_arrive(kv_empty(tile_stage));
    };
    auto release_q = [&]() {
      __syncwarp();
      if (lane == 0) mbarrier_arrive(q_empty);
    };
    auto advance = [&]() {
      previous_stage = stage;
      previous_phase = phase;
      if (++stage == kStages) {
        stage = 0;
        phase ^= 1;
      }
    };

    if constexpr (!Tile::kOverlapSoftmax) {
      // Sequential loop: S_j = Q K_j^T, softmax, O += P_j V_j, each waiting for the previous.
      for (int j = 0; j < list.count; ++j) {
        const int key0 = list.tile(j) * kTileTokens;
        wait_loaded(k_full(stage), phase, list.tile(j) >= gathered_from);
        take_turn();
        wgmma_fence();
        issue_qk(stage);
        pass_turn();
        wgmma_wait<0>();
        fence_registers(s);
        if (j == list.count - 1) release_q();
        softmax(key0);
        rescale_o();
        pack_p();
        wait_loaded(v_full(stage), phase, list.tile(j) >= gathered_from);
        fence_registers(o);
        take_turn();
        wgmma_fence();
        issue_pv(stage);
        pass_turn();
        wgmma_wait<0>();
        fence_registers(o);
        release_stage(stage);
        advance();
      }
    } else if (list.count > 0) {
      // Prologue: S_0 and its softmax (O is still zero: no rescale).
      wait_loaded(k_full(stage), phase, list.tile(0) >= gathered_from);
      take_turn();
      wgmma_fence();
      issue_qk(stage);
      pass_turn();
      wgmma_wait<0>();
      fence_registers(s);
      if (list.count == 1) release_q();
      softmax(list.tile(0) * kTileTokens);
      pack_p();
      advance();
    }
    for (int j = 1; Tile::kOverlapSoftmax && j < list.count; ++j) {
      const int key0 = list.tile(j) * kTileTokens;
      wait_loaded(k_full(stage), phase, list.tile(j) >= gathered_from);
      wait_loaded(v_full(previous_stage), previous_phase, list.tile(j - 1) >= gathered_from);
      fence_registers(o);
      take_turn();
      wgmma_fence();
      issue_qk(stage);
      issue_pv(previous_stage);
      pass_turn();
      wgmma_wait<1>();  // S_j has landed; P_{j-1} V_{j-1} may still run
      fence_registers(s);
      if (j == list.count - 1) release_q();
      softmax(key0);
      wgmma_wait<0>();  // P_{j-1} V_{j-1} has landed: its K/V stage and pf are free
      fence_registers(o);
      release_stage(previous_stage);
      rescale_o();
      pack_p();
      advance();
    }
    if (Tile::kOverlapSoftmax && list.count > 0) {
      // Epilogue of the pipeline: O += P_last V_last.
      wait_loaded(v_full(previous_stage), previous_phase,
                  list.tile(list.count - 1) >= gathered_from);
      fence_registers(o);
      take_turn();
      wgmma_fence();
      issue_pv(previous_stage);
      pass_turn();
      wgmma_wait<0>();
      fence_registers(o);
      release_stage(previous_stage);
    }

    const int row0 = it.q_tile * kTileTokens + consumer * 64 + warp * 16 + lane / 4;
#pragma unroll
    for (int i = 0; i < 2; ++i) {
      const float sum = quad_sum(row_sum[i]);
      const int token = row0 + 8 * i;
      if (token >= p.q_tokens) continue;
      const float inverse = sum > 0.0f ? 1.0f / sum : 0.0f;
      const int row = output_row(p, token, it.h);
      store_out_row<kDim / 8>(p, it.b, row, it.h, 2 * (lane % 4), inverse, [&](int n) {
        return make_float2(o[4 * n + 2 * i], o[4 * n + 2 * i + 1]);
      });
      if (lane % 4 == 0) {
        store_lse(p, it.b, row, it.h, sum > 0.0f ? row_max[i] * p.scale + logf(sum) : -INFINITY);
      }
    }
  }
#else
  // Built for an arch without wgmma: the selector never launches this; fail loudly if it does.
  __trap();
#endif
}

template <DType kType, int kDim>
cudaError_t launch_attention_hopper(const AttentionLaunch& launch, cudaStream_t stream) {
  auto* kernel = attention_hopper_kernel<kType, kDim>;
  constexpr int kBytes = HopperTile<kDim>::kSmemBytes;
  cudaError_t status =
      cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, kBytes);
  if (status != cudaSuccess) return status;
  int device = 0, sms = 0;
  status = cudaGetDevice(&device);
  if (status != cudaSuccess) return status;
  status = cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device);
  if (status != cudaSuccess) return status;

  const CUtensorMap q_map =
      make_token_tensor_map(launch.q, kType, launch.batch, launch.q_tokens, launch.heads, kDim,
                            launch.q_stride_batch, launch.q_stride_token, launch.q_stride_head);
  const CUtensorMap k_map =
      make_token_tensor_map(launch.k, kType, launch.batch, launch.k_tokens, launch.heads, kDim,
                            launch.k_stride_batch, launch.k_stride_token, launch.k_stride_head);
  const CUtensorMap v_map =
      make_token_tensor_map(launch.v, kType, launch.batch, launch.k_tokens, launch.heads, kDim,
                            launch.v_stride_batch, launch.v_stride_token, launch.v_stride_head);

  BoxTensorMaps box_maps{};
  for (int g = 0; g < launch.box_groups; ++g) {
    const auto box_map = [&](const void* x, std::int64_t stride_batch, std::int64_t stride_token) {
      return make_box_tensor_map(x, kType, launch.batch, launch.grid_t, launch.grid_h,
                                 launch.grid_w, launch.heads, kDim, stride_batch, stride_token,
                                 launch.box[g]);
    };
    box_maps.map[0][g] = box_map(launch.q, launch.q_stride_batch, launch.q_stride_token);
    box_maps.map[1][g] = box_map(launch.k, launch.k_stride_batch, launch.k_stride_token);
    box_maps.map[2][g] = box_map(launch.v, launch.v_stride_batch, launch.v_stride_token);
  }

  const long long items = static_cast<long long>(launch.batch) * launch.heads * launch.q_tiles;
  const int ctas = static_cast<int>(items < sms ? items : sms);
  kernel<<<ctas, HopperTile<kDim>::kThreads, kBytes, stream>>>(launch, q_map, k_map, v_map,
                                                               box_maps);
  return cudaGetLastError();
}

template <DType kType, int kDim>
bool attention_hopper_has_image() {
  cudaFuncAttributes attributes;
  const bool ok =
      cudaFuncGetAttributes(&attributes, attention_hopper_kernel<kType, kDim>) == cudaSuccess;
  if (!ok) cudaGetLastError();
  return ok;
}

#define VEDA_INSTANTIATE_ATTENTION_HOPPER(kType, kDim)                                             \
  template cudaError_t launch_attention_hopper<kType, kDim>(const AttentionLaunch&, cudaStream_t); \
  template bool attention_hopper_has_image<kType, kDim>();

}  // namespace veda::attention_detail
