-- The ctx API and the route loader, in process.
local testing = require "triage.testing"

describe("ctx", function()
  local app
  setup(function() app = testing.app("spec/fixtures/ctx_app") end)

  it("reads method, path, params, query and headers", function()
    local res = app:request { path = "/echo/J%C3%BCrgen%20K?q=a%26b&flag&plus=x+y", headers = { ["X-Agent"] = "spec" } }
    assert.equals(200, res.status)
    local j = res:json()
    assert.equals("GET", j.method)
    assert.equals("/echo/J%C3%BCrgen%20K", j.path)
    assert.equals("Jürgen K", j.name)
    assert.is_nil(j.missing)
    assert.equals("a&b", j.q)
    assert.equals("", j.flag)
    assert.equals("x y", j.plus)
    assert.equals("q=a%26b&flag&plus=x+y", j.qs)
    assert.equals("spec", j.agent)
    assert.equals("spec", j.agent_upper)
    assert.equals("spec", j.all["x-agent"])
  end)

  it("prefers static over catch-all routes", function()
    assert.equals("static", app:request("/files/static").body)
    assert.equals("rest=a/b/c", app:request("/files/a/b/c").body)
  end)

  it("reads the body any number of times and decodes JSON without raising", function()
    local res = app:request { method = "POST", path = "/body", body = "{oops" }
    local j = res:json()
    assert.is_true(j.same)
    assert.equals(5, j.len)
    assert.is_false(j.decoded)
    assert.matches("^invalid JSON", j.err)
    j = app:request({ method = "POST", path = "/body", body = '{"a":1}' }):json()
    assert.is_true(j.decoded)
  end)

  it("refuses a ctx used after its request finished", function()
    assert.equals("kept", app:request("/keep").body)
    local j = app:request("/stale"):json()
    assert.is_false(j.ok)
    assert.matches("ctx used after its request finished", j.err)
  end)

  it("turns a handler error into 500 JSON with the request id, dropping headers it set", function()
    local res = app:request "/boom"
    assert.equals(500, res.status)
    local j = res:json()
    assert.equals("internal server error", j.error)
    assert.equals(res.headers["x-request-id"], j.requestId)
    assert.is_nil(res.headers["x-before"])
  end)

  it("refuses header injection and server-managed headers", function()
    local j = app:request("/bad-header"):json()
    -- Each refusal raises its own reason, naming the header.
    assert.is_false(j.crlf)
    assert.matches("ctx:set_header('X-Evil'): invalid header value (CR, LF or NUL", j.crlf_err, 1, true)
    assert.is_false(j.managed)
    assert.matches("ctx:set_header('Content-Length'): this header is set by the server", j.managed_err, 1, true)
    assert.is_false(j.name)
    assert.matches("ctx:set_header('Bad Name'): invalid header name", j.name_err, 1, true)
    assert.is_false(j.big)
    assert.matches("ctx:set_header('X-Big'): response headers would exceed 65536 bytes", j.big_err, 1, true)
  end)

  it("gives the core's own answer to a request it refuses, as a client gets it", function()
    local res = app:request { method = "POST", path = "/body", body = string.rep("x", 2 * 1024 * 1024) }
    assert.equals(413, res.status)
    assert.equals("413 Content Too Large", res.error)
    assert.equals("close", res.headers["connection"])
    assert.equals("content too large", res:json().error)
  end)

  it("refuses an impossible status", function()
    assert.equals(500, app:request("/bad-status").status)
  end)

  it("runs middleware as an onion", function()
    local res = app:request "/inner/order"
    assert.equals("ok", res.body)
    assert.equals("outer>,inner>,handler,<inner,<outer", res.headers["x-trail"])
  end)

  it("lets a middleware end the request without calling next", function()
    local res = app:request "/inner/order?stop=1"
    assert.equals(401, res.status)
    assert.equals("outer>,inner>,<inner,<outer", res.headers["x-trail"])
  end)

  it("runs global middleware for 404 and 405 too", function()
    local res = app:request "/nowhere"
    assert.equals(404, res.status)
    assert.equals("outer>,<outer", res.headers["x-trail"])
    res = app:request { method = "DELETE", path = "/keep" }
    assert.equals(405, res.status)
    assert.equals("GET, HEAD", res.headers["allow"])
  end)

  it("answers HEAD on GET routes without a body", function()
    local res = app:request { method = "HEAD", path = "/files/static" }
    assert.equals(200, res.status)
    assert.equals("6", res.headers["content-length"])
    assert.equals("", res.body)
  end)
end)

describe("route loading", function()
  local function load_error(dir)
    local ok, err = pcall(testing.app, "spec/fixtures/broken/" .. dir)
    assert.is_false(ok, dir .. " should not load")
    return tostring(err)
  end

  it("names the file and line of a conflicting route", function()
    local err = load_error("conflict")
    assert.matches("routes/r%.lua:2:", err)
    assert.matches("conflicts", err)
  end)

  it("names the file and line of a syntax error", function()
    assert.matches("routes/r%.lua:2:", load_error("syntax"))
  end)

  it("names a handler that does not exist", function()
    local err = load_error("missing")
    assert.matches("routes/r%.lua:2:", err)
    assert.matches("no function 'nothere'", err)
  end)

  it("refuses a malformed pattern", function()
    local err = load_error("pattern")
    assert.matches("routes/r%.lua:1:", err)
    assert.matches("catch%-all", err)
  end)

  it("reports an error thrown while a script loads", function()
    local err = load_error("throws")
    assert.matches("cannot connect to the reference database", err)
    assert.matches("scripts/t%.lua:1", err)
  end)
end)
