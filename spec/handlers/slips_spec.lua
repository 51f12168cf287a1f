-- Common slips of a handler's author get errors that name the slip at the author's own line, in the
-- error log (standard error here) beside the 500 the client gets. Fixture: spec/fixtures/slips_app/.
local ffi = require "ffi"
local testing = require "triage.testing"

for _, decl in ipairs {
  "int dup(int oldfd);",
  "int dup2(int oldfd, int newfd);",
  "int close(int fd);",
  "int mkstemp(char *template);",
} do
  pcall(ffi.cdef, decl) -- already declared by another spec file: fine
end

-- Runs fn with file descriptor 2 sent to a temporary file. Returns fn's result and what was written.
local function capture_stderr(fn)
  local name = "/tmp/triage-stderr-XXXXXX"
  local template = ffi.new("char[?]", #name + 1, name)
  local fd = ffi.C.mkstemp(template)
  assert(fd >= 0, "mkstemp failed")
  local saved = ffi.C.dup(2)
  ffi.C.dup2(fd, 2)
  local ok, result = pcall(fn)
  ffi.C.dup2(saved, 2)
  ffi.C.close(saved)
  ffi.C.close(fd)
  local path = ffi.string(template)
  local f = assert(io.open(path, "rb"))
  local text = f:read("*a")
  f:close()
  os.remove(path)
  assert(ok, result)
  return result, text
end

describe("a handler's slip", function()
  local app
  setup(function() app = testing.app("spec/fixtures/slips_app") end)

  it("a ctx method called with '.' is named, at the caller's line", function()
    local res, log = capture_stderr(function() return app:request "/dot-status" end)
    assert.equals(500, res.status)
    assert.matches("failed: scripts/slips%.lua:9: ctx%.status called with '%.', use ctx:status%(%.%.%.%) "
      .. "%(got a number as the ctx%)", log)
    assert.not_matches("attempt to index", log)
  end)

  it("a ctx method called with '.' in a tail call names the handler it is in", function()
    -- `return ctx.json{...}` leaves no frame of its caller: the handler's first line is named
    local res, log = capture_stderr(function() return app:request "/dot" end)
    assert.equals(500, res.status)
    assert.matches("failed: scripts/slips%.lua:4: ctx%.json called with '%.', use ctx:json%(%.%.%.%) %(got a table "
      .. "as the ctx%) in `return ctx%.json %.%.%.` of this handler", log)
    assert.not_matches("attempt to index", log)
  end)

  it("a status given as a string says it wants a number", function()
    local res, log = capture_stderr(function() return app:request "/string-status" end)
    assert.equals(500, res.status)
    assert.matches('failed: scripts/slips%.lua:13: ctx:status wants a number, got the string "400": use '
      .. 'ctx:status%(400%)\n', log)
    -- in a tail call: the handler's first line
    res, log = capture_stderr(function() return app:request "/string-status-tail" end)
    assert.equals(500, res.status)
    assert.matches('failed: scripts/slips%.lua:45: ctx:status wants a number, got the string "201": use '
      .. 'ctx:status%(201%) in `return ctx:status %.%.%.` of this handler', log)
  end)

  it("a handler that sets no response answers 500 and the log names its route", function()
    local res, log = capture_stderr(function() return app:request "/silent" end)
    assert.equals(500, res.status)
    local j = res:json()
    assert.equals("the handler set no response", j.error)
    assert.equals(res.headers["x-request-id"], j.requestId)
    assert.matches("GET /silent: the handler of routes/slips%.lua:4 %(GET /silent%) returned without setting a "
      .. "response %(ctx:json, ctx:send, ctx:json_text or ctx:status%): answered 500", log)
    -- a status alone is a response
    assert.equals(204, app:request("/no-content").status)
  end)

  it("a JSON body that is not an object or an array is refused, not indexed", function()
    local res = app:request { method = "POST", path = "/body", body = "5" }
    assert.equals(400, res.status)
    assert.equals("invalid JSON: the body must be an object or an array, got a number (5)", res:json().error)
    res = app:request { method = "POST", path = "/body", body = "null" }
    assert.equals("invalid JSON: the body must be an object or an array, got null", res:json().error)
    res = app:request { method = "POST", path = "/body", body = '"x"' }
    assert.equals(400, res.status)
    res = app:request { method = "POST", path = "/body", body = '{"name":"a"}' }
    assert.equals(200, res.status)
    assert.equals("a", res:json().name)
  end)

  it("json_body(kind) asks for an array, or takes any value", function()
    local res = app:request { method = "POST", path = "/array", body = '{"a":1}' }
    assert.equals(400, res.status)
    assert.equals("invalid JSON: the body must be an array, got an object", res:json().error)
    assert.equals(2, app:request({ method = "POST", path = "/array", body = " [1,2]" }):json().n)
    assert.equals(5, app:request({ method = "POST", path = "/any", body = "5" }):json().value)
  end)
end)
