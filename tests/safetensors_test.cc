// .safetensors round trips of every dtype, and one test per malformed file: each must throw
// veda::Error naming the file and the problem, and a failed write must leave nothing behind.
#include "veda/safetensors.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include "expect_error.h"
#include "veda/error.h"

namespace veda {
namespace {

namespace fs = std::filesystem;

// A fresh directory per test, removed afterwards.
class SafetensorsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    dir_ = fs::temp_directory_path() /
           ("veda_safetensors_" + std::to_string(::getpid()) + "_" + info->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }

  fs::path file(const std::string& name) const { return dir_ / name; }

  // Files in the test directory (to catch leftover temporaries).
  std::vector<std::string> listing() const {
    std::vector<std::string> names;
    for (const auto& entry : fs::directory_iterator(dir_)) {
      names.push_back(entry.path().filename().string());
    }
    return names;
  }

  fs::path dir_;
};

template <typename T>
Tensor make_tensor(const std::string& name, DType dtype, std::vector<std::int64_t> shape,
                   const std::vector<T>& values) {
  Tensor tensor = Tensor::zeros(name, dtype, std::move(shape));
  EXPECT_EQ(tensor.data.size(), values.size() * sizeof(T));
  if (!values.empty()) std::memcpy(tensor.data.data(), values.data(), tensor.data.size());
  return tensor;
}

std::string read_bytes(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

// [u64 header length][header][data], with the length taken from the header unless given.
void write_raw(const fs::path& path, const std::string& header, const std::string& data,
               std::uint64_t header_length) {
  std::ofstream out(path, std::ios::binary);
  out.write(reinterpret_cast<const char*>(&header_length), sizeof(header_length));
  out << header << data;
}
void write_raw(const fs::path& path, const std::string& header, const std::string& data = {}) {
  write_raw(path, header, data, header.size());
}

// Expects read_safetensors(path) to throw a veda::Error whose message names the file and
// contains every one of `parts`.
void expect_read_error(const fs::path& path, const std::vector<std::string>& parts) {
  try {
    read_safetensors(path);
    ADD_FAILURE() << "reading " << path << " did not throw";
  } catch (const Error& error) {
    const std::string message = error.what();
    EXPECT_NE(message.find(path.string()), std::string::npos) << message;
    for (const std::string& part : parts) {
      EXPECT_NE(message.find(part), std::string::npos)
          << "missing '" << part << "' in: " << message;
    }
  }
}

TEST_F(SafetensorsTest, RoundTripsEveryDtypeWithMetadata) {
  TensorFile original;
  original.metadata = {{"grid", "3x10x10"}, {"note", "unicode \xc3\xa9 and \"quotes\""}};
  original.tensors.push_back(
      make_tensor<float>("f32", DType::kF32, {2, 3}, {1.5f, -2.0f, 0.0f, 3.25f, 1e-30f, -1e30f}));
  original.tensors.push_back(
      make_tensor<std::uint16_t>("f16", DType::kF16, {3}, {0x3c00, 0xc000, 0x7bff}));
  original.tensors.push_back(
      make_tensor<std::uint16_t>("bf16", DType::kBF16, {1, 2}, {0x3f80, 0xbfc0}));
  original.tensors.push_back(
      make_tensor<std::int32_t>("i32", DType::kI32, {2, 2}, {-1, 2, 2147483647, -2147483647}));
  original.tensors.push_back(make_tensor<std::int64_t>("i64", DType::kI64, {1}, {-(1LL << 62)}));
  original.tensors.push_back(make_tensor<float>("scalar", DType::kF32, {}, {42.0f}));
  original.tensors.push_back(make_tensor<float>("empty", DType::kF32, {0}, {}));
  original.tensors.push_back(make_tensor<std::int64_t>("empty_3d", DType::kI64, {3, 0, 2}, {}));

  const fs::path path = file("all.safetensors");
  write_safetensors(path, original);
  const TensorFile loaded = read_safetensors(path);

  EXPECT_EQ(loaded.source, path);
  EXPECT_EQ(loaded.metadata, original.metadata);
  ASSERT_EQ(loaded.tensors.size(), original.tensors.size());
  for (std::size_t i = 0; i < original.tensors.size(); ++i) {
    SCOPED_TRACE(original.tensors[i].name);
    EXPECT_EQ(loaded.tensors[i].name, original.tensors[i].name);
    EXPECT_EQ(loaded.tensors[i].dtype, original.tensors[i].dtype);
    EXPECT_EQ(loaded.tensors[i].shape, original.tensors[i].shape);
    EXPECT_EQ(loaded.tensors[i].data, original.tensors[i].data);
  }
  EXPECT_EQ(loaded.at("scalar").numel(), 1);
  EXPECT_EQ(loaded.at("scalar").as<float>()[0], 42.0f);
  EXPECT_EQ(loaded.at("empty_3d").numel(), 0);
  EXPECT_EQ(loaded.at("f32").shape_str(), "[2, 3]");
  EXPECT_EQ(loaded.at("scalar").shape_str(), "[]");
  EXPECT_EQ(loaded.find("absent"), nullptr);
  EXPECT_EQ(listing(), std::vector<std::string>{"all.safetensors"});
}

TEST_F(SafetensorsTest, HeaderAloneHasNamesDtypesShapesAndMetadataButNoData) {
  TensorFile original;
  original.metadata = {{"grid", "3x10x10"}};
  original.tensors.push_back(make_tensor<float>("a", DType::kF32, {2, 3}, {1, 2, 3, 4, 5, 6}));
  original.tensors.push_back(make_tensor<std::uint16_t>("b", DType::kBF16, {1, 2}, {1, 2}));
  const fs::path path = file("header.safetensors");
  write_safetensors(path, original);
  const TensorFile header = read_safetensors_header(path);
  EXPECT_EQ(header.source, path);
  EXPECT_EQ(header.metadata, original.metadata);
  ASSERT_EQ(header.tensors.size(), 2u);
  EXPECT_EQ(header.at("a").dtype, DType::kF32);
  EXPECT_EQ(header.at("a").shape_str(), "[2, 3]");
  EXPECT_EQ(header.at("b").dtype, DType::kBF16);
  EXPECT_EQ(header.at("b").numel(), 2);
  EXPECT_TRUE(header.at("a").data.empty() && header.at("b").data.empty());
  // The header's checks are the full reader's: a truncated data section is caught without data.
  fs::resize_file(path, fs::file_size(path) - 4);
  testing::expect_error_naming([&] { read_safetensors_header(path); }, "has data_offsets");
}

TEST_F(SafetensorsTest, HeaderIsPaddedToEightBytesLikeTheReferenceWriter) {
  // What safetensors.numpy.save({"a": np.array([1, 2], np.float32)}) writes: 54 bytes of JSON,
  // two spaces of padding, then the data.
  TensorFile tensors;
  tensors.tensors.push_back(make_tensor<float>("a", DType::kF32, {2}, {1.0f, 2.0f}));
  const fs::path path = file("a.safetensors");
  write_safetensors(path, tensors);

  const std::string header = R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})";
  ASSERT_EQ(header.size(), 54u);
  std::string expected(8, '\0');
  expected[0] = 56;
  expected += header + "  ";
  const float data[] = {1.0f, 2.0f};
  expected.append(reinterpret_cast<const char*>(data), sizeof(data));
  EXPECT_EQ(read_bytes(path), expected);
}

