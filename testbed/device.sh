#!/usr/bin/env bash
# The testbed's whole GPU run on the device, in calls of at most 10 minutes each:
#
#   bash testbed/prepare_device.sh          # once, HERE: .whl (diffusers) and .devdeps
#   run(command="bash testbed/device.sh", carry=[".whl", ".devdeps"], timeout_s=600)
#   ... the same call again, within 30 s of the last one returning (the machine goes back after
#   30 s idle), until it prints "testbed: done" (3 calls for the default 16-minute budget).
#
# First call: installs the carried diffusers wheel, starts training (python -m testbed.train,
# TESTBED_MINUTES, default 16; TESTBED_TRAIN_ARGS, default the committed checkpoint's
# "--low-res-minutes 6 --low-res-batch 32") and the CUDA build of veda (VEDA_CUDA=ON pip
# install .) in their own process sessions, so both outlive the call. Every call then waits up
# to TESTBED_WAIT seconds (default 530) for training to end, prints the log's tail and copies the
# newest checkpoint to $OUT. Once training has ended and veda is built: samples dense and Veda
# (meanpool; 80, 90, 95%) on the training grid (16x24x32) and the evaluation grid (16x48x64),
# and the attention mass that top-k tile masks keep (testbed.attention_stats, training grid),
# then "testbed: done". Files back (at most 8, each < 16 MiB): $OUT/checkpoint/ (2 weight
# shards, index, config.json), $OUT/train.log, $OUT/samples.json (sample metrics of both grids
# and the attention statistics), $OUT/strip_train.png,
# $OUT/strip_eval.png.
# TESTBED_PHASES (default "train eval attention") picks the phases after training; phase "veda"
# samples with the distilled estimator of TESTBED_PROFILE (profile JSONs in the repo, e.g. from
# testbed.quality: one, or one per sparsity) at 80, 90 and 95%. TESTBED_CHECKPOINT (a checkpoint folder in the repo, e.g.
# testbed/checkpoint) skips training and samples that checkpoint.
# For a CPU dry run of this script: TESTBED_TRAIN_ARGS="--device cpu --tiny --max-steps 2"
# TESTBED_SAMPLE_ARGS="--device cpu --steps 2 --height 64 --width 64" TESTBED_SKIP_BUILD=1.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
WORK=${TESTBED_WORK:-/tmp/testbed_device}
RUN=$WORK/checkpoint
MINUTES=${TESTBED_MINUTES:-16}
# The committed checkpoint's recipe: the first 6 minutes on half-size clips, 32 a step.
TRAIN_ARGS=${TESTBED_TRAIN_ARGS-"--low-res-minutes 6 --low-res-batch 32"}
WAIT=${TESTBED_WAIT:-530}
OUT=${OUT:-$WORK/out}
REPO=$(pwd)
mkdir -p "$WORK" "$OUT"
export PYTHONUNBUFFERED=1
export PYTHONPATH=$WORK/site${PYTHONPATH:+:$PYTHONPATH}

