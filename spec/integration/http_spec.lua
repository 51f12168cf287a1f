-- HTTP/1.1 connection handling: keep-alive, HTTP/1.0, pipelining, chunked
-- request bodies, Expect: 100-continue, HEAD, and the Date/Content-Length
-- headers on every response. Uses the fixture app (spec/fixtures/app).
local spec_root = debug.getinfo(1, "S").source:match("^@(.*)/integration/[^/]+$")
if spec_root then package.path = spec_root .. "/?.lua;" .. package.path end
local S = require "support.server"
local http = S.http
local sys = S.sys

describe("HTTP/1.1", function()
  local srv

  setup(function()
    srv = S.start{ app = S.fixture_app }
  end)

  teardown(function()
    S.stop_all()
  end)

  local function connect()
    local c = assert(http.connect(srv.port))
    finally(function() c:close() end)
    return c
  end

  local function json(r)
    return assert(http.json(r))
  end

  it("serves several requests on one keep-alive connection", function()
    local c = connect()
    for i = 1, 5 do
      local r = assert(c:request("GET", "/echo?n=" .. i))
      assert.are.equal(200, r.status)
      assert(http.check_common(r))
      assert.are.equal(tostring(i), json(r).n)
      assert.is_nil((r.headers.connection or ""):lower():find("close", 1, true),
        "an HTTP/1.1 request without Connection: close got Connection: close")
    end
    local closed, how = c:wait_closed(0.3)
    assert.is_false(closed, "the server closed a keep-alive connection: " .. tostring(how))
    local r = assert(c:request("POST", "/echo-body", { body = "still here" }))
    assert.are.equal("still here", r.body)
  end)

  it("closes the connection after a request with Connection: close", function()
    local c = connect()
    local r = assert(c:request("GET", "/hello", { headers = { Connection = "close" } }))
    assert.are.equal(200, r.status)
    assert.are.equal("hello", r.body)
    local closed, how = c:wait_closed(3)
    assert.is_true(closed, "connection still " .. how .. " after Connection: close")
  end)

  it("closes an HTTP/1.0 connection without keep-alive after the response", function()
    local c = connect()
    assert(c:send("GET /hello HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n"))
    local r = assert(c:read_response())
    assert.are.equal(200, r.status)
    assert.are.equal("hello", r.body)
    assert(http.check_common(r))
    local closed, how = c:wait_closed(3)
    assert.is_true(closed, "HTTP/1.0 connection still " .. how .. " after the response")
  end)

  it("keeps an HTTP/1.0 connection with Connection: keep-alive open", function()
    local c = connect()
    for i = 1, 3 do
      assert(c:send("GET /echo?n=" .. i .. " HTTP/1.0\r\nHost: 127.0.0.1\r\nConnection: keep-alive\r\n\r\n"))
      local r = assert(c:read_response())
      assert.are.equal(200, r.status)
      assert.are.equal(tostring(i), json(r).n)
      assert(http.check_common(r))
    end
    local closed, how = c:wait_closed(0.3)
    assert.is_false(closed, "HTTP/1.0 keep-alive connection was closed: " .. tostring(how))
  end)

  it("tells an HTTP/1.0 keep-alive client that the connection persists (Connection: keep-alive)", function()
    local c = connect()
    assert(c:send("GET /hello HTTP/1.0\r\nHost: 127.0.0.1\r\nConnection: keep-alive\r\n\r\n"))
    local r = assert(c:read_response())
    assert.are.equal(200, r.status)
    assert.matches("keep%-alive", (r.headers.connection or ""):lower(),
      "an HTTP/1.0 client assumes close unless the response says keep-alive; headers: " .. http.quote(r.raw_head))
  end)

  it("answers 10 pipelined requests, sent in one write, in order", function()
    local c = connect()
    local parts = {}
    for i = 1, 10 do
      if i == 5 then
        parts[#parts + 1] = http.build("POST", "/echo-body", { body = "body-of-five" })
      else
        parts[#parts + 1] = http.build("GET", "/echo?n=" .. i)
      end
    end
    assert(c:send(table.concat(parts)))
    local rs = assert(c:read_responses(10))
    for i = 1, 10 do
      local r = rs[i]
      assert.are.equal(200, r.status, "response " .. i)
      assert(http.check_common(r))
      if i == 5 then
        assert.are.equal("body-of-five", r.body)
      else
        assert.are.equal(tostring(i), json(r).n, "response " .. i .. " out of order")
      end
    end
    -- the connection is still usable
    local r = assert(c:request("GET", "/echo?n=11"))
    assert.are.equal("11", json(r).n)
  end)

  it("answers 200 pipelined requests in order", function()
    local c = connect()
    local parts = {}
    for i = 1, 200 do parts[i] = http.build("GET", "/echo?n=" .. i) end
    assert(c:send(table.concat(parts)))
    local rs = assert(c:read_responses(200, nil, 10))
    for i = 1, 200 do
      assert.are.equal(tostring(i), json(rs[i]).n, "response " .. i .. " out of order")
    end
  end)

  it("parses a request that arrives in small pieces", function()
    local c = connect()
    local raw = http.build("POST", "/echo-body", { body = "piecewise body" })
    local step = 7
    for i = 1, #raw, step do
      assert(c:send(raw:sub(i, i + step - 1)))
      sys.sleep(0.005)
    end
    local r = assert(c:read_response())
    assert.are.equal(200, r.status)
    assert.are.equal("piecewise body", r.body)
  end)

  it("accepts a chunked request body", function()
    local c = connect()
    assert(c:send("POST /echo-body HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n\r\n" ..
      "5\r\nhello\r\n1\r\n \r\n5\r\nworld\r\n0\r\n\r\n"))
    local r = assert(c:read_response())
    assert.are.equal(200, r.status, http.quote(r.body))
    assert.are.equal("hello world", r.body)
    assert.are.equal("11", r.headers["x-body-length"])
    assert(http.check_common(r))
    -- and the connection goes on
    r = assert(c:request("GET", "/echo?n=after-chunked"))
    assert.are.equal("after-chunked", json(r).n)
  end)

  it("accepts a chunked body sent chunk by chunk, with hex sizes and a trailer", function()
    local c = connect()
    assert(c:send("POST /echo-body HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n\r\n"))
    local payload = {}
    for i = 1, 5 do
      local chunk = string.rep(string.char(64 + i), 26 + i) -- sizes 1b..1f in hex
      payload[#payload + 1] = chunk
      assert(c:send(("%x\r\n%s\r\n"):format(#chunk, chunk)))
      sys.sleep(0.02)
    end
    assert(c:send("0\r\nX-Trailer: t\r\n\r\n"))
    local r = assert(c:read_response())
    assert.are.equal(200, r.status, http.quote(r.body))
    assert.are.equal(table.concat(payload), r.body)
  end)

  it("passes a body with NUL and high bytes through unchanged", function()
    local c = connect()
    local body = "a\0b\0\255\254\r\n\r\nend"
    local r = assert(c:request("POST", "/echo-body", { body = body }))
    assert.are.equal(200, r.status)
    assert.are.equal(body, r.body)
  end)

  it("sends HTTP/1.1 100 Continue for Expect: 100-continue, then the final response", function()
    local c = connect()
    local body = '{"expect":"continue"}'
    assert(c:send("POST /echo-body HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: " .. #body ..
      "\r\nExpect: 100-continue\r\n\r\n"))
    local interim = assert(c:read_response({ timeout = 3 }))
    assert.are.equal(100, interim.status, "expected 100 Continue first, got " .. interim.status_line)
    assert.are.equal("HTTP/1.1 100 Continue", interim.status_line)
    assert(c:send(body))
    local r = assert(c:read_response())
    assert.are.equal(200, r.status)
    assert.are.equal(body, r.body)
    assert(http.check_common(r))
  end)

  it("answers HEAD on a GET route with the headers (Content-Length of the GET body) and no body", function()
    local c = connect()
    local get = assert(c:request("GET", "/hello"))
    assert.are.equal(200, get.status)
    -- HEAD then GET pipelined: the GET must parse right after the HEAD's headers
    assert(c:send(http.build("HEAD", "/hello") .. http.build("GET", "/echo?n=after-head")))
    local head = assert(c:read_response({ head = true }))
    assert.are.equal(200, head.status)
    assert(http.check_common(head, true))
    assert.are.equal(tostring(#get.body), head.headers["content-length"])
    local nxt = assert(c:read_response())
    assert.are.equal(200, nxt.status, "bytes after the HEAD response: " .. http.quote(nxt.raw_head))
    assert.are.equal("after-head", json(nxt).n)
    local closed, how = c:wait_closed(0.2)
    assert.are.equal("open", how, "unexpected bytes or close after the responses: " .. http.quote(c.buf))
  end)

  it("answers HEAD on a JSON GET route with its Content-Length", function()
    local c = connect()
    local get = assert(c:request("GET", "/params/a/items/1"))
    local head = assert(c:request("HEAD", "/params/a/items/1"))
    assert.are.equal(200, head.status)
    assert.are.equal("", head.body)
    assert.are.equal(tostring(#get.body), head.headers["content-length"])
    assert.are.equal(get.headers["content-type"], head.headers["content-type"])
  end)

  it("puts an IMF-fixdate Date and a matching Content-Length on every response", function()
    local c = connect()
    local cases = {
      { "GET", "/hello" }, { "GET", "/echo?n=1" }, { "POST", "/echo-body", "x" },
      { "POST", "/echo-body", "" }, { "GET", "/no/such/path" }, { "DELETE", "/hello" },
      { "GET", "/boom" }, { "GET", "/guarded/thing" }, { "GET", "/only-head" },
      { "OPTIONS", "/m" }, { "GET", "/multi-header" },
    }
    for _, case in ipairs(cases) do
      local r = assert(c:request(case[1], case[2], { body = case[3] }))
      local ok, err = http.check_common(r)
      assert(ok, case[1] .. " " .. case[2] .. " (" .. r.status .. "): " .. tostring(err))
    end
    -- and on a fresh connection's first response, and on an HTTP/1.0 one
    local r = assert(http.get(srv.port, "/hello"))
    assert(http.check_common(r))
    local c2 = connect()
    assert(c2:send("GET /no/such HTTP/1.0\r\n\r\n"))
    r = assert(c2:read_response())
    assert(http.check_common(r))
  end)

  it("answers HTTP/1.1 to an HTTP/1.1 request", function()
    local r = assert(http.get(srv.port, "/hello"))
    assert.are.equal("1.1", r.version)
    assert.matches("^HTTP/1%.1 200 ", r.status_line)
  end)

  describe("with --keepalive-timeout 1", function()
    local short

    setup(function()
      short = S.start{ app = S.fixture_app, args = { "--keepalive-timeout", "1" } }
    end)

    teardown(function()
      short:stop()
    end)

    it("closes an idle keep-alive connection after about a second", function()
      local c = assert(http.connect(short.port))
      finally(function() c:close() end)
      local r = assert(c:request("GET", "/hello"))
      assert.are.equal(200, r.status)
      local t0 = sys.now()
      local closed, how = c:wait_closed(6)
      assert.is_true(closed, "idle connection still " .. how .. " after 6 s")
      print(("\n    idle connection closed after %.2f s"):format(sys.now() - t0))
    end)

    it("does not close a connection that keeps sending within the timeout", function()
      local c = assert(http.connect(short.port))
      finally(function() c:close() end)
      for _ = 1, 4 do
        local r = assert(c:request("GET", "/hello"))
        assert.are.equal(200, r.status)
        sys.sleep(0.4)
      end
    end)
  end)
end)
