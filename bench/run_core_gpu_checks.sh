#!/usr/bin/env bash
# One command for the device machine (H200): build the root project (kernels, the method library
# without cairo, the CLI), run the GPU tests (core kernels, the whole sparse attention call, the
# GPU oracle backend of `veda calibrate`) against the CPU references, compute-sanitizer on small
# cases, then time the oracle, the front end and the whole call (bench/core_kernels_bench.cc;
# CORE_BENCH=0 skips it, e.g. while other GPU work runs; CORE_SANITIZERS picks the tools, default
# "memcheck racecheck"). Needs .devdeps/
# (bench/prepare_device_deps.sh) carried.
#   bash bench/run_core_gpu_checks.sh
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-$PWD/.deviceout}"
mkdir -p "$OUT"
BUILD=build-device-core
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
# The device copy's git metadata can lag the tree it was sent: VEDA_COMMIT, when given, names it.
echo "commit ${VEDA_COMMIT:-$(git rev-parse --short HEAD 2>/dev/null)$(git diff --quiet HEAD 2>/dev/null || echo ' + uncommitted')}"
start=$(date +%s)
cmake -S . -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE=Release -DCMAKE_CUDA_ARCHITECTURES=90a -DVEDA_TOOLS=ON \
  > "$OUT/core_configure.log" 2>&1 || { tail -30 "$OUT/core_configure.log"; exit 1; }
cmake --build "$BUILD" -j "$(nproc)" --target veda_gpu_tests veda_core_kernels_bench veda \
  > "$OUT/core_build.log" 2>&1 || { grep -E "error" -A3 "$OUT/core_build.log" | head -40; exit 1; }
# ptxas serialising every wgmma (info C7518/C7520) costs the attention kernel ~18%: refuse it.
if grep -E "C75(18|20)" "$OUT/core_build.log"; then echo "ptxas serialised wgmma (above)"; exit 1; fi
echo "build: $(( $(date +%s) - start )) s"
timeout 300 "$BUILD/tests/gpu/veda_gpu_tests" --gtest_brief=1 2>&1 | tail -15
tests_rc=${PIPESTATUS[0]}
small='*b1_n1_*:*nq127*:*n129*:*grid1x1x1*:*grid3x10x21*:*grid3x8x16*:*grid4x9x16*:*tq1_*:*tq96*:*cumulative50*'
for tool in ${CORE_SANITIZERS:-memcheck racecheck}; do
  # The plan cases run the attention kernel too, whose racecheck takes minutes: memcheck only.
  filter="$small"
  [ "$tool" = memcheck ] && filter="$small:*OneShapeMeanPool*:*TwoShapesEstimator*:Grids/OracleBackendCuda.*:*TextTokens*After1*:AttentionMergeCuda.*:*small_*_permuted*:*small_*_qpermuted*:*small_*_csr*:*_given*:*_extreme*:*SevenHeadsDiagonal*:*Boxes*:*EightShapes*:*cumulative*"
  timeout 200 compute-sanitizer --tool "$tool" --error-exitcode 9 \
    "$BUILD/tests/gpu/veda_gpu_tests" --gtest_filter="$filter" --gtest_brief=1 \
    > "$OUT/core_sanitizer_$tool.log" 2>&1
  echo "compute-sanitizer $tool: rc $? $(grep -m1 -E 'ERROR SUMMARY|RACECHECK SUMMARY' "$OUT/core_sanitizer_$tool.log")"
done
[ "${CORE_BENCH:-1}" = 0 ] || timeout 240 "$BUILD/bench/veda_core_kernels_bench"
exit $tests_rc
