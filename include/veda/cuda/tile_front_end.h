// The GPU front end of sparse attention: tile-major gather with per-tile statistics, and the
// estimator's tile selection into the block index. Same params as the CPU references
// (tile_gather.h, tile_selection.h); every pointer is device memory. Each call launches on
// `stream`, allocates nothing and never synchronises with the host.
#pragma once

#include <cuda_runtime_api.h>

#include <cstddef>
#include <span>

#include "veda/tile_gather.h"
#include "veda/tile_selection.h"

namespace veda {

// One block per (tile, head, batch) reads the tile's <= 128 rows once, 16 bytes per thread and
// 8 rows in flight per thread where rows are 16-byte aligned (element-wise otherwise), writes
// them tile-major and reduces mean, max, min: N*H*D elements in, as many out.
void tile_gather_cuda(const TileGatherParams& params, cudaStream_t stream);
// Up to 3 tensors of one shape, dtype, order and head groups (q, k and v of a layer) in one
// launch, each with its own outputs.
void tile_gather_cuda(std::span<const TileGatherParams> tensors, cudaStream_t stream);

// Scratch for the projected descriptors, 4 * B * H * (Tq + Tk) * D' bytes (D' = D rounded up to
// 16).
std::size_t tile_selection_workspace_bytes(const TileSelectionParams& params);

// Two kernels, both on tensor cores at float32 accuracy (3xTF32): the projections
// (B*H*(Tq+Tk) x 3D x D multiply-adds), then per block of 32 query tiles their Tk logits (into
// shared memory, never to global memory) and each row's top-k, found by a warp's search over
// the logits' order keys (interpolated, a few warp-wide counts a row), written in ascending order
// (Tk <= 8192, i.e. N <= ~1M tokens). Ties rank the lower tile index first, as the CPU reference
// does; NaN logits rank last.
void tile_selection_cuda(const TileSelectionParams& params, cudaStream_t stream);

}  // namespace veda
