-- Installing: `cmake --install` of the build directory into a fresh prefix gives a server that runs
-- from any working directory without the source tree: the binary finds its Lua half under
-- PREFIX/share/triage/lua (also in a copy of the prefix elsewhere), serves a copy of the sample app shipped
-- in PREFIX/share/triage/example, and handler specs run under busted against PREFIX alone (the
-- in-process test library found in PREFIX/lib/triage).
--
-- The build directory is the directory of $TRIAGE_BIN (or build/).
local spec_root = debug.getinfo(1, "S").source:match("^@(.*)/integration/[^/]+$")
if spec_root then package.path = spec_root .. "/?.lua;" .. package.path end
local S = require "support.server"
local http = S.http
local sys = S.sys
local cjson = S.json

local function shq(s)
  return "'" .. tostring(s):gsub("'", "'\\''") .. "'"
end

-- Run a shell command; returns its exit status and its output (stdout and stderr).
local function run(cmd)
  local p = assert(io.popen("(" .. cmd .. ") 2>&1; echo \"__rc=$?\""))
  local out = p:read("*a")
  p:close()
  local rc = tonumber(out:match("__rc=(%d+)%s*$"))
  return rc, (out:gsub("__rc=%d+%s*$", ""))
end

local function exists(path)
  local f = io.open(path, "rb")
  if f then f:close(); return true end
  return false
end

local function read(path)
  return (assert(sys.read_all(path), "cannot read " .. path))
end

-- The environment variable that would point the binary elsewhere: unset while this file runs.
-- (ffi.cdef is VM-global and busted may load this file again: ignore redefinitions.)
pcall(sys.ffi.cdef, "int setenv(const char *name, const char *value, int overwrite);")
pcall(sys.ffi.cdef, "int unsetenv(const char *name);")

