#include "veda/method/progress_bar.h"

#include <algorithm>
#include <iomanip>

namespace veda::method {

ProgressBar::ProgressBar(std::ostream& out, bool interactive)
    : out_(out), interactive_(interactive), stage_start_(std::chrono::steady_clock::now()) {}

void ProgressBar::operator()(std::string_view stage, std::int64_t done, std::int64_t total) {
  const auto now = std::chrono::steady_clock::now();
  if (stage != stage_) {
    stage_ = stage;
    stage_start_ = now;
  }
  const double seconds = std::chrono::duration<double>(now - stage_start_).count();
  const bool finished = done >= total;
  if (!interactive_ && !finished) return;
  constexpr int kWidth = 30;
  const int filled = total > 0 ? static_cast<int>(kWidth * std::min(done, total) / total) : kWidth;
  out_ << (interactive_ ? "\r" : "") << std::left << std::setw(9) << stage_ << std::right << " ["
       << std::string(filled, '#') << std::string(kWidth - filled, '.') << "] " << done << "/"
       << total << " " << std::fixed << std::setprecision(1) << seconds << " s"
       << (finished ? "\n" : "") << std::flush;
}

}  // namespace veda::method
