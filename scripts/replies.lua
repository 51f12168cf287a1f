-- What the sample app's write handlers share: the answer when the store cannot take a write, and the
-- server time as the records store it.
local triage = require "triage"

local M = {}

-- The store refused or failed the write (logged under `what`): 503 with Retry-After. Nothing was
-- acknowledged, so the client's retry is safe.
function M.unavailable(ctx, what, err)
  triage.log(what .. ": " .. tostring(err))
  return ctx:status(503):set_header("Retry-After", "1"):json {
    success = false, error = "storage unavailable", retryAfter = 1,
  }
end

-- Now, in UTC, RFC 3339 with milliseconds: 2026-11-27T07:59:12.345Z.
function M.now_rfc3339()
  local now = triage.now()
  return os.date("!%Y-%m-%dT%H:%M:%S", math.floor(now)) .. (".%03dZ"):format(math.floor(now * 1000) % 1000)
end

return M
