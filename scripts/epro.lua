-- ePRO questionnaire intake: POST /api/epro/submit, and a patient's reports:
-- GET /api/v1/trials/:trialId/patients/:patientId/reports. Both behind a bearer token (routes/api.lua).
--
-- POST /api/epro/submit
--   { "patientId": "P-0001", "reportData": { ... }, "capturedAt": "2026-11-27T07:59:12Z",
--     "submissionId": "…", "corrects": "<receipt id>" }   (the last three optional)
-- with an optional Idempotency-Key header.
--
-- A 200 means the submission is committed to disk (synchronous=FULL): its receipt (the server's id and
-- time of receipt) comes back. A retry with the same key (the header, else submissionId; scoped to the
-- patient) gets the original receipt and stores nothing; the same key with another body is 422. A
-- storage failure is 503 with Retry-After: nothing was acknowledged, and the retry is safe.
-- Submissions are never changed: a correction is a new submission that names the one it corrects.
local cjson = require "cjson"
local db = require "triage.store"
local triage = require "triage"
local validate = require "validate"

local M = {}

local FIELDS = { { "patientId", "string" }, { "reportData", "object" } }
local MAX_KEY = 128

local INSERT = "INSERT INTO epro_submissions (receipt_id, patient_id, idempotency_key, fingerprint, captured_at,"
  .. " received_at, report_json, corrects) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
local BY_KEY = "SELECT receipt_id, received_at, fingerprint FROM epro_submissions"
  .. " WHERE patient_id = ? AND idempotency_key = ?"
local BY_RECEIPT = "SELECT patient_id FROM epro_submissions WHERE receipt_id = ?"

-- Receipt ids: "<ms since the epoch>-<worker>-<sequence>" in hex, unique across workers, reloads
-- (the sequence is carried over) and restarts (the clock has moved on).
local seq = triage.carry("epro-receipt-sequence", function(previous) return previous or { n = 0 } end)

local date_second, date_text = -1, nil -- os.date once a second: it is not compiled (JIT)

local function new_receipt()
  local now = triage.now()
  seq.n = seq.n + 1
  local ms = math.floor(now * 1000)
  local second = math.floor(now)
  if second ~= date_second then
    date_second, date_text = second, os.date("!%Y-%m-%dT%H:%M:%S", second)
  end
  return {
    id = ("%x-%x-%x"):format(ms, math.max(triage.worker(), 0), seq.n),
    receivedAt = date_text .. (".%03dZ"):format(ms % 1000),
  }
end

local function key_ok(v)
  return type(v) == "string" and #v >= 1 and #v <= MAX_KEY and not v:find("[^\33-\126]")
end

-- RFC 3339 date-time: 2026-11-27T07:59:12Z, with optional fraction and offset.
local function timestamp_ok(v)
  return type(v) == "string"
    and v:match("^%d%d%d%d%-%d%d%-%d%d[Tt]%d%d:%d%d:%d%d%.?%d*[Zz]$") ~= nil
    or type(v) == "string" and v:match("^%d%d%d%d%-%d%d%-%d%d[Tt]%d%d:%d%d:%d%d%.?%d*[+-]%d%d:%d%d$") ~= nil
end

local function unavailable(ctx, err)
  triage.log("epro: " .. tostring(err))
  return ctx:status(503):set_header("Retry-After", "1"):json {
    success = false, error = "storage unavailable", retryAfter = 1,
  }
end

local function accepted(ctx, receipt_id, received_at)
  return ctx:json { success = true, message = "report accepted",
                    receipt = { id = receipt_id, receivedAt = received_at } }
end

-- A submission with this key is stored already: the same body gets its receipt, another body 422.
local function replay(ctx, prior, fingerprint)
  if prior.fingerprint ~= fingerprint then
    return ctx:status(422):json {
      success = false, error = "this idempotency key was used with a different body",
    }
  end
  ctx:set_header("Idempotent-Replayed", "true")
  return accepted(ctx, prior.receipt_id, prior.received_at)
end

function M.submit(ctx)
  local body = validate.body(ctx, FIELDS)
  if not body then
    return
  end
  local failed = {}
  if #body.patientId > MAX_KEY then failed[#failed + 1] = "patientId" end
  if body.capturedAt ~= nil and not timestamp_ok(body.capturedAt) then failed[#failed + 1] = "capturedAt" end
  if body.submissionId ~= nil and not key_ok(body.submissionId) then failed[#failed + 1] = "submissionId" end
  if body.corrects ~= nil and not key_ok(body.corrects) then failed[#failed + 1] = "corrects" end
  local header_key = ctx:header("Idempotency-Key")
  if header_key ~= nil and not key_ok(header_key) then failed[#failed + 1] = "Idempotency-Key" end
  if #failed > 0 then
    return validate.reject(ctx, failed)
  end
  if header_key and body.submissionId and header_key ~= body.submissionId then
    return ctx:status(400):json { success = false, error = "Idempotency-Key and submissionId differ",
                                  fields = { "Idempotency-Key", "submissionId" } }
  end
  local key = header_key or body.submissionId
  local fingerprint = db.sha256(ctx:body())

  if body.corrects then
    local original, err = db:first(BY_RECEIPT, body.corrects)
    if err then return unavailable(ctx, err) end
    if not original or original.patient_id ~= body.patientId then
      return ctx:status(422):json { success = false, error = "corrects names no submission of this patient",
                                    fields = { "corrects" } }
    end
  end

  local receipt = new_receipt()
  local ok, err, kind = db:exec(INSERT, receipt.id, body.patientId, key, fingerprint, body.capturedAt,
    receipt.receivedAt, cjson.encode(body.reportData), body.corrects)
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
  return accepted(ctx, receipt.id, receipt.receivedAt)
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
  if #rows == 0 then -- (lua-cjson would encode an empty table as {})
    return ctx:json_text('{"patientId":' .. cjson.encode(patient) .. ',"reports":[]}')
  end
  local reports = {}
  for i, r in ipairs(rows) do
    reports[i] = { receiptId = r.receipt_id, receivedAt = r.received_at, capturedAt = r.captured_at,
                   reportData = cjson.decode(r.report_json), corrects = r.corrects }
  end
  return ctx:json { patientId = patient, reports = reports }
end

return M
