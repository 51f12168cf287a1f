-- The `triage` module scripts use: sleeping without blocking, logging, where the app lives.
local C = require("triage.ffi").C

local M = {
  version = "0.1.0",
  app_dir = nil,      -- the application directory (set at load)
  generation = nil,   -- the code generation this state runs (1, then +1 per reload)
}

-- Suspend the running request for `seconds` without blocking the worker: its coroutine yields to
-- the event loop and a timer resumes it.
function M.sleep(seconds)
  if type(seconds) ~= "number" then
    error("triage.sleep: seconds must be a number", 2)
  end
  if M._blocking_sleep then -- in-process specs have no event loop
    return M._blocking_sleep(seconds)
  end
  if C.tr_ffi_sleep(seconds) ~= 0 then
    error("triage.sleep called outside a request", 2)
  end
  coroutine.yield()
end

-- Seconds since the epoch (the event loop's cached time inside the server).
function M.now()
  return C.tr_ffi_now()
end

-- Write a line to the error log.
function M.log(...)
  local n = select("#", ...)
  local parts = {}
  for i = 1, n do
    parts[i] = tostring((select(i, ...)))
  end
  local msg = table.concat(parts, " ")
  C.tr_ffi_log_error(msg, #msg)
end

-- The worker slot this state runs in (0-based), or -1 outside a worker.
function M.worker()
  return C.tr_ffi_worker_slot()
end

return M
