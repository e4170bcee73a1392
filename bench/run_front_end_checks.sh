#!/usr/bin/env bash
# Device machine: build, the front end's GPU tests (tile gather and selection against the CPU
# references) and the front end's timings, twice (VEDA_BENCH_FRONT_END_ONLY). For quick turns on
# the gather and selection kernels; bench/run_core_gpu_checks.sh runs everything. Needs .devdeps.
#   bash bench/run_front_end_checks.sh
set -uo pipefail
cd "$(dirname "$0")/.."
BUILD=build-device-core
cmake -S . -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE=Release -DCMAKE_CUDA_ARCHITECTURES=90a \
  -DVEDA_TOOLS=ON > /tmp/front_configure.log 2>&1 || { tail -20 /tmp/front_configure.log; exit 1; }
cmake --build "$BUILD" -j "$(nproc)" --target veda_gpu_tests veda_core_kernels_bench \
  > /tmp/front_build.log 2>&1 || { grep -E "error" -A3 /tmp/front_build.log | head -30; exit 1; }
"$BUILD/tests/gpu/veda_gpu_tests" --gtest_filter='*TileSelection*:*TileGather*' --gtest_brief=1 \
  2>&1 | tail -4
tests_rc=${PIPESTATUS[0]}
for run in 1 2; do
  VEDA_BENCH_ORACLE=0 VEDA_BENCH_SIZE=${VEDA_BENCH_SIZE:-n75600} VEDA_BENCH_FRONT_END_ONLY=1 \
    "$BUILD/bench/veda_core_kernels_bench" | sed "s/^/run $run: /"
done
exit "$tests_rc"
