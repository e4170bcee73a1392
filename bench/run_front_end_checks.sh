#!/usr/bin/env bash
# Device machine: build, the front end's GPU tests (tile gather and selection against the CPU
# references) and the front end's timings, twice (VEDA_BENCH_FRONT_END_ONLY). For quick turns on
# the gather and selection kernels; bench/run_core_gpu_checks.sh runs everything. Needs .devdeps.
#   bash bench/run_front_end_checks.sh                       # the tree as it is
#   bash bench/run_front_end_checks.sh "a:" "b:-DFLAG=2"     # build-time variants (CUDA flags),
#                                                            # each built, tested and timed
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
[ $# -gt 0 ] || set -- "tree:"
table=/tmp/front_table.txt  # this call's timings (a warm machine keeps /tmp between calls)
: > "$table"
status=0
for variant in "$@"; do
  name="${variant%%:*}"
  flags="${variant#*:}"
  build="build-device-front-$name"
  echo "=== $name (${flags:-no flags})"
  cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DCMAKE_CUDA_ARCHITECTURES=90a \
    -DVEDA_TOOLS=ON "-DCMAKE_CUDA_FLAGS=$flags" > "/tmp/front_configure_$name.log" 2>&1 ||
    { tail -20 "/tmp/front_configure_$name.log"; status=1; continue; }
  cmake --build "$build" -j "$(nproc)" --target veda_gpu_tests veda_core_kernels_bench \
    > "/tmp/front_build_$name.log" 2>&1 ||
    { grep -E "error" -A3 "/tmp/front_build_$name.log" | head -30; status=1; continue; }
  "$build/tests/gpu/veda_gpu_tests" --gtest_filter='*TileSelection*:*TileGather*:*FrontEnd*' \
    --gtest_brief=1 2>&1 | tail -4
  [ "${PIPESTATUS[0]}" = 0 ] || { echo "$name: GPU tests failed, not timed"; status=1; continue; }
  for run in 1 2; do
    VEDA_BENCH_ORACLE=0 VEDA_BENCH_SIZE=${VEDA_BENCH_SIZE:-n75600} VEDA_BENCH_FRONT_END_ONLY=1 \
      "$build/bench/veda_core_kernels_bench" | sed "s/^/$name run $run: /" | tee -a "$table"
  done
done
# The table last: the selection rows of every variant.
grep -E "select|front" "$table"
exit "$status"
