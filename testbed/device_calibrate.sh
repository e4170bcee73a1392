#!/usr/bin/env bash
# Device machine (carry .whl and .devdeps): calibrate a Veda profile of the committed checkpoint on
# captures of a chosen grid, with the GPU oracle, then sample with it on that grid. For the grid
# one generates at, e.g. the evaluation grid (the CPU harness would take hours there):
#   bash testbed/device_calibrate.sh 192 256
# Returns in $OUT: profile-90.json (+ .estimator.safetensors), calibrate.log, samples/metrics.json,
# samples/strip.png, samples_dense3/metrics.json (the first 3 steps dense).
# Environment: CALIB_CLASSES (default "1 2 3 5 6 7", seed 101; float32 captures of 49,152 tokens
# are 1.4 GB a (layer, t) file for 6 clips), CALIB_T ("0.9 0.5 0.2"), CALIB_STRUCTURE (P's
# structure, veda.calibrate's `structure`: "diagonal", "full" or "auto"; default "diagonal").
set -uo pipefail
height=${1:?height}
width=${2:?width}
cd "$(dirname "$0")/.." || exit 1
repo=$PWD
OUT=${OUT:-$repo/.deviceout}
mkdir -p "$OUT"
source bench/device_python_env.sh || exit 1
export PYTHONPATH="$repo:${PYTHONPATH:-}"
captures=/tmp/veda_grid_captures_${height}x${width}
cd /tmp || exit 1  # import the installed veda, not python/ of the repository
start=$(date +%s)
# shellcheck disable=SC2086
python3 -m testbed.capture --checkpoint "$repo/testbed/checkpoint" --out "$captures" \
  --device cuda --classes ${CALIB_CLASSES:-1 2 3 5 6 7} --seeds 101 --t ${CALIB_T:-0.9 0.5 0.2} \
  --height "$height" --width "$width" || exit 1
echo "capture: $(( $(date +%s) - start )) s, $(du -sh "$captures" | cut -f1)"
start=$(date +%s)
log="$OUT/calibrate.log"
python3 - "$captures" "$OUT/profile-90.json" "${CALIB_STRUCTURE:-diagonal}" > "$log" 2>&1 <<'EOF' || { tail -20 "$log"; exit 1; }
import sys
from pathlib import Path

import veda

captures, out, structure = Path(sys.argv[1]), sys.argv[2], sys.argv[3]
veda.calibrate(sorted(captures.glob("*.safetensors")), out, model="testbed", device="cuda",
               structure=structure, verbose=True)
EOF
grep -E "head|oracle phase" "$log"
echo "calibrate: $(( $(date +%s) - start )) s"
rm -rf "$captures"
sample="python3 -m testbed.sample --checkpoint $repo/testbed/checkpoint --classes 0 4 8 10
  --method veda --profile $OUT/profile-90.json --height $height --width $width"
$sample --out "$OUT/samples" 2>&1 | tail -4
$sample --dense-steps 3 --out "$OUT/samples_dense3" 2>&1 | tail -4
rm -f "$OUT/samples_dense3/strip.png"  # the device returns at most 8 files
