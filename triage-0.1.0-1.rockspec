-- The Lua half of triage (ctx, route DSL, middleware, testing helper) as a rock. The server itself is
-- built with CMake (see README.md); the rock lets other projects' specs `require "triage.testing"`.
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
  "lua == 5.1",
  "lua-cjson >= 2.1.0",
}
test_dependencies = {
  "busted >= 2.0",
}
build = {
  type = "builtin",
  modules = {
    ["triage"] = "core/lua/triage/init.lua",
    ["triage.app"] = "core/lua/triage/app.lua",
    ["triage.auth"] = "core/lua/triage/auth.lua",
    ["triage.ctx"] = "core/lua/triage/ctx.lua",
    ["triage.ffi"] = "core/lua/triage/ffi.lua",
    ["triage.middleware"] = "core/lua/triage/middleware.lua",
    ["triage.routes"] = "core/lua/triage/routes.lua",
    ["triage.sandbox"] = "core/lua/triage/sandbox.lua",
    ["triage.schema"] = "core/lua/triage/schema.lua",
    ["triage.testing"] = "core/lua/triage/testing.lua",
  },
  copy_directories = {},
  install = {
    lua = {
      ["triage.cdef"] = "core/lua/triage/cdef.h",
    },
  },
}
test = {
  type = "busted",
  flags = { "--lua=luajit", "spec/handlers" },
}
