-- Patient tags: POST /api/v1/tags/add {patientId, tagName}; GET /api/v1/patients/:id/tags.
local cjson = require "cjson"
local db = require "triage.store"
local schema = require "triage.schema"
local replies = require "replies"

local M = {}

local NON_BLANK = "must be a non-blank string of at most 128 characters"
local TAG = schema.compile {
  type = "object",
  fields = {
    patientId = { type = "string", required = true, pattern = "%S", max_length = 128, message = NON_BLANK },
    tagName = { type = "string", required = true, pattern = "%S", max_length = 128, message = NON_BLANK },
  },
}

local function unavailable(ctx, err)
  return replies.unavailable(ctx, "tags", err)
end

local now_rfc3339 = replies.now_rfc3339

-- A tag the patient has already is reported (added = false), not stored twice. A tag added is
-- recorded in the audit trail in the same transaction.
function M.add(ctx)
  local body = ctx:validate(TAG)
  if not body then
    return
  end
  local added_at = now_rfc3339()
  local ok, err, kind = db:tx(function(tx)
    tx:exec("INSERT INTO patient_tags (patient_id, tag, added_at) VALUES (?, ?, ?)",
      body.patientId, body.tagName, added_at)
    tx:audit { action = "create", table = "patient_tags", record = cjson.encode { body.patientId, body.tagName },
               after = { patientId = body.patientId, tag = body.tagName, addedAt = added_at } }
  end)
  if ok then
    return ctx:json { success = true, added = true }
  end
  if kind == "constraint" then
    return ctx:json { success = true, added = false, message = "the patient has this tag already" }
  end
  return unavailable(ctx, err)
end

function M.list(ctx)
  local id = ctx:param("id")
  local rows, err = db:query("SELECT tag, added_at FROM patient_tags WHERE patient_id = ? ORDER BY added_at, tag", id)
  if not rows then
    return unavailable(ctx, err)
  end
  if #rows == 0 then -- (lua-cjson would encode an empty table as {})
    return ctx:json_text('{"patientId":' .. cjson.encode(id) .. ',"tags":[]}')
  end
  local tags = {}
  for i, r in ipairs(rows) do
    tags[i] = { tag = r.tag, addedAt = r.added_at }
  end
  return ctx:json { patientId = id, tags = tags }
end

return M
