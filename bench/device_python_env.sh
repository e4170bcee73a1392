# shellcheck shell=bash
# The Python environment of a device run, to be sourced (bash) by device scripts:
#
#   source bench/device_python_env.sh || exit 1
#
# Needs the folders that testbed/prepare_device.sh places here and the device call carries:
# carry [".whl", ".devdeps"]. Afterwards `python3` imports diffusers and a CUDA build of veda:
#  1. the carried diffusers wheel (.whl/*.whl) installed with `pip --target` into $VEDA_ENV/site,
#     which goes first on PYTHONPATH (the device image has torch but not diffusers, and no network);
#  2. veda built with its CUDA kernels and installed into the system site-packages:
#     CC=/usr/bin/gcc CXX=/usr/bin/g++ CUDAHOSTCXX=/usr/bin/g++ VEDA_CUDA=ON
#     python3 -m pip install --no-build-isolation --no-deps .
#     Ubuntu's compiler, not the image's /opt/gcc (first on PATH): an extension built with /opt/gcc
#     crashed on its first C++ exception (bench/RESULTS.md, ~11:20 run). Log: $VEDA_ENV/build.log;
#     the CMake build folder (build-python/, ignored) is reused on a warm machine.
# Idempotent: each step writes a marker holding a key of its inputs (the wheels' names and sizes;
# a hash of the sources the extension and package are built from), so on a warm machine a step is
# redone only when its inputs changed. Also sets PYTHONUNBUFFERED=1.
# Run `import veda` from a folder without python/ on sys.path (e.g. `python3 bench/x.py`, or cd
# elsewhere first), so the installed package is imported rather than the source folder.
#
# Environment: VEDA_ENV (default /tmp/veda_device_env); VEDA_ENV_SKIP_BUILD=1 uses the veda
# already installed (a CPU dry run: VEDA_ENV_SKIP_BUILD=1 bash bench/run_wan_e2e.sh --tiny).
# Returns non-zero (never exits the caller) on failure, with the reason printed.

veda_device_env() {
  local repo work key start
  repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd) || return 1
  work=${VEDA_ENV:-/tmp/veda_device_env}
  mkdir -p "$work" || return 1
  export PYTHONUNBUFFERED=1
  case ":${PYTHONPATH:-}:" in
    *":$work/site:"*) ;;
    *) export PYTHONPATH="$work/site${PYTHONPATH:+:$PYTHONPATH}" ;;
  esac

  # 1. diffusers from the carried wheel(s).
  local wheels=("$repo"/.whl/*.whl)
  if [ ! -f "${wheels[0]}" ]; then
    echo "device_python_env: no wheel in $repo/.whl (run testbed/prepare_device.sh here and carry .whl)"
    return 1
  fi
  key=$(stat -c '%s %n' "${wheels[@]}" | md5sum | cut -d' ' -f1)
  if [ "$(cat "$work/site.key" 2>/dev/null)" != "$key" ]; then
    rm -rf "$work/site"
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
      --root-user-action=ignore --target "$work/site" "${wheels[@]}" || {
      echo "device_python_env: installing ${wheels[*]} failed"
      return 1
    }
    echo "$key" > "$work/site.key"
  fi

  # 2. veda with CUDA.
  if [ -n "${VEDA_ENV_SKIP_BUILD:-}" ]; then
    echo "device_python_env: VEDA_ENV_SKIP_BUILD set; using the veda already installed"
  else
    key=$(cd "$repo" && find CMakeLists.txt pyproject.toml cmake include src python tools \
      -type f ! -path '*/__pycache__/*' ! -name '*.pyc' -print0 | sort -z |
      xargs -0 md5sum | md5sum | cut -d' ' -f1) || return 1
    if [ "$(cat "$work/veda.key" 2>/dev/null)" != "$key" ]; then
      start=$SECONDS
      echo "device_python_env: building veda with CUDA (log $work/build.log)"
      (cd "$repo" && CC=/usr/bin/gcc CXX=/usr/bin/g++ CUDAHOSTCXX=/usr/bin/g++ VEDA_CUDA=ON \
        CMAKE_BUILD_PARALLEL_LEVEL=$(nproc) python3 -m pip install --no-build-isolation \
        --no-deps --root-user-action=ignore . > "$work/build.log" 2>&1) || {
        tail -n 30 "$work/build.log"
        echo "device_python_env: veda CUDA build failed after $((SECONDS - start)) s"
        return 1
      }
      echo "$key" > "$work/veda.key"
      echo "device_python_env: veda built in $((SECONDS - start)) s"
    fi
  fi
  (cd / && python3 -c "import torch, diffusers, veda.ops
print('device_python_env: torch', torch.__version__, '| diffusers', diffusers.__version__,
      '| veda GPU path', veda.ops.has_gpu_path(), '| cuda', torch.cuda.is_available())") || {
    echo "device_python_env: importing torch, diffusers and veda failed"
    return 1
  }
}

veda_device_env
