# The two set-up commands of README.md: `make run` and `make test`.
# Both install what is missing (Debian packages, as root or through sudo), then build with CMake.

BUILD ?= build
PREFIX ?= /usr/local
JOBS ?= $(shell nproc)
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
export DEBIAN_FRONTEND := noninteractive

# Build and run dependencies of the server.
PACKAGES := cmake make gcc pkg-config libluajit2-5.1-dev luajit2 libev-dev libhttp-parser-dev lua-cjson libsqlite3-dev libssl-dev libpq-dev luarocks
# What the test suite needs on top (postgresql: the throwaway server of the lua_pg_* specs).
TEST_PACKAGES := lua-busted lua-socket curl clang libclang-rt-14-dev sqlite3 postgresql

.PHONY: all build run test bench bench-smoke deps test-deps clean test-asan format format-check install fuzz

all: build

deps:
	@bin/install-packages $(PACKAGES)

test-deps: deps
	@bin/install-packages $(TEST_PACKAGES)

build: deps
	@cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
	@cmake --build $(BUILD) -j $(JOBS)

# Started as root, the workers run as nobody, who must be able to read this checkout; a checkout
# nobody cannot reach (under /root, say) is served with --user root instead, which the server warns of.
RUN_USER := $(shell [ "$$(id -u)" != 0 ] || setpriv --reuid=nobody --regid=nogroup --clear-groups \
	test -r "$(CURDIR)/routes/api.lua" 2>/dev/null || echo "--user root")

# The sample app's bearer-token key (README.md, "Authentication and permissions"), made once, mode 0600:
# `$(BUILD)/triage token --keys $(BUILD)/token.keys --sub P-0001 --role patient --trial T1` makes a token.
$(BUILD)/token.keys:
	@mkdir -p $(BUILD)
	@umask 077 && printf 'local %s\n' "$$(od -An -N32 -tx1 /dev/urandom | tr -d ' \n')" > $@

run: build $(BUILD)/token.keys
	$(BUILD)/triage --app . --listen 127.0.0.1:8080 --admin 127.0.0.1:9180 --access-log - $(RUN_USER) \
	  --token-keys $(BUILD)/token.keys

# PREFIX/bin/triage, the Lua half in PREFIX/share/triage/lua, libtriage_test.so in PREFIX/lib/triage,
# the sample app in PREFIX/share/triage/example (README.md, "Installing"). DESTDIR is honoured.
install: build
	cmake --install $(BUILD) --prefix $(PREFIX)

test: test-deps build
	@cd $(BUILD) && ctest --output-on-failure --timeout 900

# Every libFuzzer harness (spec/fuzz/) for FUZZ_SECONDS each (default 60), one after the other; what
# they find is kept in $(BUILD)/fuzz/runs/<harness>/ (spec/fuzz/README.md).
FUZZ_SECONDS ?= 60
fuzz: test-deps build
	@for h in http conn router jwt; do \
	  rm -rf $(BUILD)/fuzz/runs/$$h; \
	  spec/fuzz/run-fuzzer $(BUILD)/fuzz/fuzz_$$h spec/fuzz/corpus/$$h $(FUZZ_SECONDS) $(BUILD)/fuzz/runs/$$h || exit 1; \
	done

# The whole suite again with AddressSanitizer + UndefinedBehaviorSanitizer, in its own build directory.
test-asan: test-deps
	@cmake -S . -B $(BUILD)-asan -DCMAKE_BUILD_TYPE=RelWithDebInfo -DTRIAGE_SANITIZE=ON >/dev/null
	@cmake --build $(BUILD)-asan -j $(JOBS)
	@cd $(BUILD)-asan && ctest --output-on-failure --timeout 900

# The C sources against .clang-format. core/lua/triage/cdef.h is left as it is: ffi.cdef parses it too.
C_SOURCES = $(filter-out core/lua/triage/cdef.h,$(sort $(shell find core spec bench -name .build -prune -o \( -name '*.c' -o -name '*.h' \) -type f -print)))

format-check:
	@bin/install-packages clang-format
	clang-format --dry-run --Werror $(C_SOURCES)

format:
	@bin/install-packages clang-format
	clang-format -i $(C_SOURCES)

bench: test-deps build
	@bench/deps.sh
	bench/run

# The benchmark smoke run (bench/README.md): the peers' toolchains (Go, nginx + Lua, gunicorn, wrk), triage,
# then every peer's answers checked and every figure measured under 1 s of load. Not part of `make test`.
bench-smoke:
	@bench/deps.sh
	@$(MAKE) --no-print-directory build
	TRIAGE_BIN=$(abspath $(BUILD))/triage bench/run --smoke

clean:
	rm -rf $(BUILD) bench/.build
	rm -rf $(BUILD)-asan
