// The subcommands of the `veda` CLI, one file each; main.cc registers them and reports errors.
#pragma once

#include <CLI/CLI.hpp>

namespace veda::cli {

// `veda attention`: sparse attention over q, k, v read from a .safetensors file.
void add_attention_command(CLI::App& app);
// `veda inspect`: names, dtypes, shapes and metadata of a .safetensors file.
void add_inspect_command(CLI::App& app);
// `veda demo`: the Veda method end to end on the embedded synthetic clip (calibrate, compare).
void add_demo_command(CLI::App& app);
// `veda calibrate`: a Veda profile (tile shapes, distilled estimators) from captured q, k, v.
void add_calibrate_command(CLI::App& app);

}  // namespace veda::cli
