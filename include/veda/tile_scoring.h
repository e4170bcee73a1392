// Tile scores from statistics (DESIGN.md section 2, "Distilled estimator").
//
//   feat(X_i) = [mean_i, max_i, min_i]               (3D)
//   x^_i      = feat(X_i) P + mean_i                 (P: [3D, D], row-major)
//
// A diagonal P (the estimator's default structure: each channel weighs its own mean, max and min,
// P[c D + d, d]) can be given as those 3D weights alone, [3, D]; the result is the same.
//   z[i, j]   = scale * q^_i . k^_j                  ([Tq, Tk] logits)
//
// With P = 0 the descriptor is the tile mean and z is mean pooling (VSA, SpargeAttn, MInference).
#pragma once

#include <cstdint>
#include <span>
#include <vector>

namespace veda {

// stats: [T, 3, D] from tile_statistics; projection: [3D, D], its diagonal [3, D], or empty for
// P = 0. Returns [T, D].
std::vector<float> project_tiles(std::span<const float> stats, std::int64_t dim,
                                 std::span<const float> projection);

// Returns z = scale * q_hat k_hat^T, [Tq, Tk].
std::vector<float> tile_logits(std::span<const float> q_hat, std::span<const float> k_hat,
                               std::int64_t dim, float scale);

}  // namespace veda
