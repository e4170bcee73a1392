// `veda demo [--json FILE] [--heat-png FILE] [--plot-png FILE] [--profile-out FILE] [--grid T,H,W]
//  [--calibration-seed S] [--evaluation-seed S] [--clips N] [--per-head]
//  [--search oracle|estimator]`
//
// The Veda method end to end on the embedded synthetic clip (veda/method/synthetic_video.h):
// calibrates a profile on clips of one seed, evaluates oracle / veda / stats / meanpool / window
// on a clip of another seed at 80, 90 and 95 % sparsity, prints one table per sparsity, and writes
// the heat picture and the rel-L2 plot (veda/method/demo.h says what each row means; builds
// without cairo say that they write no pictures).
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <iostream>
#include <memory>
#include <string>

#include "commands.h"
#include "veda/error.h"
#include "veda/method/demo.h"
#include "veda/method/demo_plots.h"
#include "veda/method/progress_bar.h"
#include "veda/method/tiling_search.h"

namespace veda::cli {
namespace {

struct DemoOptions {
  std::string json;
  std::string heat_png = "veda-demo-heat.png";
  std::string plot_png = "veda-demo-rel-l2.png";
  std::string profile_out;
  std::string grid;
  std::uint64_t calibration_seed = 1;
  std::uint64_t evaluation_seed = 2;
  int clips = 3;
  bool per_head = false;
  std::string search = "oracle";
};

void run_demo_command(const DemoOptions& options) {
  method::DemoConfig config;
  if (!options.grid.empty()) config.clip.grid = Grid::parse(options.grid);
  config.calibration_seed = options.calibration_seed;
  config.evaluation_seed = options.evaluation_seed;
  config.calibration_clips = options.clips;
  VEDA_CHECK(options.search == "oracle" || options.search == "estimator", "--search '",
             options.search, "' is not known; expected oracle or estimator");
  if (options.search == "estimator") {
    config.calibration.search = method::CalibrationConfig::Search::kEstimatorMask;
  }
  VEDA_CHECK(options.clips >= 1, "--clips ", options.clips, "; expected at least 1");
  for (const std::string* path :
       {&options.json, &options.heat_png, &options.plot_png, &options.profile_out}) {
    const std::filesystem::path dir = std::filesystem::path(*path).parent_path();
    VEDA_CHECK(path->empty() || dir.empty() || std::filesystem::is_directory(dir), "output ", *path,
               ": directory ", dir.string(), " does not exist");
  }

  const Grid grid = config.clip.grid;
  std::cout << "veda demo: synthetic clip " << grid.str() << " (" << grid.tokens() << " tokens, "
            << tile_count(grid.tokens()) << " tiles of 128), " << config.clip.heads.size()
            << " heads, D = " << config.clip.dim << "\n"
            << "calibration: " << options.clips << " clip(s) of seed " << options.calibration_seed
            << " (the last held out), tile search at sparsity " << config.calibration.sparsity
            << "; evaluation: a clip of seed " << options.evaluation_seed << "\n";
  method::ProgressBar bar(std::cerr, isatty(STDERR_FILENO) != 0);
  const method::DemoResult result =
      method::run_demo(config, [&](std::string_view stage, std::int64_t done, std::int64_t total) {
        bar(stage, done, total);
      });

  std::printf("\ncalibrated in %.1f s:\n", result.calibration_seconds);
  const method::LayerProfile& layer = result.profile.layers.front();
  for (std::size_t h = 0; h < layer.heads.size(); ++h) {
    const method::HeadProfile& head = layer.heads[h];
    std::printf("  head %zu %-15s tile %-6s %s\n", h,
                std::string(method::head_kind_name(result.kinds[h])).c_str(),
                head.tile.str().c_str(), method::describe_distillation(head).c_str());
  }
  const method::TilingSummary tiling = method::summarize_tiling(layer);
  std::printf(
      "  tile search at %.0f%%: %s-mask rel-MSE %.4f head-aware vs %.4f for the best single "
      "shape (%s)\n",
      config.calibration.sparsity * 100, options.search.c_str(), tiling.head_aware,
      tiling.best_single, tiling.best_single_shape.c_str());
  std::cout << "\nrecalls vs the oracle of the same tiling and sparsity; "
               "rel-L2 and cosine of the "
               "layer output vs dense\n(oracle, veda, stats: head-aware tiles; "
               "meanpool, window: "
               "4x4x8)\n"
            << method::format_demo_tables(result) << "\n";
  if (options.per_head) {
    for (double sparsity : {0.9, 0.95}) std::cout << method::format_demo_heads(result, sparsity);
    std::cout << "\n";
  }

  if (!options.json.empty()) {
    method::write_demo_json(options.json, result);
    std::cout << "wrote " << options.json << "\n";
  }
  if (!method::demo_plots_available()) {
    if (!options.heat_png.empty() || !options.plot_png.empty()) {
      std::cout << "no PNG pictures written: this veda was built without cairo (install cairo "
                   "and rebuild for --heat-png and --plot-png)\n";
    }
  } else {
    if (!options.heat_png.empty()) {
      method::write_tile_heat_png(options.heat_png, result.picture);
      std::cout << "wrote " << options.heat_png << " (" << result.picture.caption << ")\n";
    }
    if (!options.plot_png.empty()) {
      method::write_rel_l2_plot(options.plot_png, result);
      std::cout << "wrote " << options.plot_png << "\n";
    }
  }
  if (!options.profile_out.empty()) {
    method::write_profile(options.profile_out, result.profile);
    std::cout << "wrote " << options.profile_out << "\n";
  }
}

}  // namespace

void add_demo_command(CLI::App& app) {
  auto options = std::make_shared<DemoOptions>();
  CLI::App* command =
      app.add_subcommand("demo",
                         "Veda end to end on the embedded synthetic clip: calibrate, then "
                         "compare oracle, veda, "
                         "stats, meanpool and window masks at 80/90/95% sparsity");
  command->add_option("--json", options->json, "Write the table rows as a JSON list");
  command
      ->add_option("--heat-png", options->heat_png,
                   "PNG of one head's tile heat with the oracle and Veda masks "
                   "('' to skip)")
      ->capture_default_str();
  command
      ->add_option("--plot-png", options->plot_png,
                   "PNG plot of rel-L2 against sparsity per method ('' to skip)")
      ->capture_default_str();
  command->add_option("--profile-out", options->profile_out,
                      "Also write the calibrated profile (JSON + .estimator.safetensors)");
  command->add_option("--grid", options->grid, "Clip grid T,H,W")->capture_default_str();
  command
      ->add_option("--calibration-seed", options->calibration_seed, "Seed of the calibration clips")
      ->capture_default_str();
  command->add_option("--evaluation-seed", options->evaluation_seed, "Seed of the evaluation clip")
      ->capture_default_str();
  command->add_option("--clips", options->clips, "Calibration clips (the last is held out)")
      ->capture_default_str();
  command->add_flag("--per-head", options->per_head,
                    "Also print rel-L2 and tile recall per head at 90 and 95%");
  command
      ->add_option("--search", options->search,
                   "Tile search by the oracle mask's output error (DESIGN.md) or by the "
                   "distilled estimator's, on the held-out calibration clip")
      ->capture_default_str();
  command->callback([options] { run_demo_command(*options); });
}

}  // namespace veda::cli
