-- The script environment in process (triage.testing loads apps in the same sandbox as the server):
-- what a script gets without asking, the error naming what is missing and how to ask for it, allow
-- { ... } in a route file, strict globals at request time and the load-time globals reported.
-- Fixture: spec/fixtures/sandbox_app/ (and a copy of it with routes/00_allow.lua added).
local ffi = require "ffi"
local testing = require "triage.testing"

for _, decl in ipairs {
  "int dup(int oldfd);",
  "int dup2(int oldfd, int newfd);",
  "int close(int fd);",
  "int mkstemp(char *template);",
} do
  pcall(ffi.cdef, decl) -- already declared by another spec file: fine
end

local DIR = "spec/fixtures/sandbox_app"
local ALLOW = 'allow { "ffi", "os.execute", "io.popen", "debug", "io.open", "bytecode" }\n'

-- fn() with file descriptor 2 (the error log outside the server) sent to a temporary file.
local function capture_stderr(fn)
  local template = ffi.new("char[?]", 32, "/tmp/triage-stderr-XXXXXX")
  local fd = ffi.C.mkstemp(template)
  assert(fd >= 0, "mkstemp failed")
  local saved = ffi.C.dup(2)
  ffi.C.dup2(fd, 2)
  local ok, result = pcall(fn)
  ffi.C.dup2(saved, 2)
  ffi.C.close(saved)
  ffi.C.close(fd)
  local path = ffi.string(template)
  local f = assert(io.open(path, "rb"))
  local text = f:read("*a")
  f:close()
  os.remove(path)
  assert(ok, result)
  return result, text
end

-- "scripts/probe.lua:N" of the line marked "@line <mark>".
local function at(mark)
  local n = 0
  for line in io.lines(DIR .. "/scripts/probe.lua") do
    n = n + 1
    if line:find("@line " .. mark, 1, true) then
      return ("scripts/probe.lua:%d"):format(n)
    end
  end
  error("no '@line " .. mark .. "' in scripts/probe.lua")
end

-- GET path answers 500 and the log names where and each of the needles.
local function refused(app, path, where, needles)
  local res, log = capture_stderr(function()
    return app:request(path)
  end)
  assert.equals(500, res.status, res.body)
  local logged = path:gsub("%?.*", "") -- the log names the path without its query
  assert.truthy(log:find("GET " .. logged .. " failed: " .. where .. ": ", 1, true),
    ("no 'GET %s failed: %s:' in the log:\n%s"):format(logged, where, log))
  for _, needle in ipairs(needles) do
    assert.truthy(log:find(needle, 1, true), ("no %q in the log:\n%s"):format(needle, log))
  end
end

describe("script environment in process", function()
  describe("without asking", function()
    local app
    setup(function()
      app = testing.app(DIR)
    end)

    local cases = {
      { "/ffi", "ffi", 'require "ffi" is not available to the app\'s scripts; ask for it with allow { "ffi" }' },
      { "/os-execute", "os.execute", 'os.execute is not available to the app\'s scripts; ask for it with allow { "os.execute" }' },
      { "/io-popen", "io.popen", 'io.popen is not available to the app\'s scripts; ask for it with allow { "io.popen" }' },
      { "/debug", "debug", 'the global \'debug\' is not available to the app\'s scripts; ask for it with allow { "debug" }' },
      { "/write-file", "io.open write", 'ask for it with allow { "io.open" }' },
      { "/internal", "internal", "module 'triage.ffi' is internal to the framework" },
      { "/pointer", "pointer", "attempt to perform arithmetic on" },
    }
    for _, c in ipairs(cases) do
      it(("GET %s: 500 naming %s, the line and how to ask"):format(c[1], c[2]), function()
        refused(app, c[1], at(c[2]), { c[3] })
      end)
    end

    it("loads no binary chunk", function()
      local res = app:request("/bytecode")
      assert.equals(200, res.status)
      assert.is_false(res:json().loaded)
      assert.truthy(res:json().err:find('allow { "bytecode" }', 1, true), res:json().err)
    end)

    it("reads the app's files", function()
      local res = app:request("/read-file")
      assert.equals(200, res.status)
      assert.equals("a data file the app reads", res:json().text)
    end)

    it("an undeclared global assigned or read in a request is a 500 naming file:line and the fix", function()
      refused(app, "/global-write?id=P-1", at("global write"),
        { "assignment to undeclared global 'patient'", "declare it with local" })
      refused(app, "/global-read", at("global read"), { "read of undeclared global 'patiant_id'", "declare it with local" })
    end)

    it("a global assigned at load time is declared, and reported", function()
      local res = app:request("/load-time-global")
      assert.equals(200, res.status)
      assert.equals("a global assigned while the app loads", res:json().value)
      local report = require("cjson").decode(require("triage.app").environment)
      assert.same({}, report.allowed)
      assert.same({ at("load-time global") .. ": loaded_at_top" }, report.load_time_globals)
      assert.truthy(require("triage.app").environment_warnings:find(
        at("load-time global") .. ": global 'loaded_at_top' assigned while the app loads", 1, true))
    end)

    it("keeps the framework's own access: the handler's standard globals are the real ones", function()
      local box = require("triage.app").box
      assert.equals(pairs, box.env.pairs)
      assert.equals(string.format, box.env.string.format)
      assert.is_nil(rawget(box.env, "ffi"))
      assert.is_not_nil(package.loaded.ffi) -- the framework itself still has it
    end)
  end)

  describe("with allow { ... } in a route file", function()
    local app, dir
    setup(function()
      dir = io.popen("mktemp -d /tmp/triage-sandbox-XXXXXX"):read("*l")
      assert(os.execute(("cp -r %s/. %s/"):format(DIR, dir)) == 0)
      local f = assert(io.open(dir .. "/routes/00_allow.lua", "w"))
      f:write(ALLOW)
      f:close()
      app = testing.app(dir)
    end)
    teardown(function()
      os.execute(("rm -rf '%s'"):format(dir))
    end)

    it("gets what it asked for", function()
      assert.equals(4, app:request("/ffi"):json().sizeof_int)
      assert.is_true(app:request("/os-execute"):json().ran)
      assert.equals("popen-ran", app:request("/io-popen"):json().out)
      assert.equals("@scripts/probe.lua", app:request("/debug"):json().source)
      assert.is_true(app:request("/write-file"):json().wrote)
      assert.is_true(app:request("/bytecode"):json().loaded)
      local report = require("cjson").decode(require("triage.app").environment)
      assert.same({ "ffi", "os.execute", "io.popen", "debug", "io.open", "bytecode" }, report.allowed)
    end)

    it("still refuses the framework's internals and undeclared globals", function()
      refused(app, "/internal", at("internal"), { "module 'triage.ffi' is internal to the framework" })
      refused(app, "/global-write?id=P-1", at("global write"), { "assignment to undeclared global 'patient'" })
    end)
  end)

  it("an unknown name in allow stops the load naming the route file and line", function()
    local dir = io.popen("mktemp -d /tmp/triage-sandbox-XXXXXX"):read("*l")
    assert(os.execute(("cp -r %s/. %s/"):format(DIR, dir)) == 0)
    local f = assert(io.open(dir .. "/routes/00_allow.lua", "w"))
    f:write('-- asks for too much\nallow { "everything" }\n')
    f:close()
    local ok, err = pcall(testing.app, dir)
    os.execute(("rm -rf '%s'"):format(dir))
    assert.is_false(ok)
    assert.truthy(tostring(err):find('routes/00_allow.lua:2: allow: unknown name "everything"', 1, true), err)
  end)
end)
