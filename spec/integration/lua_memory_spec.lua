-- The Lua memory limit (--lua-memory-limit), fixture spec/fixtures/memory_app/, one worker with a
-- 64 MiB limit: a handler that allocates without bound gets the core's 500 while hundreds of normal
-- requests around it on other connections all succeed; the same worker goes on serving (its pid does
-- not change), its Lua memory falls back near its idle figure, and the error log names the limit.
-- A generation that cannot load under the limit is a clear reload error; a bad value a usage error.
local spec_root = debug.getinfo(1, "S").source:match("^@(.*)/integration/[^/]+$")
if spec_root then package.path = spec_root .. "/?.lua;" .. package.path end
local S = require "support.server"
local http = S.http
local loadgen = S.loadgen
local sys = S.sys

local MiB = 1024 * 1024
local FIXTURE = S.fixtures .. "/memory_app"
local LIMIT = "64m"

local function worker_of(srv)
  local st = assert(srv:status())
  return st.workers[1]
end

-- A GET on its own connection whose answer is read without blocking, a piece at every call.
local function start_request(port, path)
  local c = assert(http.connect(port, { timeout = 60 }))
  assert(c:send(http.build("GET", path)))
  return c
end

local function poll_response(c)
  c:fill(sys.now()) -- whatever has arrived; never waits
  local status = c.buf:match("^HTTP/1%.1 (%d%d%d) ")
  local head_end = c.buf:find("\r\n\r\n", 1, true)
  if not (status and head_end) then return nil end
  local len = tonumber(c.buf:sub(1, head_end):lower():match("\r\ncontent%-length: *(%d+)"))
  if not len or #c.buf < head_end + 3 + len then return nil end
  return tonumber(status), c.buf:sub(head_end + 4, head_end + 3 + len)
end

local function rss_kb(pid)
  local f = assert(io.open("/proc/" .. pid .. "/status"))
  local kb = tonumber(f:read("*a"):match("VmRSS:%s*(%d+)"))
  f:close()
  return kb
end

