#include "veda/method/profile.h"

#include <cmath>
#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "veda/error.h"
#include "veda/safetensors.h"

namespace veda::method {
namespace {

using Json = nlohmann::ordered_json;

constexpr const char* kFormat = "veda-profile";

std::string tensor_name(std::int64_t layer, std::int64_t head, const char* which) {
  std::ostringstream name;
  name << "layer" << layer << ".head" << head << "." << which;
  return name.str();
}

std::filesystem::path estimator_path(const std::filesystem::path& json_path) {
  return json_path.parent_path() / (json_path.stem().string() + ".estimator.safetensors");
}

// Field access with errors naming the file and the JSON path of the field.
const Json& field(const Json& object, const char* key, const std::string& where,
                  const std::string& file) {
  VEDA_CHECK(object.is_object() && object.contains(key), file, ": ", where, " has no field '", key,
             "'");
  return object.at(key);
}

double number(const Json& object, const char* key, const std::string& where,
              const std::string& file) {
  const Json& value = field(object, key, where, file);
  VEDA_CHECK(value.is_number(), file, ": ", where, ".", key, " is ", value.dump(),
             "; expected a number");
  return value.get<double>();
}

std::int64_t integer(const Json& object, const char* key, const std::string& where,
                     const std::string& file) {
  const Json& value = field(object, key, where, file);
  VEDA_CHECK(value.is_number_integer(), file, ": ", where, ".", key, " is ", value.dump(),
             "; expected an integer");
  return value.get<std::int64_t>();
}

std::string text(const Json& object, const char* key, const std::string& where,
                 const std::string& file) {
  const Json& value = field(object, key, where, file);
  VEDA_CHECK(value.is_string(), file, ": ", where, ".", key, " is ", value.dump(),
             "; expected a string");
  return value.get<std::string>();
}

Tensor matrix_tensor(const std::string& name, const std::vector<float>& values, std::int64_t rows,
                     std::int64_t cols) {
  Tensor tensor = Tensor::zeros(name, DType::kF32, {rows, cols});
  std::memcpy(tensor.data.data(), values.data(), values.size() * sizeof(float));
  return tensor;
}

std::vector<float> read_matrix(const TensorFile& file, const std::string& name, std::int64_t rows,
                               std::int64_t cols) {
  const Tensor& tensor = file.at(name);
  const std::vector<std::int64_t> expected = {rows, cols};
  VEDA_CHECK(tensor.dtype == DType::kF32 && tensor.shape == expected, file.source.string(),
             ": estimator tensor '", name, "' is ", dtype_name(tensor.dtype), " ",
             tensor.shape_str(), "; expected F32 [", rows, ", ", cols, "] ([3D, D] at head dim ",
             cols, ")");
  std::vector<float> values(rows * cols);
  std::memcpy(values.data(), tensor.data.data(), values.size() * sizeof(float));
  for (float value : values) {
    VEDA_CHECK(std::isfinite(value), file.source.string(), ": estimator tensor '", name,
               "' holds a non-finite value");
  }
  return values;
}

}  // namespace

const LayerProfile& Profile::layer(std::int64_t index) const {
  std::ostringstream present;
  for (const LayerProfile& candidate : layers) {
    if (candidate.layer == index) return candidate;
    present << (present.tellp() > 0 ? ", " : "") << candidate.layer;
  }
  detail::fail("profile '", model, "' has no layer ", index, "; layers present: ", present.str());
}

void write_profile(const std::filesystem::path& json_path, const Profile& profile) {
  const std::int64_t dim = profile.head_dim;
  TensorFile tensors;
  tensors.metadata["format"] = kFormat;
  tensors.metadata["model"] = profile.model;
  Json layers = Json::array();
  for (const LayerProfile& layer : profile.layers) {
    Json heads = Json::array();
    for (std::size_t h = 0; h < layer.heads.size(); ++h) {
      const HeadProfile& head = layer.heads[h];
      head.tile.validate();
      VEDA_CHECK(head.estimator.dim == dim, "profile head ", h, " of layer ", layer.layer,
                 " has estimator dim ", head.estimator.dim, "; the profile's head dim is ", dim);
      const auto hi = static_cast<std::int64_t>(h);
      const std::string p_q = tensor_name(layer.layer, hi, "p_q");
      const std::string p_k = tensor_name(layer.layer, hi, "p_k");
      tensors.tensors.push_back(matrix_tensor(p_q, head.estimator.p_q, 3 * dim, dim));
      tensors.tensors.push_back(matrix_tensor(p_k, head.estimator.p_k, 3 * dim, dim));
      Json entry = {{"head", hi}, {"tile", head.tile.str()}, {"sparsity", head.sparsity}};
      if (head.threshold) entry["threshold"] = *head.threshold;
      entry["p_q"] = p_q;
      entry["p_k"] = p_k;
      if (!head.calibration.empty()) entry["calibration"] = head.calibration;
      heads.push_back(std::move(entry));
    }
    layers.push_back({{"layer", layer.layer}, {"heads", std::move(heads)}});
  }
  const std::filesystem::path tensors_path = estimator_path(json_path);
  Json root = {{"format", kFormat},
               {"version", kProfileVersion},
               {"model", profile.model},
               {"head_dim", dim},
               {"estimator_file", tensors_path.filename().string()},
               {"layers", std::move(layers)}};
  write_safetensors(tensors_path, tensors);
  const std::filesystem::path temporary = json_path.string() + ".tmp";
  {
    std::ofstream out(temporary);
    VEDA_CHECK(out.good(), json_path.string(), ": cannot open for writing");
    out << root.dump(2) << "\n";
    VEDA_CHECK(out.good(), json_path.string(), ": write failed");
  }
  std::error_code error;
  std::filesystem::rename(temporary, json_path, error);
  VEDA_CHECK(!error, json_path.string(), ": cannot move the written profile into place (",
             error.message(), ")");
}

Profile read_profile(const std::filesystem::path& json_path) {
  const std::string file = json_path.string();
  std::ifstream in(json_path);
  VEDA_CHECK(in.good(), file, ": cannot open the profile");
  Json root;
  try {
    root = Json::parse(in);
  } catch (const nlohmann::json::exception& error) {
    detail::fail(file, ": not valid JSON (", error.what(), ")");
  }
  VEDA_CHECK(root.is_object(), file, ": the profile is not a JSON object");
  VEDA_CHECK(root.contains("format") && root["format"] == kFormat, file,
             ": not a Veda profile (field 'format' is ",
             root.contains("format") ? root["format"].dump() : "missing", "; expected \"", kFormat,
             "\")");
  const std::int64_t version = integer(root, "version", "profile", file);
  VEDA_CHECK(version == kProfileVersion, file, ": profile version ", version,
             " is unknown; this build reads version ", kProfileVersion);
  Profile profile;
  profile.model = text(root, "model", "profile", file);
  profile.head_dim = integer(root, "head_dim", "profile", file);
  const std::int64_t dim = profile.head_dim;
  VEDA_CHECK(dim > 0 && dim <= 1024, file, ": head_dim ", dim, " is not in [1, 1024]");
  const std::filesystem::path tensors_path =
      json_path.parent_path() / text(root, "estimator_file", "profile", file);
  const TensorFile tensors = read_safetensors(tensors_path);

  const Json& layers = field(root, "layers", "profile", file);
  VEDA_CHECK(layers.is_array() && !layers.empty(), file, ": 'layers' is not a non-empty list");
  for (std::size_t l = 0; l < layers.size(); ++l) {
    const std::string where = "layers[" + std::to_string(l) + "]";
    LayerProfile layer;
    layer.layer = integer(layers[l], "layer", where, file);
    for (const LayerProfile& other : profile.layers) {
      VEDA_CHECK(other.layer != layer.layer, file, ": layer ", layer.layer, " is listed twice");
    }
    const Json& heads = field(layers[l], "heads", where, file);
    VEDA_CHECK(heads.is_array() && !heads.empty(), file, ": ", where,
               ".heads is not a non-empty list");
    for (std::size_t h = 0; h < heads.size(); ++h) {
      const std::string head_where = where + ".heads[" + std::to_string(h) + "]";
      const Json& entry = heads[h];
      const std::int64_t index = integer(entry, "head", head_where, file);
      VEDA_CHECK(index == static_cast<std::int64_t>(h), file, ": ", head_where, ".head is ", index,
                 "; heads must be listed in order 0..H-1");
      HeadProfile head;
      try {
        head.tile = TileShape::parse(text(entry, "tile", head_where, file));
      } catch (const Error& error) {
        detail::fail(file, ": ", head_where, ".tile: ", error.what());
      }
      head.sparsity = number(entry, "sparsity", head_where, file);
      VEDA_CHECK(head.sparsity >= 0 && head.sparsity < 1, file, ": ", head_where, ".sparsity is ",
                 head.sparsity, "; expected a value in [0, 1)");
      if (entry.contains("threshold")) {
        head.threshold = number(entry, "threshold", head_where, file);
        VEDA_CHECK(*head.threshold > 0 && *head.threshold <= 1, file, ": ", head_where,
                   ".threshold is ", *head.threshold, "; expected a value in (0, 1]");
      }
      head.estimator.dim = dim;
      head.estimator.p_q = read_matrix(tensors, text(entry, "p_q", head_where, file), 3 * dim, dim);
      head.estimator.p_k = read_matrix(tensors, text(entry, "p_k", head_where, file), 3 * dim, dim);
      if (entry.contains("calibration") && entry["calibration"].is_object()) {
        for (const auto& [key, value] : entry["calibration"].items()) {
          if (value.is_number()) head.calibration[key] = value.get<double>();
        }
      }
      layer.heads.push_back(std::move(head));
    }
    profile.layers.push_back(std::move(layer));
  }
  return profile;
}

}  // namespace veda::method
