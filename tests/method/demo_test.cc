// The demo pipeline on a small clip: every row present and sane, the oracle's own recall 1, the
// JSON rows with the documented keys, both PNGs written (a build without cairo: a clear error).
#include "veda/method/demo.h"

#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "veda/error.h"
#include "veda/method/demo_plots.h"

namespace veda::method {
namespace {

namespace fs = std::filesystem;

DemoConfig small_config() {
  DemoConfig config;
  config.clip.grid = {4, 16, 32};  // 2,048 tokens, 16 tiles
  config.calibration_clips = 2;
  config.sparsities = {0.5, 0.75};
  config.picture_sparsity = 0.75;
  config.calibration.sparsity = 0.75;
  return config;
}

TEST(Demo, RowsPicturesAndJson) {
  const DemoResult result = run_demo(small_config());
  ASSERT_EQ(result.rows.size(), 10u);
  const char* methods[] = {"oracle", "veda", "stats", "meanpool", "window"};
  for (std::size_t i = 0; i < result.rows.size(); ++i) {
    const DemoRow& row = result.rows[i];
    EXPECT_EQ(row.method, methods[i % 5]);
    EXPECT_EQ(row.sparsity, i < 5 ? 0.5 : 0.75);
    EXPECT_GE(row.tile_recall, 0.0);
    EXPECT_LE(row.tile_recall, 1.0);
    EXPECT_GT(row.mass_recall, 0.0);
    EXPECT_LE(row.mass_recall, 1.0 + 1e-6);
    EXPECT_TRUE(std::isfinite(row.rel_l2));
    EXPECT_GT(row.cosine, 0.0);
    EXPECT_GE(row.seconds, 0.0);
    if (row.method == "oracle") {
      EXPECT_DOUBLE_EQ(row.tile_recall, 1.0);
    }
  }
  EXPECT_EQ(result.profile.layers.at(0).heads.size(), 8u);
  EXPECT_EQ(result.picture.tiles, 16);
  EXPECT_EQ(result.picture.oracle.size(), 256u);

  const fs::path dir = fs::temp_directory_path() / "veda_demo_test";
  fs::create_directories(dir);
  const std::string json_path = (dir / "rows.json").string();
  write_demo_json(json_path, result);
  std::ifstream in(json_path);
  const nlohmann::json rows = nlohmann::json::parse(in);
  ASSERT_EQ(rows.size(), 10u);
  for (const auto& row : rows) {
    for (const char* key :
         {"method", "sparsity", "tile_recall", "mass_recall", "rel_l2", "cosine", "seconds"}) {
      EXPECT_TRUE(row.contains(key)) << key;
    }
    EXPECT_EQ(row.size(), 7u);
  }
  if (!demo_plots_available()) {  // a build without cairo: no pictures, a clear error
    EXPECT_THROW(write_tile_heat_png((dir / "heat.png").string(), result.picture), Error);
    EXPECT_THROW(write_rel_l2_plot((dir / "plot.png").string(), result), Error);
    fs::remove_all(dir);
    return;
  }
  for (const std::string name : {"heat.png", "plot.png"}) {
    const std::string path = (dir / name).string();
    if (name == "heat.png") {
      write_tile_heat_png(path, result.picture);
    } else {
      write_rel_l2_plot(path, result);
    }
    std::ifstream png(path, std::ios::binary);
    char signature[8] = {};
    png.read(signature, 8);
    EXPECT_EQ(std::string(signature + 1, 3), "PNG") << path;
  }
  EXPECT_THROW(write_tile_heat_png((dir / "missing" / "x.png").string(), result.picture), Error);
  fs::remove_all(dir);
}

TEST(Demo, RejectsEqualSeedsAndBadSparsity) {
  DemoConfig config = small_config();
  config.evaluation_seed = config.calibration_seed;
  EXPECT_THROW(run_demo(config), Error);
  config = small_config();
  config.sparsities = {1.0};
  EXPECT_THROW(run_demo(config), Error);
}

}  // namespace
}  // namespace veda::method
