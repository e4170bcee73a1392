// Pictures of `veda demo`, drawn with cairo (PNG):
//   - one head's oracle tile heat (log10 colour map, query tiles down, key tiles across) with the
//     oracle mask (white squares) and the Veda mask (red dots) over it;
//   - rel-L2 against sparsity, one line per method.
// Both written through a temporary file; errors name the path and cairo's status. Builds without
// cairo (the GPU device image) have no pictures: demo_plots_available() is false there and the
// writers throw veda::Error.
#pragma once

#include <string>

#include "veda/method/demo.h"

namespace veda::method {

// Whether this build draws pictures (it found cairo).
bool demo_plots_available();

void write_tile_heat_png(const std::string& path, const DemoPicture& picture);

void write_rel_l2_plot(const std::string& path, const DemoResult& result);

}  // namespace veda::method
