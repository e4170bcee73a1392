// Quality metrics of a sparse attention against dense attention and against the oracle.
#pragma once

#include <cstdint>
#include <span>

#include "veda/block_index.h"

namespace veda {

// ||x - ref|| / ||ref|| in float64; 0 when both are zero.
double relative_l2(std::span<const float> x, std::span<const float> ref);
double cosine_similarity(std::span<const float> a, std::span<const float> b);

// Mean over rows of |selected ∩ oracle| / |oracle| (rows whose oracle list is empty are skipped).
// Both indices must have the same B, H, Tq, Tk.
double tile_recall(const BlockIndexView& selected, const BlockIndexView& oracle);

// Head (b, h): mean over query tiles of the oracle mass that the selected tiles cover,
// sum_{j in row i} mass[i, j]; mass is [Tq, Tk] from tile_heat_and_mass.
double mass_recall(const BlockIndexView& selected, std::int64_t b, std::int64_t h,
                   std::span<const float> mass);

}  // namespace veda