if [ ! -f "$WORK/site.ok" ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --root-user-action=ignore \
    --target "$WORK/site" .whl/*.whl || { echo "testbed: no diffusers wheel (.whl carried?)"; exit 1; }
  touch "$WORK/site.ok"
fi
python3 -c "import torch, diffusers, skimage; print('torch', torch.__version__, 'diffusers',
  diffusers.__version__, 'cuda', torch.cuda.is_available())" || exit 1

if [ -n "${TESTBED_CHECKPOINT:-}" ] && [ ! -f "$WORK/train.started" ]; then
  rm -rf "$RUN" && cp -r "$TESTBED_CHECKPOINT" "$RUN" || exit 1
  touch "$WORK/train.started" && echo 0 > "$WORK/train.rc"
  echo "testbed: no training; sampling $TESTBED_CHECKPOINT"
fi
if [ ! -f "$WORK/train.started" ]; then
  touch "$WORK/train.started"
  setsid nohup bash -c "cd '$REPO' && python3 -m testbed.train --out '$RUN' --minutes $MINUTES \
    $TRAIN_ARGS > '$WORK/train.log' 2>&1; echo \$? > '$WORK/train.rc'" > /dev/null 2>&1 < /dev/null &
  echo "testbed: training started ($MINUTES min), log $WORK/train.log"
fi
if [ -n "${TESTBED_SKIP_BUILD:-}" ] && [ ! -f "$WORK/build.rc" ]; then
  touch "$WORK/build.started" && echo 0 > "$WORK/build.rc"  # use the veda already installed
fi
if [ ! -f "$WORK/build.started" ]; then
  touch "$WORK/build.started"
  # Ubuntu's compiler, not the image's /opt/gcc (first on PATH): an extension built with /opt/gcc
  # crashed on its first C++ exception (bench/RESULTS.md, the ~11:20 run).
  setsid nohup bash -c "cd '$REPO' && CC=/usr/bin/gcc CXX=/usr/bin/g++ CUDAHOSTCXX=/usr/bin/g++ \
    VEDA_CUDA=ON python3 -m pip install --no-build-isolation \
    --no-deps --root-user-action=ignore . > '$WORK/build.log' 2>&1; echo \$? > '$WORK/build.rc'" \
    > /dev/null 2>&1 < /dev/null &
  echo "testbed: veda CUDA build started, log $WORK/build.log"
fi

deadline=$((SECONDS + WAIT))
while [ ! -f "$WORK/train.rc" ] && [ $SECONDS -lt $deadline ]; do sleep 10; done
tail -n 4 "$WORK/train.log" 2>/dev/null
copy_back() {
  [ -n "${TESTBED_CHECKPOINT:-}" ] && return  # the checkpoint came from the repo
  mkdir -p "$OUT/checkpoint"
  cp "$RUN"/model*.safetensors* "$RUN"/config.json "$OUT/checkpoint/" 2>/dev/null
  rm -f "$OUT"/checkpoint/*.tmp
  cp "$WORK/train.log" "$OUT/train.log" 2>/dev/null
}
copy_back
if [ ! -f "$WORK/train.rc" ]; then
  echo "testbed: training still running; call again"
  exit 0
fi
if [ "$(cat "$WORK/train.rc")" != 0 ]; then
  echo "testbed: training failed (rc $(cat "$WORK/train.rc")); see train.log"
  exit 1
fi

while [ ! -f "$WORK/build.rc" ] && [ $SECONDS -lt $deadline ]; do sleep 5; done
if [ ! -f "$WORK/build.rc" ]; then
  echo "testbed: veda still building; call again"
  exit 0
fi
if [ "$(cat "$WORK/build.rc")" != 0 ]; then
  tail -n 30 "$WORK/build.log"
  echo "testbed: veda CUDA build failed; sampling on the CPU reference is too slow here"
  exit 1
fi
CLASSES=${TESTBED_CLASSES:-"0 4 8 10"}
PHASE_LIMIT=${TESTBED_PHASE_LIMIT:-240}  # seconds a sampling phase may take
cd "$WORK" || exit 1  # import the installed veda, not the source folder python/veda
export PYTHONPATH="$REPO:$PYTHONPATH"
status=0
for phase in ${TESTBED_PHASES:-train eval attention}; do
  [ -f "$WORK/$phase.done" ] && continue
  if [ $((SECONDS + PHASE_LIMIT)) -gt 590 ]; then
    echo "testbed: too little time left in this call for '$phase'; call again"
    exit 0
  fi
  case $phase in
    train) args=(-m testbed.sample --out "$WORK/samples_train" --classes $CLASSES) ;;
    eval) args=(-m testbed.sample --out "$WORK/samples_eval" --classes $CLASSES
                --height 192 --width 256) ;;
    veda) profiles=()
          for profile in ${TESTBED_PROFILE:?phase veda needs TESTBED_PROFILE}; do
            profiles+=("$REPO/$profile")
          done
          args=(-m testbed.sample --out "$WORK/samples_veda" --classes $CLASSES --method veda
                --profile "${profiles[@]}") ;;
    attention) args=(-m testbed.attention_stats --out "$WORK/attention.json" --classes 0 4) ;;
  esac
  # shellcheck disable=SC2086
  if timeout "$PHASE_LIMIT" python3 "${args[@]}" --checkpoint "$RUN" ${TESTBED_SAMPLE_ARGS:-}; then
    touch "$WORK/$phase.done"
  else
    status=1
  fi
done
for phase in train eval veda; do
  cp "$WORK/samples_$phase/strip.png" "$OUT/strip_$phase.png" 2>/dev/null
done
python3 - "$WORK" "$OUT/samples.json" <<'PY'
import json, sys
from pathlib import Path
work, out = Path(sys.argv[1]), Path(sys.argv[2])
files = {"train": work / "samples_train" / "metrics.json",
         "eval": work / "samples_eval" / "metrics.json", "attention": work / "attention.json",
         "veda": work / "samples_veda" / "metrics.json"}
merged = {name: json.loads(path.read_text()) for name, path in files.items() if path.exists()}
out.write_text(json.dumps(merged, indent=2) + "\n")
PY
[ $status = 0 ] && echo "testbed: done" || echo "testbed: sampling failed (see above)"
exit $status