TEST_F(SafetensorsTest, ReadsTensorsInDataOrderWhateverTheHeaderOrder) {
  const fs::path path = file("order.safetensors");
  const std::int32_t data[] = {7, 8, 9};
  write_raw(path,
            R"({"late":{"dtype":"I32","shape":[2],"data_offsets":[4,12]},)"
            R"("__metadata__":{"k":"v"},)"
            R"("early":{"dtype":"I32","shape":[],"data_offsets":[0,4]}})",
            std::string(reinterpret_cast<const char*>(data), sizeof(data)));
  const TensorFile loaded = read_safetensors(path);
  ASSERT_EQ(loaded.tensors.size(), 2u);
  EXPECT_EQ(loaded.tensors[0].name, "early");
  EXPECT_EQ(loaded.tensors[0].as<std::int32_t>()[0], 7);
  EXPECT_EQ(loaded.tensors[1].name, "late");
  EXPECT_EQ(loaded.tensors[1].as<std::int32_t>()[1], 9);
  EXPECT_EQ(loaded.metadata.at("k"), "v");
}

TEST_F(SafetensorsTest, OverwritesAnExistingFile) {
  const fs::path path = file("x.safetensors");
  TensorFile first;
  first.tensors.push_back(make_tensor<float>("a", DType::kF32, {1}, {1.0f}));
  write_safetensors(path, first);
  TensorFile second;
  second.tensors.push_back(make_tensor<std::int64_t>("b", DType::kI64, {2}, {3, 4}));
  write_safetensors(path, second);
  const TensorFile loaded = read_safetensors(path);
  ASSERT_EQ(loaded.tensors.size(), 1u);
  EXPECT_EQ(loaded.tensors[0].name, "b");
  EXPECT_EQ(listing(), std::vector<std::string>{"x.safetensors"});
}

