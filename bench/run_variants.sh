#!/usr/bin/env bash
# A/B timing of build-time variants of the Hopper kernel in one device run: each variant is
# built into build-device-<name> with its -D flags, then timed by attention_bench.py (no Flex,
# cuDNN dense measured again in each). With VARIANT_TESTS=1 each variant's GPU tests run first
# (a variant whose tests fail is not timed). Usage:
#   bash bench/run_variants.sh "name:-DFLAG=1 -DOTHER=2" ... -- [attention_bench.py flags]
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-$PWD/.deviceout}"
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
variants=()
while [ $# -gt 0 ] && [ "$1" != -- ]; do variants+=("$1"); shift; done
[ $# -gt 0 ] && shift
for variant in "${variants[@]}"; do
  name="${variant%%:*}"
  flags="${variant#*:}"
  build="build-device-$name"
  cmake -S bench/device -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release \
    -DCMAKE_CUDA_ARCHITECTURES=90a "-DCMAKE_CUDA_FLAGS=$flags" > "/tmp/configure_$name.log" 2>&1 &&
    cmake --build "$build" -j "$(nproc)" --target veda_attention_capi \
      ${VARIANT_TESTS:+veda_gpu_tests} > "/tmp/build_$name.log" 2>&1 ||
    { echo "variant $name failed to build"; tail -20 "/tmp/build_$name.log"; continue; }
  if grep -E "C75(18|20)" "/tmp/build_$name.log"; then echo "variant $name: ptxas serialised wgmma"; fi
  echo "=== variant $name ($flags)"
  if [ -n "${VARIANT_TESTS:-}" ]; then
    timeout 300 "$build/veda_gpu_tests" --gtest_brief=1 > "/tmp/tests_$name.log" 2>&1
    tests_rc=$?
    grep -E "PASSED|FAILED" "/tmp/tests_$name.log" | head -12
    [ $tests_rc = 0 ] || { echo "variant $name: GPU tests failed (rc $tests_rc), not timed"; continue; }
  fi
  timeout 300 python3 bench/attention_bench.py --lib "$build/libveda_attention_capi.so" \
    --out "/tmp/variant_$name.json" --no-flex "$@" 2>&1 | sed -n '/^ *N  *H/,$p'
done
# One file back (the device returns at most 8): every variant's JSON, one line each.
for variant in "${variants[@]}"; do
  name="${variant%%:*}"
  [ -f "/tmp/variant_$name.json" ] && python3 -c "import json,sys; d=json.load(open(sys.argv[1])); d['variant']=sys.argv[2]; print(json.dumps(d))" "/tmp/variant_$name.json" "$variant"
done > "$OUT/variants.jsonl"
