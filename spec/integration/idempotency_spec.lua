-- Idempotent retries of POST /api/epro/submit (issue 8): the sample app at the repo root with the
-- store under a temporary --data directory, checked in DATA/triage.db with the sqlite3 CLI.
-- The key is the Idempotency-Key header, else the body's submissionId, scoped to the patient: the
-- same key and the same body again get the original receipt (Idempotent-Replayed: true) and store
-- nothing, also when they arrive at once on 10 connections; the same key with another body is 422
-- and stores nothing; a retry after a restart still gets the original receipt.
local spec_root = debug.getinfo(1, "S").source:match("^@(.*)/integration/[^/]+$")
if spec_root then package.path = spec_root .. "/?.lua;" .. package.path end
local S = require "support.server"
local St = require "support.store"
local http = S.http

describe("idempotent ePRO submissions", function()
  local srv, data
  local n = 0
  local function key(label)
    n = n + 1
    return ("idem-%s-%s-%03d"):format(label, St.run_id, n)
  end
  local function patient(label)
    return ("P-%s-%s"):format(label, St.run_id)
  end

  setup(function()
    local why = St.probe()
    if why then error(why, 0) end
    data = St.tempdir()
    srv = St.start { app = S.root, workers = 2, data = data }
  end)

  teardown(function()
    S.stop_all()
    St.remove_tree(data)
  end)

  -- the rows stored for one patient and key
  local function stored(d, sub)
    return St.rows(d, ("SELECT receipt_id, received_at, report_json, fingerprint FROM epro_submissions"
      .. " WHERE patient_id = %s AND idempotency_key = %s"):format(St.lit(sub.patient), St.lit(sub.key)))
  end

  local function total(d)
    return St.value(d, "SELECT count(*) FROM epro_submissions")
  end

  local function accepted(r, what)
    assert(r, what .. ": no answer")
    local receipt, why = St.receipt_of(r)
    assert(receipt, what .. ": " .. tostring(why))
    return receipt
  end

  local function refused_422(r, what)
    assert(r, what .. ": no answer")
    assert.are.equal(422, r.status, what .. ": " .. r.status .. " " .. http.quote(r.body))
    local body = assert(http.json(r))
    assert.are.equal("string", type(body.error), what .. ": no error message in " .. http.quote(r.body))
  end

  -- send `sub` on `count` connections at once; every reply must be 200 with one receipt, exactly one
  -- of them the original (no Idempotent-Replayed) and the others replays
  local function at_once(sub, count, what)
    local results, stats = St.load {
      port = srv.port, concurrency = count, timeout = 15, deadline = 60,
      next = function(i) return i <= count and sub or nil end,
    }
    assert.are.equal(count, #results, St.summary(stats))
    local receipt, originals, replays = nil, 0, 0
    for _, res in ipairs(results) do
      local got = accepted(res.resp, what)
      receipt = receipt or got
      assert.are.same(receipt, { id = got.id, receivedAt = got.receivedAt }, what .. ": two different receipts")
      if St.replayed(res.resp) then replays = replays + 1 else originals = originals + 1 end
    end
    assert.are.equal(1, originals, what .. ": replies without Idempotent-Replayed: true (the original)")
    assert.are.equal(count - 1, replays, what .. ": replies with Idempotent-Replayed: true")
    return receipt
  end

  it("the same submission sent 10 times at once (10 connections, one key) is stored once; all 10 replies carry its receipt", function()
    for round = 1, 5 do
      local sub = St.submission { patient = patient("TEN"), key = key("ten"), seq = round }
      local before = total(data)
      local receipt = at_once(sub, 10, "round " .. round)
      local rows = stored(data, sub)
      assert.are.equal(1, #rows, "round " .. round .. ": rows stored for the key")
      assert.are.equal(receipt.id, rows[1].receipt_id)
      assert.are.equal(receipt.receivedAt, rows[1].received_at)
      assert.are.equal(before + 1, total(data), "round " .. round .. ": rows added in all")
    end
  end)

  it("the same key with another body is 422 and stores nothing; the original body still gets its receipt", function()
    local p, k = patient("BODY"), key("body")
    local sub = St.submission { patient = p, key = k, report = { q1 = 3 } }
    local receipt = accepted(St.send(srv.port, sub), "first")
    local before, rows_before = total(data), stored(data, sub)
    for _, other in ipairs {
      St.submission { patient = p, key = k, report = { q1 = 4 } },
      St.submission { patient = p, key = k, report = { q1 = 3 }, captured_at = "2026-11-27T07:59:12Z" },
    } do
      refused_422(St.send(srv.port, other), "the same key with the body " .. other.body)
    end
    assert.are.equal(before, total(data))
    assert.are.same(rows_before, stored(data, sub))
    local again = St.send(srv.port, sub)
    assert.are.same(receipt, accepted(again, "the original again"))
    assert.is_true(St.replayed(again))
  end)

  it("a key sent as submissionId (no header) behaves the same", function()
    local p, k = patient("SUBID"), key("subid")
    local sub = St.submission { patient = p, submission_id = k, report = { q1 = 1 } }
    assert.is_nil(sub.headers["Idempotency-Key"])
    local before = total(data)
    local receipt = at_once(sub, 10, "submissionId sent 10 times at once")
    local rows = stored(data, sub)
    assert.are.equal(1, #rows)
    assert.are.equal(receipt.id, rows[1].receipt_id)
    local again = St.send(srv.port, sub)
    assert.are.same(receipt, accepted(again, "submissionId again"))
    assert.is_true(St.replayed(again))
    refused_422(St.send(srv.port, St.submission { patient = p, submission_id = k, report = { q1 = 2 } }),
      "the same submissionId with another body")
    assert.are.equal(before + 1, total(data))
  end)

  it("keys are scoped to the patient: one key for two patients is two submissions", function()
    local k = key("scope")
    local a = St.submission { patient = patient("SCOPE-A"), key = k }
    local b = St.submission { patient = patient("SCOPE-B"), key = k }
    local before = total(data)
    local ra, rb = St.send(srv.port, a), St.send(srv.port, b)
    local receipt_a, receipt_b = accepted(ra, "patient A"), accepted(rb, "patient B")
    assert.is_false(St.replayed(ra))
    assert.is_false(St.replayed(rb), "the second patient's submission was taken for a replay of the first's")
    assert.are_not.equal(receipt_a.id, receipt_b.id)
    assert.are.equal(before + 2, total(data))
    assert.are.equal(receipt_a.id, stored(data, a)[1].receipt_id)
    assert.are.equal(receipt_b.id, stored(data, b)[1].receipt_id)
    -- and each one's retry gets its own receipt
    assert.are.same(receipt_a, accepted(St.send(srv.port, a), "patient A again"))
    assert.are.same(receipt_b, accepted(St.send(srv.port, b), "patient B again"))
    assert.are.equal(before + 2, total(data))
  end)

  it("without a key, the same body twice is two submissions", function()
    local sub = St.submission { patient = patient("NOKEY"), report = { q1 = 5 } }
    local before = total(data)
    local r1 = accepted(St.send(srv.port, sub), "first")
    local r2 = accepted(St.send(srv.port, sub), "second")
    assert.are_not.equal(r1.id, r2.id)
    assert.are.equal(before + 2, total(data))
  end)

  it("an Idempotency-Key that is not 1 to 128 visible ASCII characters is 400 and stores nothing", function()
    local before = total(data)
    for _, bad in ipairs { ("k"):rep(129), "two words", "caf\195\169" } do
      local sub = St.submission { patient = patient("BADKEY"), key = bad }
      local r = assert(St.send(srv.port, sub))
      assert.are.equal(400, r.status, ("Idempotency-Key %q: %d %s"):format(bad, r.status, http.quote(r.body)))
    end
    local ok = St.submission { patient = patient("BADKEY"), key = ("k"):rep(128) }
    accepted(St.send(srv.port, ok), "a 128-character key")
    assert.are.equal(before + 1, total(data))
  end)

  it("a retry after a server restart gets the original receipt", function()
    local d = St.tempdir()
    local own
    finally(function()
      if own then own:stop() end
      St.remove_tree(d)
    end)
    own = St.start { app = S.root, workers = 2, data = d }
    local p = patient("RESTART")
    local subs, receipts = {}, {}
    for i = 1, 5 do
      subs[i] = St.submission { patient = p, key = key("restart"), seq = i }
      receipts[i] = accepted(St.send(own.port, subs[i]), "before the restart")
    end
    local e = own:stop()
    assert.are.equal(0, e and e.code, "the server did not stop cleanly: " .. own:logs())
    own = St.start { app = S.root, workers = 2, data = d }
    for i = 1, 5 do
      local r = St.send(own.port, subs[i])
      assert.are.same(receipts[i], accepted(r, "after the restart"))
      assert.is_true(St.replayed(r), "after the restart: no Idempotent-Replayed: true")
    end
    refused_422(St.send(own.port, St.submission { patient = p, key = subs[1].key, seq = 99 }),
      "after the restart, the same key with another body")
    assert.are.equal(5, #St.rows(d, "SELECT 1 FROM epro_submissions WHERE patient_id = " .. St.lit(p)))
  end)
end)