TEST_F(SafetensorsTest, AtNamesTheFileTheMissingTensorAndThePresentOnes) {
  const fs::path path = file("qk.safetensors");
  TensorFile tensors;
  tensors.tensors.push_back(make_tensor<float>("q", DType::kF32, {1}, {1.0f}));
  tensors.tensors.push_back(make_tensor<float>("k", DType::kF32, {1}, {1.0f}));
  write_safetensors(path, tensors);
  const TensorFile loaded = read_safetensors(path);
  try {
    loaded.at("v");
    ADD_FAILURE() << "at(\"v\") did not throw";
  } catch (const Error& error) {
    const std::string message = error.what();
    EXPECT_NE(message.find(path.string()), std::string::npos) << message;
    EXPECT_NE(message.find("'v'"), std::string::npos) << message;
    EXPECT_NE(message.find("q, k"), std::string::npos) << message;
  }
}

// ---- malformed files ----

TEST_F(SafetensorsTest, MissingFile) {
  expect_read_error(file("absent.safetensors"), {"no such file"});
}

TEST_F(SafetensorsTest, DirectoryInsteadOfFile) { expect_read_error(dir_, {"not a regular file"}); }

TEST_F(SafetensorsTest, FileShorterThanEightBytes) {
  const fs::path path = file("short.safetensors");
  std::ofstream(path, std::ios::binary) << "abc";
  expect_read_error(path, {"is 3 bytes", "8-byte header length"});
}

TEST_F(SafetensorsTest, HeaderLengthLargerThanTheFile) {
  const fs::path path = file("long_header.safetensors");
  write_raw(path, "{}", "", 1000);
  expect_read_error(path, {"header length is 1000 bytes", "only 2 bytes follow"});
}

TEST_F(SafetensorsTest, HeaderNotJson) {
  const fs::path path = file("not_json.safetensors");
  write_raw(path, R"({"a": {"dtype": )");
  expect_read_error(path, {"not valid JSON"});
}

TEST_F(SafetensorsTest, HeaderNotAnObject) {
  const fs::path path = file("array.safetensors");
  write_raw(path, "[1, 2]");
  expect_read_error(path, {"header is a JSON array", "expected an object"});
}

TEST_F(SafetensorsTest, TensorEntryNotAnObject) {
  const fs::path path = file("entry.safetensors");
  write_raw(path, R"({"a": 3})");
  expect_read_error(path, {"'a'", "expected an object"});
}

TEST_F(SafetensorsTest, MissingField) {
  const fs::path path = file("field.safetensors");
  write_raw(path, R"({"a": {"dtype": "F32", "shape": [0]}})");
  expect_read_error(path, {"'a'", "no \"data_offsets\" field"});
}

