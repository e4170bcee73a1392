// A one-line text progress bar for long calibration work ("oracle [#######.....] 12/24 3.1 s").
// Debian has no packaged progress-bar library for C++ (libindicators-dev is not in bookworm),
// so this is a small one: redraws in place with '\r' on a terminal, and prints only stage ends
// otherwise (logs stay readable).
#pragma once

#include <chrono>
#include <cstdint>
#include <ostream>
#include <string>
#include <string_view>

namespace veda::method {

class ProgressBar {
 public:
  // interactive: redraw in place (a terminal); otherwise one line per finished stage.
  ProgressBar(std::ostream& out, bool interactive);
  // Matches ProgressCallback: stage name, units done, units in the stage.
  void operator()(std::string_view stage, std::int64_t done, std::int64_t total);

 private:
  std::ostream& out_;
  bool interactive_;
  std::string stage_;
  std::chrono::steady_clock::time_point stage_start_;
};

}  // namespace veda::method
