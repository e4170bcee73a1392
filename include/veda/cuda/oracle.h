// The oracle (row lse, tile heat and tile mass of full attention) on the GPU: the same params and
// outputs as oracle_cpu, for calibration and evaluation at real sizes (N = 75,600, 40 heads).
#pragma once

#include <cuda_runtime_api.h>

#include "veda/oracle.h"

namespace veda {

// Throws veda::Error unless the GPU path handles these params: bf16 or f16 q and k, head dim 64
// or 128, token stride a multiple of 8 elements and 16-byte aligned data.
void check_oracle_cuda_supported(const OracleParams& params);

// Two passes on `stream` (lse, then heat and mass); params' pointers are device memory. No
// allocation, no host synchronisation. Cost: 2 x (2 Nq Nk D) tensor-core FLOP per (batch, head).
void oracle_cuda(const OracleParams& params, cudaStream_t stream);

// The two passes on their own, for callers that need one lse and the maps of several token
// orders (calibration: lse once, then heat and mass per candidate tile shape). lse does not
// depend on the order of q's rows, so it may come from q in any order, permuted to this q's.
//   oracle_lse_cuda       writes params.lse only (heat, mass may be null): 2 Nq Nk D FLOP;
//   oracle_tile_maps_cuda reads params.lse (row r of q's order) and writes heat and mass.
void oracle_lse_cuda(const OracleParams& params, cudaStream_t stream);
void oracle_tile_maps_cuda(const OracleParams& params, cudaStream_t stream);

}  // namespace veda
