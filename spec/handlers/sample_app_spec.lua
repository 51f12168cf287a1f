-- The sample clinical app, in process: handlers, validation and middleware, on a temporary store.
local cjson = require "cjson"
local testing = require "triage.testing"
local db = require "triage.store"

describe("sample app", function()
  local app

  setup(function()
    -- Every request carries an investigator's token unless it says otherwise (the routes that read
    -- or write patient data ask for one; spec/integration/auth_spec.lua tests the permissions).
    app = testing.app(".", { as = { sub = "dr.chen", role = "investigator", trial = "T1" } })
  end)

  describe("GET /api/v1/protocols/:id", function()
    it("returns a known protocol with every documented field", function()
      local res = app:request "/api/v1/protocols/NCT04356798"
      assert.equals(200, res.status)
      assert.equals("application/json", res.headers["content-type"])
      local p = res:json()
      assert.equals("NCT04356798", p.id)
      for _, field in ipairs { "title", "sponsor", "phase", "status", "createdAt" } do
        assert.is_string(p[field], field)
      end
    end)

    it("answers 404 JSON naming the unknown id", function()
      local res = app:request "/api/v1/protocols/NCT00000000"
      assert.equals(404, res.status)
      assert.same({ error = "protocol not found", id = "NCT00000000" }, res:json())
    end)

    it("decodes percent-encoded ids", function()
      local res = app:request "/api/v1/protocols/NCT%30%34356798"
      assert.equals(200, res.status)
    end)

    it("gives every response a request id", function()
      local a = app:request "/api/v1/protocols/NCT04356798"
      local b = app:request "/api/v1/protocols/NCT04356798"
      assert.is_string(a.headers["x-request-id"])
      assert.are_not.equal(a.headers["x-request-id"], b.headers["x-request-id"])
    end)

    it("keeps a sane client request id", function()
      local res = app:request { path = "/api/v1/protocols/NCT04356798", headers = { ["X-Request-Id"] = "trace-42" } }
      assert.equals("trace-42", res.headers["x-request-id"])
      res = app:request { path = "/api/v1/protocols/NCT04356798", headers = { ["X-Request-Id"] = "bad id!" } }
      assert.are_not.equal("bad id!", res.headers["x-request-id"])
    end)
  end)

  describe("POST /api/epro/submit", function()
    it("accepts a valid report", function()
      local res = app:request { method = "POST", path = "/api/epro/submit",
        json = { patientId = "P-0001", reportData = { pain = 3, fatigue = 2 } } }
      assert.equals(200, res.status)
      local j = res:json()
      assert.is_true(j.success)
      assert.equals("report accepted", j.message)
      assert.matches("^%x+%-%x+%-%x+%-%x+$", j.receipt.id)
      assert.matches("^%d%d%d%d%-%d%d%-%d%dT%d%d:%d%d:%d%d%.%d%d%dZ$", j.receipt.receivedAt)
      local row = db:first("SELECT patient_id, report_json, received_at FROM epro_submissions WHERE receipt_id = ?",
        j.receipt.id)
      assert.equals("P-0001", row.patient_id)
      assert.same({ pain = 3, fatigue = 2 }, require("cjson").decode(row.report_json))
      assert.equals(j.receipt.receivedAt, row.received_at)
    end)

    it("stores the report as it was sent, empty arrays and objects alike", function()
      local res = app:request { method = "POST", path = "/api/epro/submit",
        body = '{"patientId":"P-0001","reportData":{"meds":[],"notes":{},"q":[1]}}' }
      assert.equals(200, res.status)
      local row = db:first("SELECT report_json FROM epro_submissions WHERE receipt_id = ?", res:json().receipt.id)
      assert.equals("[]", row.report_json:match('"meds":(%[%])'))
      assert.equals("{}", row.report_json:match('"notes":({})'))
    end)

    it("stores the device's capture time beside the server's", function()
      local res = app:request { method = "POST", path = "/api/epro/submit",
        json = { patientId = "P-0001", reportData = { q = 1 }, capturedAt = "2026-11-27T07:59:12Z" } }
      assert.equals(200, res.status)
      local row = db:first("SELECT captured_at FROM epro_submissions WHERE receipt_id = ?", res:json().receipt.id)
      assert.equals("2026-11-27T07:59:12Z", row.captured_at)
      res = app:request { method = "POST", path = "/api/epro/submit",
        json = { patientId = "P-0001", reportData = { q = 1 }, capturedAt = "yesterday" } }
      assert.equals(400, res.status)
      assert.same({ "capturedAt" }, res:json().fields)
    end)

    it("answers a retry with the original receipt and stores nothing more", function()
      local req = { method = "POST", path = "/api/epro/submit", headers = { ["Idempotency-Key"] = "k-retry-1" },
        json = { patientId = "P-0002", reportData = { q = 2 } } }
      local first = app:request(req)
      local again = app:request(req)
      assert.equals(200, first.status)
      assert.equals(200, again.status)
      assert.same(first:json().receipt, again:json().receipt)
      assert.equals("true", again.headers["idempotent-replayed"])
      local n = db:first("SELECT count(*) AS n FROM epro_submissions WHERE idempotency_key = 'k-retry-1'").n
      assert.equals(1, n)
    end)

    it("refuses the same key with another body (422) and stores nothing", function()
      local first = app:request { method = "POST", path = "/api/epro/submit",
        json = { patientId = "P-0002", submissionId = "s-422", reportData = { q = 2 } } }
      assert.equals(200, first.status)
      local other = app:request { method = "POST", path = "/api/epro/submit",
        json = { patientId = "P-0002", submissionId = "s-422", reportData = { q = 3 } } }
      assert.equals(422, other.status)
      assert.equals(1, db:first("SELECT count(*) AS n FROM epro_submissions WHERE idempotency_key = 's-422'").n)
    end)

    it("keeps submissions append-only: a correction names the one it corrects", function()
      local first = app:request { method = "POST", path = "/api/epro/submit",
        json = { patientId = "P-0004", reportData = { q = 1 } } }
      local id = first:json().receipt.id
      local fix = app:request { method = "POST", path = "/api/epro/submit",
        json = { patientId = "P-0004", reportData = { q = 0 }, corrects = id, reason = "patient misread item 1" } }
      assert.equals(200, fix.status)
      local row = db:first("SELECT corrects FROM epro_submissions WHERE receipt_id = ?", fix:json().receipt.id)
      assert.equals(id, row.corrects)
      local bad = app:request { method = "POST", path = "/api/epro/submit",
        json = { patientId = "P-0004", reportData = { q = 0 }, corrects = "no-such-receipt", reason = "typo" } }
      assert.equals(422, bad.status)
      assert.same({ "corrects" }, bad:json().fields)
      local unexplained = app:request { method = "POST", path = "/api/epro/submit",
        json = { patientId = "P-0004", reportData = { q = 0 }, corrects = id } }
      assert.equals(400, unexplained.status)
      assert.same({ "reason" }, unexplained:json().fields)
    end)

    it("records each submission and correction in the audit trail, in its transaction", function()
      local first = app:request { method = "POST", path = "/api/epro/submit", headers = { ["X-Request-Id"] = "req-a1" },
        json = { patientId = "P-0005", reportData = { q = 2 } } }
      local id = first:json().receipt.id
      local fix = app:request { method = "POST", path = "/api/epro/submit",
        json = { patientId = "P-0005", reportData = { q = 1 }, corrects = id, reason = "wrong item answered" } }
      assert.equals(200, fix.status)
      local created = db:first("SELECT * FROM audit_trail WHERE record_id = ?", id)
      assert.equals("create", created.action)
      assert.equals("epro_submissions", created.record_table)
      assert.equals("POST /api/epro/submit", created.route)
      assert.equals("req-a1", created.request_id)
      assert.equals("dr.chen", created.who)
      assert.is_nil(created.before)
      assert.same({ q = 2 }, cjson.decode(created.after).reportData)
      local corrected = db:first("SELECT * FROM audit_trail WHERE record_id = ?", fix:json().receipt.id)
      assert.equals("correct", corrected.action)
      assert.equals("wrong item answered", corrected.reason)
      assert.equals(created.seq + 1, corrected.seq)
      assert.equals(created.hash, corrected.prev_hash)
      assert.same({ q = 2 }, cjson.decode(corrected.before).reportData)
      assert.equals(id, cjson.decode(corrected.before).receiptId)
      assert.same({ q = 1 }, cjson.decode(corrected.after).reportData)
      -- a replay stores nothing, and records nothing
      local n = db:first("SELECT count(*) AS n FROM audit_trail").n
      app:request { method = "POST", path = "/api/epro/submit", headers = { ["Idempotency-Key"] = "k-audit" },
        json = { patientId = "P-0005", reportData = { q = 3 } } }
      app:request { method = "POST", path = "/api/epro/submit", headers = { ["Idempotency-Key"] = "k-audit" },
        json = { patientId = "P-0005", reportData = { q = 3 } } }
      assert.equals(n + 1, db:first("SELECT count(*) AS n FROM audit_trail").n)
    end)

    it("writes a scored submission, its safety event and its audit entry together", function()
      local n = db:first("SELECT count(*) AS n FROM audit_trail").n
      local res = app:request { method = "POST", path = "/api/epro/submit",
        json = { patientId = "P-0006", questionnaire = "phq9", reportData = {
          ["44250-9"] = 0, ["44255-8"] = 0, ["44259-0"] = 0, ["44254-1"] = 0, ["44251-7"] = 0,
          ["44258-2"] = 0, ["44252-5"] = 0, ["44253-3"] = 0, ["44260-8"] = 2 } } }
      assert.equals(200, res.status)
      local id = res:json().receipt.id
      assert.equals(2, db:first("SELECT total FROM epro_scores WHERE receipt_id = ?", id).total)
      assert.equals("44260-8", db:first("SELECT item_code FROM safety_events WHERE receipt_id = ?", id).item_code)
      local entry = db:first("SELECT * FROM audit_trail WHERE record_id = ?", id)
      assert.equals("create", entry.action)
      assert.equals(2, cjson.decode(entry.after).reportData["44260-8"])
      assert.equals(n + 1, db:first("SELECT count(*) AS n FROM audit_trail").n)
      -- a reason without a correction is refused, and nothing of it is stored
      local stray = app:request { method = "POST", path = "/api/epro/submit",
        json = { patientId = "P-0006", reportData = { q = 1 }, reason = "no correction" } }
      assert.equals(400, stray.status)
      assert.same({ "reason" }, stray:json().fields)
      assert.equals(n + 1, db:first("SELECT count(*) AS n FROM audit_trail").n)
    end)

    it("names a missing patientId", function()
      local res = app:request { method = "POST", path = "/api/epro/submit", json = { reportData = { q = 1 } } }
      assert.equals(400, res.status)
      assert.same({ "patientId" }, res:json().fields)
    end)

    it("refuses a reportData that is not an object", function()
      for _, bad in ipairs { "text", 42, { 1, 2, 3 }, {} } do
        local res = app:request { method = "POST", path = "/api/epro/submit",
          json = { patientId = "P-0002", reportData = bad } }
        assert.equals(400, res.status)
        assert.same({ "reportData" }, res:json().fields)
      end
    end)

    it("names both fields when both fail", function()
      local res = app:request { method = "POST", path = "/api/epro/submit", json = { patientId = "" } }
      assert.equals(400, res.status)
      assert.same({ "patientId", "reportData" }, res:json().fields)
    end)

    it("answers 400 to a body that is not JSON", function()
      local res = app:request { method = "POST", path = "/api/epro/submit", body = "{not json" }
      assert.equals(400, res.status)
      assert.matches("^invalid JSON", res:json().error)
    end)

    it("answers 405 with Allow to GET", function()
      local res = app:request "/api/epro/submit"
      assert.equals(405, res.status)
      assert.equals("POST", res.headers["allow"])
    end)
  end)

  describe("POST /api/v1/tags/add", function()
    it("adds a tag", function()
      local res = app:request { method = "POST", path = "/api/v1/tags/add",
        json = { patientId = "P-0003", tagName = "high-risk" } }
      assert.equals(200, res.status)
      assert.same({ success = true, added = true }, res:json())
      local again = app:request { method = "POST", path = "/api/v1/tags/add",
        json = { patientId = "P-0003", tagName = "high-risk" } }
      assert.equals(200, again.status)
      assert.is_false(again:json().added)
      local list = app:request("/api/v1/patients/P-0003/tags"):json()
      assert.equals("P-0003", list.patientId)
      assert.equals(1, #list.tags)
      assert.equals("high-risk", list.tags[1].tag)
      assert.equals("[]", app:request("/api/v1/patients/P-none/tags").body:match('"tags":(%[%])'))
      -- the tag added is audited once; the refused duplicate left no entry
      local entries = db:query("SELECT * FROM audit_trail WHERE record_table = 'patient_tags' AND record_id = ?",
        cjson.encode { "P-0003", "high-risk" })
      assert.equals(1, #entries)
      assert.equals("create", entries[1].action)
      assert.equals("POST /api/v1/tags/add", entries[1].route)
      assert.equals(res.headers["x-request-id"], entries[1].request_id)
      assert.same({ patientId = "P-0003", tag = "high-risk", addedAt = list.tags[1].addedAt },
        cjson.decode(entries[1].after))
    end)

    it("refuses a missing tagName", function()
      local res = app:request { method = "POST", path = "/api/v1/tags/add", json = { patientId = "P-0003" } }
      assert.equals(400, res.status)
      assert.same({ "tagName" }, res:json().fields)
    end)
  end)

  describe("the secure group (authentication, permission, audit)", function()
    local path = "/api/v1/secure/protocols/NCT04356798"

    it("answers 401 without a token", function()
      local res = app:request { path = path, as = false }
      assert.equals(401, res.status)
      assert.equals('Bearer realm="triage"', res.headers["www-authenticate"])
      assert.same({ error = "unauthorized", reason = "missing", message = "no Authorization: Bearer token" },
        res:json())
    end)

    it("answers 403 to a role the group does not admit", function()
      local res = app:request { path = path, as = { sub = "P-0001", role = "patient", trial = "T1" } }
      assert.equals(403, res.status)
    end)

    it("serves the protocol to an authorized user and audits it", function()
      local res = app:request(path)
      assert.equals(200, res.status)
      assert.equals("NCT04356798", res:json().id)
      local entry = require("audit").recent(1)[1]
      assert.equals("dr.chen", entry.user)
      assert.equals(200, entry.status)
      assert.equals(res.headers["x-request-id"], entry.requestId)
    end)
  end)

  it("waits in GET /api/v1/sleep and answers ok", function()
    local res = app:request "/api/v1/sleep"
    assert.equals(200, res.status)
    assert.same({ ok = true }, res:json())
  end)

  it("answers 404 JSON to an unknown path", function()
    local res = app:request "/nope"
    assert.equals(404, res.status)
    assert.same({ error = "not found" }, res:json())
  end)
end)
