// `veda inspect FILE.safetensors`: one line per tensor (name, dtype, shape, in file order), then
// the metadata, one "key = value" line each.
#include <algorithm>
#include <iomanip>
#include <iostream>
#include <memory>
#include <string>

#include "commands.h"
#include "veda/safetensors.h"

namespace veda::cli {
namespace {

void run_inspect(const std::string& path) {
  const TensorFile file = read_safetensors(path);
  std::cout << path << ": " << file.tensors.size()
            << (file.tensors.size() == 1 ? " tensor" : " tensors") << "\n";
  std::size_t name_width = 4;
  for (const Tensor& tensor : file.tensors) name_width = std::max(name_width, tensor.name.size());
  if (!file.tensors.empty()) {
    std::cout << "  " << std::left << std::setw(static_cast<int>(name_width)) << "name"
              << "  dtype  shape\n";
  }
  for (const Tensor& tensor : file.tensors) {
    std::cout << "  " << std::left << std::setw(static_cast<int>(name_width)) << tensor.name << "  "
              << std::setw(5) << dtype_name(tensor.dtype) << "  " << tensor.shape_str() << "\n";
  }
  if (file.metadata.empty()) {
    std::cout << "metadata: none\n";
    return;
  }
  std::cout << "metadata:\n";
  for (const auto& [key, value] : file.metadata) std::cout << "  " << key << " = " << value << "\n";
}

}  // namespace

void add_inspect_command(CLI::App& app) {
  auto path = std::make_shared<std::string>();
  CLI::App* command = app.add_subcommand(
      "inspect", "List the tensors (name, dtype, shape) and the metadata of a .safetensors file");
  command->add_option("file", *path, "The .safetensors file")->required();
  command->callback([path] { run_inspect(*path); });
}

}  // namespace veda::cli
