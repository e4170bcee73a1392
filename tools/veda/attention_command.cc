// `veda attention --in QKV.safetensors --out OUT.safetensors [--method ...] [--sparsity S]
//  [--grid T,H,W] [--tile pt,ph,pw] [--no-compare]`
//
// Reads q, k, v [B, N, H, D] (F32, F16 or BF16, one dtype), runs sparse_attention_cpu and writes
// out [B, N, H, D] in the input dtype and lse [B, N, H] F32. Every input is checked before any
// attention runs, and the output is written atomically, so a failure leaves no output file.
#include <cmath>
#include <cstdio>
#include <iostream>
#include <memory>
#include <sstream>
#include <string>

#include "attention_evaluation.h"
#include "commands.h"
#include "veda/error.h"
#include "veda/metrics.h"
#include "veda/safetensors.h"
#include "veda/sparse_attention.h"
#include "veda_attention_command.h"

namespace veda::cli {
namespace {

struct AttentionOptions {
  std::string in;
  std::string out;
  std::string method = "dense";
  double sparsity = 0.0;
  std::string grid;  // empty: 1 x 1 x N
  std::string tile = "1x8x16";
  bool no_compare = false;
  std::string profile;          // --method veda
  std::int64_t layer = -1;      // --method veda; -1: from the input's metadata
  bool sparsity_given = false;  // --method veda uses the profile's sparsity otherwise
};

// Finds q, k or v and checks what sparse_attention_cpu needs from it.
const Tensor& input_tensor(const TensorFile& file, const std::string& name) {
  const Tensor* tensor = file.find(name);
  if (tensor == nullptr) {
    std::string present;
    for (const Tensor& other : file.tensors) present += (present.empty() ? "" : ", ") + other.name;
    detail::fail(file.source.string(), " has no tensor '", name,
                 "'; expected tensors q, k, v of shape [B, N, H, D] (the file holds ",
                 present.empty() ? std::string("no tensors") : present, ")");
  }
  VEDA_CHECK(is_floating(tensor->dtype), name, " has dtype ", dtype_name(tensor->dtype),
             "; expected F32, F16 or BF16");
  VEDA_CHECK(tensor->shape.size() == 4, name, " has shape ", tensor->shape_str(), " (rank ",
             tensor->shape.size(), "); expected rank 4, [B, N, H, D]");
  for (const std::int64_t size : tensor->shape) {
    VEDA_CHECK(size > 0, name, " has shape ", tensor->shape_str(),
               "; expected [B, N, H, D] with every size positive");
  }
  return *tensor;
}

TokensView view_of(const Tensor& tensor) {
  return TokensView::contiguous(tensor.data.data(), tensor.dtype, tensor.shape[0], tensor.shape[1],
                                tensor.shape[2], tensor.shape[3]);
}

// Enough digits to read the value back exactly.
std::string exact(double value) {
  std::ostringstream text;
  text.precision(17);
  text << value;
  return text.str();
}

void run_attention(const AttentionOptions& options) {
  if (options.method == "veda") {
    VedaAttentionOptions veda;
    veda.in = options.in;
    veda.out = options.out;
    veda.profile = options.profile;
    veda.grid = options.grid;
    if (options.sparsity_given) veda.sparsity = options.sparsity;
    if (options.layer >= 0) veda.layer = options.layer;
    veda.no_compare = options.no_compare;
    run_veda_attention(veda);
    return;
  }
  VEDA_CHECK(options.profile.empty(), "--profile applies to --method veda only");
  // Arguments first: a typo should not cost a file read.
  const MaskMethod method = parse_mask_method(options.method);
  VEDA_CHECK(options.sparsity >= 0.0 && options.sparsity < 1.0, "--sparsity ", options.sparsity,
             " is outside [0, 1); expected the fraction of key tiles to skip");
  SparseAttentionConfig config;
  config.method = method;
  config.sparsity = options.sparsity;
  config.tile = TileShape::parse(options.tile);
  if (!options.grid.empty()) config.grid = Grid::parse(options.grid);

  const TensorFile input = read_safetensors(options.in);
  const Tensor& q = input_tensor(input, "q");
  const Tensor& k = input_tensor(input, "k");
  const Tensor& v = input_tensor(input, "v");
  for (const Tensor* other : {&k, &v}) {
    VEDA_CHECK(other->dtype == q.dtype, other->name, " has dtype ", dtype_name(other->dtype),
               " but q has ", dtype_name(q.dtype), "; expected q, k and v of one dtype");
    VEDA_CHECK(other->shape == q.shape, other->name, " has shape ", other->shape_str(),
               " but q has ", q.shape_str(), "; expected q, k and v of one shape [B, N, H, D]");
  }
  const std::int64_t batch = q.shape[0], tokens = q.shape[1], heads = q.shape[2];
  if (options.grid.empty()) config.grid = Grid{1, 1, tokens};
  VEDA_CHECK(config.grid.tokens() == tokens, "grid ", config.grid.str(), " has ",
             config.grid.tokens(), " tokens but q has N = ", tokens);

  const TokensView q_view = view_of(q), k_view = view_of(k), v_view = view_of(v);
  const TimedResult run = run_timed(q_view, k_view, v_view, config);
  std::cout << "veda attention: " << mask_method_name(method) << ", q " << q.shape_str() << " "
            << dtype_name(q.dtype) << ", grid " << config.grid.str() << ", tile "
            << config.tile.str() << ", " << run.seconds << " s\n";
  const double used = run.result.index.sparsity();
  std::cout << "sparsity: requested " << options.sparsity << ", used " << used << "\n";

  if (method != MaskMethod::kDense && !options.no_compare) {
    SparseAttentionConfig dense_config = config;
    dense_config.method = MaskMethod::kDense;
    const TimedResult dense = run_timed(q_view, k_view, v_view, dense_config);
    std::cout << "vs dense: rel-L2 " << relative_l2(run.result.out, dense.result.out) << ", cosine "
              << cosine_similarity(run.result.out, dense.result.out) << " (dense " << dense.seconds
              << " s)\n";
    if (method != MaskMethod::kOracle) {
      SparseAttentionConfig oracle_config = config;
      oracle_config.method = MaskMethod::kOracle;
      const TimedResult oracle = run_timed(q_view, k_view, v_view, oracle_config);
      const auto mass = oracle_tile_mass(q_view, k_view, config);
      std::cout << "vs oracle: tile recall "
                << tile_recall(run.result.index.view(), oracle.result.index.view())
                << ", mass recall " << mean_mass_recall(run.result.index, mass)
                << " (oracle's own: " << mean_mass_recall(oracle.result.index, mass)
                << "), rel-L2 of out " << relative_l2(run.result.out, oracle.result.out) << "\n";
    }
  }

  TensorFile output;
  output.metadata = {{"method", std::string(mask_method_name(method))},
                     {"sparsity", exact(options.sparsity)},
                     {"sparsity_used", exact(used)},
                     {"grid", config.grid.str()},
                     {"tile", config.tile.str()}};
  Tensor out = Tensor::zeros("out", q.dtype, q.shape);
  for (std::size_t n = 0; n < run.result.out.size(); ++n) {
    store_from_float(out.data.data(), q.dtype, static_cast<std::int64_t>(n), run.result.out[n]);
  }
  Tensor lse = Tensor::zeros("lse", DType::kF32, {batch, tokens, heads});
  std::copy(run.result.lse.begin(), run.result.lse.end(), lse.as<float>());
  output.tensors.push_back(std::move(out));
  output.tensors.push_back(std::move(lse));
  write_safetensors(options.out, output);
  std::cout << "wrote " << options.out << ": out " << q.shape_str() << " " << dtype_name(q.dtype)
            << ", lse [" << batch << ", " << tokens << ", " << heads << "] F32\n";
}

}  // namespace

void add_attention_command(CLI::App& app) {
  auto options = std::make_shared<AttentionOptions>();
  CLI::App* command = app.add_subcommand(
      "attention",
      "Sparse attention over tensors q, k, v [B, N, H, D] (F32, F16 or BF16) of a .safetensors "
      "file; writes out [B, N, H, D] in the input dtype and lse [B, N, H] F32");
  command->add_option("--in", options->in, "Input .safetensors with q, k, v")->required();
  command->add_option("--out", options->out, "Output .safetensors (out, lse)")->required();
  command
      ->add_option("--method", options->method, "Tile selection: dense, oracle, meanpool or veda")
      ->capture_default_str();
  command
      ->add_option("--sparsity", options->sparsity,
                   "Fraction of key tiles to skip per query tile, in [0, 1)")
      ->capture_default_str();
  command->add_option("--grid", options->grid,
                      "Latent grid T,H,W of the N tokens, frame-major (default 1,1,N)");
  command->add_option("--tile", options->tile, "Tile shape pt,ph,pw with pt*ph*pw = 128")
      ->capture_default_str();
  command->add_flag("--no-compare", options->no_compare,
                    "Skip the comparison with dense attention and the oracle");
  command->add_option("--profile", options->profile,
                      "Veda profile JSON (from veda calibrate), for --method veda");
  command->add_option("--layer", options->layer,
                      "Layer of the profile for --method veda (default: the input's metadata)");
  CLI::Option* sparsity_option = command->get_option("--sparsity");
  command->callback([options, sparsity_option] {
    options->sparsity_given = sparsity_option->count() > 0;
    run_attention(*options);
  });
}

}  // namespace veda::cli
