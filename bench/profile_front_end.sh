#!/usr/bin/env bash
# Device machine (H200): where the front end's time goes at Wan2.1-14B 720p (75,600 tokens,
# 40 heads). Builds the kernels and bench/core_kernels_bench.cc (no tools, no tests), times the
# front end and the whole call, then reads each front-end kernel's duration, DRAM and SM
# throughput and occupancy with Nsight Compute (clocks left alone). Nothing to carry.
#   bash bench/profile_front_end.sh
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=build-device-profile
start=$(date +%s)
cmake -S . -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE=Release -DCMAKE_CUDA_ARCHITECTURES=90a \
  -DVEDA_TOOLS=OFF -DVEDA_TESTS=OFF > /tmp/profile_configure.log 2>&1 ||
  { tail -30 /tmp/profile_configure.log; exit 1; }
cmake --build "$BUILD" -j "$(nproc)" --target veda_core_kernels_bench > /tmp/profile_build.log 2>&1 ||
  { grep -E "error" -A3 /tmp/profile_build.log | head -40; exit 1; }
echo "build: $(( $(date +%s) - start )) s"
bench="$BUILD/bench/veda_core_kernels_bench"
export VEDA_BENCH_SIZE="${VEDA_BENCH_SIZE:-n75600}" VEDA_BENCH_ORACLE=0
"$bench"
metrics=gpu__time_duration.sum,dram__throughput.avg.pct_of_peak_sustained_elapsed
metrics+=,sm__throughput.avg.pct_of_peak_sustained_elapsed,sm__warps_active.avg.pct_of_peak_sustained_active
# Every gather (q, k, v; 6 times) and the first two selections (each its kernels).
ncu --clock-control none --metrics "$metrics" --csv --page raw \
  -k regex:'gather|project|select|statistic|score|topk' -c "${PROFILE_LAUNCHES:-24}" "$bench" 2>/dev/null |
  python3 bench/ncu_table.py
