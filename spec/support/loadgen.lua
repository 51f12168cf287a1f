-- Many concurrent HTTP requests from one Lua process: non-blocking sockets and
-- poll(2) through the LuaJIT FFI (luasocket's select stops at 1024 fds).
--
-- loadgen.run{
--   port = N,                 -- 127.0.0.1:port
--   concurrency = 100,        -- connections in use at once
--   total = 1000,             -- requests to make (nil: until on_tick says stop)
--   request = "GET / ...",    -- raw request bytes, or function(i) -> bytes
--   keepalive = false,        -- reuse a connection for the next request
--   timeout = 10,             -- per request, seconds
--   deadline = 60,            -- whole run, seconds
--   rate = nil,               -- at most this many requests started per second
--   expect = 200,             -- status counted as success (false: any status)
--   record = false,           -- keep {start, finish, ok, status, err} per request
--   on_tick = function(stats) -- called about every 20 ms; return false to stop
--   keep_open = false,        -- keepalive: leave the connections open, in stats.slots
--   slots = nil,              -- stats.slots of an earlier keep_open run: use its connections
-- }
-- returns stats: { ok, failed, started, statuses = {[code]=n}, errors = {[msg]=n},
--                  elapsed, records = {...} }
local sys = require "support.sys"
local ffi, C = sys.ffi, sys.C
local bit = require "bit"

local M = {}

local rbuf = ffi.new("char[65536]")

local function parse_response(buf)
  local he = buf:find("\r\n\r\n", 1, true)
  if not he then return nil end
  local code = tonumber(buf:match("^HTTP/%d%.%d (%d%d%d)"))
  if not code then return false, "bad status line " .. ("%q"):format(buf:sub(1, 60)) end
  local head = buf:sub(1, he + 1):lower()
  if code >= 100 and code < 200 then
    return false, "unexpected 1xx response"
  end
  local cl = head:match("\r\ncontent%-length:[ \t]*(%d+)")
  if not cl then return false, "response without Content-Length" end
  local total = he + 3 + tonumber(cl)
  if #buf < total then return nil end
  if #buf > total then return false, "bytes after the response" end
  local close = head:match("\r\nconnection:[^\r]*close") ~= nil
  return code, close
end

function M.run(o)
  assert(o.port, "port")
  local concurrency = o.concurrency or 100
  local total = o.total or math.huge
  local timeout = o.timeout or 10
  local keepalive = o.keepalive or false
  local expect = o.expect
  if expect == nil then expect = 200 end
  local function good(code) return expect == false or code == expect end
  local reqfn = type(o.request) == "function" and o.request or function() return o.request end
  local t0 = sys.now()
  local run_deadline = t0 + (o.deadline or 60)

  local stats = { ok = 0, failed = 0, started = 0, statuses = {}, errors = {}, records = o.record and {} or nil }
  local slots = {}
  if o.slots then
    slots = o.slots
    concurrency = #slots
  else
    for i = 1, concurrency do slots[i] = { fd = -1, state = "idle" } end
  end
  local stopping = false
  local in_flight = 0
  local pfds = ffi.new("struct triage_spec_pollfd[?]", concurrency)
  local map = {}

  local function close_slot(s)
    if s.fd >= 0 then C.close(s.fd) end
    s.fd = -1
  end

  local function finish(s, ok, status, err)
    in_flight = in_flight - 1
    if ok then
      stats.ok = stats.ok + 1
    else
      stats.failed = stats.failed + 1
      if err then stats.errors[err] = (stats.errors[err] or 0) + 1 end
    end
    if status then stats.statuses[status] = (stats.statuses[status] or 0) + 1 end
    if stats.records then
      stats.records[#stats.records + 1] = { index = s.index, start = s.start, finish = sys.now(), ok = ok, status = status, err = err }
    end
    s.state = "idle"
    s.inbuf = nil
  end

  local function fail(s, err)
    close_slot(s)
    finish(s, false, nil, err)
  end

  local function start(s)
    stats.started = stats.started + 1
    in_flight = in_flight + 1
    s.index = stats.started
    s.start = sys.now()
    s.req_deadline = s.start + timeout
    s.out = reqfn(s.index)
    s.outpos = 0
    s.inbuf = ""
    if s.fd >= 0 and keepalive then
      s.state = "writing"
      return
    end
    close_slot(s)
    local fd, how = sys.connect_start(o.port, o.host)
    if not fd then return fail(s, how) end
    s.fd = fd
    s.state = how == "connected" and "writing" or "connecting"
  end

  local function do_write(s)
    local n = #s.out - s.outpos
    local w = C.send(s.fd, ffi.cast("const char *", s.out) + s.outpos, n, sys.MSG_NOSIGNAL)
    if w > 0 then
      s.outpos = s.outpos + tonumber(w)
      if s.outpos >= #s.out then s.state = "reading" end
    elseif w < 0 then
      local e = ffi.errno()
      if e ~= sys.EAGAIN and e ~= sys.EINTR then fail(s, "send: " .. sys.strerror(e)) end
    end
  end

  local function do_read(s)
    while true do
      local r = C.read(s.fd, rbuf, 65536)
      if r > 0 then
        s.inbuf = s.inbuf .. ffi.string(rbuf, r)
      elseif r == 0 then
        local code, extra = parse_response(s.inbuf)
        if code then
          close_slot(s)
          return finish(s, good(code), code, not good(code) and ("status " .. code) or nil)
        end
        return fail(s, #s.inbuf == 0 and "closed before a response" or "closed mid-response")
      else
        local e = ffi.errno()
        if e == sys.EAGAIN or e == sys.EINTR then break end
        return fail(s, "read: " .. sys.strerror(e))
      end
    end
    local code, extra = parse_response(s.inbuf)
    if code == nil then return end
    if code == false then return fail(s, extra) end
    if extra or not keepalive then close_slot(s) end
    finish(s, good(code), code, not good(code) and ("status " .. code) or nil)
  end

  local last_tick = t0
  while true do
    local now = sys.now()
    if now > run_deadline then stopping = true end
    -- start new requests
    if not stopping then
      for _, s in ipairs(slots) do
        if s.state == "idle" then
          if stats.started >= total then break end
          if o.rate and stats.started >= (now - t0) * o.rate + 1 then break end
          start(s)
        end
      end
    end
    if in_flight == 0 and (stopping or stats.started >= total) then break end
    -- poll
    local n = 0
    for i, s in ipairs(slots) do
      if s.state ~= "idle" and s.fd >= 0 then
        pfds[n].fd = s.fd
        pfds[n].events = (s.state == "reading") and sys.POLLIN or sys.POLLOUT
        pfds[n].revents = 0
        map[n] = s
        n = n + 1
      end
    end
    local pr = C.poll(pfds, n, 10)
    if pr > 0 then
      for i = 0, n - 1 do
        local rev = pfds[i].revents
        if rev ~= 0 then
          local s = map[i]
          if s.state == "connecting" then
            local e = sys.socket_error(s.fd)
            if e ~= 0 then
              fail(s, "connect: " .. sys.strerror(e))
            else
              s.state = "writing"
              do_write(s)
            end
          elseif s.state == "writing" then
            do_write(s)
          elseif s.state == "reading" then
            do_read(s)
          end
        end
      end
    end
    -- per-request deadlines
    now = sys.now()
    for _, s in ipairs(slots) do
      if s.state ~= "idle" and now > s.req_deadline then fail(s, "timeout") end
    end
    if o.on_tick and now - last_tick >= 0.02 then
      last_tick = now
      stats.elapsed = now - t0
      stats.in_flight = in_flight
      if o.on_tick(stats) == false then stopping = true end
    end
  end
  if o.keep_open and keepalive then
    stats.slots = slots
  else
    for _, s in ipairs(slots) do close_slot(s) end
  end
  stats.elapsed = sys.now() - t0
  return stats
end

-- Close the connections a keep_open run left open.
function M.close(slots)
  for _, s in ipairs(slots or {}) do
    if s.fd >= 0 then C.close(s.fd); s.fd = -1 end
  end
end

-- A one-line summary of a run for failure messages.
function M.summary(st)
  local parts = { ("ok=%d failed=%d started=%d elapsed=%.2fs"):format(st.ok, st.failed, st.started, st.elapsed or 0) }
  local codes = {}
  for code, n in pairs(st.statuses) do codes[#codes + 1] = code .. ":" .. n end
  table.sort(codes)
  parts[#parts + 1] = "statuses={" .. table.concat(codes, ",") .. "}"
  local errs = {}
  for e, n in pairs(st.errors) do errs[#errs + 1] = ("%q x%d"):format(e, n) end
  table.sort(errs)
  if #errs > 0 then parts[#parts + 1] = "errors={" .. table.concat(errs, ", ") .. "}" end
  return table.concat(parts, " ")
end

return M
