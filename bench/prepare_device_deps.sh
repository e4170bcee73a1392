#!/usr/bin/env bash
# Copies GoogleTest's source and the nlohmann_json, CLI11 and Eigen headers into .devdeps/, a folder
# ignored through .git/info/exclude, so the device run can build the GPU tests: the device image
# has no GoogleTest and cannot download. Pass `carry: [".devdeps"]` to the device run.
set -euo pipefail
cd "$(dirname "$0")/.."
grep -qx '/.devdeps/' .git/info/exclude 2>/dev/null || echo '/.devdeps/' >> .git/info/exclude
rm -rf .devdeps && mkdir -p .devdeps
cp -r /usr/src/googletest/googletest .devdeps/googletest
# Header-only libraries the root project needs (cmake/Dependencies.cmake falls back to these).
mkdir -p .devdeps/include
cp -r /usr/include/nlohmann /usr/include/CLI /usr/include/eigen3/Eigen .devdeps/include/
du -sh .devdeps
