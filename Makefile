# The two set-up commands of the README:
#   make demo   configure, build, run `veda demo` on the embedded default
#   make test   configure, build, run every test
# PRESET=cpu builds without CUDA; PRESET=debug adds sanitizers (see CMakePresets.json).
PRESET ?= release
BUILD_DIR := $(if $(filter release,$(PRESET)),build,build-$(PRESET))
JOBS ?= $(shell nproc)
FORMATTED := $(shell git ls-files '*.h' '*.cc' '*.cu' '*.cuh' 2>/dev/null)
# Python tests (tests/python): PYTHON_TESTS=auto runs them when torch, diffusers, nanobind,
# scikit-build-core, safetensors and pytest import; 1 always (CI); 0 never.
PYTHON ?= python3
PYTHON_TESTS ?= auto
PYTHON_DEPS := import torch, diffusers, nanobind, scikit_build_core, safetensors, pytest

.PHONY: configure build demo test python-test format format-check clean

configure:
	cmake --preset $(PRESET)

build: configure
	cmake --build $(BUILD_DIR) -j $(JOBS)

demo: build
	./$(BUILD_DIR)/tools/veda/veda demo

test: build
	ctest --test-dir $(BUILD_DIR) --output-on-failure -j $(JOBS)
ifeq ($(PYTHON_TESTS),1)
	$(MAKE) --no-print-directory python-test
else ifeq ($(PYTHON_TESTS),auto)
	@if $(PYTHON) -c "$(PYTHON_DEPS)" 2>/dev/null; then $(MAKE) --no-print-directory python-test; \
	else echo "Python tests skipped: $(PYTHON) lacks torch, diffusers, nanobind, scikit-build-core, safetensors or pytest"; fi
endif

# Builds and installs the package veda (pip install ., incremental in build-python/), then runs
# pytest; `veda inspect` checks use this build's CLI.
python-test:
	$(PYTHON) -m pip install --no-build-isolation --no-deps --quiet --root-user-action=ignore .
	VEDA_CLI=$(CURDIR)/$(BUILD_DIR)/tools/veda/veda $(PYTHON) -m pytest tests/python

format:
	clang-format -i $(FORMATTED)

format-check:
	@clang-format --dry-run -Werror $(FORMATTED) && echo "format-check: $(words $(FORMATTED)) files clean"

clean:
	rm -rf build build-cpu build-debug
