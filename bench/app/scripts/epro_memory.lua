-- POST /api/epro/submit, in memory: the sample app's validation (scripts/epro.lua's schema, with
-- triage.schema: patientId a non-blank string, reportData a non-empty object, the optional fields
-- well-formed; 400 naming every failing field, or "invalid JSON: ..."), then the report goes into a
-- ring of the latest RING submissions of this worker, and 200 {"success":true,"message":"report
-- accepted"}. The ring keeps memory flat however many unique submissions a benchmark sends.
-- (Submissions naming a questionnaire are scored by the sample app only; the benchmarks send none.)
local schema = require "triage.schema"

local M = {}

local RING = 4096
local ring = {}
local accepted = 0

local KEY = { type = "string", pattern = "^[\33-\126]+$", max_length = 128,
  message = "must be 1 to 128 printable ASCII characters without spaces" }

local SUBMISSION = schema.compile {
  type = "object",
  fields = {
    patientId = { type = "string", required = true, pattern = "%S", max_length = 128,
      message = "must be a non-blank string of at most 128 characters" },
    reportData = { type = "object", required = true, min_fields = 1 },
    capturedAt = { type = "string", format = "date-time" },
    submissionId = KEY,
    corrects = KEY,
  },
}

function M.submit(ctx)
  local body = ctx:validate(SUBMISSION)
  if not body then
    return
  end
  accepted = accepted + 1
  ring[accepted % RING + 1] = body
  return ctx:json { success = true, message = "report accepted" }
end

function M.count()
  return accepted
end

return M
