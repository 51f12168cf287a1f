-- A steady mixed load for the graceful-operation specs (SIGTERM, binary upgrade): a fixed set of
-- client slots, each sending one request after another, either on one keep-alive connection or on a
-- new connection per request, with every request recorded.
--
--   local steady = require "support.steady"
--   local recs, stats = steady.run{
--     port = N,
--     slots = { { keepalive = true, next = function(i) return { kind = "get", bytes = "GET ..." } end }, ... },
--     timeout = 10,      -- per request (all its attempts), seconds
--     deadline = 120,    -- whole run
--     on_tick = function(stats) ... end, -- about every 10 ms; return false to start no more requests
--   }
--
-- A request on a reused keep-alive connection that the server closes before sending a single byte of
-- response is sent again on a new connection, as HTTP clients do (RFC 9112 9.3.1: the server may
-- close an idle connection at any moment, and the request may have crossed the close on the wire);
-- rec.retries counts those. Anything else is a failure: rec.err, no rec.status.
-- Records: { kind, sub, slot, reused, start, sent_at (the first attempt fully sent), finish, status,
-- body, close (the response said Connection: close), retries, err }.
local S = require "support.server"
local sys, http = S.sys, S.http
local ffi, C = sys.ffi, sys.C

local M = {}

local rbuf = ffi.new("char[65536]")

