-- Safety events of a trial (README.md, "Questionnaires"; scripts/safety.lua) through the real server,
-- sample app, a temporary --data read with `sqlite3 -readonly`: a PHQ-9 with item 9 above 0 from a
-- patient of trial T1 is on T1's open list for T1's investigators and monitors, and no one else's;
-- an investigator acknowledges it once (who, when, note), in one transaction with its audit entry,
-- and the trail stays intact; a second acknowledgement is 409, another trial's event 404.
local spec_root = debug.getinfo(1, "S").source:match("^@(.*)/integration/[^/]+$")
if spec_root then package.path = spec_root .. "/?.lua;" .. package.path end
local S = require "support.server"
local St = require "support.store"
local cjson = require "cjson"
local http = S.http

local phq9 = St.phq9

describe("safety events of a trial", function()
  local srv, data

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

  local function request(method, path, claims, body)
    local headers = { Authorization = "Bearer " .. srv:token(claims) }
    if body then headers["Content-Type"] = "application/json" end
    local r = assert(http.request(srv.port, method, path, { headers = headers, body = body }))
    r.json = r.body ~= "" and cjson.decode(r.body) or nil
    return r
  end

  local function expect(code, r)
    assert.are.equal(code, r.status, ("expected %d, got %d: %s"):format(code, r.status, http.quote(r.body)))
    return r
  end

  local INV1 = { sub = "dr.chen", role = "investigator", trial = "T1" }
  local INV2 = { sub = "dr.li", role = "investigator", trial = "T2" }
  local MON1 = { sub = "mon.ortiz", role = "monitor", trial = "T1" }

  local function list(trial, claims, status)
    return request("GET", ("/api/v1/trials/%s/safety-events%s"):format(trial, status and "?status=" .. status or ""),
      claims)
  end

  local function ack(trial, id, claims, body)
    return request("POST", ("/api/v1/trials/%s/safety-events/%s/ack"):format(trial, id), claims,
      body and cjson.encode(body))
  end

  -- Submit a PHQ-9 as the patient (a token of trial T1 unless told): the event's id, from the store.
  local function raise(patient, trial)
    local patient_token = { sub = patient, role = "patient", trial = trial or "T1" }
    local r = expect(200, request("POST", "/api/epro/submit", patient_token, cjson.encode {
      patientId = patient, questionnaire = "phq9", reportData = phq9 { 1, 1, 0, 0, 0, 0, 0, 0, 2 } }))
    local rows = St.rows(data, "SELECT id, trial_id FROM safety_events WHERE receipt_id = "
      .. St.lit(r.json.receipt.id))
    return rows[1], r.json.receipt
  end

  local function ids(r)
    local out = {}
    for _, e in ipairs(r.json.events) do out[#out + 1] = e.id end
    return out
  end

  local function has(r, id)
    for _, e in ipairs(r.json.events) do
      if e.id == id then return e end
    end
  end

  local function audit_verify()
    local rc, out, err = St.run(("%s audit verify %s"):format(St.quote(S.bin), St.store_words(data)))
    return rc, out .. err
  end

  it("stores the trial of the patient's token with the submission and its safety event", function()
    local event, receipt = raise("P-S1")
    assert.equals("T1", event.trial_id)
    assert.equals("T1", St.value(data, "SELECT trial_id FROM epro_submissions WHERE receipt_id = "
      .. St.lit(receipt.id)))
    -- no event under item 9 = 0
    local r = expect(200, request("POST", "/api/epro/submit", { sub = "P-S0", role = "patient", trial = "T1" },
      cjson.encode { patientId = "P-S0", questionnaire = "phq9", reportData = phq9 { 1, 1, 0, 0, 0, 0, 0, 0, 0 } }))
    assert.equals(0, St.value(data, "SELECT count(*) FROM safety_events WHERE receipt_id = " .. St.lit(r.json.receipt.id)))
  end)

  it("lists a T1 event, open, for T1's investigator and monitor only", function()
    local event = raise("P-S2")
    local r = expect(200, list("T1", INV1))
    local e = assert(has(r, event.id), "event not on T1's open list: " .. r.body)
    assert.same({ id = event.id, patientId = "P-S2", questionnaire = "phq9", flag = "phq9_item9_positive",
      item = "44260-8", answer = 2, raisedAt = e.raisedAt, receiptId = e.receiptId }, e)
    assert.matches("^%d%d%d%d%-%d%d%-%d%dT", e.raisedAt)
    assert.equals("open", r.json.status)
    assert.truthy(has(expect(200, list("T1", MON1)), event.id))
    -- T2's investigator, the patient, no token: refused before anything is read
    expect(403, list("T1", INV2))
    expect(403, list("T1", { sub = "P-S2", role = "patient", trial = "T1" }))
    expect(401, assert(http.request(srv.port, "GET", "/api/v1/trials/T1/safety-events", {})))
    -- T2's own list does not have it
    assert.is_nil(has(expect(200, list("T2", INV2)), event.id))
  end)

  it("records who acknowledged and when, with the note, audited in the same transaction", function()
    local event = raise("P-S3")
    local before = St.value(data, "SELECT count(*) FROM audit_trail")
    local r = expect(200, ack("T1", event.id, INV1, { note = "called the patient; safety plan in place" }))
    assert.equals("dr.chen", r.json.event.acknowledgedBy)
    assert.matches("^%d%d%d%d%-%d%d%-%d%dT%d%d:%d%d:%d%d%.%d%d%dZ$", r.json.event.acknowledgedAt)
    local row = St.rows(data, "SELECT acknowledged_by, acknowledged_at, acknowledged_note FROM safety_events WHERE id = "
      .. event.id)[1]
    assert.same({ acknowledged_by = "dr.chen", acknowledged_at = r.json.event.acknowledgedAt,
      acknowledged_note = "called the patient; safety plan in place" }, row)
    -- off the open list, on the full one
    assert.is_nil(has(expect(200, list("T1", INV1, "open")), event.id))
    local e = assert(has(expect(200, list("T1", MON1, "all")), event.id))
    assert.equals("dr.chen", e.acknowledgedBy)
    -- the audit entry
    assert.equals(before + 1, St.value(data, "SELECT count(*) FROM audit_trail"))
    local entry = St.rows(data, "SELECT * FROM audit_trail ORDER BY seq DESC LIMIT 1")[1]
    assert.equals("acknowledge", entry.action)
    assert.equals("dr.chen", entry.who)
    assert.equals("safety_events", entry.record_table)
    assert.equals(tostring(event.id), entry.record_id)
    assert.equals("POST /api/v1/trials/:trialId/safety-events/:eventId/ack", entry.route)
    assert.equals("called the patient; safety plan in place", entry.reason)
    assert.is_nil(cjson.decode(entry.before).acknowledgedBy)
    assert.equals(r.json.event.acknowledgedAt, cjson.decode(entry.after).acknowledgedAt)
    local rc, out = audit_verify()
    assert.equals(0, rc, out)
    assert.matches("intact", out, 1, true)
  end)

  it("answers a second acknowledgement 409, naming who and when, and records nothing more", function()
    local event = raise("P-S4")
    local first = expect(200, ack("T1", event.id, INV1))
    local count = St.value(data, "SELECT count(*) FROM audit_trail")
    local r = expect(409, ack("T1", event.id, { sub = "dr.park", role = "investigator", trial = "T1" }))
    assert.equals("dr.chen", r.json.acknowledgedBy)
    assert.equals(first.json.event.acknowledgedAt, r.json.acknowledgedAt)
    assert.matches("acknowledged by dr.chen at " .. first.json.event.acknowledgedAt, r.json.error, 1, true)
    assert.equals(count, St.value(data, "SELECT count(*) FROM audit_trail"))
    assert.equals("dr.chen", St.value(data, "SELECT acknowledged_by FROM safety_events WHERE id = " .. event.id))
  end)

  it("answers another trial's event like a missing one, and refuses monitors and patients", function()
    local t2 = raise("P-S5", "T2")
    assert.equals("T2", t2.trial_id)
    local other = expect(404, ack("T1", t2.id, INV1))
    local missing = expect(404, ack("T1", 999999, INV1))
    assert.equals(other.json.error, missing.json.error)
    assert.equals(cjson.null, St.value(data, "SELECT acknowledged_at FROM safety_events WHERE id = " .. t2.id))
    local t1 = raise("P-S6")
    expect(403, ack("T1", t1.id, MON1))
    expect(403, ack("T1", t1.id, { sub = "P-S6", role = "patient", trial = "T1" }))
    expect(403, ack("T1", t1.id, INV2))
    assert.truthy(has(expect(200, list("T1", INV1)), t1.id))
  end)

  it("validates the status, the event id and the note", function()
    local r = expect(400, list("T1", INV1, "closed"))
    assert.equals("status", r.json.errors[1].path)
    assert.equals("query", r.json.errors[1]["in"])
    r = expect(400, ack("T1", "abc", INV1))
    assert.equals("eventId", r.json.errors[1].path)
    local event = raise("P-S7")
    r = expect(400, ack("T1", event.id, INV1, { note = "  ", extra = 1 }))
    table.sort(r.json.fields)
    assert.same({ "extra", "note" }, r.json.fields)
    assert.truthy(has(expect(200, list("T1", INV1)), event.id))
  end)

  it("lets an investigator of several trials submit for the one named, and no other", function()
    local both = { sub = "dr.ng", role = "investigator", trial = { "T1", "T2" } }
    local body = { patientId = "P-S8", questionnaire = "phq9", reportData = phq9 { 0, 0, 0, 0, 0, 0, 0, 0, 1 } }
    body.trialId = "T2"
    local r = expect(200, request("POST", "/api/epro/submit", both, cjson.encode(body)))
    assert.equals("T2", St.value(data, "SELECT trial_id FROM safety_events WHERE receipt_id = " .. St.lit(r.json.receipt.id)))
    body.trialId = "T3"
    expect(403, request("POST", "/api/epro/submit", both, cjson.encode(body)))
  end)

  it("refuses any change to an event but its acknowledgement, set once", function()
    local event = raise("P-S9")
    local rc, _, err = St.exec(data, "UPDATE safety_events SET answer = 0 WHERE id = " .. event.id)
    assert.is_not.equals(0, rc)
    assert.matches("safety_events is append-only", err, 1, true)
    expect(200, ack("T1", event.id, INV1))
    rc, _, err = St.exec(data, "UPDATE safety_events SET acknowledged_by = 'x', acknowledged_at = 'y' WHERE id = "
      .. event.id)
    assert.is_not.equals(0, rc)
    assert.matches("already acknowledged", err, 1, true)
    rc = St.exec(data, "DELETE FROM safety_events WHERE id = " .. event.id)
    assert.is_not.equals(0, rc)
  end)
end)
