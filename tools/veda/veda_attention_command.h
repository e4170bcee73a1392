// `veda attention --method veda --profile PROFILE.json`: the Veda path of the attention
// subcommand (attention_command.cc parses the options and calls this).
#pragma once

#include <cstdint>
#include <optional>
#include <string>

namespace veda::cli {

struct VedaAttentionOptions {
  std::string in, out, profile;
  std::string grid;                   // empty: the input's metadata "grid"
  std::optional<double> sparsity;     // replaces the profile's per-head sparsity
  std::optional<std::int64_t> layer;  // empty: metadata "layer", else the profile's only layer
  bool no_compare = false;
};

void run_veda_attention(const VedaAttentionOptions& options);

}  // namespace veda::cli