TEST_F(SafetensorsTest, UnknownDtypeIsNamedWithTheSupportedOnes) {
  const fs::path path = file("f64.safetensors");
  write_raw(path, R"({"a": {"dtype": "F64", "shape": [1], "data_offsets": [0, 8]}})",
            std::string(8, '\0'));
  expect_read_error(path, {"'a'", "unknown dtype F64", "F32, F16, BF16, I32, I64"});
}

TEST_F(SafetensorsTest, DtypeNotAString) {
  const fs::path path = file("dtype_number.safetensors");
  write_raw(path, R"({"a": {"dtype": 4, "shape": [1], "data_offsets": [0, 4]}})",
            std::string(4, '\0'));
  expect_read_error(path, {"'a' has dtype 4", "expected a string"});
}

TEST_F(SafetensorsTest, ShapeNotAList) {
  const fs::path path = file("shape_string.safetensors");
  write_raw(path, R"({"a": {"dtype": "F32", "shape": "2", "data_offsets": [0, 8]}})",
            std::string(8, '\0'));
  expect_read_error(path, {"'a' has shape \"2\"", "list of non-negative integers"});
}

TEST_F(SafetensorsTest, ShapeWithNegativeDimension) {
  const fs::path path = file("shape_negative.safetensors");
  write_raw(path, R"({"a": {"dtype": "F32", "shape": [2, -1], "data_offsets": [0, 0]}})");
  expect_read_error(path, {"'a' has shape [2,-1]", "list of non-negative integers"});
}

TEST_F(SafetensorsTest, ShapeWithFractionalDimension) {
  const fs::path path = file("shape_float.safetensors");
  write_raw(path, R"({"a": {"dtype": "F32", "shape": [2.5], "data_offsets": [0, 0]}})");
  expect_read_error(path, {"'a' has shape [2.5]", "list of non-negative integers"});
}

TEST_F(SafetensorsTest, DataOffsetsNotAPair) {
  const fs::path path = file("offsets_single.safetensors");
  write_raw(path, R"({"a": {"dtype": "F32", "shape": [1], "data_offsets": [4]}})",
            std::string(4, '\0'));
  expect_read_error(path, {"'a' has data_offsets [4]", "expected [begin, end]"});
}

TEST_F(SafetensorsTest, DataOffsetsReversed) {
  const fs::path path = file("offsets_reversed.safetensors");
  write_raw(path, R"({"a": {"dtype": "F32", "shape": [1], "data_offsets": [4, 0]}})",
            std::string(4, '\0'));
  expect_read_error(path, {"'a' has data_offsets [4, 0]", "begin <= end <= 4"});
}

TEST_F(SafetensorsTest, DataOffsetsPastTheData) {
  const fs::path path = file("offsets_past.safetensors");
  write_raw(path, R"({"a": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}})",
            std::string(8, '\0'));
  expect_read_error(path, {"'a' has data_offsets [0, 16]", "begin <= end <= 8"});
}

TEST_F(SafetensorsTest, ByteSizeNotMatchingDtypeAndShape) {
  const fs::path path = file("size.safetensors");
  write_raw(path, R"({"a": {"dtype": "BF16", "shape": [3], "data_offsets": [0, 8]}})",
            std::string(8, '\0'));
  expect_read_error(path, {"'a' has 8 bytes of data but BF16 [3] needs 6 bytes"});
}

TEST_F(SafetensorsTest, OverlappingTensors) {
  const fs::path path = file("overlap.safetensors");
  write_raw(path,
            R"({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},)"
            R"( "b": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]}})",
            std::string(12, '\0'));
  expect_read_error(path, {"'a' [0, 8)", "'b' [4, 12)", "overlap"});
}

TEST_F(SafetensorsTest, DuplicateNames) {
  const fs::path path = file("duplicate.safetensors");
  write_raw(path,
            R"({"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]},)"
            R"( "a": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]}})",
            std::string(8, '\0'));
  expect_read_error(path, {"'a' more than once"});
}

