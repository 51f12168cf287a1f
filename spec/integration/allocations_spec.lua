-- core_allocations stays flat after warm-up: 10,000 keep-alive requests on
-- several connections (both workers get traffic) allocate nothing per request.
--
-- Requests that wait for the store hold their connection's buffers while they wait, so how many
-- buffers are held at once (the pools' high-water mark) depends on timing: a measured run may reach a
-- mark one or two buffers above the warm-up's. That growth is bounded by the buffers a connection can
-- hold (two: what it read, what it writes), so the check allows up to two allocations per connection
-- in all; an allocation per request would show up thousands of times.
local spec_root = debug.getinfo(1, "S").source:match("^@(.*)/integration/[^/]+$")
if spec_root then package.path = spec_root .. "/?.lua;" .. package.path end
local S = require "support.server"
local http = S.http
local loadgen = S.loadgen

describe("core allocations", function()
  local srv, mix, make_mix

  setup(function()
    srv = S.start{ app = S.root, workers = 2 }
    make_mix()
  end)

  teardown(function()
    S.stop_all()
  end)


  -- a mix of the app's requests: 200s, 400s, 404s, a 401, a 403 and a 405
  function make_mix()
    local site = srv:bearer{ sub = "dr.chen", role = "investigator", trial = "T1" }
    local patient = srv:bearer{ sub = "P-0002", role = "patient", trial = "T1" }
    mix = {
      http.build("GET", "/api/v1/protocols/NCT04356798"),
      http.build("POST", "/api/epro/submit", { body = '{"patientId":"P-0001","reportData":{"q1":3}}', headers = site }),
      http.build("POST", "/api/v1/tags/add", { body = '{"patientId":"P-0001","tagName":"high-risk"}', headers = site }),
      http.build("GET", "/api/v1/protocols/NCT00000000?x=1"),
      http.build("POST", "/api/epro/submit", { body = '{"patientId":""}', headers = site }),
      http.build("GET", "/api/v1/secure/protocols/NCT04280705", { headers = site }),
      http.build("GET", "/api/v1/secure/protocols/NCT04280705"),
      http.build("POST", "/api/epro/submit", { body = '{"patientId":"P-0001","reportData":{"q1":3}}', headers = patient }),
      http.build("GET", "/no/such/path"),
      http.build("GET", "/api/epro/submit"),
    }
  end

  local function run(total, o)
    o = o or {}
    local stats = loadgen.run{
      port = srv.port, concurrency = o.concurrency or 16, total = total, keepalive = true,
      timeout = 10, deadline = 120, keep_open = o.keep_open, slots = o.slots,
      expect = false, -- any status: count completions below
      request = function(i) return mix[(i - 1) % #mix + 1] end,
    }
    local completed = 0
    for _, n in pairs(stats.statuses) do completed = completed + n end
    assert.are.equal(total, completed, loadgen.summary(stats))
    assert.is_nil(stats.statuses[500], loadgen.summary(stats))
    return stats
  end

  local function snapshot()
    local st = assert(srv:status())
    local sum, reqs, by_slot = 0, {}, {}
    for _, w in ipairs(st.workers) do
      assert.are.equal("number", type(w.core_allocations))
      sum = sum + w.core_allocations
      reqs[w.slot] = w.requests
      by_slot[w.slot] = { pid = w.pid, core_allocations = w.core_allocations }
    end
    return sum, reqs, by_slot, st
  end

  local function check(sum0, reqs0, slots0, connections)
    local sum1, reqs1, slots1, st = snapshot()
    print(("    core_allocations: %d before, %d after"):format(sum0, sum1))
    for slot, r in pairs(reqs1) do
      assert.is_true(r > (reqs0[slot] or 0), ("worker in slot %d got no traffic"):format(slot))
    end
    for slot, w in pairs(slots1) do
      assert.are.equal(slots0[slot].pid, w.pid, "a worker was replaced during the run")
    end
    assert.is_true(sum1 - sum0 <= 2 * connections,
      ("core_allocations grew by %d over %d connections: %s"):format(sum1 - sum0, connections,
        S.json.encode(st.workers)))
  end

  it("does not change during 10,000 keep-alive requests after warm-up", function()
    -- the same 16 connections for warm-up and measurement
    local warm = run(2000, { keep_open = true })
    finally(function() loadgen.close(warm.slots) end)
    print(("\n    warm-up: %s"):format(loadgen.summary(warm)))
    S.sys.sleep(0.2)
    local sum0, reqs0, slots0 = snapshot()
    local stats = run(10000, { slots = warm.slots, keep_open = true })
    print(("    measured: %s"):format(loadgen.summary(stats)))
    S.sys.sleep(0.2)
    check(sum0, reqs0, slots0, 16)
  end)

  it("does not change when connections come and go after warm-up", function()
    -- warm-up with 64 connections at once (about 32 per worker), then new
    -- sets of 16 connections: no worker needs more connections than it had
    local warm = run(2000, { concurrency = 64 })
    print(("\n    warm-up: %s"):format(loadgen.summary(warm)))
    S.sys.sleep(0.2)
    local sum0, reqs0, slots0 = snapshot()
    for round = 1, 5 do
      local stats = run(2000, { concurrency = 16 })
      if round == 5 then print(("    measured (5 rounds, new connections each): %s"):format(loadgen.summary(stats))) end
    end
    S.sys.sleep(0.2)
    check(sum0, reqs0, slots0, 16)
  end)
end)
