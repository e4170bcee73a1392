#!/usr/bin/env bash
# The end-to-end Wan2.1 benchmark (bench/wan_e2e.py) on the device, one call:
#
#   bash testbed/prepare_device.sh        # once, HERE: .whl (diffusers) and .devdeps
#   run(command="bash bench/run_wan_e2e.sh [wan_e2e.py args]", carry=[".whl", ".devdeps"],
#       timeout_s=600)
#
# Sources bench/device_python_env.sh (diffusers from the carried wheel; veda built with CUDA on
# the first call, skipped on a warm machine whose sources did not change), then runs wan_e2e.py
# with the arguments given (default: all configs and variants). It gets --time-limit: what is left
# of WAN_E2E_BUDGET seconds (default 570) counted from this script's start, so steps that would
# run past the call's 600-s limit are skipped and reported rather than killed.
# Files back: $OUT/wan_e2e.json (rewritten after every variant), $OUT/wan_e2e.md (the table),
# $OUT/wan_e2e.log (the whole output).
# CPU dry run: OUT=/tmp/x VEDA_ENV_SKIP_BUILD=1 bash bench/run_wan_e2e.sh --tiny
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-$PWD/.deviceout}
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.mem,memory.used \
  --format=csv,noheader 2>/dev/null || echo "run_wan_e2e: no nvidia-smi"
# shellcheck source=bench/device_python_env.sh
source bench/device_python_env.sh || { echo "run_wan_e2e: no Python environment"; exit 1; }
left=$((${WAN_E2E_BUDGET:-570} - SECONDS))
echo "run_wan_e2e: environment ready after ${SECONDS} s; ${left} s left for the benchmark"
# python3 bench/wan_e2e.py puts bench/ first on sys.path: `import veda` is the installed package.
python3 bench/wan_e2e.py --out "$OUT/wan_e2e.json" --time-limit "$left" "$@" 2>&1 |
  tee "$OUT/wan_e2e.log"
