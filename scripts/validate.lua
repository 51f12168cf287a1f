-- Field checks shared by the sample handlers: each returns the names of the fields that fail.
local M = {}

local function non_empty_string(v)
  return type(v) == "string" and v:find("%S") ~= nil
end

-- A JSON object with at least one member (lua-cjson decodes {} and [] alike, so an empty table is
-- refused; a non-empty array has [1]).
local function non_empty_object(v)
  return type(v) == "table" and next(v) ~= nil and v[1] == nil
end

M.rules = { string = non_empty_string, object = non_empty_object }

-- fields: array of { name, rule }. Returns a list of failing field names (empty if all pass).
function M.check(body, fields)
  local failed = {}
  for _, f in ipairs(fields) do
    if not M.rules[f[2]](body[f[1]]) then
      failed[#failed + 1] = f[1]
    end
  end
  return failed
end

-- Decode the body as a JSON object; on failure answer 400 and return nil.
function M.json_object(ctx)
  local body, err = ctx:json_body()
  if body == nil then
    ctx:status(400):json { success = false, error = err }
    return nil
  end
  if type(body) ~= "table" then
    ctx:status(400):json { success = false, error = "the body must be a JSON object" }
    return nil
  end
  return body
end

function M.reject(ctx, failed)
  return ctx:status(400):json { success = false, error = "invalid request", fields = failed }
end

-- The body as a JSON object whose fields pass their rules; otherwise answer 400 (naming the failing
-- fields) and return nil.
function M.body(ctx, fields)
  local body = M.json_object(ctx)
  if not body then
    return nil
  end
  local failed = M.check(body, fields)
  if #failed > 0 then
    M.reject(ctx, failed)
    return nil
  end
  return body
end

return M
