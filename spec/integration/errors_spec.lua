-- Error responses of the core: 404, 405 + Allow, 400 for a malformed request
-- (connection closed), 431, 413, 414, and the server still answering a fresh
-- connection after each. Uses the sample app at the repo root.
local spec_root = debug.getinfo(1, "S").source:match("^@(.*)/integration/[^/]+$")
if spec_root then package.path = spec_root .. "/?.lua;" .. package.path end
local S = require "support.server"
local http = S.http
local sys = S.sys

describe("error responses", function()
  local srv   -- default limits
  local small -- --max-body 1k --max-uri 512 --max-header 2k

  setup(function()
    srv = S.start{ app = S.root }
    small = S.start{ app = S.root, args = { "--max-body", "1k", "--max-uri", "512", "--max-header", "2k" } }
  end)

  teardown(function()
    S.stop_all()
  end)

  local function assert_serving(server)
    local r, err = http.get(server.port, "/api/v1/protocols/NCT04356798")
    assert(r, "fresh connection after the error: " .. tostring(err))
    assert.are.equal(200, r.status, "fresh connection after the error: " .. http.quote(r.body))
    assert.matches("NCT04356798", r.body)
  end

  local function connect(server)
    local c = assert(http.connect(server.port))
    finally(function() c:close() end)
    return c
  end

  -- Send the head, give the server a chance to answer early, then the body.
  local function send_with_body(c, head, body)
    assert(c:send(head))
    local r = c:read_response({ timeout = 0.5 })
    if r then return r end
    c:send(body) -- may fail if the server has closed: the response is what counts
    return assert(c:read_response())
  end

  describe("404", function()
    it("answers an unknown path with 404 {\"error\":\"not found\"}", function()
      for _, path in ipairs{ "/nope", "/api/v1", "/api/v1/protocols", "/api/v1/protocols/NCT04356798/extra", "/api/epro" } do
        local r = assert(http.get(srv.port, path))
        assert.are.equal(404, r.status, path)
        assert(http.check_common(r))
        assert.matches("^application/json", r.headers["content-type"] or "")
        assert.are.same({ error = "not found" }, assert(http.json(r)))
      end
      assert_serving(srv)
    end)

    it("keeps the connection open after a 404", function()
      local c = connect(srv)
      local r = assert(c:request("GET", "/nope"))
      assert.are.equal(404, r.status)
      r = assert(c:request("GET", "/api/v1/protocols/NCT04356798"))
      assert.are.equal(200, r.status)
    end)
  end)

  describe("405", function()
    it("answers a path known under other methods with 405 and an Allow header", function()
      local r = assert(http.get(srv.port, "/api/epro/submit"))
      assert.are.equal(405, r.status)
      assert(http.check_common(r))
      local allow = r.headers.allow
      assert(allow, "no Allow header in " .. http.quote(r.raw_head))
      local methods = {}
      for m in allow:gmatch("[^,%s]+") do methods[m] = true end
      assert.is_true(methods.POST, "Allow should list POST: " .. allow)
      assert.is_nil(methods.GET, "Allow lists GET: " .. allow)
    end)

    it("lists GET for a GET route asked with DELETE", function()
      local r = assert(http.request(srv.port, "DELETE", "/api/v1/protocols/NCT04356798"))
      assert.are.equal(405, r.status)
      local allow = assert(r.headers.allow, "no Allow header")
      local methods = {}
      for m in allow:gmatch("[^,%s]+") do methods[m] = true end
      assert.is_true(methods.GET, "Allow should list GET: " .. allow)
      assert.is_nil(methods.DELETE, "Allow lists DELETE: " .. allow)
      assert_serving(srv)
    end)
  end)

  it("puts X-Request-Id on the core's 404 and 405 too (every response of the app carries one)", function()
    for _, req in ipairs{ { "GET", "/nope" }, { "GET", "/api/epro/submit" } } do
      local r = assert(http.request(srv.port, req[1], req[2]))
      local rid = r.headers["x-request-id"]
      assert(rid and rid ~= "", r.status .. " without X-Request-Id: " .. http.quote(r.raw_head))
    end
  end)

  describe("400 for a malformed request", function()
    local cases = {
      { "a request line that is not HTTP", "this is not http\r\n\r\n" },
      { "a bad protocol version", "GET /api/v1/protocols/NCT04356798 HTTX/1.1\r\nHost: x\r\n\r\n" },
      { "a request line without a target", "GET\r\n\r\n" },
      { "a TLS ClientHello", "\22\3\1\0\165\1\0\0\161\3\3" .. string.rep("\0", 40) },
      { "a header line without a colon", "GET /api/v1/protocols/NCT04356798 HTTP/1.1\r\nHost: x\r\nNoColonHere\r\n\r\n" },
      { "a bad Content-Length", "POST /api/epro/submit HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n" },
      { "two different Content-Length headers",
        "POST /api/epro/submit HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab" },
      { "whitespace inside a header name", "GET /api/v1/protocols/NCT04356798 HTTP/1.1\r\nHost: x\r\nBad Header: y\r\n\r\n" },
      { "whitespace between a header name and its colon",
        "GET /api/v1/protocols/NCT04356798 HTTP/1.1\r\nHost: x\r\nX-Spaced : y\r\n\r\n" },
    }
    for _, case in ipairs(cases) do
      it("answers 400 and closes the connection for " .. case[1], function()
        local c = connect(srv)
        assert(c:send(case[2]))
        local r = assert(c:read_response())
        assert.are.equal(400, r.status, "status line: " .. r.status_line)
        assert(http.check_common(r))
        local closed, how = c:wait_closed(3)
        assert.is_true(closed, "connection still " .. how .. " after a 400")
        assert_serving(srv)
      end)
    end

    it("answers 400 to garbage sent after a good request on a keep-alive connection", function()
      local c = connect(srv)
      local r = assert(c:request("GET", "/api/v1/protocols/NCT04356798"))
      assert.are.equal(200, r.status)
      assert(c:send("\1\2\3 garbage\r\n\r\n"))
      r = assert(c:read_response())
      assert.are.equal(400, r.status)
      assert.is_true((c:wait_closed(3)))
      assert_serving(srv)
    end)
  end)

  describe("431 for a header section over --max-header", function()
    it("answers 431 for one 9 KiB header (default 8 KiB)", function()
      local c = connect(srv)
      local r = send_with_body(c, http.build("GET", "/api/v1/protocols/NCT04356798",
        { headers = { ["X-Big"] = string.rep("a", 9 * 1024) } }), "")
      assert.are.equal(431, r.status, r.status_line)
      assert(http.check_common(r))
      assert_serving(srv)
    end)

    it("answers 431 for many headers adding up to over 8 KiB", function()
      local headers = {}
      for i = 1, 100 do headers[#headers + 1] = { "X-Filler-" .. i, string.rep("b", 100) } end
      local c = connect(srv)
      assert(c:send(http.build("GET", "/api/v1/protocols/NCT04356798", { headers = headers })))
      local r = assert(c:read_response())
      assert.are.equal(431, r.status, r.status_line)
      assert_serving(srv)
    end)

    it("accepts a 6 KiB header section under the default limit", function()
      local r = assert(http.get(srv.port, "/api/v1/protocols/NCT04356798",
        { headers = { ["X-Big"] = string.rep("c", 6 * 1024) } }))
      assert.are.equal(200, r.status)
    end)

    it("applies --max-header 2k: a 3 KiB header gets 431", function()
      local c = connect(small)
      assert(c:send(http.build("GET", "/api/v1/protocols/NCT04356798",
        { headers = { ["X-Big"] = string.rep("d", 3 * 1024) } })))
      local r = assert(c:read_response())
      assert.are.equal(431, r.status, r.status_line)
      assert_serving(small)
      -- the default server takes the same request
      r = assert(http.get(srv.port, "/api/v1/protocols/NCT04356798",
        { headers = { ["X-Big"] = string.rep("d", 3 * 1024) } }))
      assert.are.equal(200, r.status)
    end)
  end)

  describe("413 for a body over --max-body", function()
    local function epro_body(size)
      local base = '{"patientId":"P-0001","reportData":{"q1":3,"note":"'
      local tail = '"}}'
      return base .. string.rep("n", size - #base - #tail) .. tail
    end

    it("accepts a 1000-byte body under --max-body 1k", function()
      local body = epro_body(1000)
      assert.are.equal(1000, #body)
      local r = assert(http.post(small.port, "/api/epro/submit", body,
        { headers = small:bearer{ sub = "dr.chen", role = "investigator" } }))
      assert.are.equal(200, r.status, http.quote(r.body))
    end)

    it("answers 413 for a 2000-byte body with Content-Length", function()
      local c = connect(small)
      local body = epro_body(2000)
      local head = "POST /api/epro/submit HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: " ..
        #body .. "\r\n\r\n"
      local r = send_with_body(c, head, body)
      assert.are.equal(413, r.status, r.status_line)
      assert(http.check_common(r))
      assert_serving(small)
    end)

    it("answers 413 for a chunked body that grows over the limit", function()
      local c = connect(small)
      assert(c:send("POST /api/epro/submit HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"))
      local r
      for _ = 1, 8 do
        local ok = c:send("100\r\n" .. string.rep("z", 256) .. "\r\n")
        if not ok then break end
        r = c:read_response({ timeout = 0.2 })
        if r then break end
      end
      if not r then
        c:send("0\r\n\r\n")
        r = assert(c:read_response())
      end
      assert.are.equal(413, r.status, r.status_line)
      assert_serving(small)
    end)

    it("answers 413 with the default 1 MiB limit for a 2 MiB body", function()
      local c = connect(srv)
      local size = 2 * 1024 * 1024
      local head = "POST /api/epro/submit HTTP/1.1\r\nHost: x\r\nContent-Length: " .. size .. "\r\n\r\n"
      local r = send_with_body(c, head, string.rep("x", size))
      assert.are.equal(413, r.status, r.status_line)
      assert_serving(srv)
    end)
  end)

  describe("414 for a request target over --max-uri", function()
    it("answers 414 for a 5000-byte target (default 4096)", function()
      local c = connect(srv)
      assert(c:send(http.build("GET", "/api/v1/protocols/" .. string.rep("N", 5000))))
      local r = assert(c:read_response())
      assert.are.equal(414, r.status, r.status_line)
      assert(http.check_common(r))
      assert_serving(srv)
    end)

    it("counts the query string: a short path with a 5000-byte query gets 414", function()
      local c = connect(srv)
      assert(c:send(http.build("GET", "/api/v1/protocols/NCT04356798?pad=" .. string.rep("q", 5000))))
      local r = assert(c:read_response())
      assert.are.equal(414, r.status, r.status_line)
      assert_serving(srv)
    end)

    it("applies --max-uri 512: 600 bytes get 414, 400 bytes do not", function()
      local c = connect(small)
      assert(c:send(http.build("GET", "/api/v1/protocols/" .. string.rep("M", 600))))
      local r = assert(c:read_response())
      assert.are.equal(414, r.status, r.status_line)
      assert_serving(small)
      r = assert(http.get(small.port, "/api/v1/protocols/" .. string.rep("M", 400)))
      assert.are.equal(404, r.status, "a 400-byte target under --max-uri 512: " .. r.status_line)
    end)
  end)

  it("is still serving on every worker after all of the above", function()
    local st = assert(srv:status())
    assert.are.equal(2, #st.workers)
    local stats = S.loadgen.run{
      port = srv.port, concurrency = 8, total = 200,
      request = http.build("GET", "/api/v1/protocols/NCT04356798", { headers = { Connection = "close" } }),
    }
    assert.are.equal(200, stats.ok, S.loadgen.summary(stats))
    assert.is_false(srv:exited())
  end)
end)
