-- The script environment in the server (README.md, "Script environment"), fixture
-- spec/fixtures/sandbox_app/: without asking, `require "ffi"`, `os.execute`, `io.popen` and
-- `debug.getinfo` in a handler are a 500 whose error log entry names the line and how to ask; with
-- `allow { ... }` in a route file they work and status lists what was asked for. Strict globals: a
-- handler assigning or reading an undeclared global gets a 500 naming file:line, and concurrent
-- requests across a triage.sleep never see each other's value; a global assigned at load time is
-- reported by the preflight (log and status).
local spec_root = debug.getinfo(1, "S").source:match("^@(.*)/integration/[^/]+$")
if spec_root then package.path = spec_root .. "/?.lua;" .. package.path end
local S = require "support.server"
local http = S.http
local sys = S.sys

local FIXTURE = S.fixtures .. "/sandbox_app"
local ALLOW = 'allow { "ffi", "os.execute", "io.popen", "debug" }\n'

-- "scripts/probe.lua:N" of the line marked "@line <mark>".
local function at(mark)
  local n = 0
  for line in io.lines(FIXTURE .. "/scripts/probe.lua") do
    n = n + 1
    if line:find("@line " .. mark, 1, true) then return ("scripts/probe.lua:%d"):format(n) end
  end
  error("no '@line " .. mark .. "' in scripts/probe.lua")
end

-- The error log line of request id.
local function logged(srv, id)
  return S.eventually(3, function()
    return srv:error_log():match("[^\n]*request " .. id:gsub("%-", "%%-") .. ":[^\n]*")
  end)
end

-- GET path: 500, and the log entry of the request names where and each of needles.
local function refused(srv, path, where, needles)
  local r = assert(http.get(srv.port, path))
  assert.are.equal(500, r.status, path .. ": " .. http.quote(r.body))
  local id = assert(http.json(r)).requestId
  local line = logged(srv, id)
  assert(line, "request " .. id .. " not in the error log:\n" .. srv:error_log())
  local bare = path:gsub("%?.*", "")
  assert.truthy(line:find(("GET %s failed: %s: "):format(bare, where), 1, true), line)
  for _, needle in ipairs(needles) do
    assert.truthy(line:find(needle, 1, true), ("no %q in:\n%s"):format(needle, line))
  end
end

local function copy_with_allow()
  local dir = sys.mkdtemp("/tmp/triage-sandbox-")
  assert(os.execute(("cp -r %q/. %q/"):format(FIXTURE, dir)) == 0)
  local f = assert(io.open(dir .. "/routes/00_allow.lua", "w"))
  f:write("-- what the probes need, asked for before the routes that use it\n", ALLOW)
  f:close()
  return dir
end

