// The GPU front end of sparse attention: tile-major gather with per-tile statistics, and the
// estimator's tile selection into the block index. Same params as the CPU references
// (tile_gather.h, tile_selection.h); every pointer is device memory. Each call launches on
// `stream`, allocates nothing and never synchronises with the host.
#pragma once

#include <cuda_runtime_api.h>

#include <cstddef>

#include "veda/tile_gather.h"
#include "veda/tile_selection.h"

namespace veda {

// One block per (tile, head, batch) reads the tile's <= 128 rows once (thread d reads channel d,
// so each row is one coalesced access), writes them tile-major and reduces mean, max, min:
// N*H*D elements in, as many out.
void tile_gather_cuda(const TileGatherParams& params, cudaStream_t stream);

// Scratch for the projected descriptors, 4 * B * H * (Tq + Tk) * D bytes.
std::size_t tile_selection_workspace_bytes(const TileSelectionParams& params);

// Two kernels: the projections (B*H*(Tq+Tk) x 3D x D multiply-adds), then per query tile the
// Tk logits and a warp's top-k by repeated arg-max (Tk <= 32768, i.e. N <= ~4M tokens).
// Ties rank the lower tile index first, as the CPU reference does; NaN logits rank last.
void tile_selection_cuda(const TileSelectionParams& params, cudaStream_t stream);

}  // namespace veda
