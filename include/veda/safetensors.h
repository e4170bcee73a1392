// Reading and writing .safetensors files: an 8-byte little-endian header length, a JSON header
// {name: {dtype, shape, data_offsets}, "__metadata__": {string: string}}, then the raw data.
// Supported dtypes: F32, F16, BF16, I32, I64. Every problem throws veda::Error naming the file.
#pragma once

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <map>
#include <string>
#include <vector>

#include "veda/dtype.h"

namespace veda {

struct Tensor {
  std::string name;
  DType dtype = DType::kF32;
  std::vector<std::int64_t> shape;
  std::vector<std::byte> data;  // little-endian elements, row-major

  std::int64_t numel() const;
  // "[1, 4096, 12, 128]"
  std::string shape_str() const;
  template <typename T>
  const T* as() const {
    return reinterpret_cast<const T*>(data.data());
  }
  template <typename T>
  T* as() {
    return reinterpret_cast<T*>(data.data());
  }
  // A zero-filled tensor of the given type and shape.
  static Tensor zeros(std::string name, DType dtype, std::vector<std::int64_t> shape);
};

struct TensorFile {
  std::filesystem::path source;  // where it was read from (for error messages); may be empty
  std::vector<Tensor> tensors;   // in file order
  std::map<std::string, std::string> metadata;

  const Tensor* find(const std::string& name) const;
  // Throws veda::Error naming the file, the missing name and the names present.
  const Tensor& at(const std::string& name) const;
};

TensorFile read_safetensors(const std::filesystem::path& path);

// The header alone, with every check read_safetensors makes on it: names, dtypes, shapes, data
// offsets and metadata; each tensor's data is left empty (for planning over files too large to
// hold at once).
TensorFile read_safetensors_header(const std::filesystem::path& path);

// Writes to a temporary file beside `path` and renames it into place, so a failure never leaves
// a partial or corrupted file at `path`.
void write_safetensors(const std::filesystem::path& path, const TensorFile& file);

}  // namespace veda
