# The two set-up commands of README.md: `make run` and `make test`.
# Both install what is missing (Debian packages, as root or through sudo), then build with CMake.

BUILD ?= build
JOBS ?= $(shell nproc)
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
export DEBIAN_FRONTEND := noninteractive

# Build and run dependencies of the server.
PACKAGES := cmake make gcc pkg-config libluajit2-5.1-dev luajit2 libev-dev libhttp-parser-dev lua-cjson
# What the test suite needs on top.
TEST_PACKAGES := lua-busted lua-socket curl

.PHONY: all build run test bench deps test-deps clean

all: build

deps:
	@bin/install-packages $(PACKAGES)

test-deps: deps
	@bin/install-packages $(TEST_PACKAGES)
	@bench/deps.sh

build: deps
	@cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
	@cmake --build $(BUILD) -j $(JOBS)

run: build
	$(BUILD)/triage --app . --listen 127.0.0.1:8080 --admin 127.0.0.1:9180 --access-log -

test: test-deps build
	@cd $(BUILD) && ctest --output-on-failure --timeout 900

bench: test-deps build
	bench/run

clean:
	rm -rf $(BUILD) bench/.build
