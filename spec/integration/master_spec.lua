-- The master process: what it gives the commands it starts, what it refuses at start, and an admin
-- listener that no client can stall.
local spec_root = debug.getinfo(1, "S").source:match("^@(.*)/integration/[^/]+$")
if spec_root then package.path = spec_root .. "/?.lua;" .. package.path end
local server = require "support.server"
local http = server.http
local sys = server.sys

local FIXTURE = server.fixtures .. "/reload_app"

local function copy_app()
  local dir = sys.mkdtemp("/tmp/triage-master-")
  assert(os.execute(("cp -r %q/routes %q/scripts %q/"):format(FIXTURE, FIXTURE, dir)) == 0)
  return dir
end

local function touch_script(app)
  local path = app .. "/scripts/version.lua"
  local f = assert(io.open(path, "ab"))
  f:write("\n")
  f:close()
end

local function reload_outcome(srv, timeout)
  return server.eventually(timeout or 10, function()
    local st = srv:status()
    return st and (st.reload.reloads + st.reload.failures > 0) and st
  end)
end

describe("--reload-check", function()
  it("runs with default signal dispositions and an empty signal mask", function()
    local app = copy_app()
    -- SigIgn and SigBlk are the ignored and blocked signal sets, in hex: both must be empty. And a
    -- pipeline whose reader exits early must end quietly (SIGPIPE), not print "Broken pipe".
    local check = [=[grep -Eq '^SigIgn:[[:space:]]+0+$' /proc/self/status || { grep -E '^Sig(Ign|Blk)' /proc/self/status; exit 4; }
grep -Eq '^SigBlk:[[:space:]]+0+$' /proc/self/status || { grep -E '^Sig(Ign|Blk)' /proc/self/status; exit 5; }
yes 2>check-stderr | head -1 >/dev/null
if test -s check-stderr; then cat check-stderr; exit 6; fi]=]
    local srv = server.start { app = app, workers = 1, args = { "--reload-check", check } }
    finally(function()
      srv:stop()
      os.execute(("rm -rf %q"):format(app))
    end)
    touch_script(app)
    local st = reload_outcome(srv)
    assert.is_truthy(st, srv:logs())
    assert.equals(1, st.reload.reloads, "the check failed: " .. tostring(st.reload.last_error))
    assert.equals(0, st.reload.failures)
  end)

  it("reports a check that cannot start as a rejected reload", function()
    local app = copy_app()
    local srv = server.start { app = app, workers = 1, args = { "--reload-check", "true" } }
    finally(function() -- (one finally per test: busted keeps only one)
      srv:stop()
      os.execute(("rm -rf %q %q.gone"):format(app, app))
    end)
    -- The check runs in the app directory: without it, it cannot start.
    assert(os.execute(("mv %q %q.gone"):format(app, app)) == 0)
    srv:signal(sys.SIGHUP)
    local st = server.eventually(10, function()
      local s = srv:status()
      return s and type(s.reload.last_error) == "string" and s
    end)
    assert.is_truthy(st, srv:logs())
    assert.matches("could not be started", st.reload.last_error, 1, true)
    assert.matches(app, st.reload.last_error, 1, true)
  end)
end)

describe("a second server on a port already served", function()
  it("fails at start with a message naming the address, and the first server keeps all clients", function()
    local first = server.start { workers = 2 }
    local second
    finally(function()
      first:stop()
      if second then second:stop() end
    end)
    second = server.start { workers = 2, port = first.port, wait = false }
    local e = second:wait_exit(10)
    assert.is_truthy(e, "the second server did not exit")
    assert.is_not.equals(0, e.code)
    local log = second:error_log() .. second:output()
    assert.matches("127.0.0.1:" .. first.port, log, 1, true)
    assert.matches("another server is already listening there", log, 1, true)
    -- Every request reaches the first server (its workers count them all).
    local before = 0
    for _, w in ipairs(first:status().workers) do before = before + w.requests end
    for _ = 1, 20 do
      local r = http.get(first.port, "/api/v1/protocols/NCT04356798", { timeout = 5 })
      assert.equals(200, r and r.status)
    end
    local after = server.eventually(5, function()
      local n = 0
      for _, w in ipairs(first:status().workers) do n = n + w.requests end
      return n - before >= 20 and n
    end)
    assert.is_truthy(after)
  end)
end)

describe("the admin listener", function()
  it("answers status and reload while other admin clients stall", function()
    local app = copy_app()
    local srv = server.start { app = app, workers = 1 }
    local stalled = {}
    finally(function()
      for _, c in ipairs(stalled) do c:close() end
      srv:stop()
      os.execute(("rm -rf %q"):format(app))
    end)
    -- Clients that send half a request and never read.
    for i = 1, 20 do
      local c = assert(http.connect(srv.admin_port))
      c:send("GET /_triage/status HTTP/1.1\r\nHost: a\r\n")
      stalled[i] = c
    end
    assert.is_truthy(srv:status(2), srv:logs())
    local r = srv:reload()
    assert.equals(200, r and r.status, r and r.body)
    assert.matches('"ok":true', r.body, 1, true)
  end)
end)