describe("script environment", function()
  teardown(function() S.stop_all() end)

  describe("by default", function()
    local srv
    setup(function() srv = S.start { app = FIXTURE, workers = 2 } end)

    it("require \"ffi\" in a handler: 500, the log names the line and allow { \"ffi\" }", function()
      refused(srv, "/ffi", at("ffi"), { 'require "ffi" is not available to the app\'s scripts',
        'ask for it with allow { "ffi" }' })
    end)

    it("os.execute: 500 naming it and allow { \"os.execute\" }", function()
      refused(srv, "/os-execute", at("os.execute"), { "os.execute is not available", 'allow { "os.execute" }' })
    end)

    it("io.popen: 500 naming it and allow { \"io.popen\" }", function()
      refused(srv, "/io-popen", at("io.popen"), { "io.popen is not available", 'allow { "io.popen" }' })
    end)

    it("debug.getinfo: 500 naming debug and allow { \"debug\" }", function()
      refused(srv, "/debug", at("debug"), { "the global 'debug' is not available", 'allow { "debug" }' })
    end)

    it("the framework's internal modules are out of reach", function()
      refused(srv, "/internal", at("internal"), { "module 'triage.ffi' is internal to the framework" })
    end)

    it("an undeclared global assigned or read in a handler: 500 naming file:line and the fix", function()
      refused(srv, "/global-write?id=P-1", at("global write"),
        { "assignment to undeclared global 'patient'", "declare it with local" })
      refused(srv, "/global-read", at("global read"), { "read of undeclared global 'patiant_id'", "declare it with local" })
    end)

    it("concurrent requests across a sleep never see each other's value", function()
      -- the buggy handler (a missing local) fails every time instead of mixing patients...
      local conns = {}
      for i = 1, 2 do
        conns[i] = assert(http.connect(srv.port))
        assert(conns[i]:send(http.build("GET", "/global-sleep?id=P-" .. i)))
      end
      for i = 1, 2 do
        local r = assert(conns[i]:read_response())
        assert.are.equal(500, r.status, http.quote(r.body))
        assert.is_nil(r.body:find("P%-"), r.body)
        conns[i]:close()
      end
      assert.truthy(srv:error_log():find(at("global sleep") .. ": assignment to undeclared global 'current'", 1, true))
      -- ...and the same handler with `local` answers each request with its own id, 40 at once.
      conns = {}
      for i = 1, 40 do
        conns[i] = assert(http.connect(srv.port))
        assert(conns[i]:send(http.build("GET", "/local-sleep?id=P-" .. i)))
      end
      for i = 1, 40 do
        local r = assert(conns[i]:read_response())
        assert.are.equal(200, r.status)
        assert.are.equal("P-" .. i, assert(http.json(r)).id)
        conns[i]:close()
      end
    end)

    it("a global assigned at load time is reported by the preflight, in the log and in status", function()
      local where = at("load-time global")
      assert.truthy(srv:error_log():find(
        where .. ": global 'loaded_at_top' assigned while the app loads (shared by every request); declare it with local",
        1, true), srv:error_log())
      local st = assert(srv:status())
      assert.are.same({}, st.script_environment.allowed)
      assert.are.same({ where .. ": loaded_at_top" }, st.script_environment.load_time_globals)
      local r = assert(http.get(srv.port, "/load-time-global"))
      assert.are.equal(200, r.status)
    end)

    it("reads the app's own files", function()
      local r = assert(http.get(srv.port, "/read-file"))
      assert.are.equal(200, r.status, http.quote(r.body))
      assert.are.equal("a data file the app reads", assert(http.json(r)).text)
    end)
  end)

  describe("with allow { ... } in a route file", function()
    local srv, dir
    setup(function()
      dir = copy_with_allow()
      srv = S.start { app = dir, workers = 2 }
    end)
    teardown(function()
      if srv then srv:stop() end
      os.execute(("rm -rf %q"):format(dir))
    end)

    it("ffi, os.execute, io.popen and debug work, and status shows what was asked for", function()
      local r = assert(http.get(srv.port, "/ffi"))
      assert.are.equal(200, r.status, http.quote(r.body))
      assert.are.equal(4, assert(http.json(r)).sizeof_int)
      r = assert(http.get(srv.port, "/os-execute"))
      assert.are.equal(200, r.status, http.quote(r.body))
      assert.is_true(assert(http.json(r)).ran)
      r = assert(http.get(srv.port, "/io-popen"))
      assert.are.equal(200, r.status, http.quote(r.body))
      assert.are.equal("popen-ran", assert(http.json(r)).out)
      r = assert(http.get(srv.port, "/debug"))
      assert.are.equal(200, r.status, http.quote(r.body))
      assert.are.equal("@scripts/probe.lua", assert(http.json(r)).source)
      local st = assert(srv:status())
      assert.are.same({ "ffi", "os.execute", "io.popen", "debug" }, st.script_environment.allowed)
    end)

    it("a reload that drops the allow takes it away, and status follows", function()
      os.remove(dir .. "/routes/00_allow.lua")
      local gen = assert(srv:status()).generation
      assert(S.eventually(10, function()
        local st = srv:status()
        return st and st.generation > gen and #st.script_environment.allowed == 0
      end), "the reload did not go live")
      assert(srv:wait_generation(gen + 1, 10))
      local r = assert(http.get(srv.port, "/ffi"))
      assert.are.equal(500, r.status)
    end)
  end)

  it("an unknown name in allow stops the start naming the file and line", function()
    local dir = sys.mkdtemp("/tmp/triage-sandbox-")
    finally(function() os.execute(("rm -rf %q"):format(dir)) end)
    assert(os.execute(("cp -r %q/. %q/"):format(FIXTURE, dir)) == 0)
    local f = assert(io.open(dir .. "/routes/00_allow.lua", "w"))
    f:write('-- asks for too much\nallow { "everything" }\n')
    f:close()
    local srv = S.start { app = dir, workers = 1, wait = false }
    local e = srv:wait_exit(10)
    srv:stop({ timeout = 3 })
    assert(e, "the server started with allow { \"everything\" }")
    assert.is_true(e.code ~= nil and e.code ~= 0, sys.describe_exit(e))
    assert.truthy(srv:error_log():find('routes/00_allow.lua:2: allow: unknown name "everything"', 1, true),
      srv:error_log())
  end)
end)