describe("an installed triage", function()
  local build_dir = S.bin:match("^(.*)/[^/]+$") or "."
  local temps = {}
  local prefix -- realpath of the fresh install prefix
  local saved_lua_dir = os.getenv("TRIAGE_LUA_DIR")

  local function tempdir(what)
    local d = sys.mkdtemp("/tmp/triage-install-" .. what .. "-")
    temps[#temps + 1] = d
    return sys.realpath(d) or d
  end

  -- A copy of the installed sample app in a new temp dir.
  local function copy_example()
    local example = prefix .. "/share/triage/example"
    assert(exists(example .. "/routes/api.lua"), "no sample app installed in " .. example)
    local app = tempdir("app")
    local rc, out = run(("cp -R %s/routes %s/scripts %s/migrations %s/data %s/"):format(
      shq(example), shq(example), shq(example), shq(example), shq(app)))
    assert(rc == 0, "copying the sample app failed:\n" .. out)
    return app
  end

  local function version_of(bin)
    local rc, out = run(shq(bin) .. " --version")
    assert(rc == 0, bin .. " --version exited " .. tostring(rc) .. ":\n" .. out)
    return out, out:match("\nlua: ([^\n]*)")
  end

  setup(function()
    sys.C.unsetenv("TRIAGE_LUA_DIR")
    prefix = tempdir("prefix")
    assert(exists(build_dir .. "/cmake_install.cmake"),
      "no CMake build directory at " .. build_dir .. " (the directory of TRIAGE_BIN)")
    local rc, out = run(("cmake --install %s --prefix %s"):format(shq(build_dir), shq(prefix)))
    assert(rc == 0, "cmake --install failed:\n" .. out)
  end)

  teardown(function()
    S.stop_all()
    for _, d in ipairs(temps) do
      if d:match("^/tmp/triage%-install%-") then os.execute("rm -rf " .. shq(d)) end
    end
    if saved_lua_dir then sys.C.setenv("TRIAGE_LUA_DIR", saved_lua_dir, 1) end
  end)

  it("puts the binary, the Lua half, the test library and the sample app under the prefix", function()
    assert.is_true(exists(prefix .. "/bin/triage"), "bin/triage")
    local rc, listing = run("ls " .. shq(S.root .. "/core/lua/triage"))
    assert(rc == 0, listing)
    local n = 0
    for name in listing:gmatch("[^\n]+") do
      if name:match("%.lua$") or name == "cdef.h" then
        n = n + 1
        local installed = prefix .. "/share/triage/lua/triage/" .. name
        assert.is_true(exists(installed), installed .. " missing")
        assert.is_true(read(installed) == read(S.root .. "/core/lua/triage/" .. name),
          installed .. " differs from the source")
      end
    end
    assert.is_true(n >= 2, "no Lua modules in the source tree?")
    assert.is_true(exists(prefix .. "/lib/triage/libtriage_test.so"), "lib/triage/libtriage_test.so")
    for _, f in ipairs { "routes/api.lua", "scripts/protocols.lua", "scripts/epro.lua", "data/protocols.json",
                         "migrations/001_epro_submissions.sql" } do
      local installed = prefix .. "/share/triage/example/" .. f
      assert.is_true(exists(installed), installed .. " missing")
      assert.is_true(read(installed) == read(S.root .. "/" .. f), installed .. " differs from the source")
    end
  end)

  it("names PREFIX/share/triage/lua as its Lua directory, not the source tree", function()
    local out, lua_dir = version_of(prefix .. "/bin/triage")
    assert.is_truthy(out:match("^triage %d"), out)
    assert.are.equal(prefix .. "/share/triage/lua", lua_dir, out)
    local src = sys.realpath(S.root .. "/core/lua") or (S.root .. "/core/lua")
    assert.are_not.equal(src, lua_dir)
    assert.is_nil(lua_dir:find(S.root .. "/", 1, true), "the Lua directory is inside the source tree")
  end)

  it("serves a copy of the sample app from an unrelated working directory", function()
    local app = copy_example()
    local cwd = tempdir("cwd")
    local srv = S.start { bin = prefix .. "/bin/triage", app = app, cwd = cwd, workers = 2 }
    finally(function() srv:stop() end)
    assert.are.equal(cwd, sys.realpath("/proc/" .. srv.pid .. "/cwd"))

    local r = assert(http.get(srv.port, "/api/v1/protocols/NCT04356798"))
    assert.are.equal(200, r.status, r.body)
    local got = assert(http.json(r))
    local want
    for _, p in ipairs(cjson.decode(read(app .. "/data/protocols.json"))) do
      if p.id == "NCT04356798" then want = p end
    end
    assert(want, "NCT04356798 not in the sample data")
    assert.are.same(want, got)

    r = assert(http.post(srv.port, "/api/epro/submit",
      cjson.encode { patientId = "P-0001", reportData = { q1 = 3 } },
      { headers = { ["Content-Type"] = "application/json",
                    Authorization = srv:bearer{ sub = "dr.chen", role = "investigator" }.Authorization } }))
    assert.are.equal(200, r.status, r.body)
    local j = assert(http.json(r))
    assert.are.equal("report accepted", j.message)
    assert.is_string(j.receipt.id) -- stored in the copy's store

    local st = srv:stop()
    assert.are.equal(0, st.code, srv:logs())
  end)

  it("finds the Lua half of its own prefix when the whole prefix is copied elsewhere", function()
    local moved = tempdir("moved")
    local rc, out = run(("cp -a %s/. %s/"):format(shq(prefix), shq(moved)))
    assert(rc == 0, out)
    local _, lua_dir = version_of(moved .. "/bin/triage")
    assert.are.equal(moved .. "/share/triage/lua", lua_dir)

    local srv = S.start { bin = moved .. "/bin/triage", app = copy_example(), cwd = tempdir("cwd"), workers = 1 }
    finally(function() srv:stop() end)
    local r = assert(http.get(srv.port, "/api/v1/protocols/NCT04356798"))
    assert.are.equal(200, r.status, r.body)
  end)

  it("runs handler specs under busted with only the installed tree on the Lua path", function()
    local app = copy_example()
    local lua = prefix .. "/share/triage/lua"
    local f = assert(io.open(app .. "/.busted", "wb"))
    f:write(("return { _all = { lpath = %q } }\n"):format(lua .. "/?.lua;" .. lua .. "/?/init.lua"))
    f:close()
    assert(os.execute("mkdir -p " .. shq(app .. "/spec")) == 0)
    f = assert(io.open(app .. "/spec/installed_spec.lua", "wb"))
    f:write(([[
local testing = require "triage.testing"
describe("the installed triage.testing", function()
  it("loads the framework from the prefix", function()
    local cdef = package.searchpath("triage.cdef", (package.path:gsub("%%.lua", ".h")))
    assert.equals(%q, cdef)
  end)
  it("answers through the installed test library", function()
    local app = testing.app(".")
    local res = app:request "/api/v1/protocols/NCT04356798"
    assert.equals(200, res.status)
    assert.equals("NCT04356798", res:json().id)
    res = app:request { method = "POST", path = "/api/epro/submit", json = { reportData = { q1 = 1 } },
                        as = { sub = "dr.chen", role = "investigator" } }
    assert.equals(400, res.status)
    assert.same({ "patientId" }, res:json().fields)
  end)
end)
]]):format(lua .. "/triage/cdef.h"))
    f:close()
    -- A sanitizer build's test library needs its runtimes first in an uninstrumented luajit.
    local preload = {}
    local _, deps = run("ldd " .. shq(prefix .. "/lib/triage/libtriage_test.so"))
    for _, rt in ipairs { "libasan", "libubsan" } do
      preload[#preload + 1] = deps:match("=>%s*(%S*/" .. rt .. "%.so[^%s]*)")
    end
    local env = #preload == 0 and "" or
      ("LD_PRELOAD=%s ASAN_OPTIONS=\"${ASAN_OPTIONS:+$ASAN_OPTIONS:}detect_leaks=0\" "):format(shq(table.concat(preload, ":")))
    local rc, out = run(("cd %s && %senv -u TRIAGE_TEST_LIB -u TRIAGE_LUA_DIR busted --lua=luajit -o plainTerminal spec")
      :format(shq(app), env))
    assert(rc == 0, "busted against the installed tree failed:\n" .. out)
    assert.is_truthy(out:match("2 successes"), out)
  end)
end)
