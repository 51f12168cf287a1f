-- ePRO questionnaire intake: POST /api/epro/submit, and a patient's reports:
-- GET /api/v1/trials/:trialId/patients/:patientId/reports. Both behind a bearer token (routes/api.lua).
--
-- POST /api/epro/submit
--   { "patientId": "P-0001", "reportData": { ... }, "questionnaire": "phq9", "capturedAt": "2026-11-27T07:59:12Z",
--     "submissionId": "…", "corrects": "<receipt id>", "reason": "…", "trialId": "T1" }
-- (questionnaire, capturedAt, submissionId optional; a correction names the receipt it corrects and says why)
-- The submission is stored under the trial of the bearer token (its trial claim); trialId chooses one
-- when the token names several (one it does not name is 403), and the safety events it raises are
-- that trial's (scripts/safety.lua).
-- with an optional Idempotency-Key header.
--
-- A 200 means the submission is committed to disk (synchronous=FULL): its receipt (the server's id and
-- time of receipt) comes back. A retry with the same key (the header, else submissionId; scoped to the
-- patient) gets the original receipt and stores nothing; the same key with another body is 422. A
-- storage failure is 503 with Retry-After: nothing was acknowledged, and the retry is safe.
-- Submissions are never changed: a correction is a new submission that names the one it corrects.
--
-- A submission that names a questionnaire (scripts/questionnaires/) answers it in reportData, keyed
-- by the items' LOINC codes ({"44250-9": 0, "44255-8": 2, ...}; null or absent: unanswered); the
-- answers are validated against it and scored, and the score, its band and flags are stored with the
-- submission (epro_scores) and returned; a flag that needs a clinician (PHQ-9 item 9 above 0) adds a
-- safety event (safety_events). Without a questionnaire, reportData is stored as it is (any non-empty
-- object). Each submission is recorded in the audit trail (a correction with the corrected submission
-- as its previous value, and its reason). The submission, its score, its safety events and its audit
-- entry are written in one transaction: all of them or none.
local cjson = require "cjson"
local db = require "triage.store"
local schema = require "triage.schema"
local triage = require "triage"
local replies = require "replies"
local questionnaires = require "questionnaires"

local M = {}

local MAX_KEY = 128
local MAX_REASON = 1000

-- An idempotency key or a receipt id: 1 to 128 printable ASCII characters, no spaces.
local KEY = { type = "string", pattern = "^[\33-\126]+$", max_length = MAX_KEY,
  message = "must be 1 to 128 printable ASCII characters without spaces" }

local SUBMISSION = schema.compile {
  type = "object",
  fields = {
    patientId = { type = "string", required = true, pattern = "%S", max_length = MAX_KEY,
      message = "must be a non-blank string of at most 128 characters" },
    reportData = { type = "object", required = true, min_fields = 1 },
    questionnaire = { type = "string", enum = questionnaires.names() },
    capturedAt = { type = "string", format = "date-time" },
    submissionId = KEY,
    corrects = KEY,
    reason = { type = "string", pattern = "%S", max_length = MAX_REASON,
      message = "must be a non-blank string of at most 1000 characters" },
    trialId = { type = "string", pattern = "^[%w._:-]+$", max_length = MAX_KEY,
      message = "must be 1 to 128 letters, digits or . _ : -" },
  },
}

local INSERT = "INSERT INTO epro_submissions (receipt_id, patient_id, idempotency_key, fingerprint, captured_at,"
  .. " received_at, report_json, corrects, trial_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
local BY_KEY = "SELECT receipt_id, received_at, fingerprint FROM epro_submissions"
  .. " WHERE patient_id = ? AND idempotency_key = ?"
local BY_RECEIPT = "SELECT receipt_id, patient_id, captured_at, received_at, report_json, corrects, trial_id"
  .. " FROM epro_submissions WHERE receipt_id = ?"
local INSERT_SCORE = "INSERT INTO epro_scores (receipt_id, questionnaire, panel_code, total_code, total, band,"
  .. " answered, prorated, flags, scored_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
local INSERT_SAFETY = "INSERT INTO safety_events (receipt_id, patient_id, questionnaire, flag, item_code, answer,"
  .. " raised_at, trial_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
local SCORE_OF = "SELECT questionnaire, panel_code, total_code, total, band, answered, prorated, flags"
  .. " FROM epro_scores WHERE receipt_id = ?"

-- Receipt ids: "<ms since the epoch>-<process tag>-<worker>-<sequence>" in hex, unique across workers,
-- reloads (the tag and the sequence are carried over), restarts and the nodes sharing one PostgreSQL
-- database (the tag, 32 random bits per worker process).
local seq = triage.carry("epro-receipt-sequence", function(previous) return previous or { n = 0 } end)

