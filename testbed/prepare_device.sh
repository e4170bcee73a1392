#!/usr/bin/env bash
# Run HERE (the development machine, with network) before testbed/device.sh runs on the device:
# the device image has torch, scikit-image, safetensors, Pillow, nanobind and scikit-build-core
# but not diffusers, and cannot download (diffusers' other needs are there; importlib_metadata is
# only imported below Python 3.8).
# Places its wheel in .whl/ (ignored by .gitignore) and the header-only C++ dependencies of
# the veda extension in .devdeps/ (bench/prepare_device_deps.sh). Then call the device with
# carry [".whl", ".devdeps"].
set -euo pipefail
cd "$(dirname "$0")/.."
DIFFUSERS_VERSION=${DIFFUSERS_VERSION:-0.42.1}
mkdir -p .whl
python3 -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 \
  --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 -d .whl \
  "diffusers==${DIFFUSERS_VERSION}"
bash bench/prepare_device_deps.sh
ls -la .whl
