// The oracle (teacher) from full attention of one head (DESIGN.md section 2):
//   lse_r     = log sum_c exp(s q_r.k_c)
//   heat[i,j] = max over r in tile i, c in tile j of exp(s q_r.k_c - lse_r)
//   mass[i,j] = sum over the same pairs / |tile i|     (each mass row sums to 1)
// Two dense passes over Q K^T; for calibration and evaluation, never the fast path.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "veda/tokens.h"

namespace veda {

// q: [Nq, D], k: [Nk, D] float32. Returns lse, [Nq].
std::vector<float> row_lse(std::span<const float> q, std::span<const float> k, std::int64_t dim,
                           float scale);

struct TileMaps {
  std::int64_t q_tiles = 0, k_tiles = 0;
  std::vector<float> heat;  // [Tq, Tk]
  std::vector<float> mass;  // [Tq, Tk]
};

// lse from row_lse (same q, k, scale).
TileMaps tile_heat_and_mass(std::span<const float> q, std::span<const float> k, std::int64_t dim,
                            float scale, std::span<const float> lse);

// The oracle of every (batch, head) at once; shared by oracle_cpu and the CUDA kernels.
struct OracleParams {
  TokensView q;  // [B, Nq, H, D], tokens in tile-major order
  TokensView k;  // [B, Nk, H, D]
  float scale = 0.0f;
  float* lse = nullptr;   // [B, H, Nq]
  float* heat = nullptr;  // [B, H, Tq, Tk]
  float* mass = nullptr;  // [B, H, Tq, Tk]

  // Throws veda::Error naming the first inconsistent argument.
  void validate() const;
};

void oracle_cpu(const OracleParams& params);

}  // namespace veda
