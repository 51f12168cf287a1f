-- triage as a rock: `luarocks --lua-version=5.1 make` (from a checkout, offline) builds the server
-- with CMake and installs it into the rocks tree: the binary in TREE/bin, the Lua half (triage.* with
-- its cdef.h) among the tree's Lua modules, so that other projects' specs `require "triage.testing"`,
-- and the in-process test library beside them. The C libraries and lua-cjson come from Debian
-- (`make deps`: libluajit2-5.1-dev, libev-dev, libhttp-parser-dev, libsqlite3-dev, libssl-dev,
-- lua-cjson), not from a rocks server: nothing is fetched. Every module of core/lua/triage is installed
-- (triage.app, .auth, .check, .ctx, .ffi, .middleware, .report, .routes, .sandbox, .schema, .store,
-- .testing, and triage itself).
rockspec_format = "3.0"
package = "triage"
version = "0.1.0-1"
source = {
  url = "git+file:///srv/git/triage.git",
  tag = "v0.1.0",
}
description = {
  summary = "HTTP/1.1 server with a C core and LuaJIT handlers for clinical-research data services",
  detailed = [[
    triage serves HTTP with a C core (libev, http-parser, pooled contexts, radix router) and runs
    request handlers and middleware written in Lua (LuaJIT, FFI request API), reloaded live.
  ]],
  license = "MIT",
}
dependencies = {
  "lua == 5.1", -- LuaJIT
}
external_dependencies = {
  LUAJIT = { header = "luajit-2.1/luajit.h" },
  LIBEV = { header = "ev.h" },
  HTTP_PARSER = { header = "http_parser.h" },
  SQLITE3 = { header = "sqlite3.h" },
  LIBCRYPTO = { header = "openssl/hmac.h" },
}
build = {
  type = "command",
  -- A build directory of its own, so that a checkout's build/ is left as it is.
  build_command = [[
    cmake -S . -B build-rock -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null &&
    cmake --build build-rock --target triage triage_test -j 2
  ]],
  -- PREFIX is the rock's directory: luarocks deploys its bin/ to TREE/bin, its lua/ to the tree's Lua
  -- modules (TREE/share/lua/5.1) and its lib/ to TREE/lib/lua/5.1 (core/config.c and
  -- core/lua/triage/ffi.lua find one another in that layout).
  install_command = [[
    mkdir -p "$(BINDIR)" "$(LUADIR)/triage" "$(LIBDIR)/triage" &&
    cp build-rock/triage "$(BINDIR)/triage" &&
    cp core/lua/triage/*.lua core/lua/triage/cdef.h "$(LUADIR)/triage/" &&
    cp build-rock/libtriage_test.so "$(LIBDIR)/triage/libtriage_test.so"
  ]],
}
test_dependencies = {
  "busted >= 2.0",
}
test = {
  type = "busted",
  flags = { "--lua=luajit", "spec/handlers" },
}
