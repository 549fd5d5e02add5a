# SPDX-License-Identifier: MIT
# strata: thin entry points over the CMake presets (see CMakePresets.json and README.md).
#   make demo     build Release, run the examples and a short benchmark table
#   make test     install missing Debian packages, build (ci preset) and run every test through ctest
#   make bench    the full benchmark (bench/results/latest.{md,csv,svg})
#   make bench-malloc   the malloc mode: programs under glibc, mimalloc, jemalloc, tcmalloc and libstrata-malloc
#                 (bench/results/malloc.md)
#   make sanitize / make tsan   the ASan+UBSan and ThreadSanitizer test runs
#   make soak     every thread-safe resource under SOAK_THREADS (64) threads for SOAK_SECONDS (60) each
#                 (ci build: optimised, invariant asserts on; SOAK_RESOURCE=all or a name, e.g. bitmap)
#   make fuzz     the libFuzzer op-sequence fuzzers (fuzz preset: clang, ASan+UBSan), FUZZ_SECONDS (120) per target,
#                 each on a scratch copy of its seed corpus (fuzz/run.sh; FUZZ_TARGETS to pick some)
#   make fuzz-ci  the same, FUZZ_CI_SECONDS (5) per target: a short pass for CI, fails on any finding
#   make windows-test   cross-build for Windows with mingw-w64 (windows preset) and run the tests under wine
#                 (installs the Debian packages it needs; WINDOWS_CTEST_ARGS=-LE slow for CI's shorter pass)
#   make install PREFIX=/some/prefix   the library alone (no test dependencies)
.PHONY: all deps fuzz-deps build test demo bench bench-malloc sanitize tsan soak fuzz fuzz-build fuzz-ci release install clean \
	windows-deps windows-test

PREFIX ?= /usr/local
JOBS ?= 2
SOAK_SECONDS ?= 60
SOAK_THREADS ?= 64
SOAK_RESOURCE ?= all
FUZZ_SECONDS ?= 120
FUZZ_CI_SECONDS ?= 5
FUZZ_TARGETS ?=
# Needed to build and test (python3, sqlite3 and perl: real programs the tests run on libstrata-malloc); the bench
# peers are installed too but may be missing (they are then skipped).
DEPS := g++ cmake ninja-build pkg-config doctest-dev libboost-container-dev python3 sqlite3 perl valgrind nlohmann-json3-dev
PEER_DEPS := libmimalloc2.0 libjemalloc2 libtcmalloc-minimal4 libfoonathan-memory-dev
# The fuzzers need clang and its runtime libraries (libclang_rt.fuzzer, asan, ubsan) besides DEPS.
FUZZ_DEPS := clang libclang-rt-14-dev
# The Windows build: the mingw-w64 cross compiler (POSIX threads) and wine to run what it builds.
WINDOWS_DEPS := g++-mingw-w64-x86-64-posix wine64 wine
WINDOWS_CTEST_ARGS ?=
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
missing = $(shell for p in $(1); do dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q '^install ok installed' || echo $$p; done)

all: build

deps:
	@need="$(call missing,$(DEPS))"; peers="$(call missing,$(PEER_DEPS))"; \
	if [ -z "$$need$$peers" ]; then echo "deps: all present"; exit 0; fi; \
	export DEBIAN_FRONTEND=noninteractive; \
	$(SUDO) apt-get update -qq && \
	{ [ -z "$$need" ] || $(SUDO) apt-get install -y -qq --no-install-recommends $$need; } && \
	{ [ -z "$$peers" ] || $(SUDO) apt-get install -y -qq --no-install-recommends $$peers || \
	  echo "deps: some benchmark peers could not be installed; the bench skips them"; }

fuzz-deps: deps
	@need="$(call missing,$(FUZZ_DEPS))"; \
	if [ -z "$$need" ]; then echo "fuzz-deps: all present"; exit 0; fi; \
	export DEBIAN_FRONTEND=noninteractive; \
	$(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq --no-install-recommends $$need

windows-deps: deps
	@need="$(call missing,$(WINDOWS_DEPS))"; \
	if [ -z "$$need" ]; then echo "windows-deps: all present"; exit 0; fi; \
	export DEBIAN_FRONTEND=noninteractive; \
	$(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq --no-install-recommends $$need

windows-test: windows-deps
	cmake --preset windows
	cmake --build --preset windows -j $(JOBS)
	ctest --preset windows $(WINDOWS_CTEST_ARGS)

fuzz-build: fuzz-deps
	cmake --preset fuzz
	cmake --build --preset fuzz -j $(JOBS)

fuzz: fuzz-build
	fuzz/run.sh --seconds $(FUZZ_SECONDS) $(FUZZ_TARGETS)

fuzz-ci: fuzz-build
	fuzz/run.sh --seconds $(FUZZ_CI_SECONDS) $(FUZZ_TARGETS)

build: deps
	cmake --preset ci
	cmake --build --preset ci -j $(JOBS)

test: deps
	cmake --workflow --preset ci

sanitize: deps
	cmake --workflow --preset dev

tsan: deps
	cmake --workflow --preset tsan

soak: deps
	cmake --preset ci
	cmake --build --preset ci -j $(JOBS) --target strata_soak
	build/ci/soak/strata_soak --seconds=$(SOAK_SECONDS) --threads=$(SOAK_THREADS) --resource=$(SOAK_RESOURCE)

release: deps
	cmake --preset release
	cmake --build --preset release -j $(JOBS)

demo: release
	@for e in build/release/examples/example_*; do echo "== $$e"; "$$e" || exit 1; done
	build/release/bench/strata-bench --scale quick --reps 3 --out bench/results/demo

bench: release
	build/release/bench/strata-bench --scale full --reps 5 --out bench/results/latest

bench-malloc: release
	build/release/bench/strata-malloc-bench --scale full --reps 5 --out bench/results/malloc

# The library alone: needs only cmake and a C++17 compiler (no test, bench or example dependencies).
install:
	cmake -S . -B build/install -DCMAKE_BUILD_TYPE=Release -DSTRATA_BUILD_TESTS=OFF -DSTRATA_BUILD_BENCH=OFF \
	  -DSTRATA_BUILD_EXAMPLES=OFF -DSTRATA_BUILD_SOAK=OFF
	cmake --build build/install -j $(JOBS)
	cmake --install build/install --prefix $(PREFIX)

clean:
	rm -rf build
