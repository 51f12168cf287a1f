-- The analysts' guide (docs/analysts.md) runs as written: its files (the fenced blocks whose first
-- line names one, `-- scripts/gad2.lua`) make a new app, which `triage check` passes, whose own spec
-- passes under busted against a temporary database, and which a server serves; the outputs the
-- guide shows for `triage check` with slips and for a rejected reload are the ones printed.
local server = require "support.server"
local http = require "support.http"
local sys = require "support.sys"
local cjson = require "cjson"

local GUIDE = server.root .. "/docs/analysts.md"

local function shq(s)
  return "'" .. tostring(s):gsub("'", "'\\''") .. "'"
end

local function run(cmd)
  local p = assert(io.popen("(" .. cmd .. ") 2>&1; echo \"__rc=$?\""))
  local out = p:read("*a")
  p:close()
  return tonumber(out:match("__rc=(%d+)%s*$")), (out:gsub("__rc=%d+%s*$", ""))
end

local function read(path)
  return assert(sys.read_all(path), "cannot read " .. path)
end

local function write(path, text)
  assert(os.execute("mkdir -p " .. shq(path:match("^(.*)/[^/]+$"))) == 0)
  local f = assert(io.open(path, "wb"))
  f:write(text)
  f:close()
end

-- The guide's files: { ["scripts/gad2.lua"] = text, ... }, in the order they appear.
local function guide_files(text)
  local files, order = {}, {}
  for body in text:gmatch("\n```%a+\n(.-)\n```") do
    local path = body:match("^%-%- ([%w_/]+%.%a+)\n")
    if path then
      files[path] = body .. "\n"
      order[#order + 1] = path
    end
  end
  return files, order
end

-- The indented block (4 spaces) that starts with `first` and contains `containing`, as lines.
local function shown(text, first, containing)
  for block in (text .. "\n\n"):gmatch("\n\n(    .-)\n\n") do
    local lines = {}
    for line in (block .. "\n"):gmatch("    ([^\n]*)\n") do
      lines[#lines + 1] = line
    end
    if lines[1] == first and block:find(containing, 1, true) then
      return lines
    end
  end
  error(("the guide shows no block starting %q containing %q"):format(first, containing))
end

describe("the analysts' guide", function()
  local text = read(GUIDE)
  local files, order = guide_files(text)
  local app, user

  setup(function()
    app = sys.realpath(sys.mkdtemp("/tmp/triage-guide-"))
    for path, body in pairs(files) do
      write(app .. "/" .. path, body)
    end
    -- the Lua path of this checkout for the app's specs (what a .busted file or the rock's tree gives)
    local lua = server.root .. "/core/lua"
    write(app .. "/.busted", ("return { _all = { lpath = %q } }\n"):format(lua .. "/?.lua;" .. lua .. "/?/init.lua"))
    user = (sys.is_root() and not server.unprivileged_can("-r", app .. "/routes")) and " --user root" or ""
  end)

  teardown(function()
    server.stop_all()
    if app then os.execute("rm -rf " .. shq(app)) end
  end)

  local function check()
    return run(("cd /tmp && %s check --app %s%s"):format(shq(server.bin), shq(app), user))
  end

  it("has a scoring module, its migration, its routes and its spec", function()
    assert.same({ "scripts/gad2.lua", "migrations/001_gad2_scores.sql", "routes/gad2.lua", "spec/gad2_spec.lua" },
      order)
  end)

  it("passes triage check", function()
    local rc, out = check()
    assert.equals(0, rc, out)
    assert.equals("triage check: " .. app .. ": 2 routes, no problems\n", out)
  end)

  it("has a spec that passes against a temporary database", function()
    -- A sanitizer build's test library needs its runtimes first in an uninstrumented luajit.
    local preload = {}
    local test_lib = os.getenv("TRIAGE_TEST_LIB")
    if test_lib and test_lib ~= "" then
      local _, deps = run("ldd " .. shq(test_lib))
      for _, rt in ipairs { "libasan", "libubsan" } do
        preload[#preload + 1] = deps:match("=>%s*(%S*/" .. rt .. "%.so[^%s]*)")
      end
    end
    local env = #preload == 0 and "" or
      ("LD_PRELOAD=%s ASAN_OPTIONS=\"${ASAN_OPTIONS:+$ASAN_OPTIONS:}detect_leaks=0\" "):format(shq(table.concat(preload, ":")))
    local rc, out = run(("cd %s && %senv -u TRIAGE_LUA_DIR busted --lua=luajit -o plainTerminal spec"):format(shq(app), env))
    assert.equals(0, rc, out)
    assert.matches("4 successes / 0 failures / 0 errors", out)
    assert.is_nil(sys.read_all(app .. "/data/triage.db"), "the spec wrote to the app's own data directory")
  end)

  it("is served, and shows what triage check and a rejected reload print", function()
    local srv = server.start { app = app, workers = 1, args = { "--no-watch" } }
    finally(function()
      srv:stop()
      write(app .. "/routes/gad2.lua", files["routes/gad2.lua"])
      write(app .. "/scripts/gad2.lua", files["scripts/gad2.lua"])
      os.remove(app .. "/scripts/notes.lua")
    end)
    local r = assert(http.post(srv.port, "/api/gad2", cjson.encode { patientId = "P-7", answers = { nervous = 1,
      worrying = 3 } }, { headers = { ["Content-Type"] = "application/json" } }))
    assert.equals(201, r.status, r.body)
    r = assert(http.get(srv.port, "/api/gad2/P-7"))
    assert.equals(200, r.status, r.body)
    assert.equals(4, cjson.decode(r.body).total)

    -- the guide's three slips
    write(app .. "/routes/gad2.lua", (files["routes/gad2.lua"]:gsub("gad2%.latest", "gad2.lastest")))
    local scorer, n = files["scripts/gad2.lua"]:gsub("total = total %+ v", "total = totl + v")
    assert.equals(1, n)
    write(app .. "/scripts/gad2.lua", scorer)
    write(app .. "/scripts/notes.lua", "local M = {}\n\nfunction M.note(ctx)\n  return ctx:json { a = }\nend\n\nreturn M\n")
    local rc, out = check()
    assert.equals(1, rc, out)
    local want = shown(text, "$ triage check --app .", "problems in")
    local got = { "$ triage check --app ." }
    for line in out:gmatch("[^\n]+") do
      got[#got + 1] = (line:gsub(app:gsub("%p", "%%%0"), "/srv/app"))
    end
    assert.same(want, got)

    rc, out = run(("%s reload --admin 127.0.0.1:%d --data %s"):format(shq(server.bin), srv.admin_port, shq(srv.data)))
    assert.equals(1, rc, out)
    want = shown(text, "$ triage reload --data data", "REJECTED")
    assert.same({ want[2], want[3] }, { out:match("^([^\n]*)\n([^\n]*)") })
    assert.matches("^    ", want[3]) -- (indented under its heading, as printed)
  end)
end)
