// .safetensors reading and writing (format: github.com/huggingface/safetensors, "Format").
//
//   [u64 little-endian header length n][n bytes of JSON header][data]
//   header: {"__metadata__": {string: string}, name: {"dtype", "shape", "data_offsets": [b, e]}}
//   offsets are relative to the start of the data; tensors may come in any header order.
#include "veda/safetensors.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <bit>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <limits>
#include <nlohmann/json.hpp>
#include <random>
#include <set>
#include <sstream>
#include <string_view>
#include <system_error>
#include <utility>

#include "veda/error.h"

namespace veda {
namespace {

// Elements and the header length are stored little-endian; this build copies them as they are.
static_assert(std::endian::native == std::endian::little,
              "veda's safetensors I/O assumes a little-endian host");

using Json = nlohmann::ordered_json;

constexpr std::string_view kMetadataKey = "__metadata__";
constexpr std::array kSupportedDTypes = {DType::kF32, DType::kF16, DType::kBF16, DType::kI32,
                                         DType::kI64};
// The reference implementation refuses headers above 100 MB; a larger length is a corrupt file.
constexpr std::uint64_t kMaxHeaderBytes = 100'000'000;

std::string supported_dtype_names() {
  std::string names;
  for (const DType dtype : kSupportedDTypes) {
    if (!names.empty()) names += ", ";
    names += dtype_name(dtype);
  }
  return names;
}

// Name matching is done here rather than with dtype_from_name so the message can name the file
// and the tensor as well.
bool find_dtype(std::string_view name, DType& dtype) {
  for (const DType candidate : kSupportedDTypes) {
    if (dtype_name(candidate) == name) {
      dtype = candidate;
      return true;
    }
  }
  return false;
}

// numel * element size, or false on overflow past int64 or a negative dimension.
bool checked_byte_size(const std::vector<std::int64_t>& shape, DType dtype, std::int64_t& bytes) {
  std::int64_t total = static_cast<std::int64_t>(dtype_size(dtype));
  for (const std::int64_t dim : shape) {
    if (dim < 0) return false;
    if (dim != 0 && total > std::numeric_limits<std::int64_t>::max() / dim) return false;
    total *= dim;
  }
  bytes = total;
  return true;
}

std::string shape_to_string(const std::vector<std::int64_t>& shape) {
  std::string text = "[";
  for (std::size_t i = 0; i < shape.size(); ++i) {
    if (i > 0) text += ", ";
    text += std::to_string(shape[i]);
  }
  return text + "]";
}

// ---- reading ----

struct Entry {
  Tensor tensor;
  std::uint64_t begin = 0, end = 0;  // byte offsets into the data section
};

std::vector<std::int64_t> parse_shape(const std::filesystem::path& path, const std::string& name,
                                      const Json& shape) {
  const auto fail = [&] {
    detail::fail(path.string(), ": tensor '", name, "' has shape ", shape.dump(),
                 "; expected a list of non-negative integers");
  };
  if (!shape.is_array()) fail();
  std::vector<std::int64_t> dims;
  for (const Json& dim : shape) {
    if (!dim.is_number_unsigned()) fail();
    const auto value = dim.get<std::uint64_t>();
    if (value > static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max())) fail();
    dims.push_back(static_cast<std::int64_t>(value));
  }
  return dims;
}

Entry parse_entry(const std::filesystem::path& path, const std::string& name, const Json& info,
                  std::uint64_t data_bytes) {
  const std::string file = path.string();
  VEDA_CHECK(info.is_object(), file, ": tensor '", name, "' is described by ", info.dump(),
             "; expected an object with dtype, shape and data_offsets");
  for (const char* field : {"dtype", "shape", "data_offsets"}) {
    VEDA_CHECK(info.contains(field), file, ": tensor '", name, "' has no \"", field, "\" field");
  }

  Entry entry;
  entry.tensor.name = name;
  const Json& dtype = info["dtype"];
  VEDA_CHECK(dtype.is_string(), file, ": tensor '", name, "' has dtype ", dtype.dump(),
             "; expected a string, one of ", supported_dtype_names());
  const auto& dtype_text = dtype.get_ref<const std::string&>();
  VEDA_CHECK(find_dtype(dtype_text, entry.tensor.dtype), file, ": tensor '", name,
             "' has unknown dtype ", dtype_text, "; supported: ", supported_dtype_names());
  entry.tensor.shape = parse_shape(path, name, info["shape"]);

  const Json& offsets = info["data_offsets"];
  VEDA_CHECK(offsets.is_array() && offsets.size() == 2 && offsets[0].is_number_unsigned() &&
                 offsets[1].is_number_unsigned(),
             file, ": tensor '", name, "' has data_offsets ", offsets.dump(),
             "; expected [begin, end] with non-negative integers");
  entry.begin = offsets[0].get<std::uint64_t>();
  entry.end = offsets[1].get<std::uint64_t>();
  VEDA_CHECK(entry.begin <= entry.end && entry.end <= data_bytes, file, ": tensor '", name,
             "' has data_offsets [", entry.begin, ", ", entry.end,
             "]; expected begin <= end <= ", data_bytes, " (the size of the data section)");

  std::int64_t expected = 0;
  VEDA_CHECK(checked_byte_size(entry.tensor.shape, entry.tensor.dtype, expected), file,
             ": tensor '", name, "' has shape ", shape_to_string(entry.tensor.shape),
             " whose byte size overflows 64 bits");
  VEDA_CHECK(entry.end - entry.begin == static_cast<std::uint64_t>(expected), file, ": tensor '",
             name, "' has ", entry.end - entry.begin, " bytes of data but ",
             dtype_name(entry.tensor.dtype), " ", shape_to_string(entry.tensor.shape), " needs ",
             expected, " bytes");
  return entry;
}

std::map<std::string, std::string> parse_metadata(const std::filesystem::path& path,
                                                  const Json& metadata) {
  VEDA_CHECK(metadata.is_object(), path.string(), ": \"__metadata__\" is ", metadata.dump(),
             "; expected an object of string values");
  std::map<std::string, std::string> result;
  for (const auto& [key, value] : metadata.items()) {
    VEDA_CHECK(value.is_string(), path.string(), ": \"__metadata__\" entry '", key, "' is ",
               value.dump(), "; expected a string");
    result.emplace(key, value.get<std::string>());
  }
  return result;
}

// Parses the header and reports the first top-level name that occurs twice (JSON objects keep
// only one value per key, so duplicates must be caught while parsing).
Json parse_header(const std::filesystem::path& path, const std::string& text) {
  std::set<std::string> names;
  std::string duplicate;
  const Json::parser_callback_t track_names = [&](int depth, Json::parse_event_t event,
                                                  Json& parsed) {
    if (depth == 1 && event == Json::parse_event_t::key && duplicate.empty()) {
      const auto& name = parsed.get_ref<const std::string&>();
      if (!names.insert(name).second) duplicate = name;
    }
    return true;
  };
  Json header = Json::parse(text, track_names, /*allow_exceptions=*/false);
  VEDA_CHECK(!header.is_discarded(), path.string(), ": the ", text.size(),
             "-byte header is not valid JSON");
  VEDA_CHECK(header.is_object(), path.string(), ": the header is a JSON ", header.type_name(),
             "; expected an object of tensors");
  VEDA_CHECK(duplicate.empty(), path.string(), ": the header lists '", duplicate,
             "' more than once; names must be unique");
  return header;
}

// ---- writing ----

// A uniquely named temporary file beside the target, removed unless committed by rename.
class TemporaryFile {
 public:
  explicit TemporaryFile(const std::filesystem::path& target) : target_(target) {
    const std::filesystem::path dir =
        target.has_parent_path() ? target.parent_path() : std::filesystem::path(".");
    std::random_device seed;
    std::mt19937_64 random(seed());
    int error = 0;
    for (int attempt = 0; attempt < 16 && fd_ < 0; ++attempt) {
      std::ostringstream name;
      name << "." << target.filename().string() << ".tmp-" << ::getpid() << "-" << std::hex
           << random();
      path_ = dir / name.str();
      // 0666 minus the umask: the final file gets the permissions of any other new file.
      fd_ = ::open(path_.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
      error = errno;
      if (fd_ < 0 && error != EEXIST) break;
    }
    VEDA_CHECK(fd_ >= 0, target.string(), ": cannot create a temporary file in ", dir.string(),
               ": ", std::strerror(error));
  }
  TemporaryFile(const TemporaryFile&) = delete;
  TemporaryFile& operator=(const TemporaryFile&) = delete;
  ~TemporaryFile() {
    if (fd_ >= 0) ::close(fd_);
    if (!committed_) {
      std::error_code ignored;
      std::filesystem::remove(path_, ignored);
    }
  }

  void write(const void* bytes, std::size_t size) {
    const auto* cursor = static_cast<const char*>(bytes);
    while (size > 0) {
      const ::ssize_t written = ::write(fd_, cursor, size);
      if (written < 0 && errno == EINTR) continue;
      VEDA_CHECK(written > 0, target_.string(), ": writing ", path_.string(),
                 " failed: ", std::strerror(errno));
      cursor += written;
      size -= static_cast<std::size_t>(written);
    }
  }

  // Flushes to disk and renames over the target (atomic on POSIX within one file system).
  void commit() {
    VEDA_CHECK(::fsync(fd_) == 0, target_.string(), ": flushing ", path_.string(),
               " failed: ", std::strerror(errno));
    const int closed = ::close(fd_);
    fd_ = -1;
    VEDA_CHECK(closed == 0, target_.string(), ": closing ", path_.string(),
               " failed: ", std::strerror(errno));
    std::error_code error;
    std::filesystem::rename(path_, target_, error);
    VEDA_CHECK(!error, target_.string(),
               ": cannot rename the temporary file into place: ", error.message());
    committed_ = true;
  }

 private:
  std::filesystem::path target_;
  std::filesystem::path path_;
  int fd_ = -1;
  bool committed_ = false;
};

}  // namespace

std::int64_t Tensor::numel() const {
  std::int64_t count = 1;
  for (const std::int64_t dim : shape) count *= dim;
  return count;
}

std::string Tensor::shape_str() const { return shape_to_string(shape); }

Tensor Tensor::zeros(std::string name, DType dtype, std::vector<std::int64_t> shape) {
  std::int64_t bytes = 0;
  VEDA_CHECK(checked_byte_size(shape, dtype, bytes), "tensor '", name, "' with shape ",
             shape_to_string(shape), ": expected non-negative dimensions of at most 2^63 bytes");
  Tensor tensor;
  tensor.name = std::move(name);
  tensor.dtype = dtype;
  tensor.shape = std::move(shape);
  tensor.data.assign(static_cast<std::size_t>(bytes), std::byte{0});
  return tensor;
}

const Tensor* TensorFile::find(const std::string& name) const {
  for (const Tensor& tensor : tensors) {
    if (tensor.name == name) return &tensor;
  }
  return nullptr;
}

const Tensor& TensorFile::at(const std::string& name) const {
  if (const Tensor* tensor = find(name)) return *tensor;
  std::string present;
  for (const Tensor& tensor : tensors) {
    present += present.empty() ? "" : ", ";
    present += tensor.name;
  }
  detail::fail(source.empty() ? std::string("tensor file") : source.string(), ": no tensor named '",
               name, "'; the file holds ", present.empty() ? std::string("no tensors") : present);
}

namespace {

TensorFile read_file(const std::filesystem::path& path, bool with_data) {
  const std::string file = path.string();
  std::error_code error;
  const auto status = std::filesystem::status(path, error);
  VEDA_CHECK(std::filesystem::exists(status), file, ": no such file");
  VEDA_CHECK(std::filesystem::is_regular_file(status), file,
             ": not a regular file; expected a .safetensors file");
  const std::uint64_t file_bytes = std::filesystem::file_size(path, error);
  VEDA_CHECK(!error, file, ": cannot read the file size: ", error.message());
  VEDA_CHECK(file_bytes >= 8, file, ": the file is ", file_bytes,
             " bytes; a .safetensors file starts with an 8-byte header length");

  std::ifstream in(path, std::ios::binary);
  VEDA_CHECK(in, file, ": cannot open the file: ", std::strerror(errno));
  std::uint64_t header_bytes = 0;
  in.read(reinterpret_cast<char*>(&header_bytes), sizeof(header_bytes));
  VEDA_CHECK(in, file, ": cannot read the header length");
  VEDA_CHECK(header_bytes <= file_bytes - 8, file, ": the header length is ", header_bytes,
             " bytes but only ", file_bytes - 8,
             " bytes follow it (truncated, or not a .safetensors file)");
  VEDA_CHECK(header_bytes <= kMaxHeaderBytes, file, ": the header length is ", header_bytes,
             " bytes; expected at most ", kMaxHeaderBytes);

  std::string text(header_bytes, '\0');
  in.read(text.data(), static_cast<std::streamsize>(header_bytes));
  VEDA_CHECK(in, file, ": cannot read the ", header_bytes, "-byte header");
  const Json header = parse_header(path, text);

  TensorFile result;
  result.source = path;
  const std::uint64_t data_start = 8 + header_bytes;
  const std::uint64_t data_bytes = file_bytes - data_start;
  std::vector<Entry> entries;
  for (const auto& [name, info] : header.items()) {
    if (name == kMetadataKey) {
      result.metadata = parse_metadata(path, info);
    } else {
      entries.push_back(parse_entry(path, name, info, data_bytes));
    }
  }

  // File order is data order; header order breaks ties between empty tensors.
  std::stable_sort(entries.begin(), entries.end(),
                   [](const Entry& a, const Entry& b) { return a.begin < b.begin; });
  for (std::size_t i = 1; i < entries.size(); ++i) {
    const Entry& previous = entries[i - 1];
    VEDA_CHECK(entries[i].begin >= previous.end, file, ": tensors '", previous.tensor.name, "' [",
               previous.begin, ", ", previous.end, ") and '", entries[i].tensor.name, "' [",
               entries[i].begin, ", ", entries[i].end, ") overlap in the data section");
  }

  for (Entry& entry : entries) {
    if (with_data) entry.tensor.data.resize(entry.end - entry.begin);
    if (!entry.tensor.data.empty()) {
      in.seekg(static_cast<std::streamoff>(data_start + entry.begin));
      in.read(reinterpret_cast<char*>(entry.tensor.data.data()),
              static_cast<std::streamsize>(entry.tensor.data.size()));
      VEDA_CHECK(in, file, ": cannot read the data of tensor '", entry.tensor.name, "'");
    }
    result.tensors.push_back(std::move(entry.tensor));
  }
  return result;
}

}  // namespace

TensorFile read_safetensors(const std::filesystem::path& path) { return read_file(path, true); }

TensorFile read_safetensors_header(const std::filesystem::path& path) {
  return read_file(path, false);
}

void write_safetensors(const std::filesystem::path& path, const TensorFile& file) {
  const std::string target = path.string();
  // Everything is checked before the temporary file exists.
  Json header = Json::object();
  if (!file.metadata.empty()) {
    Json metadata = Json::object();
    for (const auto& [key, value] : file.metadata) metadata[key] = value;
    header[std::string(kMetadataKey)] = std::move(metadata);
  }
  std::set<std::string> names;
  std::uint64_t offset = 0;
  for (const Tensor& tensor : file.tensors) {
    VEDA_CHECK(!tensor.name.empty(), target, ": a tensor has an empty name");
    VEDA_CHECK(tensor.name != kMetadataKey, target, ": a tensor is named '", kMetadataKey,
               "', which the format reserves for metadata");
    VEDA_CHECK(names.insert(tensor.name).second, target, ": tensor '", tensor.name,
               "' is listed more than once; names must be unique");
    DType known = DType::kF32;
    VEDA_CHECK(find_dtype(dtype_name(tensor.dtype), known), target, ": tensor '", tensor.name,
               "' has an unsupported dtype; supported: ", supported_dtype_names());
    std::int64_t expected = 0;
    VEDA_CHECK(checked_byte_size(tensor.shape, tensor.dtype, expected), target, ": tensor '",
               tensor.name, "' has shape ", tensor.shape_str(),
               "; expected non-negative dimensions of at most 2^63 bytes");
    VEDA_CHECK(tensor.data.size() == static_cast<std::uint64_t>(expected), target, ": tensor '",
               tensor.name, "' holds ", tensor.data.size(), " bytes but ", dtype_name(tensor.dtype),
               " ", tensor.shape_str(), " needs ", expected, " bytes");
    header[tensor.name] = {{"dtype", std::string(dtype_name(tensor.dtype))},
                           {"shape", tensor.shape},
                           {"data_offsets", {offset, offset + tensor.data.size()}}};
    offset += tensor.data.size();
  }

  std::string text;
  try {
    text = header.dump();
  } catch (const Json::exception& error) {
    detail::fail(target,
                 ": cannot encode the header (names and metadata must be UTF-8): ", error.what());
  }
  // Spaces up to a multiple of 8 bytes, as the reference writer does, so data starts aligned.
  text.append((8 - text.size() % 8) % 8, ' ');
  const std::uint64_t header_bytes = text.size();

  TemporaryFile temporary(path);
  temporary.write(&header_bytes, sizeof(header_bytes));
  temporary.write(text.data(), text.size());
  for (const Tensor& tensor : file.tensors) temporary.write(tensor.data.data(), tensor.data.size());
  temporary.commit();
}

}  // namespace veda
