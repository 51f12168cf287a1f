-- Routing of the fixture app (spec/fixtures/app): route parameters and query
-- arguments with percent-encoding, catch-all, static > parameter > catch-all,
-- methods, 404/405, several route files; and route files that must stop the
-- load with routes/FILE.lua:LINE (spec/fixtures/bad_*).
local spec_root = debug.getinfo(1, "S").source:match("^@(.*)/integration/[^/]+$")
if spec_root then package.path = spec_root .. "/?.lua;" .. package.path end
local S = require "support.server"
local http = S.http
local sys = S.sys

describe("routing", function()
  local srv

  setup(function()
    srv = S.start{ app = S.fixture_app }
  end)

  teardown(function()
    S.stop_all()
  end)

  local function get_json(path, code)
    local r = assert(http.get(srv.port, path))
    assert.are.equal(code or 200, r.status, path .. ": " .. http.quote(r.body))
    return assert(http.json(r)), r
  end

  describe("parameters and query arguments", function()
    it("percent-decodes route parameters and query arguments", function()
      local j = get_json("/params/caf%C3%A9%20au%20lait/items/42?q=a%26b%3Dc&empty=&amp=%25")
      assert.are.equal("café au lait", j.name)
      assert.are.equal("42", j.id)
      assert.are.equal("a&b=c", j.q)
      assert.are.equal("", j.empty)
      assert.are.equal("%", j.amp)
    end)

    it("gives the path without the query string", function()
      local j = get_json("/params/plain/items/7?q=1")
      assert.are.equal("/params/plain/items/7", j.path)
      assert.are.equal("plain", j.name)
      assert.are.equal("1", j.q)
    end)

    it("matches an encoded slash (%2F) inside one parameter segment", function()
      local j = get_json("/params/a%2Fb/items/1")
      assert.are.equal("a/b", j.name)
      assert.are.equal("1", j.id)
    end)

    it("does not let a parameter span two segments", function()
      local r = assert(http.get(srv.port, "/params/a/b/items/1"))
      assert.are.equal(404, r.status)
    end)
  end)

  describe("catch-all", function()
    it("gives the rest of the path", function()
      assert.are.equal("a/b/c.txt", get_json("/files/a/b/c.txt").rest)
      assert.are.equal("x", get_json("/files/x").rest)
    end)

    it("percent-decodes the rest", function()
      assert.are.equal("dir/my file.txt", get_json("/files/dir/my%20file.txt").rest)
    end)
  end)

  describe("priority", function()
    it("prefers static over parameter over catch-all, whatever the declaration order", function()
      assert.are.same({ route = "static" }, get_json("/prio/static"))
      assert.are.same({ route = "param", id = "other" }, get_json("/prio/other"))
      assert.are.same({ route = "catch-all", rest = "a/b" }, get_json("/prio/a/b"))
    end)

    it("falls back to a parameter route when the static branch has no match further down", function()
      assert.are.same({ route = "static" }, get_json("/bt/static/y"))
      assert.are.same({ route = "param", a = "static" }, get_json("/bt/static/x"))
      assert.are.same({ route = "param", a = "other" }, get_json("/bt/other/x"))
    end)
  end)

  describe("methods", function()
    it("routes PUT, PATCH, DELETE and OPTIONS to their routes", function()
      for _, m in ipairs{ "PUT", "PATCH", "DELETE", "OPTIONS" } do
        local r = assert(http.request(srv.port, m, "/m", { body = m == "PUT" and "x" or nil }))
        assert.are.equal(200, r.status, m .. " /m: " .. http.quote(r.body))
        assert.are.equal(m, assert(http.json(r)).method)
      end
    end)

    it("answers 405 with an Allow header naming the route's methods", function()
      local r = assert(http.get(srv.port, "/m"))
      assert.are.equal(405, r.status)
      local allow = assert(r.headers.allow, "no Allow header: " .. http.quote(r.raw_head))
      local methods = {}
      for m in allow:gmatch("[^,%s]+") do methods[m] = true end
      for _, m in ipairs{ "PUT", "PATCH", "DELETE", "OPTIONS" } do
        assert.is_true(methods[m], "Allow lacks " .. m .. ": " .. allow)
      end
      assert.is_nil(methods.GET, allow)
      r = assert(http.request(srv.port, "DELETE", "/post-only"))
      assert.are.equal(405, r.status)
      methods = {}
      for m in (r.headers.allow or ""):gmatch("[^,%s]+") do methods[m] = true end
      assert.is_true(methods.POST and methods.PUT, "Allow should list POST and PUT: " .. tostring(r.headers.allow))
    end)

    it("serves a head() route to HEAD only", function()
      local r = assert(http.request(srv.port, "HEAD", "/only-head"))
      assert.are.equal(200, r.status)
      assert.are.equal("yes", r.headers["x-head-only"])
      r = assert(http.get(srv.port, "/only-head"))
      assert.are.equal(405, r.status)
    end)

    it("answers 404 {\"error\":\"not found\"} when no route matches", function()
      local j = get_json("/no/such/route", 404)
      assert.are.same({ error = "not found" }, j)
    end)
  end)

  it("loads every routes/*.lua file", function()
    local r = assert(http.get(srv.port, "/second-file"))
    assert.are.equal(200, r.status)
    assert.are.equal("second file", r.body)
  end)

  it("takes a handler given as a Lua function", function()
    local r = assert(http.get(srv.port, "/inline"))
    assert.are.equal(200, r.status)
    assert.are.equal("inline handler", r.body)
  end)

  describe("a route file that cannot load", function()
    local cases = {
      { "bad_duplicate", "routes/dup.lua:3:", "the same route twice" },
      { "bad_param_names", "routes/names.lua:4:", "two parameter names at one position" },
      { "bad_pattern", "routes/pattern.lua:3:", "a malformed pattern" },
      { "bad_catchall", "routes/catchall.lua:2:", "a catch-all that is not the last segment" },
    }
    for _, case in ipairs(cases) do
      local dir, where, what = case[1], case[2], case[3]
      it("stops the load with " .. where .. " for " .. what .. ", and the server exits non-zero", function()
        local bad = S.start{ app = S.fixtures .. "/" .. dir, wait = false }
        finally(function() bad:stop({ timeout = 3 }) end)
        local e = bad:wait_exit(10)
        local logs = bad:error_log() .. "\n" .. bad:output()
        assert.truthy(logs:find(where, 1, true), ("no %q in the logs:\n%s"):format(where, logs))
        assert(e, "the server kept running with a route file that does not load:\n" .. logs)
        assert.is_true(e.code ~= nil and e.code ~= 0, "exit: " .. sys.describe_exit(e))
      end)
    end
  end)
end)
