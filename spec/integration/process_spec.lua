-- The process model: master and workers as /_triage/status reports them, a
-- worker killed with SIGKILL is replaced while traffic goes on, SIGTERM/SIGINT
-- end the master with status 0 (in-flight requests finish, ports close, no
-- worker survives), the access log, and bad command lines.
local spec_root = debug.getinfo(1, "S").source:match("^@(.*)/integration/[^/]+$")
if spec_root then package.path = spec_root .. "/?.lua;" .. package.path end
local S = require "support.server"
local http = S.http
local sys = S.sys
local loadgen = S.loadgen

describe("process model", function()
  teardown(function()
    S.stop_all()
  end)

  describe("/_triage/status", function()
    local srv
    setup(function()
      srv = S.start{ app = S.root, workers = 2 }
    end)

    it("describes the master and each worker", function()
      local st = assert(srv:status())
      assert.are.equal(srv.pid, st.master_pid)
      assert.are.equal("number", type(st.uptime))
      assert.is_true(st.uptime >= 0)
      assert.are.equal("table", type(st.workers))
      assert.are.equal(2, #st.workers)
      local slots, pids = {}, {}
      for _, w in ipairs(st.workers) do
        assert.are.equal("number", type(w.slot))
        assert.is_nil(slots[w.slot], "slot repeated")
        slots[w.slot] = true
        assert.are.equal("number", type(w.pid))
        assert.is_nil(pids[w.pid], "pid repeated")
        pids[w.pid] = true
        assert.are_not.equal(srv.pid, w.pid)
        assert.is_true(sys.alive(w.pid), "worker " .. w.pid .. " is not running")
        local _, ppid = sys.proc_stat(w.pid)
        assert.are.equal(srv.pid, ppid, "worker " .. w.pid .. " is not a child of the master")
        for _, k in ipairs{ "requests", "connections", "core_allocations", "lua_memory" } do
          assert.are.equal("number", type(w[k]), k)
          assert.is_true(w[k] >= 0, k)
        end
        assert.is_true(w.lua_memory > 0, "lua_memory")
        for _, p in ipairs{ "connections", "requests", "buffers" } do
          local pool = w.pools and w.pools[p]
          assert(pool, "pools." .. p .. " missing")
          assert.are.equal("number", type(pool.total))
          assert.are.equal("number", type(pool.free))
          assert.is_true(pool.free >= 0 and pool.free <= pool.total, ("pools.%s free %s of %s"):format(p, pool.free, pool.total))
        end
      end
      assert.is_true(slots[0] and slots[1], "slots should be 0 and 1")
    end)

    it("counts requests and lets uptime grow", function()
      local st0 = assert(srv:status())
      local n0 = 0
      for _, w in ipairs(st0.workers) do n0 = n0 + w.requests end
      for _ = 1, 25 do assert(http.get(srv.port, "/api/v1/protocols/NCT04356798")) end
      sys.sleep(0.2)
      local st1 = assert(srv:status())
      local n1 = 0
      for _, w in ipairs(st1.workers) do n1 = n1 + w.requests end
      assert.is_true(n1 - n0 >= 25, ("requests grew by %d after 25 requests"):format(n1 - n0))
      assert.is_true(st1.uptime > st0.uptime, "uptime did not grow")
    end)

    it("reports the number of workers asked for", function()
      local three = S.start{ app = S.root, workers = 3 }
      finally(function() three:stop() end)
      local st = assert(three:status())
      assert.are.equal(3, #st.workers)
      local kids = 0
      for _, w in ipairs(st.workers) do
        local _, ppid = sys.proc_stat(w.pid)
        if ppid == three.pid then kids = kids + 1 end
      end
      assert.are.equal(3, kids)
    end)

    it("answers only on the admin listener", function()
      local r = assert(http.get(srv.port, "/_triage/status"))
      assert.are.equal(404, r.status)
    end)
  end)

  describe("a worker killed with SIGKILL", function()
    it("is replaced in its slot while requests keep succeeding", function()
      local srv = S.start{ app = S.root, workers = 2 }
      finally(function() srv:stop() end)
      local pids = assert(srv:worker_pids())
      local victim = pids[0]
      assert(victim, "no worker in slot 0")
      local t_kill, t_dead, t_replaced, new_pid
      local last_status_check = 0

      local stats = loadgen.run{
        port = srv.port, concurrency = 8, rate = 400, timeout = 5, deadline = 20, record = true,
        request = http.build("GET", "/api/v1/protocols/NCT04356798", { headers = { Connection = "close" } }),
        on_tick = function(st)
          local now = sys.now()
          if not t_kill and st.elapsed > 0.3 then
            assert(sys.C.kill(victim, sys.SIGKILL) == 0, "kill failed")
            t_kill = now
          end
          if t_kill and not t_dead and not sys.alive(victim) then t_dead = sys.now() end
          if t_kill and not t_replaced and now - last_status_check > 0.1 then
            last_status_check = now
            local p = srv:worker_pids()
            if p and p[0] and p[0] ~= victim and sys.alive(p[0]) then
              t_replaced, new_pid = sys.now(), p[0]
            end
          end
          if t_replaced and now - t_replaced > 1.0 then return false end
          if t_kill and now - t_kill > 6 then return false end
        end,
      }
      assert(t_kill, "never killed the worker")
      assert(t_dead, "worker " .. victim .. " still alive after SIGKILL")
      assert(t_replaced, "slot 0 still had no new worker 5 s after the kill; status: " ..
        S.json.encode(srv:status() or {}))
      print(("\n    worker %d killed; replaced by %d after %.3f s; %s"):format(
        victim, new_pid, t_replaced - t_kill, loadgen.summary(stats)))

      -- requests started after the old worker was gone all succeeded
      local late_failures, late_total, early_ok = {}, 0, 0
      for _, rec in ipairs(stats.records) do
        if rec.start > t_dead then
          late_total = late_total + 1
          if not rec.ok then late_failures[#late_failures + 1] = ("%.3f s after death: %s"):format(rec.start - t_dead, tostring(rec.err or rec.status)) end
        elseif rec.ok then
          early_ok = early_ok + 1
        end
      end
      assert.is_true(early_ok > 0, "no request succeeded before the kill")
      assert.is_true(late_total > 50, "too few requests after the kill: " .. late_total)
      assert.are.equal(0, #late_failures, table.concat(late_failures, "\n"))

      -- the other worker was not disturbed, and the new one serves
      local after = assert(srv:worker_pids())
      assert.are.equal(pids[1], after[1], "the other worker was replaced too")
      assert.are.equal(new_pid, after[0])
      local _, ppid = sys.proc_stat(new_pid)
      assert.are.equal(srv.pid, ppid)
      local again = loadgen.run{
        port = srv.port, concurrency = 8, total = 200,
        request = http.build("GET", "/api/v1/protocols/NCT04356798", { headers = { Connection = "close" } }),
      }
      assert.are.equal(200, again.ok, loadgen.summary(again))
      local st = assert(srv:status())
      for _, w in ipairs(st.workers) do
        if w.slot == 0 then assert.is_true(w.requests > 0, "the new worker served nothing") end
      end
    end)
  end)

  describe("SIGTERM to the master", function()
    it("exits with status 0, closes both ports and leaves no worker behind", function()
      local srv = S.start{ app = S.root, workers = 2 }
      finally(function() srv:stop() end)
      local pids = assert(srv:worker_pids())
      assert.is_true(S.port_open(srv.port))
      assert(srv:signal(sys.SIGTERM))
      local e = srv:wait_exit(15)
      assert(e, "master still running 15 s after SIGTERM")
      assert.are.same({ code = 0 }, { code = e.code, signal = e.signal })
      assert.is_false(S.port_open(srv.port), "listener still accepting after exit")
      assert.is_false(S.port_open(srv.admin_port), "admin listener still accepting after exit")
      local alive = S.eventually(2, function()
        for _, p in pairs(pids) do if sys.alive(p) then return nil end end
        return true
      end)
      assert(alive, "a worker outlived the master")
    end)

    it("lets an in-flight request finish before exiting", function()
      local srv = S.start{ app = S.fixture_app, workers = 2 }
      finally(function() srv:stop() end)
      local c = assert(http.connect(srv.port))
      finally(function() c:close() end)
      assert(c:send(http.build("GET", "/sleep?s=0.8&who=inflight")))
      sys.sleep(0.3) -- the request is sleeping in its handler now
      assert(srv:signal(sys.SIGTERM))
      local r = assert(c:read_response({ timeout = 5 }))
      assert.are.equal(200, r.status)
      assert.are.equal("inflight", assert(http.json(r)).who)
      local e = srv:wait_exit(15)
      assert(e, "master still running 15 s after SIGTERM")
      assert.are.equal(0, e.code, sys.describe_exit(e))
    end)

    it("does not wait for idle keep-alive connections", function()
      local srv = S.start{ app = S.root, workers = 2 }
      finally(function() srv:stop() end)
      local c = assert(http.connect(srv.port))
      finally(function() c:close() end)
      assert.are.equal(200, assert(c:request("GET", "/api/v1/protocols/NCT04356798")).status)
      local t0 = sys.now()
      assert(srv:signal(sys.SIGTERM))
      local e = srv:wait_exit(15)
      assert(e, "master still running 15 s after SIGTERM")
      assert.are.equal(0, e.code)
      print(("\n    exited %.2f s after SIGTERM with an idle keep-alive connection"):format(sys.now() - t0))
      assert.is_true(sys.now() - t0 < 9, "waited for the idle connection until the shutdown timeout")
      local closed = c:wait_closed(2)
      assert.is_true(closed, "the idle connection was not closed")
    end)
  end)

  it("exits with status 0 on SIGINT", function()
    local srv = S.start{ app = S.root, workers = 2 }
    finally(function() srv:stop() end)
    assert(srv:signal(sys.SIGINT))
    local e = srv:wait_exit(15)
    assert(e, "master still running 15 s after SIGINT")
    assert.are.equal(0, e.code, sys.describe_exit(e))
    assert.is_false(S.port_open(srv.port))
  end)

  it("writes one access log line per request", function()
    local srv = S.start{ app = S.root, workers = 2, access_log = true }
    finally(function() srv:stop() end)
    local marker = "access-log-marker-" .. tostring(os.time())
    for i = 1, 5 do
      assert(http.get(srv.port, "/api/v1/protocols/" .. marker .. "-" .. i))
    end
    local e = srv:stop()
    assert.are.equal(0, e.code, sys.describe_exit(e))
    local log = srv:access_log()
    for i = 1, 5 do
      local n = 0
      for line in log:gmatch("[^\n]+") do
        if line:find(marker .. "-" .. i, 1, true) then n = n + 1 end
      end
      assert.are.equal(1, n, ("request %d appears %d times in the access log:\n%s"):format(i, n, log))
    end
  end)

  describe("a bad command line", function()
    it("refuses --admin equal to --listen", function()
      local port = S.free_port()
      local srv = S.start{ app = S.root, port = port, admin_port = port, wait = false }
      finally(function() srv:stop({ timeout = 3 }) end)
      local e = srv:wait_exit(10)
      assert(e, "the server runs with --admin equal to --listen")
      assert.is_true(e.code ~= nil and e.code ~= 0, sys.describe_exit(e))
    end)

    it("refuses an unknown flag", function()
      local srv = S.start{ app = S.root, args = { "--no-such-flag" }, wait = false }
      finally(function() srv:stop({ timeout = 3 }) end)
      local e = srv:wait_exit(10)
      assert(e, "the server runs with an unknown flag")
      assert.is_true(e.code ~= nil and e.code ~= 0, sys.describe_exit(e))
    end)

    it("refuses an app directory that does not exist", function()
      local srv = S.start{ app = "/nonexistent/triage-app", wait = false }
      finally(function() srv:stop({ timeout = 3 }) end)
      local e = srv:wait_exit(10)
      assert(e, "the server runs without its app")
      assert.is_true(e.code ~= nil and e.code ~= 0, sys.describe_exit(e))
    end)
  end)
end)
