-- GET /api/v1/sleep: stands for a handler waiting on I/O for 50 ms without blocking its worker.
local triage = require "triage"

local M = {}

function M.sleep(ctx)
  triage.sleep(0.05)
  return ctx:json { ok = true }
end

return M
