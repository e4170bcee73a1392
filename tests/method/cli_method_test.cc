// The method's subcommands of the `veda` binary end to end: calibrate on captured files, apply
// the profile with `attention --method veda`, the demo on a small grid, and every bad input
// answered by a non-zero exit, one "veda: error:" line and no output file.
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <nlohmann/json.hpp>
#include <string>

#include "../cli_runner.h"
#include "veda/method/demo_plots.h"
#include "veda/method/oracle_backend.h"
#include "veda/method/profile.h"
#include "veda/method/synthetic_video.h"
#include "veda/safetensors.h"

namespace veda::method {
namespace {

namespace fs = std::filesystem;

using veda::testing::CommandResult;
using veda::testing::read_text;

class MethodCli : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() /
           (std::string("veda_method_cli_") +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }

  std::string file(const std::string& name) const { return (dir_ / name).string(); }

  CommandResult run(const std::string& arguments) const {
    return veda::testing::run_veda(arguments, dir_);
  }

  // A captured layer: q, k, v [1, N, 8, 128] BF16 of a synthetic clip, grid and layer in the
  // metadata (omitted when empty).
  void write_sample(const std::string& name, std::uint64_t seed, const std::string& grid_text,
                    const std::string& layer = "0") const {
    SyntheticVideoConfig config;
    config.grid = {2, 16, 16};
    config.seed = seed;
    const SyntheticVideo video = generate_synthetic_video(config);
    TensorFile tensors;
    if (!grid_text.empty()) tensors.metadata["grid"] = grid_text;
    if (!layer.empty()) tensors.metadata["layer"] = layer;
    const std::vector<std::int64_t> shape = {1, config.grid.tokens(), 8, 128};
    for (const auto& [tensor_name, values] :
         {std::pair{"q", &video.q}, std::pair{"k", &video.k}, std::pair{"v", &video.v}}) {
      Tensor tensor = Tensor::zeros(tensor_name, DType::kBF16, shape);
      for (std::size_t i = 0; i < values->size(); ++i) {
        store_from_float(tensor.data.data(), DType::kBF16, static_cast<std::int64_t>(i),
                         (*values)[i]);
      }
      tensors.tensors.push_back(std::move(tensor));
    }
    write_safetensors(file(name), tensors);
  }

  void expect_failure(const CommandResult& result, const std::string& needle,
                      const std::string& absent_output) const {
    EXPECT_NE(result.exit_code, 0);
    EXPECT_EQ(result.err.rfind("veda: error: ", 0), 0u) << result.err;
    EXPECT_NE(result.err.find(needle), std::string::npos) << result.err;
    EXPECT_FALSE(fs::exists(absent_output)) << absent_output;
  }

