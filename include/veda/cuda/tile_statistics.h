// Per-tile mean, max and min of Q or K on the GPU; same params and output as tile_statistics_cpu.
#pragma once

#include <cuda_runtime_api.h>

#include "veda/tile_statistics.h"

namespace veda {

// params.x.data and params.out are device pointers. Launches on `stream`; no allocation, no host
// synchronisation. Throws veda::Error for invalid params or a failed launch.
void tile_statistics_cuda(const TileStatisticsParams& params, cudaStream_t stream);

}  // namespace veda
