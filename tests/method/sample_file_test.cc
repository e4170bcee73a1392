// Captured sample files: grid and layer from the metadata, and clear errors for each mistake.
#include "veda/method/sample_file.h"

#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>

#include "../expect_error.h"
#include "veda/error.h"

namespace veda::method {
namespace {

namespace fs = std::filesystem;

class SampleFiles : public ::testing::Test {
 protected:
  void SetUp() override {
    path_ = fs::temp_directory_path() /
            (std::string("veda_sample_test_") +
             ::testing::UnitTest::GetInstance()->current_test_info()->name() + ".safetensors");
  }
  void TearDown() override { fs::remove(path_); }
  void write(std::map<std::string, std::string> metadata,
             std::vector<std::int64_t> v_shape = {1, 64, 2, 8}) {
    TensorFile file;
    file.metadata = std::move(metadata);
    file.tensors.push_back(Tensor::zeros("q", DType::kBF16, {1, 64, 2, 8}));
    file.tensors.push_back(Tensor::zeros("k", DType::kBF16, {1, 64, 2, 8}));
    file.tensors.push_back(Tensor::zeros("v", DType::kBF16, v_shape));
    write_safetensors(path_, file);
  }
  void expect_error(const std::string& needle, std::optional<Grid> grid = std::nullopt) {
    try {
      read_sample_file(path_, grid);
      FAIL() << "no error; expected one mentioning '" << needle << "'";
    } catch (const Error& error) {
      EXPECT_NE(std::string(error.what()).find(needle), std::string::npos) << error.what();
    }
  }
  fs::path path_;
};

TEST_F(SampleFiles, ReadsGridAndLayer) {
  write({{"grid", "2x4x8"}, {"layer", "3"}});
  const SampleFile sample = read_sample_file(path_);
  EXPECT_EQ(sample.grid.str(), "2x4x8");
  EXPECT_EQ(sample.layer.value(), 3);
  EXPECT_EQ(sample.q.tokens, 64);
  EXPECT_EQ(sample.v.heads, 2);
  EXPECT_EQ(sample.k.dtype, DType::kBF16);
}

TEST_F(SampleFiles, GridOverrideAndNoLayer) {
  write({});
  const SampleFile sample = read_sample_file(path_, Grid{1, 8, 8});
  EXPECT_EQ(sample.grid.str(), "1x8x8");
  EXPECT_FALSE(sample.layer.has_value());
}

TEST_F(SampleFiles, MissingGrid) {
  write({{"layer", "0"}});
  expect_error("no \"grid\" in the metadata");
}

TEST_F(SampleFiles, GridDoesNotHoldN) {
  write({{"grid", "2x4x4"}});
  expect_error("grid 2x4x4 holds 32 tokens but q has N = 64");
}

TEST_F(SampleFiles, BadGridText) {
  write({{"grid", "8 by 8"}});
  expect_error("metadata grid");
}

TEST_F(SampleFiles, BadLayer) {
  write({{"grid", "2x4x8"}, {"layer", "three"}});
  expect_error("metadata layer 'three'");
}

TEST_F(SampleFiles, MismatchedShapes) {
  write({{"grid", "2x4x8"}}, {1, 64, 2, 4});
  expect_error("expected one dtype and one shape");
}

TEST_F(SampleFiles, NonFiniteValue) {
  TensorFile file;
  file.metadata["grid"] = "2x4x8";
  for (const char* name : {"q", "k", "v"}) {
    file.tensors.push_back(Tensor::zeros(name, DType::kF32, {1, 64, 2, 8}));
  }
  file.tensors[1].as<float>()[77] = std::nanf("");
  write_safetensors(path_, file);
  expect_error("k holds a non-finite value (nan) at element 77");
}

TEST_F(SampleFiles, HeaderAloneGivesGridLayerAndShapesWithoutData) {
  write({{"grid", "2x4x8"}, {"layer", "5"}});
  const SampleFile header = read_sample_header(path_);
  EXPECT_EQ(header.grid.str(), "2x4x8");
  EXPECT_EQ(header.layer.value(), 5);
  EXPECT_EQ(header.q.tokens, 64);
  EXPECT_EQ(header.q.dim, 8);
  EXPECT_EQ(header.q.data, nullptr);
  EXPECT_EQ(header.v.data, nullptr);
  write({{"grid", "2x4x4"}});  // the header's checks are read_sample_file's
  veda::testing::expect_error_naming([&] { read_sample_header(path_); },
                                     "holds 32 tokens but q has N = 64");
}

TEST_F(SampleFiles, MissingFile) { expect_error(path_.filename().string()); }

}  // namespace
}  // namespace veda::method