local date_second, date_text = -1, nil -- os.date once a second: it is not compiled (JIT)

local function process_tag()
  local f = assert(io.open("/dev/urandom", "rb"))
  local bytes = f:read(4)
  f:close()
  return ("%02x%02x%02x%02x"):format(bytes:byte(1, 4))
end
local tag = triage.carry("epro-receipt-tag", function(previous) return previous or process_tag() end)

local function new_receipt()
  local now = triage.now()
  seq.n = seq.n + 1
  local ms = math.floor(now * 1000)
  local second = math.floor(now)
  if second ~= date_second then
    date_second, date_text = second, os.date("!%Y-%m-%dT%H:%M:%S", second)
  end
  return {
    id = ("%x-%s-%x-%x"):format(ms, tag, math.max(triage.worker(), 0), seq.n),
    receivedAt = date_text .. (".%03dZ"):format(ms % 1000),
  }
end

-- A submission as the audit trail records it: JSON with its report embedded as stored (report_json
-- is JSON already: spliced in, not encoded again).
local function audit_value(r)
  return ('{"receiptId":%s,"patientId":%s,"trialId":%s,"capturedAt":%s,"receivedAt":%s,"corrects":%s,'
    .. '"reportData":%s}')
    :format(cjson.encode(r.receipt_id), cjson.encode(r.patient_id), cjson.encode(r.trial_id or cjson.null),
            cjson.encode(r.captured_at or cjson.null), cjson.encode(r.received_at),
            cjson.encode(r.corrects or cjson.null), r.report_json)
end

local KEY_HEADER = { type = "string", pattern = KEY.pattern, max_length = MAX_KEY, message = KEY.message }

-- A JSON array of strings ("[]" when empty: cjson would write {}).
local function string_array(list)
  if #list == 0 then
    return "[]"
  end
  return cjson.encode(list)
end

-- A stored score (a row of epro_scores) as the response's "score" member.
local function score_json(row)
  return ('{"questionnaire":%s,"panel":%s,"code":%s,"total":%d,"band":%s,"answered":%d,"prorated":%s,'
    .. '"flags":%s}'):format(cjson.encode(row.questionnaire), cjson.encode(row.panel_code),
    cjson.encode(row.total_code), row.total, cjson.encode(row.band), row.answered,
    (row.prorated == 1 or row.prorated == true) and "true" or "false", row.flags)
end

local function unavailable(ctx, err)
  return replies.unavailable(ctx, "epro", err)
end

-- score: the stored score (a row of epro_scores) or nil.
local function accepted(ctx, receipt_id, received_at, score)
  if not score then
    return ctx:json { success = true, message = "report accepted",
                      receipt = { id = receipt_id, receivedAt = received_at } }
  end
  return ctx:json_text(('{"success":true,"message":"report accepted","receipt":{"id":%s,"receivedAt":%s},'
    .. '"score":%s}'):format(cjson.encode(receipt_id), cjson.encode(received_at), score_json(score)))
end

-- A submission with this key is stored already: the same body gets its receipt, another body 422.
local function replay(ctx, prior, fingerprint)
  if prior.fingerprint ~= fingerprint then
    return ctx:status(422):json {
      success = false, error = "this idempotency key was used with a different body",
    }
  end
  local score, err = db:first(SCORE_OF, prior.receipt_id)
  if err then
    return unavailable(ctx, err)
  end
  ctx:set_header("Idempotent-Replayed", "true")
  return accepted(ctx, prior.receipt_id, prior.received_at, score)
end

