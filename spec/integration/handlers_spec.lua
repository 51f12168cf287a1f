-- Lua handlers and middleware of the fixture app (spec/fixtures/app): errors
-- thrown by handlers, triage.sleep, a ctx used after its request, middleware
-- that ends the request, the onion order, and the ctx request API.
local spec_root = debug.getinfo(1, "S").source:match("^@(.*)/integration/[^/]+$")
if spec_root then package.path = spec_root .. "/?.lua;" .. package.path end
local S = require "support.server"
local http = S.http
local sys = S.sys

describe("handlers and middleware", function()
  local srv -- 2 workers
  local one -- 1 worker: requests that must meet the same Lua state

  setup(function()
    srv = S.start{ app = S.fixture_app }
    one = S.start{ app = S.fixture_app, workers = 1 }
  end)

  teardown(function()
    S.stop_all()
  end)

  local function connect(server)
    local c = assert(http.connect((server or srv).port))
    finally(function() c:close() end)
    return c
  end

  local function json(r)
    return assert(http.json(r))
  end

  -- the part of the error log around the first mention of `needle`
  local function log_around(server, needle, timeout)
    local log = S.eventually(timeout or 3, function()
      local l = server:error_log()
      return l:find(needle, 1, true) and l
    end)
    if not log then return nil end
    local i = log:find(needle, 1, true)
    return log:sub(math.max(1, i - 2000), i + 4000)
  end

  describe("a handler that throws", function()
    it("gives 500 {error, requestId} and logs the traceback with that request id", function()
      local r = assert(http.get(srv.port, "/boom"))
      assert.are.equal(500, r.status)
      assert(http.check_common(r))
      assert.matches("^application/json", r.headers["content-type"] or "")
      local j = json(r)
      assert.are.same({ "error", "requestId" }, S.keys(j))
      assert.are.equal("internal server error", j.error)
      assert.are.equal("string", type(j.requestId))
      assert.is_true(#j.requestId > 0)
      if r.headers["x-request-id"] then
        assert.are.equal(r.headers["x-request-id"], j.requestId)
      end
      assert.is_nil(r.body:find("fixture boom", 1, true), "the error message leaked to the client")
      local around = log_around(srv, j.requestId)
      assert(around, "request id " .. j.requestId .. " not in the error log:\n" .. srv:error_log())
      assert.truthy(around:find("fixture boom", 1, true), "error message not logged near the request id:\n" .. around)
      assert.truthy(around:lower():find("traceback", 1, true), "no traceback logged near the request id:\n" .. around)
      assert.truthy(around:find("fx.lua", 1, true), "the traceback does not name scripts/fx.lua:\n" .. around)
    end)

    for _, kind in ipairs{ "table", "index", "after-sleep" } do
      it("gives 500 with a requestId for an error of kind " .. kind, function()
        local r = assert(http.get(srv.port, "/boom?kind=" .. kind))
        assert.are.equal(500, r.status)
        local j = json(r)
        assert.are.equal("internal server error", j.error)
        assert(log_around(srv, j.requestId), "request id not in the error log")
      end)
    end

    it("gives 500 for an error thrown by a middleware", function()
      local r = assert(http.get(srv.port, "/mwboom/x"))
      assert.are.equal(500, r.status)
      local j = json(r)
      local around = log_around(srv, j.requestId)
      assert(around, "request id not in the error log")
      assert.truthy(around:find("fixture middleware boom", 1, true))
    end)

    it("keeps the connection and the worker serving", function()
      local before = assert(srv:worker_pids())
      local c = connect()
      for i = 1, 10 do
        local r = assert(c:request("GET", "/boom"))
        assert.are.equal(500, r.status)
        r = assert(c:request("GET", "/echo?n=" .. i))
        assert.are.equal(200, r.status, "request after a 500 on the same connection")
        assert.are.equal(tostring(i), json(r).n)
      end
      for _ = 1, 20 do
        local r = assert(http.get(srv.port, "/boom?kind=index"))
        assert.are.equal(500, r.status)
      end
      for _ = 1, 10 do
        local r = assert(http.get(srv.port, "/hello"))
        assert.are.equal(200, r.status)
      end
      local after = assert(srv:worker_pids())
      assert.are.same(before, after, "worker pids changed: a worker died")
    end)
  end)

  describe("triage.sleep", function()
    it("suspends the handler about 50 ms and then answers", function()
      local r, elapsed = http.get(srv.port, "/sleep")
      assert(r, elapsed)
      assert.are.equal(200, r.status)
      assert.are.equal(true, json(r).ok)
      assert.is_true(elapsed >= 0.045, ("answered after %.3f s"):format(elapsed))
    end)

    it("does not block the worker: another request is answered while one sleeps", function()
      local sleeper = connect(one)
      assert(sleeper:send(http.build("GET", "/sleep?s=1.5&who=sleeper")))
      sys.sleep(0.1)
      local other = connect(one)
      local r = assert(other:request("GET", "/hello", { timeout = 1 }))
      assert.are.equal(200, r.status)
      -- the sleeper has not been answered yet
      local _, state = sleeper:wait_closed(0)
      assert.are.equal("open", state, "the sleeping request answered early")
      r = assert(sleeper:read_response({ timeout = 5 }))
      assert.are.equal(200, r.status)
      assert.are.equal("sleeper", json(r).who)
    end)

    it("runs 40 sleeping requests at once on one worker", function()
      local stats = S.loadgen.run{
        port = one.port, concurrency = 40, total = 40,
        request = http.build("GET", "/sleep?s=0.05", { headers = { Connection = "close" } }),
      }
      assert.are.equal(40, stats.ok, S.loadgen.summary(stats))
      print(("\n    40 x 50 ms sleeps on one worker took %.3f s"):format(stats.elapsed))
      -- serialised they would take 2 s
      assert.is_true(stats.elapsed < 1.5, ("took %.2f s: the sleeps ran one after another"):format(stats.elapsed))
    end)
  end)

  describe("a ctx used after its request finished", function()
    it("raises, so the request using it gets a 500 and the error log says so", function()
      local c = connect(one)
      local r = assert(c:request("GET", "/stash?who=alice"))
      assert.are.equal(200, r.status)
      assert.are.same({ stored = true, who = "alice" }, json(r))
      r = assert(c:request("GET", "/stash/use?who=bob"))
      assert.are.equal(500, r.status, "stale ctx was usable; body: " .. http.quote(r.body))
      assert.is_nil(r.body:find("alice", 1, true), "leaked the finished request's data: " .. r.body)
      assert.is_nil(r.body:find("bob", 1, true), "leaked this request's data through the stale ctx: " .. r.body)
      local j = json(r)
      local around = log_around(one, j.requestId)
      assert(around, "request id " .. tostring(j.requestId) .. " not in the error log:\n" .. one:error_log())
      assert.truthy(around:find("ctx used after its request finished", 1, true),
        "error log lacks 'ctx used after its request finished':\n" .. around)
    end)

    it("raises for every ctx call, and its setters do not touch the current response", function()
      local c = connect(one)
      assert.are.equal(200, assert(c:request("GET", "/stash?who=alice")).status)
      local r = assert(c:request("GET", "/stash/probe?who=carol"))
      assert.are.equal(200, r.status, "a stale ctx:status() changed this response: " .. r.status_line)
      assert.is_nil(r.headers["x-hijack"], "a stale ctx:set_header() reached this response")
      local results = json(r).results
      assert.are.equal("table", type(results), r.body)
      local names = S.keys(results)
      assert.are.equal(14, #names, r.body)
      for _, name in ipairs(names) do
        local msg = results[name]
        assert.truthy(msg:find("ctx used after its request finished", 1, true),
          ("stale ctx:%s() did not raise: %s"):format(name, msg))
        assert.is_nil(msg:find("alice", 1, true), "stale ctx:" .. name .. "() leaked data: " .. msg)
        assert.is_nil(msg:find("carol", 1, true), "stale ctx:" .. name .. "() read the current request: " .. msg)
      end
    end)

    it("never reads the data of a request in flight that reuses its slot", function()
      local c = connect(one)
      assert.are.equal(200, assert(c:request("GET", "/stash?who=alice")).status)
      -- another request is in flight (sleeping) while the stale ctx is used
      local sleeper = connect(one)
      assert(sleeper:send(http.build("GET", "/sleep?s=0.5&who=dave")))
      sys.sleep(0.1)
      local r = assert(c:request("GET", "/stash/use"))
      assert.are.equal(500, r.status, "stale ctx was usable; body: " .. http.quote(r.body))
      assert.is_nil(r.body:find("dave", 1, true), "read the in-flight request through a stale ctx: " .. r.body)
      assert.is_nil(r.body:find("alice", 1, true))
      local s = assert(sleeper:read_response())
      assert.are.equal(200, s.status)
      assert.are.equal("dave", json(s).who)
    end)
  end)

  describe("middleware", function()
    it("ends the request with its own 401 when it does not call nxt()", function()
      local r = assert(http.get(srv.port, "/guarded/thing"))
      assert.are.equal(401, r.status, "body: " .. http.quote(r.body))
      assert.are.same({ error = "denied by middleware" }, json(r))
      assert(http.check_common(r))
    end)

    it("runs in onion order: outer before inner on the way in, inner before outer on the way out", function()
      local r = assert(http.get(srv.port, "/onion/order"))
      assert.are.equal(200, r.status, http.quote(r.body))
      assert.are.equal("global:in,a:in,b:in,handler", r.body)
      assert.are.equal("global:in,a:in,b:in,handler,b:out,a:out,global:out", r.headers["x-onion"])
    end)

    it("nests groups: the outer group's middleware, then the inner group's, then its use()", function()
      local r = assert(http.get(srv.port, "/onion/inner/order"))
      assert.are.equal(200, r.status, http.quote(r.body))
      assert.are.equal("global:in,a:in,b:in,c:in,d:in,handler", r.body)
      assert.are.equal("global:in,a:in,b:in,c:in,d:in,handler,d:out,c:out,b:out,a:out,global:out",
        r.headers["x-onion"])
    end)

    it("runs the global middleware for every route", function()
      local r = assert(http.get(srv.port, "/hello"))
      assert.are.equal("global:in,global:out", r.headers["x-onion"])
      r = assert(http.get(srv.port, "/second-file"))
      assert.are.equal(200, r.status)
      assert.are.equal("global:in,global:out", r.headers["x-onion"])
    end)

    it("uses the built-in request_id middleware: X-Request-Id equals ctx:request_id()", function()
      local r = assert(http.get(srv.port, "/inspect"))
      assert.are.equal(200, r.status)
      local j = json(r)
      assert.are.equal("string", type(j.request_id))
      assert.are.equal(j.request_id, r.headers["x-request-id"])
    end)
  end)

  describe("the request body", function()
    it("reads ctx:body() twice and decodes ctx:json_body()", function()
      local body = '{"a":1,"b":[true,false]}'
      local r = assert(http.post(srv.port, "/body", body))
      assert.are.equal(200, r.status, http.quote(r.body))
      local j = json(r)
      assert.are.equal(body, j.first)
      assert.are.equal(body, j.second)
      assert.is_true(j.same)
      assert.is_false(j.json_body_raised)
      assert.is_true(j.json_ok)
      assert.are.equal(1, j.decoded_a)
    end)

    it("gives nil, err from ctx:json_body() for invalid JSON without raising", function()
      local r = assert(http.post(srv.port, "/body", "{not json"))
      assert.are.equal(200, r.status, http.quote(r.body))
      local j = json(r)
      assert.are.equal("{not json", j.first)
      assert.are.equal("{not json", j.second)
      assert.is_false(j.json_body_raised, "json_body raised: " .. tostring(j.raise_message))
      assert.is_false(j.json_ok)
      assert.are.equal("string", j.err_type, "err should be a string, got " .. tostring(j.err_type))
      assert.is_true(#j.err > 0)
    end)

    it("gives \"\" from ctx:body() without a body, and nil, err from json_body()", function()
      local r = assert(http.post(srv.port, "/body", ""))
      assert.are.equal(200, r.status, http.quote(r.body))
      local j = json(r)
      assert.are.equal("", j.first)
      assert.are.equal("", j.second)
      assert.are.equal(0, j.length)
      assert.is_false(j.json_body_raised)
      assert.is_false(j.json_ok)
    end)

    it("reads a 512 KiB body", function()
      local body = {}
      for i = 1, 512 do
        local n = tostring(i)
        body[i] = n .. string.rep(".", 1023 - #n) .. "\n"
      end
      body = table.concat(body)
      local r = assert(http.post(srv.port, "/echo-body", body, { timeout = 10 }))
      assert.are.equal(200, r.status)
      assert.are.equal(tostring(#body), r.headers["x-body-length"])
      assert.are.equal(body, r.body)
    end)
  end)

  describe("the ctx request API", function()
    it("gives method, path, query, headers (any case) and request id", function()
      local r = assert(http.request(srv.port, "POST", "/inspect?q=x%20y&other=1",
        { headers = { ["X-Fixture"] = "Yes" }, body = "payload" }))
      assert.are.equal(200, r.status, http.quote(r.body))
      local j = json(r)
      assert.are.equal("POST", j.method)
      assert.are.equal("/inspect", j.path)
      assert.are.equal("x y", j.q)
      assert.is_true(j.q_missing_is_nil)
      assert.are.equal("Yes", j.header_lower)
      assert.are.equal("Yes", j.header_upper)
      assert.is_true(j.header_missing_is_nil)
      assert.is_true(j.param_missing_is_nil)
      assert.are.equal("payload", j.body)
    end)

    it("adds a response header each time set_header is called", function()
      local r = assert(http.get(srv.port, "/multi-header"))
      assert.are.equal(200, r.status)
      assert.are.same({ "one", "two" }, http.header_values(r, "X-Multi"))
    end)

    it("sends text bodies set with ctx:send", function()
      local r = assert(http.get(srv.port, "/hello"))
      assert.are.equal(200, r.status)
      assert.are.equal("hello", r.body)
      assert.matches("^text/plain", r.headers["content-type"] or "")
    end)
  end)
end)
