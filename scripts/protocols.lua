-- Protocol lookup: GET /api/v1/protocols/:id. Protocols are loaded once from data/protocols.json.
local cjson = require "cjson"
local triage = require "triage"

local M = {}

local function load_fixture()
  local path = triage.app_dir .. "/data/protocols.json"
  local f = assert(io.open(path, "rb"))
  local list = cjson.decode(f:read("*a"))
  f:close()
  local by_id = {}
  for _, p in ipairs(list) do
    by_id[p.id] = p
  end
  return by_id
end

local protocols = load_fixture()

function M.find(id)
  return protocols[id]
end

function M.show(ctx)
  local id = ctx:param("id")
  local p = protocols[id]
  if not p then
    return ctx:status(404):json { error = "protocol not found", id = id }
  end
  return ctx:json(p)
end

return M
