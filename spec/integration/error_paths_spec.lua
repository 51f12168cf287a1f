-- Errors name the application's own files: a handler or middleware that fails gives 500, and its
-- error log entry reads `scripts/<file>.lua:<line>` (message and traceback), never the path of the
-- generation's code snapshot under $TMPDIR (`.../triage-code-XXXXXX/<generation>/scripts/...`);
-- the traceback holds the frame of the handler itself. Fixture: spec/fixtures/error_app/.
local spec_root = debug.getinfo(1, "S").source:match("^@(.*)/integration/[^/]+$")
if spec_root then package.path = spec_root .. "/?.lua;" .. package.path end
local S = require "support.server"
local http = S.http
local sys = S.sys

local FIXTURE = S.fixtures .. "/error_app"

local function read_file(path)
  local f = assert(io.open(path, "rb"))
  local s = f:read("*a")
  f:close()
  return s
end

local function write_file(path, text) -- as editors do: a temporary file renamed over
  local tmp = path .. ".tmp~"
  local f = assert(io.open(tmp, "wb"))
  f:write(text)
  f:close()
  assert(os.rename(tmp, path))
end

-- The line of `scripts/<file>` (under app) marked "@line <mark>".
local function line_of(app, file, mark)
  local n = 0
  for line in (read_file(app .. "/" .. file) .. "\n"):gmatch("([^\n]*)\n") do
    n = n + 1
    if line:find("@line " .. mark, 1, true) then return n end
  end
  error(("no '@line %s' in %s"):format(mark, file))
end

-- The error log entry of request `id`: its line and the traceback lines after it, up to the next
-- log line.
local function entry(srv, id)
  local needle = "request " .. id .. ":"
  local log = S.eventually(3, function()
    local l = srv:error_log()
    return l:find(needle, 1, true) and l
  end)
  if not log then return nil end
  local i = log:find(needle, 1, true)
  local j = log:find("\n%d%d%d%d%-%d%d%-%d%d %d", i)
  return log:sub(i, j and j - 1 or -1)
end

local function no_snapshot_paths(text, what)
  for line in text:gmatch("[^\n]+") do
    assert.is_nil(line:find("triage-code-", 1, true), what .. " names the code snapshot:\n" .. line)
  end
end

-- GET path must answer 500 and log `failed: <at>: ...` with a traceback holding each of `frames`
-- ("scripts/x.lua:N"). Returns the log entry.
local function fails_at(srv, path, at, frames)
  local r = assert(http.get(srv.port, path))
  assert.are.equal(500, r.status, path .. ": " .. http.quote(r.body))
  local j = assert(http.json(r))
  assert.are.equal("internal server error", j.error)
  assert.are.equal("string", type(j.requestId))
  local e = entry(srv, j.requestId)
  assert(e, "request " .. j.requestId .. " not in the error log:\n" .. srv:error_log())
  local head = ("request %s: GET %s failed: %s: "):format(j.requestId, path, at)
  assert.are.equal(1, e:find(head, 1, true), ("the entry does not begin with %q:\n%s"):format(head, e))
  no_snapshot_paths(e, "the entry")
  local tb = e:match("\nstack traceback:\n(.*)$")
  assert(tb, "no traceback in the entry:\n" .. e)
  for _, frame in ipairs(frames) do
    assert.truthy(("\n" .. tb):find("\n\t" .. frame .. ": in ", 1, true),
      ("no frame %s in the traceback:\n%s"):format(frame, e))
  end
  return e
end

local function at(app, file, mark)
  return ("%s:%d"):format(file, line_of(app, file, mark))
end

