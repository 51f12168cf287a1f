-- SIGTERM drains: under a steady load of 50 connections (keep-alive and new connections,
-- 50 ms handlers and durable ePRO submissions of the sample app on a temporary --data), SIGTERM to
-- the master: every request sent before the signal is answered with a complete 200 (no reset, no
-- truncated response, no retry), every acknowledged submission is in DATA/triage.db afterwards
-- (sqlite3 -readonly), the access log has a line for every answer, the exit status is 0 and the pid
-- file DATA/triage.pid (written once the workers serve) is gone. Then,
-- one worker at a time: a request running at the stop gets its answer with Connection: close, a
-- client that had just connected gets its request answered, and requests still running past
-- --shutdown-timeout are logged by name while the exit status stays 0.
local spec_root = debug.getinfo(1, "S").source:match("^@(.*)/integration/[^/]+$")
if spec_root then package.path = spec_root .. "/?.lua;" .. package.path end
local S = require "support.server"
local St = require "support.store"
local steady = require "support.steady"
local http = S.http
local sys = S.sys

describe("SIGTERM", function()
  teardown(function()
    S.stop_all()
  end)

  describe("under load", function()
    setup(function()
      local why = St.probe()
      if why then error(why, 0) end
    end)

    it("answers every request sent before it, keeps every acknowledged submission and exits 0", function()
      local data = St.tempdir()
      local srv = St.start { app = S.root, workers = 2, data = data, access_log = true }
      finally(function()
        srv:stop()
        St.remove_tree(data)
      end)
      local tag = "term-" .. St.run_id
      local pid_file = data .. "/triage.pid"
      assert(S.eventually(10, function()
        local text = sys.read_all(pid_file)
        return text and tonumber(text:match("^%d+")) == srv.pid
      end), "no " .. pid_file .. " naming the master")
      local t_stop, exit
      local recs, stats = steady.run {
        port = srv.port, slots = steady.sample_slots(50, tag), timeout = 20, deadline = 90,
        on_tick = function(st)
          if not t_stop and st.elapsed > 1.5 then
            t_stop = sys.now()
            assert(srv:signal(sys.SIGTERM))
          end
          if t_stop and not exit then exit = srv:exited() end
          if exit or (t_stop and sys.now() - t_stop > 30) then return false end
        end,
      }
      assert(t_stop, "never sent SIGTERM: " .. steady.summary(stats))
      exit = exit or srv:wait_exit(15)
      assert(exit, "the master still runs 30 s after SIGTERM")
      assert.are.equal(0, exit.code, sys.describe_exit(exit))
      assert.is_nil(sys.read_all(pid_file), "the pid file outlived the master")

      local before, running, problems = 0, 0, {}
      for _, r in ipairs(recs) do
        if r.sent_at and r.sent_at < t_stop then
          before = before + 1
          if r.finish > t_stop then running = running + 1 end
          if r.status ~= 200 or r.retries > 0 then
            problems[#problems + 1] = ("%s sent %.3f s before SIGTERM: %s%s"):format(r.kind, t_stop - r.sent_at,
              r.status and ("status " .. r.status) or tostring(r.err),
              r.retries > 0 and (" after " .. r.retries .. " retry on a new connection") or "")
          end
        end
      end
      print(("\n    %d requests sent before SIGTERM (%d of them still unanswered when it was sent); %s"):format(
        before, running, steady.summary(stats)))
      assert.is_true(before > 100, "too few requests before SIGTERM: " .. steady.summary(stats))
      assert.is_true(running > 0, "no request was in flight at SIGTERM: the test proves nothing")
      assert.are.equal(0, #problems, table.concat(problems, "\n", 1, math.min(#problems, 20)))

      local acked = steady.acknowledged(recs)
      assert.is_true(#acked > 20, "too few acknowledged submissions: " .. #acked)
      St.check_stored(data, tag, acked, "after SIGTERM")

      local lines = 0
      for _ in srv:access_log():gmatch("[^\n]+") do lines = lines + 1 end
      assert.is_true(lines >= stats.ok, ("%d access log lines for %d answers"):format(lines, stats.ok))
    end)
  end)

  describe("one connection at a time", function()
    it("answers the request running at the stop with Connection: close, and a request that comes just after", function()
      local srv = S.start { app = S.fixture_app, workers = 1 }
      finally(function() srv:stop() end)
      local running = assert(http.connect(srv.port))
      local fresh = assert(http.connect(srv.port))
      assert(running:send(http.build("GET", "/sleep?s=1.5&who=running")))
      sys.sleep(0.3) -- both accepted; the first sleeps in its handler, the second has sent nothing yet
      assert(srv:signal(sys.SIGTERM))
      sys.sleep(0.1)
      -- a client that connected just before the stop sends its request now: it is answered
      assert(fresh:send(http.build("GET", "/sleep?s=0.05&who=fresh")))
      local r2, err2 = fresh:read_response({ timeout = 5 })
      assert(r2, "the request on the connection made just before SIGTERM got no answer: " .. tostring(err2))
      assert.are.equal(200, r2.status)
      assert.are.equal("fresh", assert(http.json(r2)).who)
      assert.are.equal("close", (r2.headers["connection"] or ""):lower())
      local r1, err1 = running:read_response({ timeout = 5 })
      assert(r1, "the request running at SIGTERM got no answer: " .. tostring(err1))
      assert.are.equal(200, r1.status)
      assert.are.equal("running", assert(http.json(r1)).who)
      assert.are.equal("close", (r1.headers["connection"] or ""):lower())
      assert.is_true(running:wait_closed(2), "the connection stays open after its Connection: close answer")
      assert.is_true(fresh:wait_closed(2), "the connection stays open after its Connection: close answer")
      running:close()
      fresh:close()
      local e = srv:wait_exit(15)
      assert(e, "master still running 15 s after SIGTERM")
      assert.are.equal(0, e.code, sys.describe_exit(e))
    end)

    it("logs the requests still running past --shutdown-timeout and exits 0", function()
      local srv = S.start { app = S.fixture_app, workers = 1, args = { "--shutdown-timeout", "1" } }
      finally(function() srv:stop() end)
      local c = assert(http.connect(srv.port))
      finally(function() c:close() end)
      assert(c:send(http.build("GET", "/sleep?s=8&who=stuck")))
      sys.sleep(0.3)
      local t0 = sys.now()
      assert(srv:signal(sys.SIGTERM))
      local e = srv:wait_exit(15)
      assert(e, "master still running 15 s after SIGTERM")
      assert.are.equal(0, e.code, sys.describe_exit(e))
      assert.is_true(sys.now() - t0 < 7, "the exit waited for the request instead of the 1 s bound")
      local log = srv:error_log()
      assert.is_truthy(log:find("shutdown timeout", 1, true), log)
      local line = log:match("[^\n]*GET /sleep%?s=8&who=stuck[^\n]*")
      assert(line, "the abandoned request is not named in the error log:\n" .. log)
      assert.is_truthy(line:find("still running", 1, true), line)
    end)
  end)
end)
