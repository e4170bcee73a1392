// The tests' check for a clear error: the call throws veda::Error naming what was wrong.
#pragma once

#include <gtest/gtest.h>

#include <string>

#include "veda/error.h"

namespace veda::testing {

// Runs call() and expects a veda::Error whose message contains `text`.
template <typename Call>
void expect_error_naming(Call&& call, const std::string& text) {
  try {
    call();
    FAIL() << "expected an error naming '" << text << "'";
  } catch (const Error& error) {
    EXPECT_NE(std::string(error.what()).find(text), std::string::npos) << error.what();
  }
}

}  // namespace veda::testing
