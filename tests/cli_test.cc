// The `veda` binary end to end: results against an independent float64 attention, and every bad
// input answered by a non-zero exit, one "veda: error:" line on stderr and no output file.
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "cli_runner.h"
#include "veda/dtype.h"
#include "veda/safetensors.h"

namespace veda {
namespace {

namespace fs = std::filesystem;

using testing::CommandResult;
using testing::quoted;
using testing::read_text;

// Shape and sizes of the test input: grid 3x10x10 = 300 tokens, tiles 1x8x16 -> 3 tiles.
constexpr std::int64_t kBatch = 1, kTokens = 300, kHeads = 2, kDim = 32;
const std::vector<std::int64_t> kShape = {kBatch, kTokens, kHeads, kDim};
constexpr const char* kGridTile = "--grid 3x10x10 --tile 1x8x16";

// q, k, v as the CLI sees them (already rounded to the file's dtype), [B, N, H, D].
struct Inputs {
  std::vector<float> q, k, v;
};

Tensor encode(const std::string& name, DType dtype, const std::vector<std::int64_t>& shape,
              std::vector<float>& values) {
  Tensor tensor = Tensor::zeros(name, dtype, shape);
  for (std::size_t n = 0; n < values.size(); ++n) {
    store_from_float(tensor.data.data(), dtype, static_cast<std::int64_t>(n), values[n]);
    values[n] = load_as_float(tensor.data.data(), dtype, static_cast<std::int64_t>(n));
  }
  return tensor;
}

std::vector<float> random_values(std::size_t count, std::mt19937& random) {
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<float> values(count);
  for (float& value : values) value = normal(random);
  return values;
}

Inputs make_inputs(DType dtype, TensorFile& file) {
  std::mt19937 random(7);
  const auto count = static_cast<std::size_t>(kBatch * kTokens * kHeads * kDim);
  Inputs inputs{random_values(count, random), random_values(count, random),
                random_values(count, random)};
  // Larger q sharpens the softmax so that the result depends on more than the mean of v.
  for (float& value : inputs.q) value *= 2.0f;
  file.tensors.push_back(encode("q", dtype, kShape, inputs.q));
  file.tensors.push_back(encode("k", dtype, kShape, inputs.k));
  file.tensors.push_back(encode("v", dtype, kShape, inputs.v));
  return inputs;
}

// Dense attention in float64: out [B, N, H, D], lse [B, N, H].
void reference_attention(const Inputs& inputs, std::vector<double>& out, std::vector<double>& lse) {
  const double scale = 1.0 / std::sqrt(static_cast<double>(kDim));
  out.assign(inputs.q.size(), 0.0);
  lse.assign(static_cast<std::size_t>(kBatch * kTokens * kHeads), 0.0);
  std::vector<double> logits(static_cast<std::size_t>(kTokens));
  const auto at = [](std::int64_t b, std::int64_t n, std::int64_t h) {
    return static_cast<std::size_t>(((b * kTokens + n) * kHeads + h) * kDim);
  };
  for (std::int64_t b = 0; b < kBatch; ++b) {
    for (std::int64_t h = 0; h < kHeads; ++h) {
      for (std::int64_t r = 0; r < kTokens; ++r) {
        double peak = -std::numeric_limits<double>::infinity();
        for (std::int64_t c = 0; c < kTokens; ++c) {
          double dot = 0.0;
          for (std::int64_t d = 0; d < kDim; ++d) {
            dot += static_cast<double>(inputs.q[at(b, r, h) + d]) * inputs.k[at(b, c, h) + d];
          }
          logits[c] = scale * dot;
          peak = std::max(peak, logits[c]);
        }
        double sum = 0.0;
        for (double& logit : logits) sum += (logit = std::exp(logit - peak));
        for (std::int64_t c = 0; c < kTokens; ++c) {
          for (std::int64_t d = 0; d < kDim; ++d) {
            out[at(b, r, h) + d] += logits[c] / sum * inputs.v[at(b, c, h) + d];
          }
        }
        lse[static_cast<std::size_t>((b * kTokens + r) * kHeads + h)] = peak + std::log(sum);
      }
    }
  }
}

std::vector<float> decode(const Tensor& tensor) {
  std::vector<float> values(static_cast<std::size_t>(tensor.numel()));
  for (std::size_t n = 0; n < values.size(); ++n) {
    values[n] = load_as_float(tensor.data.data(), tensor.dtype, static_cast<std::int64_t>(n));
  }
  return values;
}

double relative_error(const std::vector<float>& x, const std::vector<double>& ref) {
  double error = 0.0, norm = 0.0;
  for (std::size_t n = 0; n < ref.size(); ++n) {
    error += (x[n] - ref[n]) * (x[n] - ref[n]);
    norm += ref[n] * ref[n];
  }
  return std::sqrt(error / norm);
}

class CliTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    dir_ =
        fs::temp_directory_path() / ("veda_cli_" + std::to_string(::getpid()) + "_" + info->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }

