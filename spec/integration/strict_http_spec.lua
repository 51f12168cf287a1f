-- Strict HTTP/1.1 (RFC 9112, RFC 9110) over raw sockets: each case is sent on a
-- new connection; a refused request gets the status the RFC names and its
-- connection is closed, and the worker still serves a normal request after it.
-- Also the requests the RFC says to accept (absolute-form, HTTP/1.x with x > 1),
-- requests sent one byte at a time, and a handler's 1xx status (answered 500,
-- the pipelined responses stay in step). Uses the sample app at the repo root.
local spec_root = debug.getinfo(1, "S").source:match("^@(.*)/integration/[^/]+$")
if spec_root then package.path = spec_root .. "/?.lua;" .. package.path end
local S = require "support.server"
local http = S.http
local sys = S.sys

local PROTOCOL = "/api/v1/protocols/NCT04356798"

-- { description, raw request, status }: refused, then the connection closes.
local refused = {
  { "HTTP/1.1 without Host", "GET " .. PROTOCOL .. " HTTP/1.1\r\n\r\n", 400 },
  { "two Host headers", "GET " .. PROTOCOL .. " HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400 },
  { "two identical Host headers", "GET " .. PROTOCOL .. " HTTP/1.1\r\nHost: a\r\nhost: a\r\n\r\n", 400 },
  { "two Host headers on HTTP/1.0", "GET " .. PROTOCOL .. " HTTP/1.0\r\nHost: a\r\nHost: a\r\n\r\n", 400 },
  { "a Host with a space", "GET " .. PROTOCOL .. " HTTP/1.1\r\nHost: a b\r\n\r\n", 400 },
  { "a Host with a path", "GET " .. PROTOCOL .. " HTTP/1.1\r\nHost: a/b\r\n\r\n", 400 },
  { "a Host with userinfo", "GET " .. PROTOCOL .. " HTTP/1.1\r\nHost: u@a\r\n\r\n", 400 },
  { "a Host with a bad port", "GET " .. PROTOCOL .. " HTTP/1.1\r\nHost: a:80x\r\n\r\n", 400 },
  { "a Host with a port too long", "GET " .. PROTOCOL .. " HTTP/1.1\r\nHost: a:123456\r\n\r\n", 400 },
  { "a Host with an unclosed IPv6 literal", "GET " .. PROTOCOL .. " HTTP/1.1\r\nHost: [::1\r\n\r\n", 400 },
  { "a Host of only a port", "GET " .. PROTOCOL .. " HTTP/1.1\r\nHost: :80\r\n\r\n", 400 },
  { "an obs-folded header (SP)", "GET " .. PROTOCOL .. " HTTP/1.1\r\nHost: a\r\nX-A: b\r\n c\r\n\r\n", 400 },
  { "an obs-folded header (HTAB)", "GET " .. PROTOCOL .. " HTTP/1.1\r\nHost: a\r\nX-A: b\r\n\tc\r\n\r\n", 400 },
  { "an obs-folded Host", "GET " .. PROTOCOL .. " HTTP/1.1\r\nHost: a\r\n b\r\n\r\n", 400 },
  { "an obs-folded Content-Length",
    "POST /api/epro/submit HTTP/1.1\r\nHost: a\r\nContent-Length:\r\n 2\r\n\r\n{}", 400 },
  { "HTTP/1.0 with Transfer-Encoding",
    "POST /api/epro/submit HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n", 400 },
  { "HTTP/1.0 keep-alive with Transfer-Encoding",
    "POST /api/epro/submit HTTP/1.0\r\nConnection: keep-alive\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n",
    400 },
  { "a transfer coding before chunked",
    "POST /api/epro/submit HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n", 501 },
  { "a transfer coding without chunked",
    "POST /api/epro/submit HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\n", 400 },
  { "chunked not the final coding",
    "POST /api/epro/submit HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, gzip\r\n\r\n0\r\n\r\n", 400 },
  { "chunked twice",
    "POST /api/epro/submit HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n" ..
    "0\r\n\r\n", 400 },
  { "HTTP/2.0 in a request line", "GET " .. PROTOCOL .. " HTTP/2.0\r\nHost: a\r\n\r\n", 505 },
  { "HTTP/3.0 in a request line", "GET " .. PROTOCOL .. " HTTP/3.0\r\nHost: a\r\n\r\n", 505 },
  { "HTTP/0.9 in a request line", "GET " .. PROTOCOL .. " HTTP/0.9\r\nHost: a\r\n\r\n", 505 },
  { "the HTTP/2 connection preface", "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", 505 },
  { "an unknown method", "FOO " .. PROTOCOL .. " HTTP/1.1\r\nHost: a\r\n\r\n", 501 },
  { "a lower-case method", "get " .. PROTOCOL .. " HTTP/1.1\r\nHost: a\r\n\r\n", 501 },
  { "a known method's prefix extended", "GETS " .. PROTOCOL .. " HTTP/1.1\r\nHost: a\r\n\r\n", 501 },
  { "an unknown method on a malformed line", "FOO " .. PROTOCOL .. "\r\n\r\n", 400 },
  { "an absolute-form target of another scheme", "GET ftp://a" .. PROTOCOL .. " HTTP/1.1\r\nHost: a\r\n\r\n", 400 },
  { "an absolute-form target with userinfo", "GET http://u@a" .. PROTOCOL .. " HTTP/1.1\r\nHost: a\r\n\r\n", 400 },
  { "an absolute-form target without a host", "GET http://" .. PROTOCOL .. " HTTP/1.1\r\nHost: a\r\n\r\n", 400 },
  { "an absolute-form target on HTTP/1.1 without Host", "GET http://a" .. PROTOCOL .. " HTTP/1.1\r\n\r\n", 400 },
}

describe("strict HTTP/1.1", function()
  local srv

  setup(function()
    srv = S.start{ app = S.root }
  end)

  teardown(function()
    S.stop_all()
  end)

  local function connect(server)
    local c = assert(http.connect((server or srv).port))
    finally(function() c:close() end)
    return c
  end

  local function assert_serving(server)
    local r, err = http.get((server or srv).port, PROTOCOL)
    assert(r, "fresh connection after the case: " .. tostring(err))
    assert.are.equal(200, r.status, "fresh connection after the case: " .. http.quote(r.body))
    assert.matches("NCT04356798", r.body)
  end

  -- Send raw, read the one response, check its status and that the connection then closes.
  local function assert_refused(raw, status, what)
    local c = connect()
    assert(c:send(raw))
    local r = assert(c:read_response())
    assert.are.equal(status, r.status, what .. ": " .. r.status_line)
    assert(http.check_common(r))
    assert.matches("^application/json", r.headers["content-type"] or "")
    assert.are.equal("close", (r.headers.connection or ""):lower(), what .. ": no Connection: close")
    local closed, how = c:wait_closed(3)
    assert.is_true(closed, what .. ": connection still " .. how .. " after a " .. status)
  end

  describe("refuses with the RFC's status and closes the connection:", function()
    for _, case in ipairs(refused) do
      it(case[1] .. " (" .. case[3] .. ")", function()
        assert_refused(case[2], case[3], case[1])
        assert_serving()
      end)
    end

    it("a request pipelined after a good one", function()
      local c = connect()
      assert(c:send("GET " .. PROTOCOL .. " HTTP/1.1\r\nHost: a\r\n\r\n" ..
        "GET " .. PROTOCOL .. " HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n" ..
        "GET " .. PROTOCOL .. " HTTP/1.1\r\nHost: a\r\n\r\n"))
      local r = assert(c:read_response())
      assert.are.equal(200, r.status)
      r = assert(c:read_response())
      assert.are.equal(400, r.status)
      local closed, how = c:wait_closed(3) -- the third request is never answered
      assert.is_true(closed, "connection still " .. how .. " after the 400")
      assert_serving()
    end)
  end)

  describe("accepts", function()
    it("an absolute-form target, routed on its path", function()
      local c = connect()
      assert(c:send("GET http://triage.example:8080" .. PROTOCOL .. "?x=1 HTTP/1.1\r\nHost: other.example\r\n\r\n"))
      local r = assert(c:read_response())
      assert.are.equal(200, r.status, http.quote(r.body))
      assert.matches("NCT04356798", r.body)
      -- the connection stays usable
      r = assert(c:request("GET", PROTOCOL))
      assert.are.equal(200, r.status)
    end)

    it("an absolute-form target with an empty path as /", function()
      local c = connect()
      assert(c:send("GET http://triage.example HTTP/1.1\r\nHost: triage.example\r\n\r\n"))
      local r = assert(c:read_response())
      assert.are.equal(404, r.status) -- the sample app has no /: routed, not refused
      assert.are.same({ error = "not found" }, assert(http.json(r)))
      assert.is_false((c:wait_closed(0.2)))
    end)

    it("an absolute-form target on HTTP/1.0 without Host", function()
      local c = connect()
      assert(c:send("GET http://127.0.0.1" .. PROTOCOL .. " HTTP/1.0\r\n\r\n"))
      local r = assert(c:read_response())
      assert.are.equal(200, r.status)
    end)

    it("HTTP/1.2 as HTTP/1.1: answered in 1.1 and kept alive", function()
      local c = connect()
      for _ = 1, 2 do
        assert(c:send("GET " .. PROTOCOL .. " HTTP/1.2\r\nHost: a\r\n\r\n"))
        local r = assert(c:read_response())
        assert.are.equal(200, r.status)
        assert.matches("^HTTP/1%.1 ", r.status_line)
        assert.is_nil(r.headers.connection)
      end
      assert.is_false((c:wait_closed(0.2)))
    end)

    it("HTTP/1.9 with a chunked body", function()
      local body = '{"patientId":"P-0001","reportData":{"q1":3}}'
      local c = connect()
      local token = srv:token{ sub = "dr.chen", role = "investigator" }
      assert(c:send("POST /api/epro/submit HTTP/1.9\r\nHost: a\r\nContent-Type: application/json\r\n" ..
        "Authorization: Bearer " .. token .. "\r\n" ..
        "Transfer-Encoding: Chunked\r\n\r\n" .. ("%x\r\n%s\r\n0\r\n\r\n"):format(#body, body)))
      local r = assert(c:read_response())
      assert.are.equal(200, r.status, http.quote(r.body))
    end)

    it("Host values: IPv4 and port, IPv6 literal, empty", function()
      for _, host in ipairs{ "127.0.0.1:8080", "[::1]:8080", "[2001:db8::1]", "" } do
        local c = connect()
        assert(c:send("GET " .. PROTOCOL .. " HTTP/1.1\r\nHost: " .. host .. "\r\n\r\n"))
        local r = assert(c:read_response())
        assert.are.equal(200, r.status, "Host: " .. host)
        c:close()
      end
    end)
  end)

  describe("one byte at a time", function()
    local function trickle(c, raw)
      for i = 1, #raw do
        if not c:send(raw:sub(i, i)) then break end -- refused and closed before the end
        sys.sleep(0.001)
      end
    end

    it("serves a good request, an absolute-form one and HTTP/1.2", function()
      for _, raw in ipairs{
        "GET " .. PROTOCOL .. " HTTP/1.1\r\nHost: a\r\n\r\n",
        "GET http://a" .. PROTOCOL .. " HTTP/1.1\r\nHost: b\r\n\r\n",
        "GET " .. PROTOCOL .. " HTTP/1.2\r\nHost: a\r\n\r\n",
      } do
        local c = connect()
        trickle(c, raw)
        local r = assert(c:read_response())
        assert.are.equal(200, r.status, http.quote(raw))
        c:close()
      end
    end)

    it("refuses as it would in one piece", function()
      for _, case in ipairs{
        { "GET " .. PROTOCOL .. " HTTP/1.1\r\n\r\n", 400 },
        { "GET " .. PROTOCOL .. " HTTP/1.1\r\nHost: a\r\nX: b\r\n c\r\n\r\n", 400 },
        { "FOO " .. PROTOCOL .. " HTTP/1.1\r\nHost: a\r\n\r\n", 501 },
        { "GET " .. PROTOCOL .. " HTTP/2.0\r\nHost: a\r\n\r\n", 505 },
        { "POST /api/epro/submit HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", 501 },
      } do
        local c = connect()
        trickle(c, case[1])
        local r = assert(c:read_response())
        assert.are.equal(case[2], r.status, http.quote(case[1]))
        assert.is_true((c:wait_closed(3)))
        c:close()
      end
      assert_serving()
    end)
  end)

  it("is still serving on every worker after all of the above", function()
    local st = assert(srv:status())
    assert.are.equal(2, #st.workers)
    local stats = S.loadgen.run{
      port = srv.port, concurrency = 8, total = 200,
      request = http.build("GET", PROTOCOL, { headers = { Connection = "close" } }),
    }
    assert.are.equal(200, stats.ok, S.loadgen.summary(stats))
    assert.is_false(srv:exited())
  end)
end)

describe("a handler's status", function()
  local srv, app_dir

  local function write(path, text)
    local f = assert(io.open(path, "w"))
    f:write(text)
    f:close()
  end

  setup(function()
    app_dir = sys.mkdtemp("/tmp/triage-strict-app-")
    assert(os.execute("mkdir -p '" .. app_dir .. "/routes' '" .. app_dir .. "/scripts'"))
    write(app_dir .. "/routes/status.lua", [[
get("/status/:code", "status.answer")
get("/next", "status.next")
]])
    write(app_dir .. "/scripts/status.lua", [[
local M = {}
function M.answer(ctx)
  return ctx:status(tonumber(ctx:param("code"))):send("interim?")
end
function M.next(ctx)
  return ctx:send("next")
end
return M
]])
    srv = S.start{ app = app_dir }
  end)

  teardown(function()
    S.stop_all()
    if app_dir then os.execute("rm -rf '" .. app_dir .. "'") end
  end)

  it("must be final: a 1xx is a 500, the error log names the request, pipelined responses stay in step", function()
    for _, code in ipairs{ 100, 101, 103, 199 } do
      local c = assert(http.connect(srv.port))
      assert(c:send("GET /status/" .. code .. " HTTP/1.1\r\nHost: a\r\n\r\nGET /next HTTP/1.1\r\nHost: a\r\n\r\n"))
      local rs = assert(c:read_responses(2))
      c:close()
      assert.are.equal(500, rs[1].status, "status " .. code)
      local body = assert(http.json(rs[1]))
      assert.are.equal("internal server error", body.error)
      assert.are.equal(200, rs[2].status)
      assert.are.equal("next", rs[2].body)
      local needle = ("GET /status/%d failed: .*ctx:status: 1xx is not a final status %%(got %d%%)"):format(code, code)
      S.eventually(3, function() return srv:error_log():find(needle) ~= nil end)
      assert.matches(needle, srv:error_log())
      assert.matches(body.requestId, srv:error_log(), 1, true)
    end
  end)

  it("200 to 599 are final", function()
    for _, code in ipairs{ 200, 204, 404, 599 } do
      local r = assert(http.get(srv.port, "/status/" .. code))
      assert.are.equal(code, r.status)
    end
  end)
end)
