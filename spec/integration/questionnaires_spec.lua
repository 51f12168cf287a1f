-- Scored questionnaire submissions through the real server (sample app, a temporary --data, checked
-- in its store: DATA/triage.db with `sqlite3 -readonly`, or psql on PostgreSQL): a PHQ-9 with item 9 above 0 stores the submission, its
-- score, band and flag, and a safety event, all under one receipt; when the safety event cannot be
-- stored, nothing of the submission is (503), and the same submission sent again is stored whole.
local spec_root = debug.getinfo(1, "S").source:match("^@(.*)/integration/[^/]+$")
if spec_root then package.path = spec_root .. "/?.lua;" .. package.path end
local S = require "support.server"
local St = require "support.store"
local cjson = require "cjson"
local http = S.http

local phq9 = St.phq9

describe("questionnaire submissions on the durable store", function()
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

  local function submit(body, key)
    local headers = { ["Content-Type"] = "application/json", Authorization = St.AUTHORIZATION }
    if key then headers["Idempotency-Key"] = key end
    return St.send(srv.port, { body = cjson.encode(body), headers = headers })
  end

  local function stored(patient)
    local p = St.lit(patient)
    return {
      submissions = St.rows(data, "SELECT receipt_id, report_json FROM epro_submissions WHERE patient_id = " .. p),
      scores = St.rows(data, "SELECT s.* FROM epro_scores s JOIN epro_submissions e USING (receipt_id)"
        .. " WHERE e.patient_id = " .. p),
      events = St.rows(data, "SELECT * FROM safety_events WHERE patient_id = " .. p),
    }
  end

  it("stores the submission, its score, band, flag and a safety event under one receipt", function()
    local patient = "P-phq9-" .. St.run_id
    local r = submit { patientId = patient, questionnaire = "phq9", reportData = phq9 { 2, 2, 1, 1, 0, 0, 1, 0, 2 } }
    local receipt = assert(St.receipt_of(r))
    assert.same({ questionnaire = "phq9", panel = "44249-1", code = "44261-6", total = 9, band = "mild",
      answered = 9, prorated = false, flags = { "phq9_item9_positive" } }, r.json.score)
    local s = stored(patient)
    assert.equals(1, #s.submissions)
    assert.equals(receipt.id, s.submissions[1].receipt_id)
    assert.equals(1, #s.scores)
    local score = s.scores[1]
    assert.equals(receipt.id, score.receipt_id)
    assert.equals(9, score.total)
    assert.equals("mild", score.band)
    assert.equals('["phq9_item9_positive"]', score.flags)
    assert.equals(receipt.receivedAt, score.scored_at)
    assert.equals(1, #s.events)
    local event = s.events[1]
    assert.equals(receipt.id, event.receipt_id)
    assert.equals("44260-8", event.item_code)
    assert.equals(2, event.answer)
    assert.equals("phq9_item9_positive", event.flag)
    assert.equals(cjson.null, event.acknowledged_at)
  end)

  it("stores nothing of a submission whose safety event is refused, and all of it once it is not", function()
    local patient = "P-atomic-" .. St.run_id
    -- the spec's own trigger refuses this patient's safety events: the last statement of the
    -- submission's transaction fails after the submission and its score were written
    -- (on PostgreSQL a trigger function raising in SQLSTATE class 23, as RAISE(ABORT) is a constraint)
    local create = St.backend.postgres and ("CREATE FUNCTION spec_refuse_event() RETURNS trigger LANGUAGE plpgsql"
      .. " AS $$ BEGIN RAISE EXCEPTION 'refused by the spec' USING ERRCODE = '23000'; END $$;"
      .. " CREATE TRIGGER spec_refuse_event BEFORE INSERT ON safety_events FOR EACH ROW"
      .. " WHEN (NEW.patient_id = %s) EXECUTE FUNCTION spec_refuse_event();")
      or ("CREATE TRIGGER spec_refuse_event BEFORE INSERT ON safety_events"
      .. " WHEN NEW.patient_id = %s BEGIN SELECT RAISE(ABORT, 'refused by the spec'); END;")
    local rc, _, err = St.exec(data, create:format(St.lit(patient)))
    assert.equals(0, rc, err)
    local body = { patientId = patient, questionnaire = "phq9", reportData = phq9 { 0, 0, 0, 0, 0, 0, 0, 0, 1 } }
    local r = submit(body, "atomic-" .. St.run_id)
    assert(r, "no answer")
    assert.equals(503, r.status, http.quote(r.body))
    assert.equals("1", r.headers["retry-after"])
    local s = stored(patient)
    assert.same({}, s.submissions)
    assert.same({}, s.scores)
    assert.same({}, s.events)

    rc, _, err = St.exec(data, St.backend.postgres
      and "DROP TRIGGER spec_refuse_event ON safety_events; DROP FUNCTION spec_refuse_event();"
      or "DROP TRIGGER spec_refuse_event;")
    assert.equals(0, rc, err)
    r = submit(body, "atomic-" .. St.run_id)
    local receipt = assert(St.receipt_of(r))
    assert.is_false(St.replayed(r))
    s = stored(patient)
    assert.equals(1, #s.submissions)
    assert.equals(1, #s.scores)
    assert.equals(1, #s.events)
    assert.equals(receipt.id, s.scores[1].receipt_id)
    assert.equals(receipt.id, s.events[1].receipt_id)
    assert.equals(1, s.scores[1].total)
  end)

  it("answers an unknown questionnaire and too many unanswered items with 400, storing nothing", function()
    local patient = "P-bad-" .. St.run_id
    local r = submit { patientId = patient, questionnaire = "bdi", reportData = { q = 1 } }
    assert.equals(400, r.status)
    assert.same({ "questionnaire" }, r.json.fields)
    r = submit { patientId = patient, questionnaire = "phq9", reportData = phq9 { 1, 1, 1, 1, 1, 1 } }
    assert.equals(400, r.status)
    assert.equals(3, #r.json.errors)
    assert.same({}, stored(patient).submissions)
  end)
end)
