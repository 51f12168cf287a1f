-- POST /api/epro/submit, in memory: the sample app's validation (patientId a non-empty string,
-- reportData a non-empty object; 400 naming the failing fields, or "invalid JSON: ..."), then the
-- report goes into a ring of the latest RING submissions of this worker, and 200
-- {"success":true,"message":"report accepted"}. The ring keeps memory flat however many unique
-- submissions a benchmark sends.
local M = {}

local RING = 4096
local ring = {}
local accepted = 0

local function non_empty_string(v)
  return type(v) == "string" and v:find("%S") ~= nil
end

-- lua-cjson decodes {} and [] alike: an empty table is refused; a non-empty array has [1]
local function non_empty_object(v)
  return type(v) == "table" and next(v) ~= nil and v[1] == nil
end

function M.submit(ctx)
  local body, err = ctx:json_body()
  if body == nil then
    return ctx:status(400):json { success = false, error = err }
  end
  if type(body) ~= "table" then
    return ctx:status(400):json { success = false, error = "the body must be a JSON object" }
  end
  local failed = {}
  if not non_empty_string(body.patientId) then failed[#failed + 1] = "patientId" end
  if not non_empty_object(body.reportData) then failed[#failed + 1] = "reportData" end
  if #failed > 0 then
    return ctx:status(400):json { success = false, error = "invalid request", fields = failed }
  end
  accepted = accepted + 1
  ring[accepted % RING + 1] = body
  return ctx:json { success = true, message = "report accepted" }
end

function M.count()
  return accepted
end

return M