TEST_F(SafetensorsTest, MetadataWithNonStringValue) {
  const fs::path path = file("metadata.safetensors");
  write_raw(path, R"({"__metadata__": {"steps": 50}})");
  expect_read_error(path, {"\"__metadata__\" entry 'steps' is 50", "expected a string"});
}

TEST_F(SafetensorsTest, MetadataNotAnObject) {
  const fs::path path = file("metadata_list.safetensors");
  write_raw(path, R"({"__metadata__": ["a"]})");
  expect_read_error(path, {"\"__metadata__\" is [\"a\"]", "expected an object"});
}

// ---- failed writes ----

// Writes `tensors` to `path`, expecting a veda::Error naming the path and containing `part`.
void expect_write_error(const fs::path& path, const TensorFile& tensors, const std::string& part) {
  try {
    write_safetensors(path, tensors);
    ADD_FAILURE() << "writing " << path << " did not throw";
  } catch (const Error& error) {
    const std::string message = error.what();
    EXPECT_NE(message.find(path.string()), std::string::npos) << message;
    EXPECT_NE(message.find(part), std::string::npos) << "missing '" << part << "' in: " << message;
  }
}

TEST_F(SafetensorsTest, WriteWithWrongDataSizeLeavesNoFile) {
  TensorFile tensors;
  tensors.tensors.push_back(make_tensor<float>("ok", DType::kF32, {1}, {1.0f}));
  Tensor bad = Tensor::zeros("bad", DType::kF16, {2, 3});
  bad.data.pop_back();
  tensors.tensors.push_back(bad);
  const fs::path path = file("out.safetensors");
  expect_write_error(path, tensors, "'bad' holds 11 bytes but F16 [2, 3] needs 12 bytes");
  EXPECT_TRUE(listing().empty());
}

TEST_F(SafetensorsTest, FailedWriteKeepsTheExistingFile) {
  const fs::path path = file("keep.safetensors");
  TensorFile good;
  good.tensors.push_back(make_tensor<float>("a", DType::kF32, {1}, {5.0f}));
  write_safetensors(path, good);
  const std::string before = read_bytes(path);

  TensorFile bad;
  bad.tensors.push_back(Tensor::zeros("a", DType::kF32, {2}));
  bad.tensors.push_back(Tensor::zeros("a", DType::kF32, {2}));
  expect_write_error(path, bad, "'a' is listed more than once");
  EXPECT_EQ(read_bytes(path), before);
  EXPECT_EQ(listing(), std::vector<std::string>{"keep.safetensors"});
}

TEST_F(SafetensorsTest, WriteRejectsReservedAndEmptyNames) {
  const fs::path path = file("names.safetensors");
  TensorFile reserved;
  reserved.tensors.push_back(Tensor::zeros("__metadata__", DType::kF32, {1}));
  expect_write_error(path, reserved, "reserves");
  TensorFile unnamed;
  unnamed.tensors.push_back(Tensor::zeros("", DType::kF32, {1}));
  expect_write_error(path, unnamed, "empty name");
  EXPECT_TRUE(listing().empty());
}

TEST_F(SafetensorsTest, WriteIntoMissingDirectoryNamesIt) {
  TensorFile tensors;
  tensors.tensors.push_back(Tensor::zeros("a", DType::kF32, {1}));
  expect_write_error(file("no_such_dir") / "out.safetensors", tensors,
                     "cannot create a temporary file");
}

TEST_F(SafetensorsTest, WriteOverADirectoryFailsAndCleansUp) {
  fs::create_directories(file("taken"));
  TensorFile tensors;
  tensors.tensors.push_back(Tensor::zeros("a", DType::kF32, {1}));
  expect_write_error(file("taken"), tensors, "cannot rename");
  EXPECT_EQ(listing(), std::vector<std::string>{"taken"});
}

TEST_F(SafetensorsTest, ZerosRejectsNegativeDimensions) {
  EXPECT_THROW(Tensor::zeros("a", DType::kF32, {2, -1}), Error);
}

}  // namespace
}  // namespace veda
