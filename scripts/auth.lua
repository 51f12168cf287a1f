-- Authentication and permissions for the sample app: bearer tokens from a fixed table (a real
-- deployment would verify signed tokens here).
local M = {}

local TOKENS = {
  ["demo-token"] = { user = "dr.chen", permissions = { ["protocol:read"] = true, ["tags:write"] = true } },
  ["monitor-token"] = { user = "cra.li", permissions = { ["audit:read"] = true } },
}

-- 401 unless the request carries a known bearer token; the principal goes into ctx:get("user").
function M.authenticate(ctx, nxt)
  local header = ctx:header("authorization")
  local token = header and header:match("^[Bb]earer%s+(%S+)%s*$")
  local principal = token and TOKENS[token]
  if not principal then
    return ctx:status(401):set_header("WWW-Authenticate", "Bearer"):json { error = "authentication required" }
  end
  ctx:set("user", principal)
  return nxt()
end

-- A middleware that answers 403 unless the authenticated user holds `permission`.
function M.require(permission)
  return function(ctx, nxt)
    local user = ctx:get("user")
    if not (user and user.permissions[permission]) then
      return ctx:status(403):json { error = "permission denied", permission = permission }
    end
    return nxt()
  end
end

return M
