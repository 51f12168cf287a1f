-- Protocol lookup: GET /api/v1/protocols/:id, from the store (seeded from data/protocols.json by
-- migrations/002_protocols.sql). Protocols are reference data: each one read is kept in this worker,
-- already encoded, so a lookup costs no query after the first.
local db = require "triage.store"

local M = {}

local cached = {} -- id -> the protocol's JSON

local function find_json(id)
  local doc = cached[id]
  if doc then
    return doc
  end
  local row, err = db:first("SELECT doc FROM protocols WHERE id = ?", id)
  if err then
    return nil, err
  end
  if row then
    cached[id] = row.doc
    return row.doc
  end
end

function M.show(ctx)
  local id = ctx:param("id")
  local doc, err = find_json(id)
  if err then
    return ctx:status(503):set_header("Retry-After", "1"):json { error = "storage unavailable" }
  end
  if not doc then
    return ctx:status(404):json { error = "protocol not found", id = id }
  end
  return ctx:json_text(doc)
end

return M
