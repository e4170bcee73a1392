// Profiles: round trip, and a clear error (never a crash) for every kind of corrupted or
// mismatched file.
#include "veda/method/profile.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "veda/error.h"
#include "veda/safetensors.h"

namespace veda::method {
namespace {

namespace fs = std::filesystem;

Profile small_profile() {
  Profile profile;
  profile.model = "test-model";
  profile.head_dim = 4;
  LayerProfile layer;
  layer.layer = 3;
  for (int h = 0; h < 2; ++h) {
    HeadProfile head;
    head.tile = h == 0 ? TileShape{1, 8, 16} : TileShape{8, 4, 4};
    head.sparsity = 0.9;
    if (h == 1) head.threshold = 0.95;
    head.estimator = EstimatorParams::zeros(4);
    for (std::size_t i = 0; i < head.estimator.p_q.size(); ++i) {
      head.estimator.p_q[i] = 0.01f * static_cast<float>(i + h);
      head.estimator.p_k[i] = -0.02f * static_cast<float>(i);
    }
    head.calibration["kl_train_before"] = 1.5;
    layer.heads.push_back(head);
  }
  profile.layers.push_back(layer);
  return profile;
}

class ProfileFiles : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ =
        fs::temp_directory_path() /
        ("veda_profile_test_" + std::to_string(::testing::UnitTest::GetInstance()->random_seed()) +
         "_" + ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::create_directories(dir_);
    json_ = dir_ / "model.json";
    write_profile(json_, small_profile());
  }
  void TearDown() override { fs::remove_all(dir_); }

  nlohmann::json load() const {
    std::ifstream in(json_);
    return nlohmann::json::parse(in);
  }
  void save(const nlohmann::json& json) const {
    std::ofstream out(json_);
    out << json.dump();
  }
  // Expects read_profile to throw veda::Error whose message contains `needle`.
  void expect_error(const std::string& needle) const {
    try {
      read_profile(json_);
      FAIL() << "no error; expected one mentioning '" << needle << "'";
    } catch (const Error& error) {
      EXPECT_NE(std::string(error.what()).find(needle), std::string::npos) << error.what();
    }
  }

  fs::path dir_, json_;
};

TEST_F(ProfileFiles, RoundTrip) {
  const Profile want = small_profile();
  const Profile got = read_profile(json_);
  EXPECT_TRUE(fs::exists(dir_ / "model.estimator.safetensors"));
  EXPECT_EQ(got.model, want.model);
  EXPECT_EQ(got.head_dim, 4);
  ASSERT_EQ(got.layers.size(), 1u);
  const LayerProfile& layer = got.layer(3);
  ASSERT_EQ(layer.heads.size(), 2u);
  for (int h = 0; h < 2; ++h) {
    EXPECT_EQ(layer.heads[h].tile, want.layers[0].heads[h].tile);
    EXPECT_EQ(layer.heads[h].sparsity, 0.9);
    EXPECT_EQ(layer.heads[h].estimator.p_q, want.layers[0].heads[h].estimator.p_q);
    EXPECT_EQ(layer.heads[h].estimator.p_k, want.layers[0].heads[h].estimator.p_k);
    EXPECT_EQ(layer.heads[h].calibration.at("kl_train_before"), 1.5);
  }
  EXPECT_FALSE(layer.heads[0].threshold.has_value());
  EXPECT_EQ(layer.heads[1].threshold.value(), 0.95);
  EXPECT_THROW(got.layer(0), Error);
}

TEST_F(ProfileFiles, UnknownVersion) {
  auto json = load();
  json["version"] = 7;
  save(json);
  expect_error("version 7 is unknown; this build reads version 1");
}

TEST_F(ProfileFiles, NotAProfile) {
  auto json = load();
  json["format"] = "something-else";
  save(json);
  expect_error("not a Veda profile");
}

TEST_F(ProfileFiles, NotJson) {
  std::ofstream(json_) << "{\"format\": \"veda-profile\", ";
  expect_error("not valid JSON");
}

TEST_F(ProfileFiles, MissingFile) {
  fs::remove(json_);
  expect_error("cannot open the profile");
}

TEST_F(ProfileFiles, TileProductIsNot128) {
  auto json = load();
  json["layers"][0]["heads"][0]["tile"] = "2x8x16";
  save(json);
  expect_error("layers[0].heads[0].tile");
}

TEST_F(ProfileFiles, SparsityOutOfRange) {
  auto json = load();
  json["layers"][0]["heads"][1]["sparsity"] = 1.0;
  save(json);
  expect_error("sparsity is 1");
}

TEST_F(ProfileFiles, ThresholdOutOfRange) {
  auto json = load();
  json["layers"][0]["heads"][1]["threshold"] = 0.0;
  save(json);
  expect_error("threshold is 0");
}

TEST_F(ProfileFiles, MissingField) {
  auto json = load();
  json["layers"][0]["heads"][0].erase("p_k");
  save(json);
  expect_error("has no field 'p_k'");
}

TEST_F(ProfileFiles, HeadsOutOfOrder) {
  auto json = load();
  json["layers"][0]["heads"][1]["head"] = 5;
  save(json);
  expect_error("heads must be listed in order");
}

TEST_F(ProfileFiles, MissingTensor) {
  auto json = load();
  json["layers"][0]["heads"][1]["p_q"] = "layer3.head9.p_q";
  save(json);
  expect_error("layer3.head9.p_q");
}

TEST_F(ProfileFiles, MisshapedTensor) {
  TensorFile file = read_safetensors(dir_ / "model.estimator.safetensors");
  for (Tensor& tensor : file.tensors) {
    if (tensor.name == "layer3.head0.p_k") tensor = Tensor::zeros(tensor.name, DType::kF32, {4, 4});
  }
  write_safetensors(dir_ / "model.estimator.safetensors", file);
  expect_error("expected F32 [12, 4]");
}

TEST_F(ProfileFiles, MismatchedHeadDim) {
  auto json = load();
  json["head_dim"] = 8;
  save(json);
  expect_error("expected F32 [24, 8]");
}

TEST_F(ProfileFiles, MissingEstimatorFile) {
  fs::remove(dir_ / "model.estimator.safetensors");
  expect_error("model.estimator.safetensors");
}

}  // namespace
}  // namespace veda::method
