// Runs the `veda` binary of this build (VEDA_CLI_PATH, set by CMake) and captures what it prints.
#pragma once

#include <sys/wait.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>

namespace veda::testing {

struct CommandResult {
  int exit_code = -1;
  std::string out, err;
};

inline std::string read_text(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

// Appends rather than concatenating temporaries: GCC 12 at -O3 reports a false -Wrestrict on
// `"literal" + std::string` (GCC bug 105329).
inline std::string quoted(const std::filesystem::path& path) {
  std::string text = "'";
  text.append(path.string()).append("'");
  return text;
}

// `veda <arguments>` with stdout and stderr captured through files in `scratch` (removed after).
inline CommandResult run_veda(const std::string& arguments, const std::filesystem::path& scratch) {
  const std::filesystem::path out = scratch / "stdout.txt", err = scratch / "stderr.txt";
  std::string command = quoted(VEDA_CLI_PATH);
  command.append(" ").append(arguments).append(" >").append(quoted(out));
  command.append(" 2>").append(quoted(err));
  const int status = std::system(command.c_str());
  CommandResult result;
  result.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  result.out = read_text(out);
  result.err = read_text(err);
  std::filesystem::remove(out);
  std::filesystem::remove(err);
  return result;
}

}  // namespace veda::testing
