# The two set-up commands of the README:
#   make demo   configure, build, run `veda demo` on the embedded default
#   make test   configure, build, run every test
# PRESET=cpu builds without CUDA; PRESET=debug adds sanitizers (see CMakePresets.json).
PRESET ?= release
BUILD_DIR := $(if $(filter release,$(PRESET)),build,build-$(PRESET))
JOBS ?= $(shell nproc)
FORMATTED := $(shell git ls-files '*.h' '*.cc' '*.cu' '*.cuh' 2>/dev/null)

.PHONY: configure build demo test format format-check clean

configure:
	cmake --preset $(PRESET)

build: configure
	cmake --build $(BUILD_DIR) -j $(JOBS)

demo: build
	./$(BUILD_DIR)/tools/veda/veda demo

test: build
	ctest --test-dir $(BUILD_DIR) --output-on-failure -j $(JOBS)

format:
	clang-format -i $(FORMATTED)

format-check:
	clang-format --dry-run -Werror $(FORMATTED)

clean:
	rm -rf build build-cpu build-debug