function M.run(o)
  assert(o.port and o.slots, "port and slots")
  local timeout = o.timeout or 10
  local t0 = sys.now()
  local run_deadline = t0 + (o.deadline or 120)
  local records = {}
  local stats = { started = 0, done = 0, in_flight = 0, ok = 0, failed = 0, retries = 0, statuses = {}, errors = {} }
  local slots = {}
  for i, spec in ipairs(o.slots) do
    slots[i] = { index = i, fd = -1, keepalive = spec.keepalive, next = spec.next, served = 0 }
  end
  local stopping = false
  local pfds = ffi.new("struct triage_spec_pollfd[?]", #slots)
  local map = {}

  local function close_fd(s)
    if s.fd >= 0 then C.close(s.fd) end
    s.fd = -1
    s.served = 0
  end

  local function finish(s, resp, err)
    local rec = s.rec
    rec.finish = sys.now()
    if resp then
      rec.status, rec.body, rec.close = resp.status, resp.body, resp.close
      stats.statuses[resp.status] = (stats.statuses[resp.status] or 0) + 1
      stats.ok = stats.ok + 1
      s.served = s.served + 1
      if resp.close or not s.keepalive then close_fd(s) end
    else
      rec.err = err
      stats.errors[err] = (stats.errors[err] or 0) + 1
      stats.failed = stats.failed + 1
      close_fd(s)
    end
    stats.done = stats.done + 1
    stats.in_flight = stats.in_flight - 1
    s.rec, s.state = nil, nil
  end

  local function connect(s)
    local fd, how = sys.connect_start(o.port)
    if not fd then return finish(s, nil, "connect: " .. tostring(how)) end
    s.fd = fd
    s.rec.reused = false
    s.out_pos, s.inbuf = 0, ""
    s.state = how == "connected" and "writing" or "connecting"
  end

  local function start(s)
    local req = s.next(stats.started + 1)
    if not req then return end
    stats.started = stats.started + 1
    stats.in_flight = stats.in_flight + 1
    s.req = req
    s.rec = { kind = req.kind, sub = req.sub, slot = s.index, start = sys.now(), retries = 0 }
    s.rec.deadline = s.rec.start + timeout
    records[#records + 1] = s.rec
    if s.fd >= 0 and s.keepalive and s.served > 0 then
      s.rec.reused = true
      s.out_pos, s.inbuf = 0, ""
      s.state = "writing"
      return
    end
    close_fd(s)
    connect(s)
  end

  -- The server closed the connection: a reused one that got nothing back is tried again.
  local function closed(s, why)
    if #s.inbuf == 0 and s.rec.reused then
      s.rec.retries = s.rec.retries + 1
      stats.retries = stats.retries + 1
      close_fd(s)
      return connect(s)
    end
    return finish(s, nil, #s.inbuf == 0 and why or "closed mid-response (" .. why .. ")")
  end

  local function parse(s)
    local he = s.inbuf:find("\r\n\r\n", 1, true)
    if not he then return end
    local resp, perr = http.parse_head(s.inbuf:sub(1, he - 1))
    if not resp then return finish(s, nil, tostring(perr)) end
    local cl = tonumber(resp.headers["content-length"] or "")
    if not cl then return finish(s, nil, "response without Content-Length") end
    local have = #s.inbuf - (he + 3)
    if have < cl then return end
    if have > cl then return finish(s, nil, "bytes after the response") end
    resp.body = s.inbuf:sub(he + 4)
    resp.close = (resp.headers["connection"] or ""):lower():find("close", 1, true) ~= nil
    return finish(s, resp)
  end

  local function do_write(s)
    local out = s.req.bytes
    local w = C.send(s.fd, ffi.cast("const char *", out) + s.out_pos, #out - s.out_pos, sys.MSG_NOSIGNAL)
    if w > 0 then
      s.out_pos = s.out_pos + tonumber(w)
      if s.out_pos >= #out then
        s.state = "reading"
        s.rec.sent_at = s.rec.sent_at or sys.now()
      end
    elseif w < 0 then
      local e = ffi.errno()
      if e == sys.EPIPE or e == sys.ECONNRESET then return closed(s, "send: " .. sys.strerror(e)) end
      if e ~= sys.EAGAIN and e ~= sys.EINTR then finish(s, nil, "send: " .. sys.strerror(e)) end
    end
  end

  local function do_read(s)
    while s.state == "reading" do
      local r = C.read(s.fd, rbuf, 65536)
      if r > 0 then
        s.inbuf = s.inbuf .. ffi.string(rbuf, r)
      elseif r == 0 then
        parse(s)
        if s.state == "reading" then closed(s, "closed before a response") end
        return
      else
        local e = ffi.errno()
        if e == sys.EAGAIN or e == sys.EINTR then return parse(s) end
        return closed(s, "read: " .. sys.strerror(e))
      end
    end
  end

  local last_tick = t0
  while true do
    local now = sys.now()
    if now > run_deadline then stopping = true end
    if not stopping then
      for _, s in ipairs(slots) do
        if not s.state then start(s) end
      end
    end
    if stats.in_flight == 0 and stopping then break end
    local n = 0
    for _, s in ipairs(slots) do
      if s.state then
        pfds[n].fd = s.fd
        pfds[n].events = s.state == "reading" and sys.POLLIN or sys.POLLOUT
        pfds[n].revents = 0
        map[n] = s
        n = n + 1
      end
    end
    if C.poll(pfds, n, 10) > 0 then
      for i = 0, n - 1 do
        local s = map[i]
        if pfds[i].revents ~= 0 and s.state then
          if s.state == "connecting" then
            local e = sys.socket_error(s.fd)
            if e ~= 0 then
              finish(s, nil, "connect: " .. sys.strerror(e))
            else
              s.state = "writing"
              do_write(s)
            end
          elseif s.state == "writing" then
            do_write(s)
          else
            do_read(s)
          end
        end
      end
    end
    now = sys.now()
    for _, s in ipairs(slots) do
      if s.state and now > s.rec.deadline then finish(s, nil, "timeout") end
    end
    if o.on_tick and now - last_tick >= 0.01 then
      last_tick = now
      stats.elapsed = now - t0
      if o.on_tick(stats) == false then stopping = true end
    end
  end
  for _, s in ipairs(slots) do close_fd(s) end
  stats.elapsed = sys.now() - t0
  return records, stats
end

-- Slots for the sample app (GET /api/v1/sleep, a 50 ms handler, and durable ePRO submissions, each
-- with a unique Idempotency-Key starting with tag): odd slots keep their connection alive, even ones
-- open a new connection per request; the kind of request alternates by slot pair.
function M.sample_slots(n, tag)
  local St = require "support.store"
  local sleep = http.build("GET", "/api/v1/sleep")
  local slots = {}
  for i = 1, n do
    local posts = math.floor((i - 1) / 2) % 2 == 1
    slots[i] = {
      keepalive = i % 2 == 1,
      next = function(k)
        if not posts then return { kind = "get", bytes = sleep } end
        local sub = St.submission { patient = "P-" .. tag, key = ("%s-%d"):format(tag, k), seq = k }
        return { kind = "post", sub = sub, bytes = sub.bytes }
      end,
    }
  end
  return slots
end

-- The acknowledged submissions of a run, as St.check_stored wants them ({ sub, receipt }).
function M.acknowledged(records)
  local St = require "support.store"
  local cjson = require "cjson"
  local acked = {}
  for _, r in ipairs(records) do
    if r.kind == "post" and r.status == 200 then
      local ok, t = pcall(cjson.decode, r.body or "")
      local receipt = ok and type(t) == "table" and t.receipt
      assert(type(receipt) == "table" and receipt.id, "a 200 without a receipt: " .. tostring(r.body))
      acked[#acked + 1] = { sub = r.sub, receipt = { id = receipt.id, receivedAt = receipt.receivedAt } }
    end
  end
  return acked
end

function M.summary(stats)
  local parts = { ("started=%d ok=%d failed=%d retried=%d elapsed=%.2fs"):format(stats.started, stats.ok,
    stats.failed, stats.retries, stats.elapsed or 0) }
  local codes = {}
  for code, n in pairs(stats.statuses) do codes[#codes + 1] = code .. ":" .. n end
  table.sort(codes)
  parts[#parts + 1] = "statuses={" .. table.concat(codes, ",") .. "}"
  local errs = {}
  for e, n in pairs(stats.errors) do errs[#errs + 1] = ("%q x%d"):format(e, n) end
  table.sort(errs)
  if #errs > 0 then parts[#parts + 1] = "errors={" .. table.concat(errs, ", ") .. "}" end
  return table.concat(parts, " ")
end

return M
