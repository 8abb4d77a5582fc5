# lockstep — top-level entry points. Every target does its own set-up on a
# fresh Debian 12 machine: missing packages are installed, CMake is configured.
BUILD_DIR ?= build
BUILD_TYPE ?= Release
JOBS ?= $(shell nproc)
CTEST_ARGS ?=

.PHONY: all deps configure build test tsan demo bench clean format check-llamacpp

all: build

deps:
	@scripts/setup-deps.sh

$(BUILD_DIR)/build.ninja: | deps
	cmake -S . -B $(BUILD_DIR) -G Ninja -DCMAKE_BUILD_TYPE=$(BUILD_TYPE)

configure: deps $(BUILD_DIR)/build.ninja

build: configure
	cmake --build $(BUILD_DIR) -j $(JOBS)

test: build
	cd $(BUILD_DIR) && ctest --output-on-failure -j $(JOBS) $(CTEST_ARGS)

# ThreadSanitizer over the model layer (worker pool, engine): its own build
# directory, only the model test binaries, and any report fails the run.
TSAN_BUILD_DIR ?= build-tsan

tsan: deps
	cmake -S . -B $(TSAN_BUILD_DIR) -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
	      -DLOCKSTEP_SANITIZE=thread
	cmake --build $(TSAN_BUILD_DIR) -j $(JOBS) --target model_tests
	cd $(TSAN_BUILD_DIR) && TSAN_OPTIONS="halt_on_error=1 $(TSAN_OPTIONS)" \
	    ctest -L model --output-on-failure -j $(JOBS) $(CTEST_ARGS)

demo: build
	scripts/demo.sh $(BUILD_DIR)

# GGUF export/import against llama.cpp itself (Node.js >= 20, npm registry):
# its own step, not part of `make test` (docs/storage.md, "GGUF files").
check-llamacpp: build
	scripts/check-llamacpp.sh $(BUILD_DIR)

bench: build
	$(BUILD_DIR)/bin/lockstep-bench kernels
	$(BUILD_DIR)/bin/lockstep-bench transport
	$(BUILD_DIR)/bin/lockstep-bench planner
	$(BUILD_DIR)/bin/lockstep-bench simulate
	$(BUILD_DIR)/bin/lockstep-bench cluster

clean:
	rm -rf $(BUILD_DIR) $(TSAN_BUILD_DIR)

format:
	git ls-files '*.hpp' '*.cpp' | xargs clang-format -i