-- The submission's questionnaire and its score, checked: errors are appended to errs.
local function score_of(body, errs)
  local q = type(body.questionnaire) == "string" and questionnaires.get(body.questionnaire)
  if not q or schema.kind(body.reportData) ~= "object" then
    return nil
  end
  local result, failures = q.check(body.reportData, "reportData")
  if not result then
    for _, e in ipairs(failures) do
      errs[#errs + 1] = e
    end
    return nil
  end
  return q, result
end

function M.submit(ctx)
  local body = schema.object_body(ctx)
  if not body then
    return
  end
  local _, errs = schema.validate(body, SUBMISSION)
  -- A reason goes with a correction, and only there (the schema checks its form).
  if body.corrects ~= nil and body.reason == nil then
    errs[#errs + 1] = { path = "reason", reason = "is required with corrects" }
  elseif body.corrects == nil and body.reason ~= nil then
    errs[#errs + 1] = { path = "reason", reason = "is allowed only with corrects" }
  end
  local q, result = score_of(body, errs)
  local header_key = ctx:header("Idempotency-Key")
  if header_key ~= nil and not schema.validate(header_key, KEY_HEADER) then
    errs[#errs + 1] = { ["in"] = "header", path = "Idempotency-Key", reason = KEY.message }
  end
  if #errs > 0 then
    return schema.reject(ctx, errs)
  end
  if header_key and body.submissionId and header_key ~= body.submissionId then
    return ctx:status(400):json { success = false, error = "Idempotency-Key and submissionId differ",
                                  fields = { "Idempotency-Key", "submissionId" } }
  end
  local key = header_key or body.submissionId
  -- The trial: the token's, or the one of its trials the body names (an admin's token is for any).
  local principal = ctx:principal()
  local trial = principal and principal.trial
  if body.trialId ~= nil then
    local allowed = principal and principal.role == "admin"
    for _, t in ipairs(principal and principal.trials or {}) do
      allowed = allowed or t == body.trialId
    end
    if not allowed then
      return ctx:status(403):json { error = "forbidden", message = "this token is not for trial " .. body.trialId }
    end
    trial = body.trialId
  end
  local fingerprint = db.sha256(ctx:body())

  local original
  if body.corrects then
    local err
    original, err = db:first(BY_RECEIPT, body.corrects)
    if err then return unavailable(ctx, err) end
    if not original or original.patient_id ~= body.patientId then
      return ctx:status(422):json { success = false, error = "corrects names no submission of this patient",
                                    fields = { "corrects" } }
    end
  end

  local receipt = new_receipt()
  local report = schema.encode(body.reportData) -- [] stays [] (cjson alone writes {})
  local score
  if q then
    score = { questionnaire = q.id, panel_code = q.panel, total_code = q.total_code, total = result.total,
      band = result.band, answered = result.answered, prorated = result.prorated,
      flags = string_array(result.flags) }
  end
  local ok, err, kind = db:tx(function(tx)
    tx:exec(INSERT, receipt.id, body.patientId, key, fingerprint, body.capturedAt, receipt.receivedAt, report,
      body.corrects, trial)
    if q then
      tx:exec(INSERT_SCORE, receipt.id, q.id, q.panel, q.total_code, result.total, result.band, result.answered,
        result.prorated, score.flags, receipt.receivedAt)
      for _, event in ipairs(result.safety) do
        tx:exec(INSERT_SAFETY, receipt.id, body.patientId, q.id, event.flag, event.item, event.answer,
          receipt.receivedAt, trial)
      end
    end
    tx:audit { action = original and "correct" or "create", table = "epro_submissions", record = receipt.id,
               before = original and audit_value(original), reason = body.reason,
               after = audit_value { receipt_id = receipt.id, patient_id = body.patientId,
                                     captured_at = body.capturedAt, received_at = receipt.receivedAt,
                                     report_json = report, corrects = body.corrects, trial_id = trial } }
  end)
  if not ok then
    if kind == "constraint" and key then
      -- The key is stored already (a retry, or a duplicate committed just before it on any worker;
      -- the unique key refused it, so nothing was stored): answer as the stored one. Looking the key
      -- up only then keeps a read off the path of every new submission.
      local prior, read_err = db:first(BY_KEY, body.patientId, key)
      if prior then return replay(ctx, prior, fingerprint) end
      err = read_err or err
    end
    return unavailable(ctx, err)
  end
  return accepted(ctx, receipt.id, receipt.receivedAt, score)
end

local BY_PATIENT = "SELECT receipt_id, captured_at, received_at, report_json, corrects FROM epro_submissions"
  .. " WHERE patient_id = ? ORDER BY received_at, id"

-- The patient's reports, oldest first: { patientId, reports = [{ receiptId, receivedAt, capturedAt,
-- reportData, corrects }] }.
function M.list(ctx)
  local patient = ctx:param("patientId")
  local rows, err = db:query(BY_PATIENT, patient)
  if not rows then
    return unavailable(ctx, err)
  end
  local reports = schema.array() -- (lua-cjson would encode an empty table as {})
  for i, r in ipairs(rows) do
    -- a report's empty arrays stay arrays: it is answered as it was sent
    local data = schema.mark_empty_arrays(r.report_json, cjson.decode(r.report_json))
    reports[i] = { receiptId = r.receipt_id, receivedAt = r.received_at, capturedAt = r.captured_at,
                   reportData = data, corrects = r.corrects }
  end
  return ctx:json_text(schema.encode { patientId = patient, reports = reports })
end

return M
