-- The durability contract of POST /api/epro/submit (issue 8), against the sample app at the repo root
-- with the store under a temporary --data directory, checked in DATA/triage.db with the sqlite3 CLI
-- (or, with TRIAGE_TEST_BACKEND=postgres, in the data directory's PostgreSQL database with psql, the
-- fault injection pending: it fails the SQLite file's own fsync and write calls):
-- - crash: under a steady load of concurrent unique submissions, the whole server (master and
--   workers) is killed with SIGKILL at a random moment and restarted on the same directory, 20 times;
--   every submission that any client saw acknowledged (200 with a receipt) is stored exactly once,
--   with its receipt, and sent again it gets its original receipt;
-- - faults (the LD_PRELOAD shim of spec/fault/: $TRIAGE_FAULT_LIB, else libtriage_faultfs.so beside
--   the binary): under fsync=EIO and under write=ENOSPC every submission gets 503 with Retry-After and
--   none is acknowledged, the server stays up, and once the fault is cleared submissions succeed
--   again; what got a 200 is stored, what got a 503 is not;
-- - append-only: UPDATE and DELETE on epro_submissions fail in the database itself.
-- TRIAGE_CRASH_CYCLES overrides the number of crash cycles (default 20), TRIAGE_CRASH_SEED the random
-- seed of the kill moments (printed with each cycle).
local spec_root = debug.getinfo(1, "S").source:match("^@(.*)/integration/[^/]+$")
if spec_root then package.path = spec_root .. "/?.lua;" .. package.path end
local S = require "support.server"
local St = require "support.store"
local http = S.http
local sys = S.sys
local B = S.backend

local CYCLES = tonumber(os.getenv("TRIAGE_CRASH_CYCLES") or "") or 20
local CYCLE_DEADLINE = 90 -- seconds: start, load, kill, restart and checks of one crash cycle
-- the shim: $TRIAGE_FAULT_LIB (ctest sets it), else the one built beside the binary
local FAULT_LIB = os.getenv("TRIAGE_FAULT_LIB")
if not FAULT_LIB or FAULT_LIB == "" then
  local dir = S.bin:match("^(.*)/[^/]+$")
  FAULT_LIB = dir and (dir .. "/libtriage_faultfs.so") or nil
end
local PROTOCOL = "/api/v1/protocols/NCT04356798"

local function file_exists(path)
  local f = path and io.open(path, "rb")
  if f then f:close() end
  return f ~= nil
end

-- 200 responses of a St.load run as { sub, receipt }; raises on a 200 without a receipt.
local function acknowledged(results)
  local acked = {}
  for _, r in ipairs(results) do
    if r.status == 200 then
      local receipt, why = St.receipt_of(r.resp)
      assert(receipt, ("%s/%s: %s"):format(r.sub.patient, r.sub.key, tostring(why)))
      acked[#acked + 1] = { sub = r.sub, receipt = receipt }
    end
  end
  return acked
end

-- Any patient appears twice with one key, or a receipt id twice: the count of such duplicates.
local function duplicates(data)
  return St.value(data, "SELECT (SELECT count(*) FROM (SELECT 1 FROM epro_submissions WHERE idempotency_key IS NOT NULL"
    .. " GROUP BY patient_id, idempotency_key HAVING count(*) > 1) AS by_key)"
    .. " + (SELECT count(*) FROM (SELECT 1 FROM epro_submissions GROUP BY receipt_id HAVING count(*) > 1) AS by_receipt)")
end

local function pick(list, n)
  local out = {}
  if #list == 0 then return out end
  for _ = 1, n do out[#out + 1] = list[math.random(#list)] end
  return out
end

describe("durable ePRO submissions", function()
  setup(function()
    local why = St.probe()
    if why then error(why, 0) end
  end)

  teardown(function()
    S.stop_all()
  end)

  it("survive kill -9 of the whole server under load: every acknowledged one is stored exactly once (" .. CYCLES .. " cycles)", function()
    -- TMPDIR: where the killed servers leave their code snapshots (triage-code-*)
    local data, tmp = St.tempdir(), St.tempdir("/tmp/triage-durable-tmp-")
    sys.chmod(tmp, tonumber("711", 8)) -- started as root, the workers (nobody) read the snapshots in it
    local srv
    finally(function()
      if srv then srv:stop() end
      St.remove_tree(data)
      St.remove_tree(tmp)
    end)
    local function start()
      return St.start { app = S.root, workers = 2, data = data, ready_timeout = 30, env = { TMPDIR = tmp } }
    end
    local seed = tonumber(os.getenv("TRIAGE_CRASH_SEED") or "") or (os.time() % 1000000 * 1000 + sys.C.getpid() % 1000)
    math.randomseed(seed)
    local prefix = "crash-" .. St.run_id .. "-"
    local all, last = {}, {}
    local seq = 0
    local totals = { acked = 0, unanswered = 0 }

    for cycle = 1, CYCLES do
      local deadline = sys.now() + CYCLE_DEADLINE
      local label = ("cycle %d (seed %d)"):format(cycle, seed)
      srv = start()

      if #last > 0 then
        -- after the restart: the previous cycle's acknowledged submissions, each stored exactly once
        St.check_stored(data, ("%sc%02d-"):format(prefix, cycle - 1), last, label .. ", after the restart")
        assert.are.equal(0, duplicates(data), label .. ": a key or a receipt is stored twice")
        St.resend(srv.port, pick(last, 3), label)
      end

      -- a steady load of unique submissions; SIGKILL to the whole server at a random moment, sent by
      -- another process (so that the moment does not follow this loop's rhythm) 0 to 0.8 s after the
      -- first submission of this cycle was acknowledged
      local kill_after = math.random() * 0.8
      local kill, killed_at
      local results, stats = St.load {
        port = srv.port,
        concurrency = 48,
        timeout = 10,
        deadline = math.max(5, deadline - sys.now() - 30),
        next = function()
          seq = seq + 1
          return St.submission {
            patient = ("P-%s-%02d"):format(St.run_id, seq % 61),
            key = ("%sc%02d-%07d"):format(prefix, cycle, seq),
            seq = seq,
          }
        end,
        on_tick = function(st)
          if not kill and (st.statuses[200] or 0) > 0 then
            kill = St.kill9_later(srv, kill_after)
          elseif kill and srv:exited() then
            killed_at = killed_at or st.elapsed
            return false
          end
        end,
      }
      assert(kill, ("%s: no submission acknowledged before the deadline (%s)"):format(label, St.summary(stats)))
      St.reap_killed(srv, kill)
      srv = nil
      for code, n in pairs(stats.statuses) do
        assert(code == 200, ("%s: %d responses with status %d before the kill (%s)"):format(label, n, code, St.summary(stats)))
      end
      last = acknowledged(results)
      for _, a in ipairs(last) do all[#all + 1] = a end
      local cut, refused = 0, 0
      for _, r in ipairs(results) do
        if not r.status then
          if tostring(r.err):match("^connect") then refused = refused + 1 else cut = cut + 1 end
        end
      end
      totals.acked = totals.acked + #last
      totals.unanswered = totals.unanswered + cut + refused
      print(("%s: killed after %.2f s of load: %d acknowledged, %d cut off, %d refused once it was down"):format(
        label, killed_at or stats.elapsed, #last, cut, refused))
      assert(sys.now() < deadline, ("%s: the cycle took more than %d s"):format(label, CYCLE_DEADLINE))
    end

    -- the last restart: everything acknowledged in every cycle is there, once, as acknowledged
    srv = start()
    St.check_stored(data, prefix, all, "after the last restart")
    assert.are.equal(0, duplicates(data), "a key or a receipt is stored twice")
    if not B.postgres then assert.are.equal("ok", St.value(data, "PRAGMA integrity_check")) end
    St.resend(srv.port, pick(all, 5), "after the last restart")
    local stored = St.value(data, "SELECT count(*) FROM epro_submissions WHERE substr(idempotency_key, 1, "
      .. #prefix .. ") = " .. St.lit(prefix))
    print(("%d cycles: %d acknowledged, all stored once; %d more stored of the %d that had no answer"):format(
      CYCLES, totals.acked, stored - totals.acked, totals.unanswered))
    assert.is_true(stored <= totals.acked + totals.unanswered, "more stored than were sent")
  end)

  describe("with an injected storage fault", function()
    for _, fault in ipairs { "fsync=EIO", "write=ENOSPC" } do
      it(fault .. ": every submission gets 503 with Retry-After and none is acknowledged; the server stays up"
        .. " and recovers once the fault is cleared", function()
        if B.postgres then
          return pending("SQLite only: the shim fails fsync and write on DATA/triage.db; PostgreSQL's own"
            .. " outage is a restart under load (cluster_spec)")
        end
        assert(file_exists(FAULT_LIB), ("no fault shim at %s: set TRIAGE_FAULT_LIB (ctest does) or build the"
          .. " triage_faultfs target (spec/fault/fault.cmake) beside the binary"):format(tostring(FAULT_LIB)))
        local data, dir = St.tempdir(), St.tempdir("/tmp/triage-fault-")
        local control, log = dir .. "/control", dir .. "/faults.log"
        sys.chmod(dir, tonumber("777", 8)) -- started as root, the workers (nobody) read control, write log
        local srv
        finally(function()
          if srv then srv:stop() end
          St.remove_tree(data)
          St.remove_tree(dir)
        end)
        St.set_fault(control, "")
        local preload = os.getenv("LD_PRELOAD")
        local asan = os.getenv("ASAN_OPTIONS")
        srv = St.start { app = S.root, workers = 2, data = data, env = {
          LD_PRELOAD = (preload and preload ~= "") and (preload .. ":" .. FAULT_LIB) or FAULT_LIB,
          TRIAGE_FAULT_CONTROL = control,
          TRIAGE_FAULT_MATCH = "triage.db",
          TRIAGE_FAULT_LOG = log,
          -- an instrumented server (make test-asan) with a library preloaded before its runtime
          ASAN_OPTIONS = ((asan and asan ~= "") and (asan .. ":") or "") .. "verify_asan_link_order=0",
        } }
        local tag = ("fault-%s-%s-"):format(fault:match("^(%a+)"), St.run_id)
        local n = 0
        local function new_sub(kind)
          n = n + 1
          return St.submission { patient = ("P-%s-%d"):format(St.run_id, n % 7), key = ("%s%s-%04d"):format(tag, kind, n), seq = n }
        end
        local acked, refused = {}, {}

        -- before the fault
        for _ = 1, 5 do
          local sub = new_sub("before")
          local r = St.send(srv.port, sub)
          local receipt, why = St.receipt_of(r)
          assert(receipt, "before the fault: " .. tostring(why))
          acked[#acked + 1] = { sub = sub, receipt = receipt }
        end
        local pids = assert(srv:worker_pids())
        local writes0 = St.worker_sum(srv, "store_writes")
        assert(writes0, "/_triage/status: a worker without a numeric store_writes")
        assert(St.worker_sum(srv, "store_commits"), "/_triage/status: a worker without a numeric store_commits")

        -- under the fault: 40 at once, then 5 one after the other
        St.set_fault(control, fault)
        local results, stats = St.load {
          port = srv.port, concurrency = 20, timeout = 15, deadline = 60,
          next = function(i) return i <= 40 and new_sub("during") or nil end,
        }
        for _ = 1, 5 do
          local sub = new_sub("during")
          local r, err = St.send(srv.port, sub, 15)
          results[#results + 1] = { sub = sub, resp = r, status = r and r.status, err = err }
        end
        local answered = 0
        for _, r in ipairs(results) do
          assert(r.status, ("under %s: %s/%s got no answer: %s"):format(fault, r.sub.patient, r.sub.key, tostring(r.err)))
          answered = answered + 1
          assert(r.status < 200 or r.status > 299, ("under %s: %s/%s was acknowledged (%d %s)"):format(
            fault, r.sub.patient, r.sub.key, r.status, http.quote(r.resp.body)))
          assert(r.status == 503, ("under %s: %s/%s got %d %s, not 503"):format(
            fault, r.sub.patient, r.sub.key, r.status, http.quote(r.resp.body)))
          assert((r.resp.headers["retry-after"] or "") ~= "", ("under %s: a 503 without Retry-After: %s"):format(
            fault, http.quote(r.resp.raw_head)))
          local body = assert(http.json(r.resp))
          assert.are.equal("storage unavailable", body.error)
          refused[#refused + 1] = r.sub
        end
        assert.are.equal(45, answered)
        local faults = sys.read_all(log) or ""
        assert(faults:match("faultfs: pid %d+ %S+ fd %d+ %u+"),
          "the shim logged no injected fault: did LD_PRELOAD reach the server's workers? " .. St.summary(stats))

        -- still up: same master, same workers, status and protocol lookups answer
        assert.is_false(srv:exited() and true or false, "the master exited under the fault")
        local st = assert(srv:status())
        assert.are.equal(2, #st.workers)
        local now_pids = assert(srv:worker_pids())
        assert.are.same(pids, now_pids, "a worker was replaced under the fault (it crashed?)")
        for _ = 1, 5 do
          local r = assert(http.get(srv.port, PROTOCOL))
          assert.are.equal(200, r.status, "GET " .. PROTOCOL .. " under the fault: " .. http.quote(r.body))
        end
        assert.are.equal(writes0, St.worker_sum(srv, "store_writes"), "store_writes grew while nothing could be committed")

        -- cleared: submissions succeed again (retried, each attempt a new key, for up to 20 s)
        St.set_fault(control, "")
        local recovered
        local until_t = sys.now() + 20
        while sys.now() < until_t do
          local sub = new_sub("after")
          local r = St.send(srv.port, sub, 15)
          if r and r.status == 200 then
            local receipt, why = St.receipt_of(r)
            assert(receipt, why)
            acked[#acked + 1] = { sub = sub, receipt = receipt }
            recovered = true
            break
          end
          assert(not r or r.status == 503, ("after clearing %s: %s"):format(fault, r and (r.status .. " " .. http.quote(r.body)) or "no answer"))
          if r then refused[#refused + 1] = sub end
          sys.sleep(0.1)
        end
        assert(recovered, "no submission succeeded within 20 s of clearing " .. fault)
        local after, astats = St.load {
          port = srv.port, concurrency = 10, timeout = 15, deadline = 60,
          next = function(i) return i <= 30 and new_sub("after") or nil end,
        }
        local ok_after = acknowledged(after)
        assert.are.equal(30, #ok_after, "after clearing " .. fault .. ": " .. St.summary(astats))
        for _, a in ipairs(ok_after) do acked[#acked + 1] = a end

        -- what got a 200 is stored once, as acknowledged; what got a 503 is not stored
        St.check_stored(data, tag, acked, fault)
        local by_key = St.stored_by_key(data, tag)
        for _, sub in ipairs(refused) do
          assert(not by_key[St.key_of(sub.patient, sub.key)], ("%s/%s got 503 under %s but is stored"):format(
            sub.patient, sub.key, fault))
        end
        assert.are.equal("ok", St.value(data, "PRAGMA integrity_check"))

        -- a refused submission sent again with the same key: a new receipt, not a replay
        for i = 1, 3 do
          local sub = refused[i]
          local r = St.send(srv.port, sub)
          local receipt, why = St.receipt_of(r)
          assert(receipt, ("%s/%s (refused under %s) sent again: %s"):format(sub.patient, sub.key, fault, tostring(why)))
          assert.is_false(St.replayed(r), "a submission refused with 503 was replayed: " .. http.quote(r.raw_head))
          acked[#acked + 1] = { sub = sub, receipt = receipt }
        end
        St.check_stored(data, tag, acked, fault .. ", refused ones sent again")
        assert.is_true(St.worker_sum(srv, "store_writes") >= writes0 + 34)
        assert.are.same(pids, assert(srv:worker_pids()), "a worker was replaced")
      end)
    end
  end)

  it("are append-only: UPDATE and DELETE on epro_submissions fail in the database and change nothing", function()
    local data = St.tempdir()
    local srv
    finally(function()
      if srv then srv:stop() end
      St.remove_tree(data)
    end)
    srv = St.start { app = S.root, workers = 1, data = data }
    local sub = St.submission { patient = "P-APPEND-" .. St.run_id, key = "append-" .. St.run_id }
    local receipt = assert(St.receipt_of(St.send(srv.port, sub)))
    local where = " WHERE receipt_id = " .. St.lit(receipt.id)
    local before = St.rows(data, "SELECT * FROM epro_submissions" .. where)
    assert.are.equal(1, #before)
    local total = St.value(data, "SELECT count(*) FROM epro_submissions")
    for _, sql in ipairs {
      "UPDATE epro_submissions SET report_json = '{\"q1\":0}'" .. where,
      "UPDATE epro_submissions SET patient_id = 'P-SOMEONE-ELSE'" .. where,
      "UPDATE epro_submissions SET corrects = receipt_id",
      "DELETE FROM epro_submissions" .. where,
      "DELETE FROM epro_submissions",
    } do
      local rc, out, err = St.exec(data, sql)
      assert(rc ~= 0, ("%s succeeded (exit 0, %s)"):format(sql, http.quote(out)))
      assert(err:match("%S"), sql .. ": failed without saying why")
    end
    assert.are.same(before, St.rows(data, "SELECT * FROM epro_submissions" .. where))
    assert.are.equal(total, St.value(data, "SELECT count(*) FROM epro_submissions"))
    -- and the server still answers a retry with that receipt
    local r = St.send(srv.port, sub)
    assert.are.same(receipt, (assert(St.receipt_of(r))))
  end)
end)
