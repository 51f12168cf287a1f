-- Audit trail for the sample app: who did what, and with which outcome, kept in a bounded ring in
-- memory (the durable audit trail comes with the store).
local triage = require "triage"

local M = {}

local SIZE = 1024
local ring, next_slot, total = {}, 1, 0

function M.record(ctx, nxt)
  nxt()
  local principal = ctx:principal()
  ring[next_slot] = {
    at = triage.now(),
    user = principal and principal.sub or "-",
    method = ctx:method(),
    path = ctx:path(),
    status = ctx:status(),
    requestId = ctx:request_id(),
  }
  next_slot = next_slot % SIZE + 1
  total = total + 1
end

-- The last n entries, newest first.
function M.recent(n)
  local out = {}
  local slot = next_slot
  for _ = 1, math.min(n or SIZE, total, SIZE) do
    slot = (slot - 2) % SIZE + 1
    out[#out + 1] = ring[slot]
  end
  return out
end

return M
