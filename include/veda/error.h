// The one error type of the library: every failed precondition throws veda::Error with a message
// that names what was given and what was expected.
#pragma once

#include <sstream>
#include <stdexcept>
#include <string>

namespace veda {

class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

namespace detail {
template <typename... Parts>
[[noreturn]] void fail(const Parts&... parts) {
  std::ostringstream message;
  (message << ... << parts);
  throw Error(message.str());
}
}  // namespace detail

}  // namespace veda

// VEDA_CHECK(n > 0, "tokens is ", n, "; expected at least 1")
#define VEDA_CHECK(condition, ...)                       \
  do {                                                   \
    if (!(condition)) ::veda::detail::fail(__VA_ARGS__); \
  } while (false)
