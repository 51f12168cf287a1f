-- Packaging as a rock: `luarocks make` of the root's rockspec, offline (no rocks server can be
-- reached), builds the server from a copy of the source tree and installs it into a fresh tree
-- (--tree): the binary in TREE/bin finds its Lua half among the tree's modules, serves the sample app,
-- checks it (`triage check`), and the tree's triage.testing answers through the tree's test library.
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

pcall(sys.ffi.cdef, "int setenv(const char *name, const char *value, int overwrite);")
pcall(sys.ffi.cdef, "int unsetenv(const char *name);")

local ROCKSPEC = "triage-0.1.0-1.rockspec"

describe("triage installed with luarocks make", function()
  local temps = {}
  local tree, src
  local saved_lua_dir = os.getenv("TRIAGE_LUA_DIR")

  local function tempdir(what)
    local d = sys.mkdtemp("/tmp/triage-rock-" .. what .. "-")
    temps[#temps + 1] = d
    return sys.realpath(d) or d
  end

  -- A copy of the sample app (its code, migrations and data) in a new temp dir.
  local function copy_app()
    local app = tempdir("app")
    local rc, out = run(("cd %s && cp -R routes scripts migrations data %s/ && rm -f %s/data/triage.db*"):format(
      shq(S.root), shq(app), shq(app)))
    assert(rc == 0, out)
    return app
  end

  setup(function()
    sys.C.unsetenv("TRIAGE_LUA_DIR")
    local rc, out = run("command -v luarocks")
    assert(rc == 0, "luarocks is not installed (make deps installs the Debian package)")
    -- the source tree as a release tarball has it: without build directories, stores or .git
    src = tempdir("src")
    rc, out = run(("cd %s && tar -c --exclude=./.git --exclude='./build*' --exclude='triage.db*' --exclude=./logs . "
      .. "| tar -x -C %s"):format(shq(S.root), shq(src)))
    assert(rc == 0, "copying the source tree failed:\n" .. out)
    tree = tempdir("tree")
    -- --only-server: a rocks server that does not exist, so that anything fetched would fail the build
    rc, out = run(("cd %s && luarocks --lua-version=5.1 --tree %s --only-server=file:///nonexistent/rocks make %s")
      :format(shq(src), shq(tree), ROCKSPEC))
    assert(rc == 0, "luarocks make failed:\n" .. out)
  end)

  teardown(function()
    S.stop_all()
    for _, d in ipairs(temps) do
      if d:match("^/tmp/triage%-rock%-") then os.execute("rm -rf " .. shq(d)) end
    end
    if saved_lua_dir then sys.C.setenv("TRIAGE_LUA_DIR", saved_lua_dir, 1) end
  end)

  it("installs the binary, every Lua module with cdef.h, and the test library into the tree", function()
    assert.is_truthy(sys.read_all(tree .. "/bin/triage"), "TREE/bin/triage")
    local rc, listing = run("ls " .. shq(S.root .. "/core/lua/triage"))
    assert(rc == 0, listing)
    for name in listing:gmatch("[^\n]+") do
      if name:match("%.lua$") or name == "cdef.h" then
        local installed = tree .. "/share/lua/5.1/triage/" .. name
        assert.equals(sys.read_all(S.root .. "/core/lua/triage/" .. name), sys.read_all(installed), installed)
      end
    end
    assert.is_truthy(sys.read_all(tree .. "/lib/lua/5.1/triage/libtriage_test.so"), "the test library")
    rc, listing = run(("luarocks --lua-version=5.1 --tree %s list --porcelain"):format(shq(tree)))
    assert.equals(0, rc, listing)
    assert.matches("^triage\t0%.1%.0%-1\tinstalled", listing)
  end)

  it("names the tree's Lua modules as its Lua directory", function()
    local rc, out = run(shq(tree .. "/bin/triage") .. " --version")
    assert.equals(0, rc, out)
    assert.equals(tree .. "/share/lua/5.1", out:match("\nlua: ([^\n]*)"))
  end)

  it("serves and checks the sample app from the tree", function()
    local app = copy_app()
    local rc, out = run(("cd /tmp && %s check --app %s%s"):format(shq(tree .. "/bin/triage"), shq(app),
      sys.is_root() and " --user root" or ""))
    assert.equals(0, rc, out)
    assert.matches("no problems", out)
    local srv = S.start { bin = tree .. "/bin/triage", app = app, cwd = tempdir("cwd"), workers = 1 }
    finally(function() srv:stop() end)
    local r = assert(http.get(srv.port, "/api/v1/protocols/NCT04356798"))
    assert.equals(200, r.status, r.body)
    assert.equals("NCT04356798", cjson.decode(r.body).id)
  end)

  it("gives other projects' specs triage.testing from the tree", function()
    local app = copy_app()
    local lua = tree .. "/share/lua/5.1"
    assert(os.execute("mkdir -p " .. shq(app .. "/spec")) == 0)
    local f = assert(io.open(app .. "/spec/rock_spec.lua", "wb"))
    f:write(([[
local testing = require "triage.testing"
describe("the tree's triage.testing", function()
  it("answers through the tree's test library", function()
    assert.equals(%q, package.searchpath("triage.cdef", (package.path:gsub("%%.lua", ".h"))))
    local res = testing.app("."):request "/api/v1/protocols/NCT04356798"
    assert.equals(200, res.status)
  end)
end)
]]):format(lua .. "/triage/cdef.h"))
    f:close()
    local rc, out = run(("cd %s && env -u TRIAGE_TEST_LIB -u TRIAGE_LUA_DIR LUA_PATH=%s busted --lua=luajit "
      .. "-o plainTerminal spec"):format(shq(app), shq(lua .. "/?.lua;" .. lua .. "/?/init.lua;;")))
    assert.equals(0, rc, out)
    assert.matches("1 success", out)
  end)
end)