  fs::path dir_;
};

TEST_F(MethodCli, CalibrateThenAttention) {
  write_sample("a.safetensors", 1, "2x16x16");
  write_sample("b.safetensors", 2, "2,16,16");
  const CommandResult calibrate =
      run("calibrate --in " + file("a.safetensors") + " " + file("b.safetensors") +
          " --sparsity 0.5 --max-shapes 2 --out " + file("profile.json"));
  ASSERT_EQ(calibrate.exit_code, 0) << calibrate.err;
  EXPECT_TRUE(fs::exists(file("profile.estimator.safetensors")));
  const Profile profile = read_profile(file("profile.json"));
  ASSERT_EQ(profile.layer(0).heads.size(), 8u);
  EXPECT_EQ(profile.layer(0).heads[3].sparsity, 0.5);

  const CommandResult attention =
      run("attention --in " + file("a.safetensors") + " --out " + file("out.safetensors") +
          " --method veda --profile " + file("profile.json"));
  ASSERT_EQ(attention.exit_code, 0) << attention.err;
  EXPECT_NE(attention.out.find("tile recall"), std::string::npos) << attention.out;
  const TensorFile out = read_safetensors(file("out.safetensors"));
  EXPECT_EQ(out.at("out").shape_str(), "[1, 512, 8, 128]");
  EXPECT_EQ(out.at("out").dtype, DType::kBF16);
  EXPECT_EQ(out.at("lse").shape_str(), "[1, 512, 8]");
  EXPECT_EQ(out.metadata.at("method"), "veda");
}

TEST_F(MethodCli, CalibrateDeviceOptionAndOracleTiming) {
  write_sample("a.safetensors", 1, "2x16x16");
  const std::string in = "calibrate --in " + file("a.safetensors") + " --steps 5 ";
  const CommandResult cpu = run(in + "--device cpu --out " + file("cpu.json"));
  ASSERT_EQ(cpu.exit_code, 0) << cpu.err;
  EXPECT_NE(cpu.out.find("oracle on cpu"), std::string::npos) << cpu.out;
  EXPECT_NE(cpu.out.find("oracle phase"), std::string::npos) << cpu.out;
  expect_failure(run(in + "--device gpu --out " + file("gpu.json")),
                 "--device 'gpu' is not known; expected auto, cpu or cuda", file("gpu.json"));

  const OracleDevices devices = available_oracle_devices();
  const CommandResult automatic = run(in + "--out " + file("auto.json"));
  ASSERT_EQ(automatic.exit_code, 0) << automatic.err;
  if (devices.gpus == 0) {
    // CI: auto runs the CPU oracle; cuda is an error naming what was asked and what there is.
    EXPECT_NE(automatic.out.find("oracle on cpu"), std::string::npos) << automatic.out;
    expect_failure(run(in + "--device cuda --out " + file("cuda.json")), "--device cuda",
                   file("cuda.json"));
    const CommandResult cuda = run(in + "--device cuda --out " + file("cuda.json"));
    EXPECT_NE(cuda.err.find("available: cpu"), std::string::npos) << cuda.err;
  } else {
    EXPECT_NE(automatic.out.find("oracle on cuda"), std::string::npos) << automatic.out;
    const CommandResult cuda = run(in + "--device cuda --out " + file("cuda.json"));
    ASSERT_EQ(cuda.exit_code, 0) << cuda.err;
    EXPECT_NE(cuda.out.find("oracle phase"), std::string::npos) << cuda.out;
  }
}

TEST_F(MethodCli, CalibrateReadsLayerByLayerAfterCheckingEveryHeader) {
  write_sample("layer1.safetensors", 1, "2x16x16", "1");
  write_sample("layer0.safetensors", 2, "2x16x16", "0");
  const CommandResult two = run("calibrate --in " + file("layer1.safetensors") + " " +
                                file("layer0.safetensors") + " --steps 5 --out " + file("p.json"));
  ASSERT_EQ(two.exit_code, 0) << two.err;
  const Profile profile = read_profile(file("p.json"));
  EXPECT_EQ(profile.layer(0).heads.size(), 8u);
  EXPECT_EQ(profile.layer(1).heads.size(), 8u);
  EXPECT_LT(two.out.find("layer 0:"), two.out.find("layer 1:")) << two.out;
  // A bad file of a later layer stops the command before any layer is calibrated.
  write_sample("bad.safetensors", 3, "", "2");
  const CommandResult bad = run("calibrate --in " + file("layer0.safetensors") + " " +
                                file("bad.safetensors") + " --out " + file("q.json"));
  expect_failure(bad, "bad.safetensors: no \"grid\" in the metadata", file("q.json"));
  EXPECT_EQ(bad.out.find("layer 0:"), std::string::npos) << bad.out;
}

TEST_F(MethodCli, CalibrateRejectsSampleWithoutGrid) {
  write_sample("a.safetensors", 1, "");
  expect_failure(run("calibrate --in " + file("a.safetensors") + " --out " + file("p.json")),
                 "no \"grid\" in the metadata", file("p.json"));
}

TEST_F(MethodCli, CalibrateRejectsBadSparsityAndMissingFile) {
  write_sample("a.safetensors", 1, "2x16x16");
  expect_failure(
      run("calibrate --in " + file("a.safetensors") + " --sparsity 1 --out " + file("p.json")),
      "--sparsity 1", file("p.json"));
  expect_failure(run("calibrate --in " + file("missing.safetensors") + " --out " + file("p.json")),
                 "missing.safetensors", file("p.json"));
}

TEST_F(MethodCli, OutputDirectoriesAreCheckedBeforeAnyWork) {
  write_sample("a.safetensors", 1, "2x16x16");
  expect_failure(
      run("calibrate --in " + file("a.safetensors") + " --out " + file("missing/p.json")),
      "does not exist", file("missing/p.json"));
  expect_failure(run("demo --json " + file("missing/rows.json")), "does not exist",
                 file("missing/rows.json"));
}

TEST_F(MethodCli, AttentionRejectsMissingOrMismatchedProfile) {
  write_sample("a.safetensors", 1, "2x16x16");
  expect_failure(run("attention --in " + file("a.safetensors") + " --out " +
                     file("out.safetensors") + " --method veda"),
                 "--profile", file("out.safetensors"));
  // A profile of another head count.
  Profile profile;
  profile.head_dim = 128;
  LayerProfile layer;
  HeadProfile head;
  head.estimator = EstimatorParams::zeros(128);
  layer.heads = {head, head};
  profile.layers.push_back(layer);
  write_profile(file("two_heads.json"), profile);
  expect_failure(
      run("attention --in " + file("a.safetensors") + " --out " + file("out.safetensors") +
          " --method veda --profile " + file("two_heads.json")),
      "has 2", file("out.safetensors"));
  // A corrupted one.
  std::ofstream(file("broken.json")) << "{\"format\": \"veda-profile\", \"version\": 99}";
  expect_failure(run("attention --in " + file("a.safetensors") + " --out " +
                     file("out.safetensors") + " --method veda --profile " + file("broken.json")),
                 "version 99 is unknown", file("out.safetensors"));
}

TEST_F(MethodCli, DemoOnSmallGridWritesJsonAndPictures) {
  const CommandResult demo =
      run("demo --grid 4x16x32 --clips 2 --json " + file("rows.json") + " --heat-png " +
          file("heat.png") + " --plot-png " + file("plot.png"));
  ASSERT_EQ(demo.exit_code, 0) << demo.err;
  std::ifstream in(file("rows.json"));
  const nlohmann::json rows = nlohmann::json::parse(in);
  EXPECT_EQ(rows.size(), 15u);
  // Builds without cairo write no pictures and say so.
  EXPECT_EQ(fs::exists(file("heat.png")), demo_plots_available());
  EXPECT_EQ(fs::exists(file("plot.png")), demo_plots_available());
  if (!demo_plots_available()) {
    EXPECT_NE(demo.out.find("built without cairo"), std::string::npos) << demo.out;
  }
  for (const char* sparsity : {"sparsity 80%", "sparsity 90%", "sparsity 95%"}) {
    EXPECT_NE(demo.out.find(sparsity), std::string::npos) << demo.out;
  }
}

TEST_F(MethodCli, DemoRejectsEqualSeeds) {
  expect_failure(run("demo --grid 4x16x32 --calibration-seed 3 --evaluation-seed 3 --json " +
                     file("rows.json")),
                 "seed", file("rows.json"));
}

}  // namespace
}  // namespace veda::method
