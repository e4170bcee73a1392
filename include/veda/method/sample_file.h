// Captured q, k, v of one layer in a .safetensors file, as `veda calibrate` and
// `veda attention --method veda` read them: tensors q, k, v of one float dtype and one shape
// [B, N, H, D]; the latent grid and the layer in the file's __metadata__, e.g.
// {"grid": "8x32x48", "layer": "3"} (grid "T,H,W" works too); every element finite. Every problem
// is a veda::Error naming the file.
#pragma once

#include <cstdint>
#include <filesystem>
#include <optional>

#include "veda/safetensors.h"
#include "veda/tile_layout.h"
#include "veda/tokens.h"

namespace veda::method {

struct SampleFile {
  TensorFile file;
  Grid grid;
  std::optional<std::int64_t> layer;  // from metadata "layer", if present
  TokensView q, k, v;                 // views into file's tensors (keep the SampleFile alive)
};

// grid_override replaces the metadata grid (which is then not required).
SampleFile read_sample_file(const std::filesystem::path& path,
                            std::optional<Grid> grid_override = std::nullopt);

// The same from the file's header alone (read_safetensors_header): every check but the elements'
// finiteness; q, k, v's data pointers are null.
SampleFile read_sample_header(const std::filesystem::path& path,
                              std::optional<Grid> grid_override = std::nullopt);

}  // namespace veda::method
