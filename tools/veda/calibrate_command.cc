// `veda calibrate --in SAMPLES... --sparsity S --out PROFILE.json`
//
// Reads captured q, k, v [B, N, H, D] per layer (grid and layer in each file's __metadata__, see
// veda/method/sample_file.h), runs the head-aware tile search and the distillation of every head's
// estimator per layer (veda/method/calibration.h), and writes the profile JSON with the estimator
// parameters in PROFILE.estimator.safetensors beside it. Every file's header is read and checked
// before any work (its elements' finiteness when its layer is read); one layer's files are in
// memory at a time; files are written only at the end, atomically. The oracle work (lse, tile heat
// and mass per candidate shape, dense and masked outputs) runs on the GPU when one is present
// (--device auto|cpu|cuda, veda/method/oracle_backend.h); each layer's line says how long it took.
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <iostream>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "commands.h"
#include "veda/error.h"
#include "veda/method/calibration.h"
#include "veda/method/oracle_backend.h"
#include "veda/method/profile.h"
#include "veda/method/progress_bar.h"
#include "veda/method/sample_file.h"
#include "veda/method/tiling_search.h"

namespace veda::cli {
namespace {

struct CalibrateOptions {
  std::vector<std::string> in;
  std::string out;
  double sparsity = 0.9;
  std::string grid;
  std::string model = "unnamed";
  int max_shapes = 0;
  int search_samples = 1;
  std::string structure = "diagonal";
  int steps = 300;
  double learning_rate = 1e-2;
  double weight_decay = 1e-2;
  std::string teacher = "heat";
  std::string search = "oracle";
  double temperature = 1.0;
  double threshold = 0.0;  // 0: fixed budget only
  std::string device = "auto";
};

void run_calibrate(const CalibrateOptions& options) {
  VEDA_CHECK(options.sparsity >= 0 && options.sparsity < 1, "--sparsity ", options.sparsity,
             " is outside [0, 1); expected the fraction of key tiles to skip");
  VEDA_CHECK(options.search == "oracle" || options.search == "estimator", "--search '",
             options.search, "' is not known; expected oracle or estimator");
  VEDA_CHECK(options.teacher == "heat" || options.teacher == "mass", "--teacher '", options.teacher,
             "' is not known; expected heat or mass");
  VEDA_CHECK(
      options.structure == "auto" || options.structure == "diagonal" || options.structure == "full",
      "--structure '", options.structure, "' is not known; expected auto, diagonal or full");
  VEDA_CHECK(options.max_shapes >= 0 && options.search_samples >= 0 && options.steps >= 0,
             "--max-shapes, --search-samples and --steps must not be negative");
  VEDA_CHECK(options.threshold >= 0 && options.threshold <= 1, "--threshold ", options.threshold,
             " is outside [0, 1]; expected a cumulative mass (0 for the fixed budget only)");
  VEDA_CHECK(options.temperature > 0 && options.learning_rate > 0 && options.weight_decay >= 0,
             "--temperature and --learning-rate must be positive, "
             "--weight-decay not negative");
  VEDA_CHECK(options.device == "auto" || options.device == "cpu" || options.device == "cuda",
             "--device '", options.device, "' is not known; expected auto, cpu or cuda");
  const method::OracleDevice requested = method::parse_oracle_device(options.device);
  std::optional<Grid> grid;
  if (!options.grid.empty()) grid = Grid::parse(options.grid);
  const std::filesystem::path out_dir = std::filesystem::path(options.out).parent_path();
  VEDA_CHECK(out_dir.empty() || std::filesystem::is_directory(out_dir), "--out ", options.out,
             ": directory ", out_dir.string(), " does not exist");

  // Every file's header is checked before any work, and the files grouped by layer (metadata
  // "layer", default 0) in command-line order; then one layer's samples at a time are held in
  // memory (a Wan2.1-14B 720p capture is 2.3 GB: a model's captures rarely fit at once).
  std::map<std::int64_t, std::vector<std::string>> layers;
  std::int64_t head_dim = 0;
  for (const std::string& path : options.in) {
    const method::SampleFile header = method::read_sample_header(path, grid);
    if (head_dim == 0) head_dim = header.q.dim;
    VEDA_CHECK(header.q.dim == head_dim, path, ": head dim ", header.q.dim, " but ",
               options.in.front(), " has ", head_dim, "; a profile has one head dim");
    layers[header.layer.value_or(0)].push_back(path);
  }
  // The oracle's device, decided (and a GPU asked for but missing reported) before any work.
  const method::OracleDeviceChoice device =
      method::resolve_oracle_device(requested, method::available_oracle_devices(), head_dim);
  const std::unique_ptr<method::OracleBackend> backend = method::make_oracle_backend(device.device);
  std::cout << "oracle on " << backend->name() << " (--device " << options.device << ": "
            << device.reason << ")\n";

  method::CalibrationConfig config;
  config.sparsity = options.sparsity;
  config.max_shapes_per_layer = options.max_shapes;
  config.search_samples = options.search_samples;
  config.temperature = options.temperature;
  config.search = options.search == "estimator" ? method::CalibrationConfig::Search::kEstimatorMask
                                                : method::CalibrationConfig::Search::kOracleMask;
  config.teacher = options.teacher == "mass" ? method::CalibrationConfig::Teacher::kMass
                                             : method::CalibrationConfig::Teacher::kHeat;
  if (options.structure == "auto") {
    config.distill.structures = {method::ProjectionStructure::kDiagonal,
                                 method::ProjectionStructure::kFull};
  } else if (options.structure == "full") {
    config.distill.structures = {method::ProjectionStructure::kFull};
  }
  config.distill.max_steps = options.steps;
  config.distill.learning_rate = options.learning_rate;
  config.distill.weight_decay = options.weight_decay;

  method::Profile profile;
  profile.model = options.model;
  profile.head_dim = head_dim;
  method::ProgressBar bar(std::cerr, isatty(STDERR_FILENO) != 0);
  std::cout.flush();
  using Clock = std::chrono::steady_clock;
  const auto start = Clock::now();
  for (const auto& [layer, paths] : layers) {
    std::vector<method::SampleFile> files;
    files.reserve(paths.size());
    std::vector<method::CalibrationSample> samples;
    for (const std::string& path : paths) {
      files.push_back(method::read_sample_file(path, grid));
      const method::SampleFile& file = files.back();
      samples.push_back({file.grid, file.q, file.k, file.v});
    }
    std::cout << "layer " << layer << ": " << samples.size() << " sample file(s)\n";
    std::cout.flush();
    const auto layer_start = Clock::now();
    const double oracle_before = backend->seconds();
    method::LayerProfile calibrated = method::calibrate_layer(
        samples, config,
        [&](std::string_view stage, std::int64_t done, std::int64_t total) {
          bar(stage, done, total);
        },
        backend.get());
    const double layer_seconds = std::chrono::duration<double>(Clock::now() - layer_start).count();
    const double oracle_seconds = backend->seconds() - oracle_before;
    calibrated.layer = layer;
    if (options.threshold > 0) {
      for (method::HeadProfile& head : calibrated.heads) head.threshold = options.threshold;
    }
    for (std::size_t h = 0; h < calibrated.heads.size(); ++h) {
      const method::HeadProfile& head = calibrated.heads[h];
      std::printf("  head %zu: tile %-6s %s\n", h, head.tile.str().c_str(),
                  method::describe_distillation(head).c_str());
    }
    if (options.search_samples > 0 || options.search == "estimator") {
      const method::TilingSummary tiling = method::summarize_tiling(calibrated);
      std::printf(
          "  tile search: %s-mask rel-MSE %.4f head-aware vs %.4f for the best single shape "
          "(%s)\n",
          options.search.c_str(), tiling.head_aware, tiling.best_single,
          tiling.best_single_shape.c_str());
    }
    std::printf("  oracle phase %.1f s on %s; distillation and the rest %.1f s\n", oracle_seconds,
                backend->name().c_str(), layer_seconds - oracle_seconds);
    profile.layers.push_back(std::move(calibrated));
  }
  std::printf("oracle phase %.1f s on %s, of %.1f s of calibration\n", backend->seconds(),
              backend->name().c_str(), std::chrono::duration<double>(Clock::now() - start).count());
  method::write_profile(options.out, profile);
  std::cout << "wrote " << options.out << " (estimator parameters in "
            << std::filesystem::path(options.out).stem().string() << ".estimator.safetensors)\n";
}

}  // namespace

void add_calibrate_command(CLI::App& app) {
  auto options = std::make_shared<CalibrateOptions>();
  CLI::App* command =
      app.add_subcommand("calibrate",
                         "Fit a Veda profile (tile shape and distilled estimator per layer/head) "
                         "on captured q, k, v "
                         "[B, N, H, D] files with the grid (and layer) in their metadata");
  command->add_option("--in", options->in, "Captured .safetensors files (q, k, v)")
      ->required()
      ->expected(1, -1);
  command->add_option("--out", options->out, "Profile JSON to write")->required();
  command->add_option("--sparsity", options->sparsity, "Target sparsity in [0, 1)")
      ->capture_default_str();
  command->add_option("--grid", options->grid, "Latent grid T,H,W (overrides the metadata)");
  command->add_option("--model", options->model, "Model name recorded in the profile")
      ->capture_default_str();
  command
      ->add_option("--max-shapes", options->max_shapes,
                   "At most this many tile shapes per layer (0: no limit)")
      ->capture_default_str();
  command
      ->add_option("--search-samples", options->search_samples,
                   "Samples on which the tile search measures output error")
      ->capture_default_str();
  command
      ->add_option("--structure", options->structure,
                   "Trained entries of P: diagonal (768 per head), full (2*3D*D), or auto: both "
                   "fitted, the lower held-out KL kept per head (for captures at the grid you "
                   "generate at: a full P can transfer worse to other grids, and costs the GPU "
                   "front end a tensor-core projection)")
      ->capture_default_str();
  command->add_option("--steps", options->steps, "Most Adam steps per head")->capture_default_str();
  command->add_option("--learning-rate", options->learning_rate, "Adam learning rate")
      ->capture_default_str();
  command->add_option("--weight-decay", options->weight_decay, "Decoupled weight decay")
      ->capture_default_str();
  command
      ->add_option("--temperature", options->temperature,
                   "Teacher = softmax(log heat / temperature) per row")
      ->capture_default_str();
  command
      ->add_option("--search", options->search,
                   "Tile search by the output error of the oracle mask (DESIGN.md) or of the "
                   "estimator distilled in each shape, on the last (held-out) sample")
      ->capture_default_str();
  command
      ->add_option("--teacher", options->teacher,
                   "Teacher map: heat (the oracle tile heat, as the paper) or mass")
      ->capture_default_str();
  command
      ->add_option("--threshold", options->threshold,
                   "Select by cumulative estimated mass instead of a fixed budget (the budget of "
                   "--sparsity stays the cap); 0: fixed budget")
      ->capture_default_str();
  command
      ->add_option("--device", options->device,
                   "Where the oracle work runs: auto (cuda when a GPU is present), cpu or cuda")
      ->capture_default_str();
  command->callback([options] { run_calibrate(*options); });
}

}  // namespace veda::cli
