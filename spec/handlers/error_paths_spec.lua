-- Errors of handlers run in process (triage.testing) name the app's files as the server does:
-- `scripts/<file>.lua:<line>`, relative to the app, in the message and in the traceback written to
-- the error log (standard error here), with the handler's own frame. Fixture: spec/fixtures/error_app/.
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

local DIR = "spec/fixtures/error_app"

-- Runs fn with file descriptor 2 (the error log outside the server) sent to a temporary file.
-- Returns fn's result and what was written.
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

-- The line of DIR/<file> marked "@line <mark>", as "file:N".
local function at(file, mark)
  local n = 0
  for line in io.lines(DIR .. "/" .. file) do
    n = n + 1
    if line:find("@line " .. mark, 1, true) then
      return ("%s:%d"):format(file, n)
    end
  end
  error(("no '@line %s' in %s"):format(mark, file))
end

describe("error paths in process", function()
  local app, abs_dir

  setup(function()
    app = testing.app(DIR)
    abs_dir = app.dir
  end)

  -- GET path: 500, and the log says `GET <path> failed: <where>: ...` with each of frames in the
  -- traceback and no absolute path of the app.
  local function fails_at(path, where, frames)
    local res, log = capture_stderr(function()
      return app:request(path)
    end)
    assert.equals(500, res.status)
    local body = res:json()
    assert.equals("internal server error", body.error)
    assert.truthy(log:find(("request %s: GET %s failed: %s: "):format(body.requestId, path, where), 1, true),
      ("no 'GET %s failed: %s:' in the log:\n%s"):format(path, where, log))
    assert.is_nil(log:find(abs_dir .. "/", 1, true), "the log names the app by its absolute path:\n" .. log)
    local tb = log:match("\nstack traceback:\n(.*)$")
    assert(tb, "no traceback in the log:\n" .. log)
    for _, frame in ipairs(frames) do
      assert.truthy(("\n" .. tb):find("\n\t" .. frame .. ": in ", 1, true),
        ("no frame %s in the traceback:\n%s"):format(frame, log))
    end
    return log
  end

  it("error() in a handler names scripts/gad7.lua:N", function()
    local here = at("scripts/gad7.lua", "plain")
    fails_at("/plain", here, { here })
  end)

  it("a runtime error in a handler names scripts/gad7.lua:N, with the handler's frame", function()
    local here = at("scripts/gad7.lua", "nil_index")
    fails_at("/nil-index", here, { here })
  end)

  it("a runtime error in a helper: the helper's frame and the handler's", function()
    local helper = at("scripts/gad7.lua", "total")
    fails_at("/helper", helper, { helper, at("scripts/gad7.lua", "via_helper") })
  end)

  it("a runtime error in a middleware names scripts/guard.lua:N", function()
    local here = at("scripts/guard.lua", "check")
    fails_at("/guarded/x", here, { here })
  end)

  it("a syntax error in a module required by a handler names scripts/lazy_broken.lua:N", function()
    local res, log = capture_stderr(function()
      return app:request("/lazy-syntax")
    end)
    assert.equals(500, res.status)
    assert.truthy(log:find("from file 'scripts/lazy_broken.lua'", 1, true), log)
    assert.truthy(log:find("\t" .. at("scripts/lazy_broken.lua", "syntax") .. ": ", 1, true), log)
    assert.is_nil(log:find(abs_dir .. "/", 1, true), log)
  end)

  it("a module required by a handler that does not exist: the paths tried are relative", function()
    local caller = at("scripts/gad7.lua", "lazy_missing")
    local log = fails_at("/lazy-missing", caller, { caller })
    assert.truthy(log:find("no file 'scripts/no_such_module.lua'", 1, true), log)
  end)

  it("loads the app's modules and route files with chunk names relative to the app", function()
    assert.equals("@scripts/gad7.lua", debug.getinfo(require("gad7").plain, "S").source)
    assert.equals("@scripts/scales/init.lua", debug.getinfo(require("scales").score, "S").source)
    local ok, err = pcall(require("gad7").plain, nil)
    assert.is_false(ok)
    assert.equals(at("scripts/gad7.lua", "plain") .. ": gad7: fixture failure", err)
    local res = app:request("/inline")
    assert.equals(200, res.status)
    assert.same({ source = "@routes/errors.lua" }, res:json())
  end)
end)
