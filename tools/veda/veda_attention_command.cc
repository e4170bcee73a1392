// The Veda path of `veda attention`: reads q, k, v [B, N, H, D] and the profile, checks that they
// fit (heads, head dim, grid, layer), runs veda_attention_cpu (per head: reorder, statistics,
// estimator scores, selection, block-sparse attention with the core's reference kernel, inverse
// reorder), reports quality against dense and the oracle, and writes out and lse atomically.
#include "veda_attention_command.h"

#include <chrono>
#include <iostream>
#include <sstream>

#include "veda/error.h"
#include "veda/method/mask_evaluation.h"
#include "veda/method/profile.h"
#include "veda/method/sample_file.h"
#include "veda/method/veda_attention.h"
#include "veda/safetensors.h"

namespace veda::cli {

void run_veda_attention(const VedaAttentionOptions& options) {
  VEDA_CHECK(!options.profile.empty(), "--method veda needs --profile PROFILE.json");
  if (options.sparsity) {
    VEDA_CHECK(*options.sparsity >= 0 && *options.sparsity < 1, "--sparsity ", *options.sparsity,
               " is outside [0, 1); expected the fraction of key tiles to skip");
  }
  std::optional<Grid> grid;
  if (!options.grid.empty()) grid = Grid::parse(options.grid);
  const method::Profile profile = method::read_profile(options.profile);
  const method::SampleFile input = method::read_sample_file(options.in, grid);
  std::int64_t layer_index = 0;
  if (options.layer) {
    layer_index = *options.layer;
  } else if (input.layer) {
    layer_index = *input.layer;
  } else {
    VEDA_CHECK(profile.layers.size() == 1, options.in, " has no \"layer\" in its metadata and ",
               options.profile, " holds ", profile.layers.size(), " layers; pass --layer");
    layer_index = profile.layers.front().layer;
  }
  const method::LayerProfile& layer = profile.layer(layer_index);
  VEDA_CHECK(input.q.dim == profile.head_dim, options.in, ": q has head dim ", input.q.dim, "; ",
             options.profile, " was calibrated for ", profile.head_dim);
  VEDA_CHECK(static_cast<std::int64_t>(layer.heads.size()) == input.q.heads, options.in, ": q has ",
             input.q.heads, " heads; layer ", layer_index, " of ", options.profile, " has ",
             layer.heads.size());

  const auto start = std::chrono::steady_clock::now();
  const method::VedaAttentionResult result =
      method::veda_attention_cpu(input.q, input.k, input.v, input.grid, layer, options.sparsity);
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  const Tensor& q = input.file.at("q");
  std::cout << "veda attention: veda (profile " << options.profile << ", layer " << layer_index
            << "), q " << q.shape_str() << " " << dtype_name(q.dtype) << ", grid "
            << input.grid.str() << ", " << seconds << " s\n";
  const double used = result.index.sparsity();
  std::cout << "sparsity: requested "
            << (options.sparsity ? std::to_string(*options.sparsity) : std::string("per profile"))
            << ", used " << used << "\n";
  if (!options.no_compare) {
    const method::MaskQuality quality = method::evaluate_veda_attention(
        input.q, input.k, input.v, input.grid, layer, result, options.sparsity);
    std::cout << "vs dense: rel-L2 " << quality.rel_l2 << ", cosine " << quality.cosine << "\n"
              << "vs oracle (same tiles and budget): tile recall " << quality.tile_recall
              << ", mass recall " << quality.mass_recall << "\n";
  }

  TensorFile output;
  std::ostringstream used_text;
  used_text.precision(17);
  used_text << used;
  output.metadata = {{"method", "veda"},
                     {"profile", options.profile},
                     {"layer", std::to_string(layer_index)},
                     {"sparsity_used", used_text.str()},
                     {"grid", input.grid.str()}};
  Tensor out = Tensor::zeros("out", q.dtype, q.shape);
  for (std::size_t n = 0; n < result.out.size(); ++n) {
    store_from_float(out.data.data(), q.dtype, static_cast<std::int64_t>(n), result.out[n]);
  }
  Tensor lse = Tensor::zeros("lse", DType::kF32, {q.shape[0], q.shape[1], q.shape[2]});
  std::copy(result.lse.begin(), result.lse.end(), lse.as<float>());
  output.tensors.push_back(std::move(out));
  output.tensors.push_back(std::move(lse));
  write_safetensors(options.out, output);
  std::cout << "wrote " << options.out << ": out " << q.shape_str() << " " << dtype_name(q.dtype)
            << ", lse [" << q.shape[0] << ", " << q.shape[1] << ", " << q.shape[2] << "] F32\n";
}

}  // namespace veda::cli
