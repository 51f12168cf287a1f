-- ePRO questionnaire intake: POST /api/epro/submit {patientId, reportData}.
-- Reports are kept in memory (the latest per patient) until the durable store exists.
local validate = require "validate"

local M = {}

local latest = {}   -- patientId -> reportData
local accepted = 0

local FIELDS = { { "patientId", "string" }, { "reportData", "object" } }

function M.submit(ctx)
  local body = validate.body(ctx, FIELDS)
  if not body then
    return
  end
  latest[body.patientId] = body.reportData
  accepted = accepted + 1
  return ctx:json { success = true, message = "report accepted" }
end

function M.latest(patient_id)
  return latest[patient_id]
end

function M.count()
  return accepted
end

return M
