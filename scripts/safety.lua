-- A trial's safety events (raised by scripts/epro.lua: PHQ-9 item 9 above 0), for its investigators
-- and monitors (routes/api.lua decides who may call these, from the token alone):
--
-- GET /api/v1/trials/:trialId/safety-events?status=open|all   (open by default)
--   { trialId, status, events = [{ id, patientId, receiptId, questionnaire, flag, item, answer, raisedAt,
--     acknowledgedBy, acknowledgedAt, note }] }, oldest first (the acknowledgement only once there is one)
-- POST /api/v1/trials/:trialId/safety-events/:eventId/ack   body (optional): { "note": "..." }
--   200 { success, event = {...} }: acknowledged by the token's subject at the server's time, in one
--   transaction with its audit entry (action "acknowledge", the event before and after, the note as
--   its reason). 409 when it was acknowledged already (naming who and when); 404 when the trial has
--   no such event (an event of another trial answers the same: no existence leak).
-- An event is acknowledged once: migrations/006_trials.sql refuses any other change to it, so of two
-- acknowledgements at once only one commits; the other is answered 409 like a late one.
local cjson = require "cjson"
local db = require "triage.store"
local schema = require "triage.schema"
local replies = require "replies"

local M = {}

local TRIAL = { type = "string", required = true, pattern = "^[%w._:-]+$", max_length = 128,
  message = "must be 1 to 128 letters, digits or . _ : -" }

local LIST = {
  params = schema.compile { type = "object", fields = { trialId = TRIAL } },
  query = schema.compile { type = "object", additional = false,
    fields = { status = { type = "string", enum = { "open", "all" }, default = "open" } } },
}

local ACK_PARAMS = schema.compile { type = "object", fields = {
  trialId = TRIAL,
  eventId = { type = "integer", required = true, min = 1, max = 2 ^ 53, message = "must be a positive integer" },
} }

local ACK_BODY = schema.compile { type = "object", additional = false, fields = {
  note = { type = "string", pattern = "%S", max_length = 1000,
    message = "must be a non-blank string of at most 1000 characters" },
} }

local COLUMNS = "SELECT id, receipt_id, patient_id, questionnaire, flag, item_code, answer, raised_at,"
  .. " acknowledged_by, acknowledged_at, acknowledged_note FROM safety_events"
local OPEN = COLUMNS .. " WHERE trial_id = ? AND acknowledged_at IS NULL ORDER BY raised_at, id"
local ALL = COLUMNS .. " WHERE trial_id = ? ORDER BY raised_at, id"
local ONE = COLUMNS .. " WHERE id = ? AND trial_id = ?"
local ACK = "UPDATE safety_events SET acknowledged_by = ?, acknowledged_at = ?, acknowledged_note = ? WHERE id = ?"

local function unavailable(ctx, err)
  return replies.unavailable(ctx, "safety", err)
end

local now_rfc3339 = replies.now_rfc3339

-- A row of safety_events as the API answers it (and as the audit trail records it).
local function event_of(r)
  return { id = r.id, receiptId = r.receipt_id, patientId = r.patient_id, questionnaire = r.questionnaire,
           flag = r.flag, item = r.item_code, answer = r.answer, raisedAt = r.raised_at,
           acknowledgedBy = r.acknowledged_by, acknowledgedAt = r.acknowledged_at, note = r.acknowledged_note }
end

function M.list(ctx)
  local input = ctx:validate(LIST)
  if not input then
    return
  end
  local trial, status = input.params.trialId, input.query.status
  local rows, err = db:query(status == "all" and ALL or OPEN, trial)
  if not rows then
    return unavailable(ctx, err)
  end
  local events = schema.array() -- (lua-cjson would encode an empty table as {})
  for i, r in ipairs(rows) do
    events[i] = event_of(r)
  end
  return ctx:json_text(schema.encode { trialId = trial, status = status, events = events })
end

local function not_found(ctx, trial, id)
  return ctx:status(404):json { success = false, error = "no such safety event in this trial",
                                trialId = trial, eventId = id }
end

local function already(ctx, r)
  return ctx:status(409):json { success = false,
    error = ("safety event %d was acknowledged by %s at %s"):format(r.id, r.acknowledged_by, r.acknowledged_at),
    acknowledgedBy = r.acknowledged_by, acknowledgedAt = r.acknowledged_at }
end

function M.ack(ctx)
  local input = ctx:validate { params = ACK_PARAMS }
  if not input then
    return
  end
  local note
  local raw = ctx:body()
  if raw ~= nil and raw:find("%S") then
    local body = ctx:validate(ACK_BODY)
    if not body then
      return
    end
    note = body.note
  end
  local trial, id = input.params.trialId, input.params.eventId
  local row, err = db:first(ONE, id, trial)
  if err then
    return unavailable(ctx, err)
  end
  if not row then
    return not_found(ctx, trial, id)
  end
  if row.acknowledged_at then
    return already(ctx, row)
  end
  local p = ctx:principal()
  local who, at = p.sub, now_rfc3339()
  local before = event_of(row)
  local after = event_of(row)
  after.acknowledgedBy, after.acknowledgedAt, after.note = who, at, note
  local ok, tx_err, kind = db:tx(function(tx)
    tx:exec(ACK, who, at, note, id)
    tx:audit { action = "acknowledge", table = "safety_events", record = tostring(id), before = before,
               after = after, reason = note }
  end)
  if not ok then
    if kind == "constraint" then
      -- acknowledged by someone else between the read and the commit: the trigger refused this one
      local now_row, read_err = db:first(ONE, id, trial)
      if now_row and now_row.acknowledged_at then
        return already(ctx, now_row)
      end
      tx_err = read_err or tx_err
    end
    return unavailable(ctx, tx_err)
  end
  return ctx:json_text(schema.encode { success = true, event = after })
end

return M
