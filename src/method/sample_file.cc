#include "veda/method/sample_file.h"

#include <charconv>
#include <cmath>
#include <string>
#include <utility>

#include "veda/error.h"

namespace veda::method {
namespace {

const Tensor& qkv_tensor(const TensorFile& file, const std::string& name) {
  const std::string path = file.source.string();
  const Tensor* tensor = file.find(name);
  if (tensor == nullptr) {
    std::string present;
    for (const Tensor& other : file.tensors) present += (present.empty() ? "" : ", ") + other.name;
    detail::fail(path, ": no tensor '", name,
                 "'; expected q, k, v of shape [B, N, H, D] (the file ", "holds ",
                 present.empty() ? std::string("no tensors") : present, ")");
  }
  VEDA_CHECK(is_floating(tensor->dtype), path, ": ", name, " has dtype ", dtype_name(tensor->dtype),
             "; expected F32, F16 or BF16");
  VEDA_CHECK(tensor->shape.size() == 4, path, ": ", name, " has shape ", tensor->shape_str(),
             "; expected [B, N, H, D]");
  for (std::int64_t size : tensor->shape) {
    VEDA_CHECK(size > 0, path, ": ", name, " has shape ", tensor->shape_str(),
               "; expected every size positive");
  }
  return *tensor;
}

SampleFile sample_from(TensorFile file, const std::filesystem::path& path,
                       std::optional<Grid> grid_override) {
  SampleFile sample;
  sample.file = std::move(file);
  const std::string name = path.string();
  const Tensor& q = qkv_tensor(sample.file, "q");
  const Tensor& k = qkv_tensor(sample.file, "k");
  const Tensor& v = qkv_tensor(sample.file, "v");
  for (const Tensor* other : {&k, &v}) {
    VEDA_CHECK(other->dtype == q.dtype && other->shape == q.shape, name, ": ", other->name, " is ",
               dtype_name(other->dtype), " ", other->shape_str(), " but q is ", dtype_name(q.dtype),
               " ", q.shape_str(), "; expected one dtype and one shape");
  }
  if (grid_override) {
    sample.grid = *grid_override;
  } else {
    const auto it = sample.file.metadata.find("grid");
    VEDA_CHECK(it != sample.file.metadata.end(), name,
               ": no \"grid\" in the metadata; record the latent grid as {\"grid\": \"TxHxW\"} ",
               "or pass --grid");
    try {
      sample.grid = Grid::parse(it->second);
    } catch (const Error& error) {
      detail::fail(name, ": metadata grid: ", error.what());
    }
  }
  VEDA_CHECK(sample.grid.tokens() == q.shape[1], name, ": grid ", sample.grid.str(), " holds ",
             sample.grid.tokens(), " tokens but q has N = ", q.shape[1]);
  if (const auto it = sample.file.metadata.find("layer"); it != sample.file.metadata.end()) {
    std::int64_t layer = -1;
    const std::string& text = it->second;
    const auto [end, error] = std::from_chars(text.data(), text.data() + text.size(), layer);
    VEDA_CHECK(error == std::errc() && end == text.data() + text.size() && layer >= 0, name,
               ": metadata layer '", text, "' is not a non-negative integer");
    sample.layer = layer;
  }
  // A NaN or infinity would turn every oracle map and the fitted estimator into NaN.
  for (const Tensor* tensor : {&q, &k, &v}) {
    if (tensor->data.empty()) continue;  // header only
    for (std::int64_t i = 0; i < tensor->numel(); ++i) {
      const float value = load_as_float(tensor->data.data(), tensor->dtype, i);
      VEDA_CHECK(std::isfinite(value), name, ": ", tensor->name, " holds a non-finite value (",
                 value, ") at element ", i);
    }
  }
  auto view = [](const Tensor& t) {
    return TokensView::contiguous(t.data.empty() ? nullptr : t.data.data(), t.dtype, t.shape[0],
                                  t.shape[1], t.shape[2], t.shape[3]);
  };
  sample.q = view(q);
  sample.k = view(k);
  sample.v = view(v);
  return sample;
}

}  // namespace

SampleFile read_sample_file(const std::filesystem::path& path, std::optional<Grid> grid_override) {
  return sample_from(read_safetensors(path), path, grid_override);
}

SampleFile read_sample_header(const std::filesystem::path& path,
                              std::optional<Grid> grid_override) {
  return sample_from(read_safetensors_header(path), path, grid_override);
}

}  // namespace veda::method