  fs::path file(const std::string& name) const { return dir_ / name; }

  // Runs `veda ARGS`, capturing stdout and stderr.
  CommandResult veda(const std::string& args) const { return testing::run_veda(args, dir_); }

  // Writes an f32/f16/bf16 input file "qkv.safetensors" and returns its values.
  Inputs write_inputs(DType dtype) const {
    TensorFile tensors;
    Inputs inputs = make_inputs(dtype, tensors);
    write_safetensors(file("qkv.safetensors"), tensors);
    return inputs;
  }

  std::string attention(const std::string& options) const {
    return "attention --in " + quoted(file("qkv.safetensors")) + " --out " +
           quoted(file("out.safetensors")) + " " + options;
  }

  // The run failed with exactly one stderr line containing `expected` and wrote no output.
  void expect_failure(const CommandResult& result, const std::string& expected) const {
    EXPECT_NE(result.exit_code, 0);
    EXPECT_EQ(result.err.rfind("veda: error: ", 0), 0u) << result.err;
    EXPECT_NE(result.err.find(expected), std::string::npos)
        << "expected '" << expected << "' in: " << result.err;
    EXPECT_EQ(std::count(result.err.begin(), result.err.end(), '\n'), 1) << result.err;
    EXPECT_FALSE(fs::exists(file("out.safetensors")));
  }

