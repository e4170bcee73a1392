// The demo's pictures in builds without cairo: none (see demo_plots.h).
#include "veda/error.h"
#include "veda/method/demo_plots.h"

namespace veda::method {

bool demo_plots_available() { return false; }

void write_tile_heat_png(const std::string& path, const DemoPicture&) {
  ::veda::detail::fail("cannot write ", path, ": this veda was built without cairo, so it draws ",
                       "no PNG pictures");
}

void write_rel_l2_plot(const std::string& path, const DemoResult&) {
  ::veda::detail::fail("cannot write ", path, ": this veda was built without cairo, so it draws ",
                       "no PNG pictures");
}

}  // namespace veda::method
