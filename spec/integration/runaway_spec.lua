-- Handlers that never give the loop back (fixture spec/fixtures/runaway_app): the watchdog of
-- core/watchdog.c (master) and core/guard.c (worker) under --handler-timeout.
package.path = "./spec/?.lua;./spec/?/init.lua;" .. package.path
local S = require "support.server"
local http, sys, cjson = S.http, S.sys, require "cjson"

local APP = S.fixtures .. "/runaway_app"
local BUDGET = 1

local function start(extra)
  local args = { "--handler-timeout", tostring(BUDGET) }
  for _, a in ipairs(extra or {}) do args[#args + 1] = a end
  local srv = S.start { app = APP, workers = 2, args = args }
  assert(srv:wait_ready(10))
  return srv
end

-- Send `target` on a connection of its own without waiting; returns the connection.
local function send_get(srv, target)
  local c = assert(http.connect(srv.port))
  assert(c:send(http.build("GET", target)))
  return c
end

-- Normal requests on `concurrency` connections, at `rate` per second for `seconds`, while `poison`
-- requests are sent one after the other (the first at once, each next one when the previous has its
-- answer). Returns the load's stats and the poison answers (false: none came).
local function load_around(srv, poison, o)
  local answers, sent = {}, 1
  local pending = send_get(srv, poison[1])
  local function check(timeout)
    local resp, err = pending:read_response { timeout = timeout }
    if resp or not tostring(err):find("^timeout") then
      answers[#answers + 1] = resp or false
      pending:close()
      pending = nil
      if sent < #poison then
        sent = sent + 1
        pending = send_get(srv, poison[sent])
      end
    end
  end
  local rate = 200
  local st = S.loadgen.run {
    port = srv.port, concurrency = o.concurrency or 20, total = rate * o.seconds, rate = rate,
    keepalive = o.keepalive, timeout = 15, deadline = 120, request = http.build("GET", "/hello"),
    on_tick = function()
      if pending then check(0.001) end
      return true
    end,
  }
  while pending do check(15) end
  st.expected = rate * o.seconds
  return st, answers
end

local function pids(srv)
  local st = assert(srv:status())
  local out = {}
  for _, w in ipairs(st.workers) do out[#out + 1] = w.pid end
  return out, st
end

local function sum(st, field)
  local n = 0
  for _, w in ipairs(st.workers) do n = n + (w[field] or 0) end
  return n
end

describe("a handler that never gives the loop back", function()
  teardown(S.stop_all)

  it("in compiled code: its worker answers, hands its idle connections on and is replaced; no normal request fails", function()
    local srv = start()
    local before = pids(srv)
    for _, keepalive in ipairs { false, true } do
      local st, answers = load_around(srv, { "/spin" }, { keepalive = keepalive, seconds = 4 })
      assert.equals(st.expected, st.statuses[200] or 0, "keepalive=" .. tostring(keepalive) .. ": " .. S.loadgen.summary(st))
      local a = answers[1]
      assert.is_truthy(a, "the stuck request got no answer")
      assert.equals(503, a.status)
      assert.equals("close", a.headers["connection"])
      assert.matches("ran past %-%-handler%-timeout", a.body)
      assert.is_truthy(a.headers["x-request-id"])
      assert.equals(a.headers["x-request-id"], cjson.decode(a.body).requestId)
    end
    assert.is_truthy(S.eventually(10, function()
      local now, st = pids(srv)
      return st.worker_replacements == 2 and now[1] ~= 0 and now[2] ~= 0
    end), srv:logs())
    local after, st = pids(srv)
    assert.is_true(after[1] ~= before[1] or after[2] ~= before[2], "no worker was replaced")
    assert.equals(2, sum(st, "handler_timeouts"))
    local log = srv:error_log()
    assert.matches("replaced: request [%w%-]+ on GET /spin ran past %-%-handler%-timeout %(1 s%)", log)
    -- healed without a hand: every worker serves
    for _ = 1, 20 do
      local r = assert(http.get(srv.port, "/hello"))
      assert.equals(200, r.status)
    end
  end)

  it("in interpreted code: the request is stopped with 503 and the worker goes on", function()
    local srv = start()
    local before = pids(srv)
    local st, answers = load_around(srv, { "/spin-interpreted" }, { keepalive = true, seconds = 3 })
    assert.equals(st.expected, st.statuses[200] or 0, S.loadgen.summary(st))
    local a = answers[1]
    assert.is_truthy(a)
    assert.equals(503, a.status)
    assert.equals("1", a.headers["retry-after"])
    assert.matches("ran past %-%-handler%-timeout", a.body)
    local after, status = pids(srv)
    assert.same(before, after)
    assert.equals(0, status.worker_replacements)
    assert.equals(1, sum(status, "handler_timeouts"))
    assert.matches("GET /spin%-interpreted ran past %-%-handler%-timeout %(1 s%): stopped", srv:error_log())
    assert.matches("scripts/runaway%.lua:%d+", srv:error_log())
  end)

  it("catching the hook's error does not save it: its worker is replaced", function()
    local srv = start()
    local st, answers = load_around(srv, { "/spin-swallowed" }, { keepalive = true, seconds = 4 })
    assert.equals(st.expected, st.statuses[200] or 0, S.loadgen.summary(st))
    assert.equals(503, answers[1] and answers[1].status)
    assert.is_truthy(S.eventually(10, function() return pids(srv) and select(2, pids(srv)).worker_replacements == 1 end))
    local _, status = pids(srv)
    assert.equals(1, sum(status, "handler_timeouts"), "one request, one stop")
  end)

  it("does not stop handlers that wait or work in slices under the budget", function()
    local srv = start()
    local r = assert(http.get(srv.port, "/slow?s=" .. (BUDGET * 2), { timeout = 15 }))
    assert.equals(200, r.status)
    r = assert(http.get(srv.port, "/count?rounds=" .. math.floor(BUDGET * 40), { timeout = 30 }))
    assert.equals(200, r.status)
    local _, st = pids(srv)
    assert.equals(0, sum(st, "handler_timeouts"))
  end)

  it("a route stopped repeatedly is paused (503 at once, in status) and a reload serves it again", function()
    local srv = start()
    local st, answers = load_around(srv, { "/spin", "/spin" }, { keepalive = true, seconds = 6 })
    assert.equals(st.expected, st.statuses[200] or 0, S.loadgen.summary(st))
    assert.equals(503, answers[1] and answers[1].status)
    assert.equals(503, answers[2] and answers[2].status)
    -- the master counts the second stop at its next look (a tenth of a second)
    assert.is_truthy(S.eventually(5, function() return #select(2, pids(srv)).paused_routes == 1 end))
    -- the third is refused without running: at once, with the pause's own message
    local t0 = sys.now()
    local third = assert(http.get(srv.port, "/spin", { timeout = 15 }))
    assert.is_true(sys.now() - t0 < BUDGET, "refused without running")
    assert.equals(503, third.status)
    assert.matches("paused", third.body)
    assert.is_true(tonumber(third.headers["retry-after"]) > 1)
    local _, status = pids(srv)
    assert.equals(2, status.worker_replacements, "the pause spared a third worker")
    assert.equals(1, #status.paused_routes)
    assert.equals("GET /spin", status.paused_routes[1].route)
    assert.is_true(sum(status, "paused_route_refusals") >= 1)
    assert.matches("route GET /spin %(generation 1%) paused", srv:error_log())
    -- and in the metrics
    local m = assert(http.get(srv.admin_port, "/_triage/metrics")).body
    local function sample(pattern)
      local n = 0
      for v in m:gmatch(pattern) do n = n + tonumber(v) end
      return n
    end
    assert.equals(2, sample("\ntriage_worker_replacements_total (%d+)"))
    assert.equals(1, sample("\ntriage_paused_routes (%d+)"))
    assert.equals(2, sample('\ntriage_timeouts_total{worker="%d+",reason="handler"} (%d+)'))
    assert.is_true(sample('\ntriage_paused_route_refusals_total{worker="%d+"} (%d+)') >= 1)
    -- other routes are served meanwhile
    assert.equals(200, assert(http.get(srv.port, "/hello")).status)
    -- a reload (the fix going live) lifts it
    assert.is_true(srv:signal(1)) -- SIGHUP
    assert.is_truthy(srv:wait_generation(2, 10))
    assert.is_truthy(S.eventually(5, function()
      local _, s = pids(srv)
      return #s.paused_routes == 0
    end))
  end)

  it("a reload reports the workers that are not on the new generation", function()
    local srv = start { "--handler-timeout", "6" }
    local c = send_get(srv, "/spin")
    -- wait until one worker is seen busy
    sys.sleep(0.5)
    local t0 = sys.now()
    local r = assert(srv:reload(15))
    assert.equals(200, r.status, r.body)
    local body = cjson.decode(r.body)
    assert.is_true(body.ok)
    assert.is_truthy(body.workers_behind, r.body)
    assert.equals(1, #body.workers_behind, r.body)
    assert.matches("busy in a handler", body.workers_behind[1].why)
    assert.is_true(sys.now() - t0 < 6, "answered before the stuck worker was replaced")
    assert.matches("not serving it", srv:error_log())
    -- once the watchdog has replaced it, every worker serves the new generation
    local resp = c:read_response { timeout = 20 }
    c:close()
    assert.equals(503, resp and resp.status)
    assert.is_truthy(srv:wait_generation(2, 10))
  end)

  describe("at load time", function()
    -- A copy of the fixture app whose scripts/loop_at_load.lua loops when loaded (required by a
    -- route file only when `with_loop`).
    local function app_copy(with_loop)
      local dir = sys.mkdtemp("/tmp/triage-runaway-")
      assert(os.execute(("cp -r %q/routes %q/scripts %q/"):format(APP, APP, dir)) == 0)
      local f = assert(io.open(dir .. "/scripts/loop_at_load.lua", "w"))
      f:write("local n = 0\nwhile true do n = n + 1 end\nreturn {}\n")
      f:close()
      if with_loop then
        f = assert(io.open(dir .. "/routes/zz_loop.lua", "w"))
        f:write('local _ = require "loop_at_load"\n')
        f:close()
      end
      return dir
    end

    it("a script that loops when loaded stops the start, naming the cause", function()
      local srv = S.start { app = app_copy(true), args = { "--handler-timeout", "1" }, wait = false }
      local e = srv:wait_exit(30)
      assert(e, "the server started on an app that loops at load time")
      assert.is_true(e.code ~= nil and e.code ~= 0, sys.describe_exit(e))
      assert.matches("loading the application took longer than 5 s", srv:error_log())
    end)

    it("a reload that loops when loaded is rejected while the master keeps answering", function()
      local dir = app_copy(false)
      local srv = S.start { app = dir, workers = 2, args = { "--handler-timeout", "1", "--no-watch" } }
      assert(srv:wait_ready(10))
      local f = assert(io.open(dir .. "/routes/zz_loop.lua", "w"))
      f:write('local _ = require "loop_at_load"\n')
      f:close()
      local c = assert(http.connect(srv.admin_port))
      assert(c:send(http.build("POST", "/_triage/reload", { body = "", headers = srv:admin_headers() })))
      -- the preflight runs in a child: status and requests are answered meanwhile
      sys.sleep(1)
      local st = assert(srv:status(2))
      assert.equals(1, st.generation)
      assert.equals(200, assert(http.get(srv.port, "/hello")).status)
      local r = assert(c:read_response { timeout = 20 })
      c:close()
      assert.equals(409, r.status, r.body)
      assert.matches("took longer than 5 s", r.body)
      assert.equals(200, assert(http.get(srv.port, "/hello")).status)
      assert.equals(1, assert(srv:status()).generation)
    end)
  end)
end)
