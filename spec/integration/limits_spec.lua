-- The edge's deadlines and connection cap (the sample app): a request head, a body that pauses or takes
-- too long, a client that does not read, a connection that sends nothing, the per-worker connection cap,
-- slowloris connections while normal clients are served, and descriptor exhaustion. Deadlines are
-- small here (1 to 2 s); every wait below is bounded by several times that, and nothing asserts a time.
local spec_root = debug.getinfo(1, "S").source:match("^@(.*)/integration/[^/]+$")
if spec_root then package.path = spec_root .. "/?.lua;" .. package.path end
local S = require "support.server"
local http = S.http
local sys = S.sys

local GET = "GET /api/v1/protocols/NCT04356798 HTTP/1.1\r\nHost: t\r\n\r\n"

local function served(port)
  local r = http.get(port, "/api/v1/protocols/NCT04356798", { timeout = 5 })
  return r and r.status == 200
end

local function status_sum(srv, key)
  local st = assert(srv:status())
  local n = 0
  for _, w in ipairs(st.workers) do n = n + (w[key] or 0) end
  return n
end

-- Read until the server closes; returns what arrived (or nil if still open at the deadline).
local function until_closed(c, timeout)
  local deadline = sys.now() + timeout
  while true do
    local ok, err = c:fill(deadline)
    if not ok then
      if err == "closed" or err == "reset" then return c.buf end
      return nil
    end
  end
end

describe("deadlines", function()
  local srv

  setup(function()
    srv = S.start { workers = 1, args = { "--header-timeout", "1", "--body-timeout", "1", "--body-deadline", "2",
                                          "--write-timeout", "1", "--keepalive-timeout", "30" } }
  end)

  teardown(function()
    if srv then srv:stop() end
  end)

  it("closes a request head that trickles in past --header-timeout, with 408", function()
    local c = assert(http.connect(srv.port))
    assert(c:send("GET /api/v1/protocols/NCT04356798 HTTP/1.1\r\n"))
    local got
    for i = 1, 40 do -- a header line every 0.25 s: each byte is activity, the head's deadline still holds
      if not c:send(("X-Trickle-%d: x\r\n"):format(i)) then break end
      got = until_closed(c, 0.25)
      if got then break end
    end
    assert.is_truthy(got, "the trickling head was not closed")
    assert.matches("^HTTP/1.1 408 Request Timeout", got)
    c:close()
    assert.is_true(served(srv.port))
  end)

  it("closes a body that pauses past --body-timeout, and one that takes past --body-deadline", function()
    local c = assert(http.connect(srv.port))
    assert(c:send("POST /api/epro/submit HTTP/1.1\r\nHost: t\r\nContent-Length: 100\r\n\r\n{\"patientId\""))
    local got = until_closed(c, 8)
    assert.is_truthy(got, "a paused body was not closed")
    assert.matches("^HTTP/1.1 408", got)
    c:close()
    c = assert(http.connect(srv.port))
    assert(c:send("POST /api/epro/submit HTTP/1.1\r\nHost: t\r\nContent-Length: 100\r\n\r\n"))
    got = nil
    for _ = 1, 60 do -- a byte every 0.2 s never pauses 1 s, but the whole takes longer than 2 s
      if not c:send("x") then break end
      got = until_closed(c, 0.2)
      if got then break end
    end
    assert.is_truthy(got, "a body arriving too slowly was not closed")
    assert.matches("^HTTP/1.1 408", got)
    c:close()
    assert.is_true(served(srv.port))
  end)

  it("closes a new connection that sends nothing within --header-timeout", function()
    local c = assert(http.connect(srv.port))
    local closed = c:wait_closed(8)
    assert.is_true(closed, "an empty connection stayed open")
    c:close()
  end)

  it("closes a client that does not read its responses, after --write-timeout", function()
    local before = status_sum(srv, "timeouts")
    local c = assert(http.connect(srv.port))
    -- Many pipelined requests and no reading: the responses fill the socket's buffers.
    local burst = GET:rep(2000)
    for _ = 1, 40 do
      if not c:send(burst, 0.5) then break end
    end
    assert.is_truthy(S.eventually(10, function()
      return status_sum(srv, "timeouts") > before and status_sum(srv, "connections") == 0
    end), "the connection that does not read was not closed: " .. S.json.encode(srv:status().workers))
    c:close()
    assert.is_true(served(srv.port))
  end)
end)