  fs::path dir_;
};

TEST_F(CliTest, DenseAttentionMatchesFloat64Reference) {
  const Inputs inputs = write_inputs(DType::kF32);
  const CommandResult result = veda(attention(kGridTile));
  ASSERT_EQ(result.exit_code, 0) << result.err;
  EXPECT_NE(result.out.find("used 0"), std::string::npos) << result.out;

  std::vector<double> out, lse;
  reference_attention(inputs, out, lse);
  const TensorFile output = read_safetensors(file("out.safetensors"));
  const Tensor& out_tensor = output.at("out");
  const Tensor& lse_tensor = output.at("lse");
  EXPECT_EQ(out_tensor.dtype, DType::kF32);
  EXPECT_EQ(out_tensor.shape, kShape);
  EXPECT_EQ(lse_tensor.dtype, DType::kF32);
  EXPECT_EQ(lse_tensor.shape, (std::vector<std::int64_t>{kBatch, kTokens, kHeads}));
  EXPECT_LT(relative_error(decode(out_tensor), out), 1e-5);
  const std::vector<float> lse_values = decode(lse_tensor);
  for (std::size_t n = 0; n < lse.size(); ++n) {
    ASSERT_NEAR(lse_values[n], lse[n], 1e-5 * std::max(1.0, std::abs(lse[n]))) << "row " << n;
  }
  EXPECT_EQ(output.metadata.at("method"), "dense");
  EXPECT_EQ(output.metadata.at("grid"), "3x10x10");
  EXPECT_EQ(output.metadata.at("tile"), "1x8x16");
  EXPECT_EQ(output.metadata.at("sparsity_used"), "0");
}

TEST_F(CliTest, OracleAtSparsityZeroEqualsDense) {
  write_inputs(DType::kF32);
  ASSERT_EQ(veda(attention(kGridTile)).exit_code, 0);
  const std::vector<float> dense = decode(read_safetensors(file("out.safetensors")).at("out"));
  fs::rename(file("out.safetensors"), file("dense.safetensors"));

  const CommandResult result = veda(attention(std::string(kGridTile) + " --method oracle"));
  ASSERT_EQ(result.exit_code, 0) << result.err;
  EXPECT_NE(result.out.find("vs dense: rel-L2 0,"), std::string::npos) << result.out;
  const TensorFile output = read_safetensors(file("out.safetensors"));
  EXPECT_EQ(decode(output.at("out")), dense);
  EXPECT_EQ(output.metadata.at("method"), "oracle");
}

TEST_F(CliTest, MeanPoolReportsQualityAgainstDenseAndOracle) {
  write_inputs(DType::kF32);
  const CommandResult result =
      veda(attention(std::string(kGridTile) + " --method meanpool --sparsity 0.5"));
  ASSERT_EQ(result.exit_code, 0) << result.err;
  // 3 tiles, budget ceil(0.5 * 3) = 2: 1 - 2/3 of the pairs skipped.
  EXPECT_NE(result.out.find("requested 0.5, used 0.333333"), std::string::npos) << result.out;
  EXPECT_NE(result.out.find("vs dense: rel-L2"), std::string::npos) << result.out;
  EXPECT_NE(result.out.find("tile recall"), std::string::npos) << result.out;
  EXPECT_NE(result.out.find("mass recall"), std::string::npos) << result.out;
  const TensorFile output = read_safetensors(file("out.safetensors"));
  EXPECT_EQ(output.metadata.at("method"), "meanpool");
  EXPECT_EQ(output.metadata.at("sparsity"), "0.5");
}

TEST_F(CliTest, NoCompareSkipsTheComparison) {
  write_inputs(DType::kF32);
  const CommandResult result =
      veda(attention(std::string(kGridTile) + " --method oracle --sparsity 0.5 --no-compare"));
  ASSERT_EQ(result.exit_code, 0) << result.err;
  EXPECT_EQ(result.out.find("vs dense"), std::string::npos) << result.out;
  EXPECT_TRUE(fs::exists(file("out.safetensors")));
}

TEST_F(CliTest, DefaultGridIsOneByOneByN) {
  write_inputs(DType::kF32);
  const CommandResult result = veda(attention(""));
  ASSERT_EQ(result.exit_code, 0) << result.err;
  EXPECT_EQ(read_safetensors(file("out.safetensors")).metadata.at("grid"), "1x1x300");
}

TEST_F(CliTest, Bf16RoundTrip) {
  const Inputs inputs = write_inputs(DType::kBF16);
  const CommandResult result = veda(attention(kGridTile));
  ASSERT_EQ(result.exit_code, 0) << result.err;
  std::vector<double> out, lse;
  reference_attention(inputs, out, lse);
  const TensorFile output = read_safetensors(file("out.safetensors"));
  EXPECT_EQ(output.at("out").dtype, DType::kBF16);
  EXPECT_EQ(output.at("out").shape, kShape);
  EXPECT_EQ(output.at("lse").dtype, DType::kF32);
  // bf16 keeps 8 significant bits: rms relative rounding error of out ~2^-9 = 2e-3.
  EXPECT_LT(relative_error(decode(output.at("out")), out), 4e-3);
  const std::vector<float> lse_values = decode(output.at("lse"));
  for (std::size_t n = 0; n < lse.size(); ++n) ASSERT_NEAR(lse_values[n], lse[n], 1e-4);
}

TEST_F(CliTest, F16RoundTrip) {
  const Inputs inputs = write_inputs(DType::kF16);
  const CommandResult result = veda(attention(kGridTile));
  ASSERT_EQ(result.exit_code, 0) << result.err;
  std::vector<double> out, lse;
  reference_attention(inputs, out, lse);
  const TensorFile output = read_safetensors(file("out.safetensors"));
  EXPECT_EQ(output.at("out").dtype, DType::kF16);
  // f16 keeps 11 significant bits: ~2^-12 = 2.4e-4 rms relative rounding error.
  EXPECT_LT(relative_error(decode(output.at("out")), out), 5e-4);
}

// ---- bad input: non-zero exit, one message, no output file ----

// Writes tensors with the given names, dtypes and shapes to qkv.safetensors (zero-filled).
struct Spec {
  std::string name;
  DType dtype;
  std::vector<std::int64_t> shape;
};
void write_specs(const fs::path& path, const std::vector<Spec>& specs) {
  TensorFile tensors;
  for (const Spec& spec : specs)
    tensors.tensors.push_back(Tensor::zeros(spec.name, spec.dtype, spec.shape));
  write_safetensors(path, tensors);
}

TEST_F(CliTest, MissingInputFile) {
  expect_failure(veda(attention("")), "qkv.safetensors: no such file");
}

TEST_F(CliTest, InputNotSafetensors) {
  std::ofstream(file("qkv.safetensors")) << "this is not a tensor file at all";
  expect_failure(veda(attention("")), "header length is");
}

TEST_F(CliTest, MissingTensor) {
  write_specs(file("qkv.safetensors"),
              {{"q", DType::kF32, kShape}, {"k", DType::kF32, kShape}, {"x", DType::kF32, kShape}});
  expect_failure(veda(attention("")), "has no tensor 'v'; expected tensors q, k, v");
}

TEST_F(CliTest, MismatchedShapes) {
  write_specs(file("qkv.safetensors"), {{"q", DType::kF32, kShape},
                                        {"k", DType::kF32, {1, 300, 2, 16}},
                                        {"v", DType::kF32, kShape}});
  expect_failure(veda(attention("")), "k has shape [1, 300, 2, 16] but q has [1, 300, 2, 32]");
}

TEST_F(CliTest, RankNotFour) {
  write_specs(file("qkv.safetensors"), {{"q", DType::kF32, {300, 2, 32}},
                                        {"k", DType::kF32, {300, 2, 32}},
                                        {"v", DType::kF32, {300, 2, 32}}});
  expect_failure(veda(attention("")), "q has shape [300, 2, 32] (rank 3); expected rank 4");
}

TEST_F(CliTest, EmptyDimension) {
  const std::vector<std::int64_t> empty = {1, 0, 2, 32};
  write_specs(file("qkv.safetensors"),
              {{"q", DType::kF32, empty}, {"k", DType::kF32, empty}, {"v", DType::kF32, empty}});
  expect_failure(veda(attention("")), "every size positive");
}

TEST_F(CliTest, IntegerDtype) {
  write_specs(file("qkv.safetensors"),
              {{"q", DType::kI32, kShape}, {"k", DType::kI32, kShape}, {"v", DType::kI32, kShape}});
  expect_failure(veda(attention("")), "q has dtype I32; expected F32, F16 or BF16");
}

TEST_F(CliTest, MixedDtypes) {
  write_specs(
      file("qkv.safetensors"),
      {{"q", DType::kF32, kShape}, {"k", DType::kBF16, kShape}, {"v", DType::kF32, kShape}});
  expect_failure(veda(attention("")), "k has dtype BF16 but q has F32");
}

TEST_F(CliTest, GridNotMatchingTokens) {
  write_inputs(DType::kF32);
  expect_failure(veda(attention("--grid 4x16x16")),
                 "grid 4x16x16 has 1024 tokens but q has N = 300");
}

TEST_F(CliTest, GridNotThreeIntegers) {
  write_inputs(DType::kF32);
  expect_failure(veda(attention("--grid 3x100")), "grid '3x100'");
}

TEST_F(CliTest, TileProductNot128) {
  write_inputs(DType::kF32);
  expect_failure(veda(attention("--tile 2,8,16")), "tile 2x8x16 holds 256 tokens; expected");
}

TEST_F(CliTest, SparsityOne) {
  write_inputs(DType::kF32);
  expect_failure(veda(attention("--method oracle --sparsity 1")), "--sparsity 1 is outside [0, 1)");
}

TEST_F(CliTest, SparsityNegative) {
  write_inputs(DType::kF32);
  expect_failure(veda(attention("--sparsity -0.25")), "--sparsity -0.25 is outside [0, 1)");
}

TEST_F(CliTest, SparsityNotANumber) {
  write_inputs(DType::kF32);
  expect_failure(veda(attention("--sparsity half")), "half");
}

TEST_F(CliTest, UnknownMethod) {
  write_inputs(DType::kF32);
  expect_failure(veda(attention("--method topk")), "method 'topk' is not known");
}

TEST_F(CliTest, MissingRequiredOption) {
  expect_failure(veda("attention --in " + quoted(file("qkv.safetensors"))), "--out");
}

TEST_F(CliTest, NoSubcommand) {
  const CommandResult result = veda("");
  EXPECT_NE(result.exit_code, 0);
  EXPECT_EQ(result.err.rfind("veda: error: ", 0), 0u) << result.err;
}

TEST_F(CliTest, FailedRunKeepsAnExistingOutputFile) {
  write_inputs(DType::kF32);
  std::ofstream(file("out.safetensors")) << "previous result";
  const CommandResult result = veda(attention("--grid 4x16x16"));
  EXPECT_NE(result.exit_code, 0);
  EXPECT_EQ(read_text(file("out.safetensors")), "previous result");
}

TEST_F(CliTest, OutputDirectoryMissing) {
  write_inputs(DType::kF32);
  const CommandResult result = veda("attention --in " + quoted(file("qkv.safetensors")) +
                                    " --out " + quoted(file("absent") / "out.safetensors"));
  EXPECT_NE(result.exit_code, 0);
  EXPECT_NE(result.err.find("cannot create a temporary file"), std::string::npos) << result.err;
  EXPECT_FALSE(fs::exists(file("absent")));
}

// ---- inspect, demo, help ----

TEST_F(CliTest, InspectListsTensorsAndMetadata) {
  TensorFile tensors;
  tensors.metadata = {{"grid", "3x10x10"}};
  tensors.tensors.push_back(Tensor::zeros("query_states", DType::kBF16, {1, 300, 2, 32}));
  tensors.tensors.push_back(Tensor::zeros("steps", DType::kI64, {}));
  write_safetensors(file("in.safetensors"), tensors);
  const CommandResult result = veda("inspect " + quoted(file("in.safetensors")));
  ASSERT_EQ(result.exit_code, 0) << result.err;
  EXPECT_NE(result.out.find("2 tensors"), std::string::npos) << result.out;
  EXPECT_NE(result.out.find("query_states  BF16   [1, 300, 2, 32]"), std::string::npos)
      << result.out;
  EXPECT_NE(result.out.find("steps         I64    []"), std::string::npos) << result.out;
  EXPECT_NE(result.out.find("grid = 3x10x10"), std::string::npos) << result.out;
}

TEST_F(CliTest, InspectMissingFile) {
  const CommandResult result = veda("inspect " + quoted(file("absent.safetensors")));
  EXPECT_NE(result.exit_code, 0);
  EXPECT_NE(result.err.find("absent.safetensors: no such file"), std::string::npos) << result.err;
}

TEST_F(CliTest, HelpOfEverySubcommandExitsZero) {
  for (const char* args :
       {"--help", "attention --help", "inspect --help", "demo --help", "calibrate --help"}) {
    SCOPED_TRACE(args);
    const CommandResult result = veda(args);
    EXPECT_EQ(result.exit_code, 0) << result.err;
    EXPECT_NE(result.out.find("Usage"), std::string::npos) << result.out;
    EXPECT_TRUE(result.err.empty()) << result.err;
  }
}

}  // namespace
}  // namespace veda