describe("error paths", function()
  describe("a handler or middleware that fails", function()
    local srv

    setup(function()
      srv = S.start { app = FIXTURE, workers = 2 }
    end)

    teardown(function()
      S.stop_all()
    end)

    it("error() in a handler: scripts/gad7.lua:N in the message and as the handler's frame", function()
      local here = at(FIXTURE, "scripts/gad7.lua", "plain")
      local e = fails_at(srv, "/plain", here, { here })
      assert.truthy(e:find("gad7: fixture failure", 1, true), e)
    end)

    it("a runtime error in a handler (indexing nil): the handler's own frame is in the traceback", function()
      local here = at(FIXTURE, "scripts/gad7.lua", "nil_index")
      local e = fails_at(srv, "/nil-index", here, { here })
      assert.truthy(e:find("attempt to index", 1, true), e)
    end)

    it("a runtime error in a function the handler calls: the helper's frame and the handler's", function()
      local helper = at(FIXTURE, "scripts/gad7.lua", "total")
      local handler = at(FIXTURE, "scripts/gad7.lua", "via_helper")
      local e = fails_at(srv, "/helper", helper, { helper, handler })
      assert.truthy(e:find("arithmetic", 1, true), e)
    end)

    it("a runtime error in a middleware: the middleware's frame", function()
      local here = at(FIXTURE, "scripts/guard.lua", "check")
      fails_at(srv, "/guarded/x", here, { here })
    end)

    it("a module loaded from scripts/<name>/init.lua: scripts/scales/init.lua:N", function()
      local here = at(FIXTURE, "scripts/scales/init.lua", "score")
      fails_at(srv, "/nested", here, { here })
    end)

    it("a syntax error in a module required at request time names scripts/lazy_broken.lua:N", function()
      local caller = at(FIXTURE, "scripts/gad7.lua", "lazy_syntax")
      local r = assert(http.get(srv.port, "/lazy-syntax"))
      assert.are.equal(500, r.status)
      local j = assert(http.json(r))
      local e = assert(entry(srv, j.requestId), srv:error_log())
      local broken = at(FIXTURE, "scripts/lazy_broken.lua", "syntax")
      assert.truthy(e:find("from file 'scripts/lazy_broken.lua'", 1, true), e)
      assert.truthy(e:find("\t" .. broken .. ": ", 1, true), "no " .. broken .. ": in\n" .. e)
      assert.truthy(e:find("\n\t" .. caller .. ": in ", 1, true), "no frame " .. caller .. " in\n" .. e)
      no_snapshot_paths(e, "the entry")
    end)

    it("a module required at request time that does not exist: the paths tried are relative", function()
      local caller = at(FIXTURE, "scripts/gad7.lua", "lazy_missing")
      local e = fails_at(srv, "/lazy-missing", caller, { caller })
      assert.truthy(e:find("module 'no_such_module' not found", 1, true), e)
      assert.truthy(e:find("no file 'scripts/no_such_module.lua'", 1, true), e)
    end)

    it("loads the app's modules and route files with chunk names relative to the app", function()
      local r = assert(http.get(srv.port, "/sources"))
      assert.are.equal(200, r.status, http.quote(r.body))
      assert.are.same({ gad7 = "@scripts/gad7.lua", guard = "@scripts/guard.lua",
        scales = "@scripts/scales/init.lua" }, assert(http.json(r)))
      r = assert(http.get(srv.port, "/inline"))
      assert.are.equal(200, r.status, http.quote(r.body))
      assert.are.same({ source = "@routes/errors.lua" }, assert(http.json(r)))
    end)

    it("no line of the error log names the code snapshot", function()
      for _, path in ipairs { "/plain", "/nil-index", "/helper", "/guarded/x", "/nested", "/lazy-syntax", "/lazy-missing" } do
        local r = assert(http.get(srv.port, path))
        assert.are.equal(500, r.status, path)
        assert(entry(srv, assert(http.json(r)).requestId), "no entry for " .. path)
      end
      no_snapshot_paths(srv:error_log(), "the error log")
      no_snapshot_paths(srv:output(), "the server's output")
    end)
  end)

  describe("after a reload", function()
    local srv, app

    before_each(function()
      app = sys.mkdtemp("/tmp/triage-errors-")
      assert(os.execute(("cp -r %q/routes %q/scripts %q/"):format(FIXTURE, FIXTURE, app)) == 0)
      srv = S.start { app = app, workers = 2 }
    end)

    after_each(function()
      if srv then srv:stop() end
      os.execute(("rm -rf %q"):format(app))
    end)

    it("an error in the new generation still names scripts/gad7.lua:N (edit, then SIGHUP)", function()
      local gad7 = app .. "/scripts/gad7.lua"
      local before = at(app, "scripts/gad7.lua", "nil_index")
      fails_at(srv, "/nil-index", before, { before })

      -- two lines more at the top: the new generation fails two lines further down
      write_file(gad7, "-- edited\n-- edited\n" .. read_file(gad7))
      local after = at(app, "scripts/gad7.lua", "nil_index")
      assert.are_not.equal(before, after)
      assert.is_truthy(srv:wait_generation(2), "the edit did not go live:\n" .. srv:logs())
      local e = fails_at(srv, "/nil-index", after, { after })
      assert.is_nil(e:find("/2/scripts", 1, true), e)
      local helper = at(app, "scripts/gad7.lua", "total")
      fails_at(srv, "/helper", helper, { helper, at(app, "scripts/gad7.lua", "via_helper") })

      assert.is_true(srv:signal(sys.SIGHUP))
      assert.is_truthy(srv:wait_generation(3), "SIGHUP did not reload:\n" .. srv:logs())
      e = fails_at(srv, "/nil-index", after, { after })
      assert.is_nil(e:find("/3/scripts", 1, true), e)
      local mw = at(app, "scripts/guard.lua", "check")
      fails_at(srv, "/guarded/x", mw, { mw })

      no_snapshot_paths(srv:error_log(), "the error log")
    end)

    it("a refused save names scripts/gad7.lua:N in status, not the snapshot", function()
      local gad7 = app .. "/scripts/gad7.lua"
      write_file(gad7, read_file(gad7) .. "\nlocal broken = = 1\n")
      local st = S.eventually(5, function()
        local s = srv:status()
        return s and type(s.reload.last_error) == "string" and s
      end)
      assert.is_truthy(st, "no reload error in status:\n" .. srv:logs())
      assert.matches("scripts/gad7%.lua:%d+:", st.reload.last_error)
      no_snapshot_paths(st.reload.last_error, "status' reload.last_error")
      no_snapshot_paths(srv:error_log(), "the error log")
    end)
  end)
end)