describe("the connection cap", function()
  it("closes the least recently used idle connection for a new one, else answers 503 at once", function()
    local srv = S.start { workers = 1, args = { "--max-connections", "10", "--header-timeout", "30" } }
    local conns = {}
    finally(function()
      for _, c in ipairs(conns) do c:close() end
      srv:stop()
    end)
    -- Ten idle keep-alive connections (each served a request).
    for i = 1, 10 do
      conns[i] = assert(http.connect(srv.port))
      assert.equals(200, assert(conns[i]:request("GET", "/api/v1/protocols/NCT04356798")).status)
    end
    -- An eleventh: the oldest idle one makes room.
    local extra = assert(http.connect(srv.port))
    conns[#conns + 1] = extra
    assert.equals(200, assert(extra:request("GET", "/api/v1/protocols/NCT04356798")).status)
    assert.is_true((conns[1]:wait_closed(5)), "the oldest idle connection was not closed")
    assert.equals(1, status_sum(srv, "connections_shed"))
    -- Ten connections in the middle of a request (not idle): a new one gets 503 and is closed.
    for i = 1, #conns do conns[i]:close() end
    conns = {}
    assert.is_truthy(S.eventually(5, function() return status_sum(srv, "connections") == 0 end))
    for i = 1, 10 do
      conns[i] = assert(http.connect(srv.port))
      assert(conns[i]:send("GET /api/v1/protocols/NCT04356798 HTTP/1.1\r\n"))
    end
    assert.is_truthy(S.eventually(5, function() return status_sum(srv, "connections") == 10 end))
    local refused = assert(http.connect(srv.port))
    local got = until_closed(refused, 5)
    refused:close()
    assert.is_truthy(got, "the connection over the cap was not closed")
    assert.matches("^HTTP/1.1 503 Service Unavailable", got)
    assert.matches("Retry-After: 1", got, 1, true)
    assert.is_true(status_sum(srv, "connections_refused") >= 1)
    -- The ten are still served.
    for i = 1, 10 do
      assert(conns[i]:send("Host: t\r\n\r\n"))
      assert.equals(200, assert(conns[i]:read_response { timeout = 5 }).status)
    end
  end)
end)

describe("slow clients", function()
  it("serve normal clients while 200 slowloris and 100 slow-body connections hold on, and close those", function()
    local srv = S.start { workers = 2, args = { "--header-timeout", "2", "--body-timeout", "2" } }
    local slow = {}
    finally(function()
      for _, c in ipairs(slow) do c:close() end
      srv:stop()
    end)
    for i = 1, 200 do
      slow[i] = assert(http.connect(srv.port))
      assert(slow[i]:send("GET / HTTP/1.1\r\nHost: t\r\n"))
    end
    for i = 201, 300 do -- a head, then a body that stops early
      slow[i] = assert(http.connect(srv.port))
      assert(slow[i]:send("POST /api/epro/submit HTTP/1.1\r\nHost: t\r\nContent-Length: 4096\r\n\r\n{\"patientId\""))
    end
    local st = S.loadgen.run { port = srv.port, concurrency = 20, total = 500, keepalive = true, timeout = 10,
                               deadline = 60, request = GET }
    assert.equals(500, st.statuses[200] or 0, S.loadgen.summary(st))
    for _, c in ipairs(slow) do c:send("X-Slow: 1\r\n") end
    -- Each pass reads what every connection got (a 408, then the close) before deciding.
    assert.is_truthy(S.eventually(15, function()
      local open = 0
      for _, c in ipairs(slow) do
        if not c.eof and not c:wait_closed(0.01) then open = open + 1 end
      end
      return open == 0
    end), (function()
      local open, which = 0, {}
      for i, c in ipairs(slow) do
        if not c.eof and not c:wait_closed(0.01) then open = open + 1; which[#which + 1] = i end
      end
      return ("%d slow connections outlived their deadlines (first: %s): %s"):format(open, tostring(which[1]),
        S.json.encode(srv:status().workers))
    end)())
    assert.is_true(status_sum(srv, "timeouts") >= 300)
  end)
end)

describe("descriptor exhaustion", function()
  it("answers or refuses a new client at once, and serves again when the connections close", function()
    -- 96 descriptors for the whole server: a worker runs out after about 80 connections.
    local srv = S.start { workers = 1, wrap = { "/usr/bin/prlimit", "--nofile=96:96", "--" },
                          args = { "--header-timeout", "60" } }
    local hogs = {}
    finally(function()
      for _, c in ipairs(hogs) do c:close() end
      srv:stop()
    end)
    for i = 1, 150 do -- connections that send half a request: not idle, nothing to shed
      local c = http.connect(srv.port, { timeout = 2 })
      if not c then break end
      c:send("GET / HTTP/1.1\r\n")
      hogs[#hogs + 1] = c
    end
    assert.is_true(#hogs >= 96, "fewer connections than descriptors: " .. #hogs)
    -- A normal client is answered or refused with a 503, not left waiting in the accept queue.
    local r, err = http.get(srv.port, "/api/v1/protocols/NCT04356798", { timeout = 5 })
    assert.is_truthy(r, "no answer at the descriptor limit: " .. tostring(err))
    assert.is_true(r.status == 503 or r.status == 200, "status " .. tostring(r.status))
    assert.is_true(status_sum(srv, "connections_refused") >= 1)
    for _, c in ipairs(hogs) do c:close() end
    hogs = {}
    assert.is_truthy(S.eventually(10, function() return served(srv.port) end), srv:logs())
    assert.equals(srv.pid, srv:status().master_pid)
  end)
end)
