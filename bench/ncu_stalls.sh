#!/usr/bin/env bash
# Warp-stall sampling per SASS instruction of one Hopper attention launch (N = 75,600, 40 heads,
# B = 1, D = 128, 95% random lists, bf16) on the device: builds the C API library (as
# run_attention_bench.sh does, into build-device), profiles the third launch of the kernel with
# ncu's SourceCounters and WarpStateStats sections (clocks left alone), and prints the
# instructions with the most samples (bench/ncu_stalls.py). Extra arguments go to
# attention_bench.py (e.g. --sparsity 0 for dense). Report and CSVs under $OUT.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-$PWD/.deviceout}"
BUILD="${BUILD:-build-device}"
mkdir -p "$OUT"
cmake -S bench/device -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE=Release \
  -DCMAKE_CUDA_ARCHITECTURES=90a > /tmp/configure.log 2>&1 || { tail -30 /tmp/configure.log; exit 1; }
cmake --build "$BUILD" -j "$(nproc)" --target veda_attention_capi > /tmp/build.log 2>&1 ||
  { grep -E "error|Error" -A3 /tmp/build.log | head -60; exit 1; }
timeout 400 ncu --clock-control none --kernel-name regex:attention_hopper_kernel --launch-skip 2 \
  --launch-count 1 --section SourceCounters --section WarpStateStats --import-source no \
  -f -o "$OUT/stalls" python3 bench/attention_bench.py --lib "$BUILD/libveda_attention_capi.so" \
  --out /tmp/stalls_bench.json --n 75600 --batch 1 --dims 128 --sparsity 95 --patterns random \
  --no-flex --budget 0.01 "$@" > /tmp/ncu_run.log 2>&1 || { tail -20 /tmp/ncu_run.log; exit 1; }
ncu -i "$OUT/stalls.ncu-rep" --page details --csv > "$OUT/stalls_details.csv" 2>&1
grep -iE "stall|issued|warp cycles" "$OUT/stalls_details.csv" | cut -c1-200 | tail -30
ncu -i "$OUT/stalls.ncu-rep" --page source --csv --print-source sass > "$OUT/stalls_sass.csv" 2>&1
python3 bench/ncu_stalls.py 45 < "$OUT/stalls_sass.csv"
