-- Patient tags: POST /api/v1/tags/add {patientId, tagName}. In memory for now.
local validate = require "validate"

local M = {}

local tags = {} -- patientId -> { tagName = true }

local FIELDS = { { "patientId", "string" }, { "tagName", "string" } }

function M.add(ctx)
  local body = validate.body(ctx, FIELDS)
  if not body then
    return
  end
  local set = tags[body.patientId]
  if not set then
    set = {}
    tags[body.patientId] = set
  end
  set[body.tagName] = true
  return ctx:json { success = true }
end

function M.of(patient_id)
  return tags[patient_id]
end

return M
