#!/usr/bin/env bash
# One command for the device machine (H200): build the attention kernels, run the GPU tests
# (and compute-sanitizer on the small cases), then the benchmark against cuDNN and FlexAttention.
#
#   bash bench/run_attention_bench.sh [tests|quick|full] [extra attention_bench.py flags]
#     tests  build + GPU tests + compute-sanitizer memcheck/racecheck, no benchmark
#     quick  build + GPU tests + benchmark at N = 75,600, B = 1 (d 128, 64; 0/90/95 %)
#     full   build + GPU tests + the whole benchmark grid of issue 4 (several minutes)
#     all    tests, then quick
# Needs .devdeps/ (bench/prepare_device_deps.sh) carried when the image has no GoogleTest.
# Writes logs and attention_bench.json under $OUT (default ./.deviceout).
set -uo pipefail
cd "$(dirname "$0")/.."
MODE="${1:-quick}"
shift || true
OUT="${OUT:-$PWD/.deviceout}"
mkdir -p "$OUT"
BUILD=build-device
export PYTHONUNBUFFERED=1

nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.mem --format=csv,noheader
echo "commit ${VEDA_COMMIT:-$(git rev-parse --short HEAD 2>/dev/null)}"

start=$(date +%s)
cmake -S bench/device -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE=Release \
  -DCMAKE_CUDA_ARCHITECTURES=90a > /tmp/configure.log 2>&1 || { tail -30 /tmp/configure.log; exit 1; }
cmake --build "$BUILD" -j "$(nproc)" --target veda_gpu_tests veda_attention_capi \
  > /tmp/build.log 2>&1 || { grep -E "error|Error" -A3 /tmp/build.log | head -60; exit 1; }
# ptxas serialising every wgmma (info C7518/C7520) costs the attention kernel ~18%: refuse it.
if grep -E "C75(18|20)" /tmp/build.log; then echo "ptxas serialised wgmma (above)"; exit 1; fi
echo "build: $(( $(date +%s) - start )) s"
cuobjdump --dump-sass "$BUILD/libveda_cuda_attention.a" 2>/dev/null |
  grep -oE "HGMMA\.[0-9A-Za-z.]+|UTMALDG[.0-9A-Z]*" | sort | uniq -c | head -8

start=$(date +%s)
timeout 300 "$BUILD/veda_gpu_tests" --gtest_brief=1 > "$OUT/gpu_tests.log" 2>&1
tests_rc=$?
tail -25 "$OUT/gpu_tests.log"
echo "gpu tests: rc $tests_rc, $(( $(date +%s) - start )) s"

if [ "$MODE" = tests ] || [ "$MODE" = all ]; then
  # racecheck is ~100x slower than memcheck: give it the smallest cases only.
  tools="memcheck racecheck"
  [ -n "${SKIP_RACECHECK:-}" ] && tools=memcheck
  for tool in $tools; do
    filter='*small_*'
    [ "$tool" = racecheck ] && filter='*small_*_N127_*:*small_*_N129_*'
    start=$(date +%s)
    timeout 200 compute-sanitizer --tool "$tool" --error-exitcode 9 "$BUILD/veda_gpu_tests" \
      --gtest_filter="$filter" --gtest_brief=1 > "$OUT/sanitizer_$tool.log" 2>&1
    echo "compute-sanitizer $tool: rc $? ($(( $(date +%s) - start )) s)"
    grep -E "ERROR SUMMARY|Error|hazard" "$OUT/sanitizer_$tool.log" | sort | uniq -c | head -10
  done
  [ "$MODE" = tests ] && exit $tests_rc
fi

LIB="$BUILD/libveda_attention_capi.so"
if [ "$MODE" = quick ] || [ "$MODE" = all ]; then
  timeout 480 python3 bench/attention_bench.py --lib "$LIB" --out "$OUT/attention_bench.json" \
    --n 75600 --batch 1 --dims 128 64 --sparsity 0 90 95 "$@"
else
  timeout 480 python3 bench/attention_bench.py --lib "$LIB" --out "$OUT/attention_bench.json" "$@"
fi