describe("the Lua memory limit", function()
  local srv, idle

  setup(function()
    srv = S.start { app = FIXTURE, workers = 1, args = { "--lua-memory-limit", LIMIT } }
    for _ = 1, 50 do assert(http.get(srv.port, "/hello")) end -- warm
    idle = worker_of(srv)
    idle.rss_kb = rss_kb(idle.pid)
  end)

  teardown(function()
    if srv then srv:stop() end
  end)

  it("shows the limit in status", function()
    assert.equals(64 * MiB, idle.lua_memory_limit)
    assert.equals(0, idle.lua_memory_errors)
    assert.is_true(idle.lua_memory > 0 and idle.lua_memory < 16 * MiB, tostring(idle.lua_memory))
  end)

  it("fails the greedy request with a 500, and none of the requests around it", function()
    local bad, bad_status, bad_body, ok_when_sent, ok_when_answered
    local stats = loadgen.run {
      port = srv.port, concurrency = 16, keepalive = true, timeout = 60, deadline = 180,
      request = http.build("GET", "/hello"),
      on_tick = function(st)
        if not bad and st.ok >= 150 then
          bad = start_request(srv.port, "/greedy")
          ok_when_sent = st.ok
        elseif bad and not bad_status then
          bad_status, bad_body = poll_response(bad)
          if bad_status then ok_when_answered = st.ok end
        elseif bad_status and st.ok >= ok_when_answered + 250 then
          return false -- hundreds of normal requests before it, during it and after it
        end
      end,
    }
    if bad then bad:close() end
    assert.is_truthy(bad_status, "the greedy request got no answer: " .. loadgen.summary(stats))
    assert.equals(500, bad_status)
    local body = S.json.decode(bad_body)
    assert.equals("internal server error", body.error)
    assert.is_string(body.requestId)
    assert.equals(0, stats.failed, loadgen.summary(stats))
    assert.is_true(stats.ok >= ok_when_sent + 250, loadgen.summary(stats))

    local log = srv:error_log()
    assert.matches("request " .. body.requestId .. " (GET /greedy): Lua memory limit of 64 MiB (--lua-memory-limit) reached",
      log, 1, true)
    local w = worker_of(srv)
    assert.equals(idle.pid, w.pid)
    assert.equals(1, w.lua_memory_errors)
    assert.is_true(w.lua_memory < idle.lua_memory + 8 * MiB,
      ("lua_memory %d after the error, %d idle"):format(w.lua_memory, idle.lua_memory))
  end)

  it("stays healthy after the same request again and again", function()
    local before = worker_of(srv)
    for i = 1, 4 do
      local r = assert(http.get(srv.port, "/greedy", { timeout = 60 }))
      assert.equals(500, r.status)
      local ok = assert(http.get(srv.port, "/hello"))
      assert.equals(200, ok.status, "after greedy request " .. i)
    end
    local w = worker_of(srv)
    assert.equals(idle.pid, w.pid)
    assert.equals(before.lua_memory_errors + 4, w.lua_memory_errors)
    assert.is_true(w.lua_memory < idle.lua_memory + 8 * MiB,
      ("lua_memory %d after the errors, %d idle"):format(w.lua_memory, idle.lua_memory))
    assert.is_nil(srv:output():find("PANIC", 1, true)) -- LuaJIT's "PANIC: unprotected error"
  end)

  it("gives the memory back to the system: the worker's resident memory returns near its idle figure", function()
    local pid = worker_of(srv).pid
    local base = idle.rss_kb
    local r = assert(http.get(srv.port, "/greedy", { timeout = 60 }))
    assert.equals(500, r.status)
    -- the generation is rebuilt in a fresh state at the worker's next tick; the old one is closed
    local back = S.eventually(10, function() return rss_kb(pid) < base + 16 * 1024 end, 0.1)
    assert.is_truthy(back, ("resident memory %d kB, %d kB idle"):format(rss_kb(pid), base))
    assert.matches("rebuilt in a fresh Lua state after the memory limit", srv:error_log(), 1, true)
    assert.equals(200, assert(http.get(srv.port, "/hello")).status)
  end)

  it("lets a handler that catches the error answer for itself", function()
    local r = assert(http.get(srv.port, "/greedy-caught", { timeout = 60 }))
    assert.equals(507, r.status)
    local body = http.json(r)
    assert.is_true(body.caught)
    assert.matches("not enough memory", body.error, 1, true)
    assert.equals(idle.pid, worker_of(srv).pid)
  end)
end)

describe("the Lua memory limit at load", function()
  local srv, app

  after_each(function()
    if srv then srv:stop() end
    srv = nil
    if app then os.execute(("rm -rf %q"):format(app)) end
  end)

  it("refuses a generation that cannot load under it, naming the flag, and keeps serving", function()
    app = sys.mkdtemp("/tmp/triage-lua-memory-")
    assert(os.execute(("cp -r %q/routes %q/scripts %q/"):format(FIXTURE, FIXTURE, app)) == 0)
    srv = S.start { app = app, workers = 1, args = { "--lua-memory-limit", "16m", "--no-watch" } }
    local f = assert(io.open(app .. "/routes/zz_greedy.lua", "wb"))
    f:write("local t = {} for i = 1, 1000000 do t[i] = ('%99d'):format(i) end\n")
    f:close()
    assert.is_true(srv:signal(sys.SIGHUP))
    local st = S.eventually(30, function()
      local s = srv:status()
      return s and s.reload.failures > 0 and s
    end)
    assert.is_truthy(st, "the reload was not refused")
    assert.matches("--lua-memory-limit", st.reload.last_error, 1, true)
    assert.matches("more Lua memory than", st.reload.last_error, 1, true)
    assert.equals(1, st.generation)
    assert.equals(200, assert(http.get(srv.port, "/hello")).status)
  end)

  it("refuses a bad value with a usage error naming the flag", function()
    for _, v in ipairs { "1m", "abc", "-5m", "0", "2048g" } do
      srv = S.start { app = FIXTURE, args = { "--lua-memory-limit", v }, wait = false }
      local e = srv:wait_exit(10)
      assert(e, "the server runs with --lua-memory-limit " .. v)
      assert.is_true(e.code ~= nil and e.code ~= 0, sys.describe_exit(e))
      assert.matches("--lua-memory-limit wants a size", srv:output(), 1, true)
      srv:stop({ timeout = 3 })
      srv = nil
    end
  end)
end)
