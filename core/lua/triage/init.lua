-- The `triage` module scripts use: sleeping without blocking, logging, where the app lives.
local ffi = require "ffi"
local C = require("triage.ffi").C

local errmsg = ffi.new("const char *[1]")

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
  if C.tr_ffi_sleep(seconds, errmsg) ~= C.TR_FFI_OK then
    error("triage.sleep: " .. ffi.string(errmsg[0]), 2)
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

local carried_in = {} -- name -> the value the previous generation carried
local carried = {}    -- name -> the value this generation carries

-- Keep a value across reloads. At load, init(previous) is called with the value the previous
-- generation carried under `name` (nil on the first load, after a restart, or when it could not be
-- carried) and its result is returned and registered: when the code is reloaded, the registered value
-- as it is then is copied into the new generation. Values are copied (string.buffer), so carry plain
-- data: tables, strings, numbers, booleans; functions, coroutines and cdata cannot be carried.
--   local cache = triage.carry("protocol-cache", function(previous) return previous or {} end)
function M.carry(name, init)
  if type(name) ~= "string" or type(init) ~= "function" then
    error("triage.carry(name, function(previous) ... end)", 2)
  end
  local value = init(carried_in[name])
  carried[name] = value
  return value
end

function M._import(blob)
  carried_in, carried = {}, {}
  if type(blob) == "string" and #blob > 0 then
    local ok, t = pcall(require("string.buffer").decode, blob)
    if ok and type(t) == "table" then
      carried_in = t
    end
  end
end

function M._export()
  local buffer = require "string.buffer"
  local ok, blob = pcall(buffer.encode, carried)
  if ok then
    return blob
  end
  local t = {}
  for name, value in pairs(carried) do
    if pcall(buffer.encode, value) then
      t[name] = value
    else
      M.log("triage.carry: '" .. name .. "' holds a value that cannot be copied; it starts fresh")
    end
  end
  return buffer.encode(t)
end

-- The worker slot this state runs in (0-based), or -1 outside a worker.
function M.worker()
  return C.tr_ffi_worker_slot()
end

return M
