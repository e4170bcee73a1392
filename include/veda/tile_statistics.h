// Per-tile statistics of Q or K: mean, max and min over the tile's tokens, per channel.
// Tiles are 128 consecutive tokens of the (already tile-major) sequence; the last may be short.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "veda/tokens.h"

namespace veda {

// Statistic slots inside a tile's [3, D] block.
enum TileStatistic : int { kTileMean = 0, kTileMax = 1, kTileMin = 2 };

// Shared by the CPU reference and the CUDA kernel.
struct TileStatisticsParams {
  TokensView x;          // [B, N, H, D], tokens in tile-major order
  float* out = nullptr;  // [B, H, T, 3, D], T = tile_count(N): mean, max, min per channel
};

void tile_statistics_cpu(const TileStatisticsParams& params);

// One head: x is float32 [N, D]; returns [T, 3, D].
std::vector<float> tile_statistics(std::span<const float> x, std::int64_t dim);

}  // namespace veda
