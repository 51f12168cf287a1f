-- PHQ-9 and GAD-7 (scripts/questionnaires/): scores and bands at every band edge, proration of
-- unanswered items, refusal with too many, the PHQ-9 item 9 safety flag; and POST /api/epro/submit
-- with a questionnaire, in process on a temporary store.
local testing = require "triage.testing"
local db = require "triage.store"
local cjson = require "cjson"

describe("questionnaires", function()
  local app, questionnaires, phq9, gad7

  setup(function()
    app = testing.app(".", { as = { sub = "dr.chen", role = "investigator", trial = "T1" } })
    questionnaires = require "questionnaires"
    phq9, gad7 = questionnaires.get("phq9"), questionnaires.get("gad7")
  end)

  -- Answers summing to total, the first items filled first; item numbers in `unanswered` left out.
  local function answers_for(q, total, unanswered)
    local skip = {}
    for _, n in ipairs(unanswered or {}) do skip[n] = true end
    local a = {}
    for _, item in ipairs(q.items) do
      if not skip[item.n] then
        local v = math.min(3, total)
        a[item.loinc] = v
        total = total - v
      end
    end
    assert(total == 0, "answers_for: the total does not fit the answered items")
    return a
  end

  it("are coded in LOINC", function()
    assert.equals("44249-1", phq9.panel)
    assert.equals("44261-6", phq9.total_code)
    local codes = {}
    for i, item in ipairs(phq9.items) do codes[i] = item.loinc end
    assert.same({ "44250-9", "44255-8", "44259-0", "44254-1", "44251-7", "44258-2", "44252-5", "44253-3", "44260-8" },
      codes)
    assert.equals("69737-5", gad7.panel)
    assert.equals("70274-6", gad7.total_code)
    codes = {}
    for i, item in ipairs(gad7.items) do codes[i] = item.loinc end
    assert.same({ "69725-0", "68509-9", "69733-4", "69734-2", "69735-9", "69689-8", "69736-7" }, codes)
    local scale = {}
    for i, a in ipairs(phq9.answers) do scale[i] = a.value .. "=" .. a.loinc end
    assert.same({ "0=LA6568-5", "1=LA6569-3", "2=LA6570-1", "3=LA6571-9" }, scale)
    assert.same(phq9.answers, gad7.answers)
    assert.same({ "gad7", "phq9" }, questionnaires.names())
  end)

  describe("PHQ-9", function()
    it("bands the total at every edge", function()
      local want = { [0] = "minimal", [4] = "minimal", [5] = "mild", [9] = "mild", [10] = "moderate",
        [14] = "moderate", [15] = "moderately severe", [19] = "moderately severe", [20] = "severe", [27] = "severe" }
      for total, band in pairs(want) do
        local r = assert(phq9.check(answers_for(phq9, total)))
        assert.equals(total, r.total)
        assert.equals(band, r.band, "total " .. total)
        assert.equals(9, r.answered)
        assert.is_false(r.prorated)
      end
    end)

    it("prorates one or two unanswered items from the mean of the answered, halves up", function()
      -- 8 answered summing to 13: 13 * 9 / 8 = 14.625 -> 15 (the raw 13 would be moderate)
      local a = answers_for(phq9, 13, { 5 })
      local r = assert(phq9.check(a))
      assert.equals(15, r.total)
      assert.equals("moderately severe", r.band)
      assert.equals(8, r.answered)
      assert.is_true(r.prorated)
      assert.same({ "44251-7" }, r.missing)
      -- 8 answered summing to 4: 4.5 -> 5 (mild)
      r = assert(phq9.check(answers_for(phq9, 4, { 9 })))
      assert.equals(5, r.total)
      assert.equals("mild", r.band)
      -- 7 answered summing to 10: 12.857 -> 13; null counts as unanswered
      a = answers_for(phq9, 10, { 2, 3 })
      a["44255-8"] = cjson.null
      r = assert(phq9.check(a))
      assert.equals(13, r.total)
      assert.equals(7, r.answered)
      -- 7 answered summing to 21 (all 3s): 27, not more
      r = assert(phq9.check(answers_for(phq9, 21, { 1, 2 })))
      assert.equals(27, r.total)
    end)

    it("refuses three or more unanswered items, naming each", function()
      local r, errs = phq9.check(answers_for(phq9, 6, { 1, 4, 7 }), "reportData")
      assert.is_nil(r)
      assert.equals(3, #errs)
      assert.equals('reportData["44250-9"]', errs[1].path)
      assert.equals('reportData["44254-1"]', errs[2].path)
      assert.equals('reportData["44252-5"]', errs[3].path)
      assert.matches("at most 2 of its 9 items unanswered, 3 are", errs[1].reason, 1, true)
      assert.is_nil((phq9.check({})))
    end)

    it("flags any item 9 answer above 0, whatever the total", function()
      for v = 1, 3 do
        local a = answers_for(phq9, 0)
        a["44260-8"] = v
        local r = assert(phq9.check(a))
        assert.equals(v, r.total)
        assert.equals("minimal", r.band)
        assert.same({ "phq9_item9_positive" }, r.flags)
        assert.same({ { flag = "phq9_item9_positive", item = "44260-8", answer = v } }, r.safety)
      end
      local r = assert(phq9.check(answers_for(phq9, 26))) -- items 1-8 at 3, item 9 at 2
      assert.same({ "phq9_item9_positive" }, r.flags)
      r = assert(phq9.check(answers_for(phq9, 24))) -- item 9 at 0
      assert.same({}, r.flags)
      assert.same({}, r.safety)
      r = assert(phq9.check(answers_for(phq9, 10, { 9 }))) -- item 9 unanswered: prorated, not flagged
      assert.same({}, r.flags)
    end)

    it("refuses answers off the scale and unknown items", function()
      local a = answers_for(phq9, 5)
      a["44250-9"], a["44255-8"], a["44259-0"], a["12345-6"] = 4, "2", -1, 1
      local r, errs = phq9.check(a, "reportData")
      assert.is_nil(r)
      local by_path = {}
      for _, e in ipairs(errs) do by_path[e.path] = e.reason end
      assert.same({
        ['reportData["44250-9"]'] = "must be one of 0, 1, 2, 3",
        ['reportData["44255-8"]'] = "expected an integer, got a string",
        ['reportData["44259-0"]'] = "must be one of 0, 1, 2, 3",
        ['reportData["12345-6"]'] = "is not a known field",
      }, by_path)
    end)
  end)

  describe("GAD-7", function()
    it("bands the total at every edge", function()
      local want = { [0] = "minimal", [4] = "minimal", [5] = "mild", [9] = "mild", [10] = "moderate",
        [14] = "moderate", [15] = "severe", [21] = "severe" }
      for total, band in pairs(want) do
        local r = assert(gad7.check(answers_for(gad7, total)))
        assert.equals(total, r.total)
        assert.equals(band, r.band, "total " .. total)
        assert.same({}, r.flags)
      end
    end)

    it("prorates one unanswered item, halves up, and refuses two", function()
      local r = assert(gad7.check(answers_for(gad7, 10, { 7 }))) -- 10 * 7 / 6 = 11.67 -> 12
      assert.equals(12, r.total)
      assert.equals("moderate", r.band)
      assert.is_true(r.prorated)
      r = assert(gad7.check(answers_for(gad7, 3, { 1 }))) -- 3.5 -> 4
      assert.equals(4, r.total)
      assert.equals("minimal", r.band)
      r = assert(gad7.check(answers_for(gad7, 9, { 4 }))) -- 10.5 -> 11
      assert.equals(11, r.total)
      local errs
      r, errs = gad7.check(answers_for(gad7, 6, { 2, 6 }))
      assert.is_nil(r)
      assert.equals(2, #errs)
      assert.matches("at most 1 of its 7 items unanswered, 2 are", errs[1].reason, 1, true)
    end)
  end)

  describe("POST /api/epro/submit with a questionnaire", function()
    local function submit(body, headers)
      return app:request { method = "POST", path = "/api/epro/submit", json = body, headers = headers }
    end

    it("stores the score, band and flags with the submission and a safety event, and returns them", function()
      local a = answers_for(phq9, 12)          -- items 1-4 at 3
      a["44260-8"], a["44254-1"] = 1, 2         -- item 9 at 1: 12 in all
      local res = submit { patientId = "P-Q1", questionnaire = "phq9", reportData = a }
      assert.equals(200, res.status, res.body)
      local j = res:json()
      assert.same({ questionnaire = "phq9", panel = "44249-1", code = "44261-6", total = 12, band = "moderate",
        answered = 9, prorated = false, flags = { "phq9_item9_positive" } }, j.score)
      local id = j.receipt.id
      local row = db:first("SELECT patient_id, report_json FROM epro_submissions WHERE receipt_id = ?", id)
      assert.equals("P-Q1", row.patient_id)
      assert.same(a, cjson.decode(row.report_json))
      local score = db:first("SELECT * FROM epro_scores WHERE receipt_id = ?", id)
      assert.same({ receipt_id = id, questionnaire = "phq9", panel_code = "44249-1", total_code = "44261-6",
        total = 12, band = "moderate", answered = 9, prorated = 0, flags = '["phq9_item9_positive"]',
        scored_at = j.receipt.receivedAt }, score)
      local events = db:query("SELECT * FROM safety_events WHERE receipt_id = ?", id)
      assert.equals(1, #events)
      assert.same({ id = events[1].id, receipt_id = id, patient_id = "P-Q1", questionnaire = "phq9",
        flag = "phq9_item9_positive", item_code = "44260-8", answer = 1, raised_at = j.receipt.receivedAt,
        trial_id = "T1" }, events[1]) -- the trial of the token
    end)

    it("creates no safety event when item 9 is 0, and returns an empty flag list", function()
      local res = submit { patientId = "P-Q2", questionnaire = "gad7", reportData = answers_for(gad7, 15, { 3 }) }
      assert.equals(200, res.status, res.body)
      assert.equals('"flags":[]', res.body:match('"flags":%[%]'))
      local j = res:json()
      assert.equals(18, j.score.total) -- 15 * 7 / 6 = 17.5 -> 18
      assert.equals("severe", j.score.band)
      assert.is_true(j.score.prorated)
      assert.equals(0, db:first("SELECT count(*) AS n FROM safety_events WHERE receipt_id = ?", j.receipt.id).n)
      assert.equals(1, db:first("SELECT count(*) AS n FROM epro_scores WHERE receipt_id = ?", j.receipt.id).n)
    end)

    it("answers a retry with the original receipt and score, storing nothing more", function()
      local a = answers_for(phq9, 27) -- item 9 at 3
      local req = { patientId = "P-Q3", questionnaire = "phq9", reportData = a }
      local first = submit(req, { ["Idempotency-Key"] = "q-retry-1" })
      local again = submit(req, { ["Idempotency-Key"] = "q-retry-1" })
      assert.equals(200, again.status, again.body)
      assert.equals("true", again.headers["idempotent-replayed"])
      assert.same(first:json(), again:json())
      assert.equals(1, db:first("SELECT count(*) AS n FROM epro_scores s JOIN epro_submissions e USING (receipt_id)"
        .. " WHERE e.idempotency_key = 'q-retry-1'").n)
      assert.equals(1, db:first("SELECT count(*) AS n FROM safety_events WHERE patient_id = 'P-Q3'").n)
    end)

    it("refuses an unknown questionnaire with a 400 naming it, and stores nothing", function()
      local res = submit { patientId = "P-Q4", questionnaire = "phq-9", reportData = { ["44250-9"] = 1 } }
      assert.equals(400, res.status)
      local j = res:json()
      assert.same({ "questionnaire" }, j.fields)
      assert.equals('must be one of "gad7", "phq9"', j.errors[1].reason)
      assert.equals(0, db:first("SELECT count(*) AS n FROM epro_submissions WHERE patient_id = 'P-Q4'").n)
    end)

    it("refuses too many unanswered items and bad answers in one 400 with the other failures", function()
      local res = submit { patientId = "", questionnaire = "phq9",
        reportData = { ["44250-9"] = 1, ["44255-8"] = 1, ["44259-0"] = 1, ["44254-1"] = 1, ["44251-7"] = 1,
                       ["44258-2"] = 1 } }
      assert.equals(400, res.status)
      assert.same({ "patientId", 'reportData["44252-5"]', 'reportData["44253-3"]', 'reportData["44260-8"]' },
        res:json().fields)
      res = submit { patientId = "P-Q5", questionnaire = "phq9", capturedAt = "soon",
        reportData = { ["44250-9"] = 9 } }
      assert.equals(400, res.status)
      assert.same({ "capturedAt", 'reportData["44250-9"]' }, res:json().fields)
      assert.equals(0, db:first("SELECT count(*) AS n FROM epro_submissions WHERE patient_id = 'P-Q5'").n)
    end)

    it("keeps accepting free-form reports without a questionnaire, unscored", function()
      local res = submit { patientId = "P-Q6", reportData = { pain = 3 } }
      assert.equals(200, res.status)
      assert.is_nil(res:json().score)
      assert.equals(0, db:first("SELECT count(*) AS n FROM epro_scores WHERE receipt_id = ?", res:json().receipt.id).n)
    end)
  end)
end)
