-- `triage check`: loads an app as the server's preflight does, without a data directory, and prints
-- every problem as FILE:LINE: message (paths relative to the app), exiting 1; a clean app exits 0
-- with a one-line summary. Fixture with one problem of each kind: spec/fixtures/check_app/.
local spec_root = debug.getinfo(1, "S").source:match("^@(.*)/integration/[^/]+$")
if spec_root then package.path = spec_root .. "/?.lua;" .. package.path end
local S = require "support.server"
local sys = S.sys

local function shq(s)
  return "'" .. tostring(s):gsub("'", "'\\''") .. "'"
end

-- Run a command; returns its exit status, its standard output and its standard error.
local function run(cmd)
  local errfile = os.tmpname()
  local p = assert(io.popen("(" .. cmd .. ") 2>" .. shq(errfile) .. "; echo \"__rc=$?\""))
  local out = p:read("*a")
  p:close()
  local err = sys.read_all(errfile) or ""
  os.remove(errfile)
  local rc = tonumber(out:match("__rc=(%d+)%s*$"))
  return rc, (out:gsub("__rc=%d+%s*$", "")), err
end

-- `triage check` of app, as root with --user root where nobody cannot read the app (as the other
-- specs start their servers; the switch itself is tested below).
local function check(app, extra)
  local user = ""
  if sys.is_root() and not S.unprivileged_can("-r", app .. "/routes") then
    user = " --user root"
  end
  return run(("cd /tmp && %s check --app %s%s %s"):format(shq(S.bin), shq(app), user, extra or ""))
end

local function lines(s)
  local t = {}
  for line in s:gmatch("[^\n]+") do
    t[#t + 1] = line
  end
  return t
end

describe("triage check", function()
  it("exits 0 with a one-line summary on a clean app, without a data directory", function()
    local cwd = sys.mkdtemp("/tmp/triage-check-cwd-")
    local rc, out, err = run(("cd %s && %s check --app %s%s"):format(shq(cwd), shq(S.bin), shq(S.fixtures .. "/ctx_app"),
      (sys.is_root() and not S.unprivileged_can("-r", S.fixtures .. "/ctx_app/routes")) and " --user root" or ""))
    assert.equals(0, rc, out .. err)
    assert.same({ "triage check: " .. sys.realpath(S.fixtures .. "/ctx_app") .. ": 10 routes, no problems" }, lines(out))
    assert.equals("", err)
    assert.is_nil(sys.read_all(cwd .. "/data/triage.db"), "check made a store")
    os.execute("rm -rf " .. shq(cwd))
  end)

  it("passes the sample app", function()
    local rc, out, err = check(S.root)
    assert.equals(0, rc, out .. err)
    assert.matches("^triage check: .*: %d+ routes, no problems\n$", out)
  end)

  it("prints every problem as FILE:LINE: message and exits 1", function()
    local rc, out, err = check(S.fixtures .. "/check_app")
    assert.equals(1, rc, out .. err)
    assert.same({
      -- a syntax error, once, though a route names the module
      "scripts/broken.lua:4: unexpected symbol near '}'",
      -- a missing handler module
      "routes/api.lua:2: 'nosuch.handler': module 'nosuch' not found: no file 'scripts/nosuch.lua', "
        .. "'scripts/nosuch/init.lua', nor on package.path",
      -- a missing function
      "routes/api.lua:3: 'good.nosuch': module 'good' has no function 'nosuch'",
      -- a bad route pattern
      "routes/api.lua:4: pattern '/bad/:': parameter ':' needs a name of letters, digits or _",
      -- a missing middleware function
      "routes/api.lua:5: 'good.nomiddleware': module 'good' has no function 'nomiddleware'",
      -- an error raised while a route file loads
      "routes/throws.lua:2: stop here",
      -- a global assigned at load
      "scripts/good.lua:3: global 'counter' assigned while the app loads (shared by every request); declare "
        .. "it with local",
      -- an undeclared global a handler would read
      "scripts/good.lua:6: read of undeclared global 'cuont' in a function: it raises when the function runs; "
        .. "declare it with local",
    }, lines(out))
    assert.equals("triage check: 8 problems in " .. sys.realpath(S.fixtures .. "/check_app") .. "\n", err)
  end)

  it("reports a conflicting route and a pattern error of the fixtures the server refuses", function()
    local rc, out = check(S.fixtures .. "/bad_duplicate")
    assert.equals(1, rc)
    assert.equals("routes/dup.lua:3: GET /dup/:id conflicts with the route GET /dup/:id declared before\n", out)
    rc, out = check(S.fixtures .. "/bad_catchall")
    assert.equals(1, rc)
    assert.matches("^routes/catchall%.lua:2: pattern '/files/%*rest/more'", out)
  end)

  it("refuses an unknown flag with exit 2", function()
    local rc, _, err = check(S.fixtures .. "/ctx_app", "--no-such-flag")
    assert.equals(2, rc)
    assert.matches("no%-such%-flag", err)
  end)

  it("runs the app's code as the workers' user when started as root", function()
    if not sys.is_root() then
      pending("needs root")
      return
    end
    -- an app nobody cannot read: refused as the preflight refuses it, naming the user and --user
    local dir = sys.mkdtemp("/tmp/triage-check-private-")
    os.execute(("cp -R %s/routes %s/scripts %s/ && chmod 700 %s"):format(shq(S.fixtures .. "/ctx_app"),
      shq(S.fixtures .. "/ctx_app"), shq(dir), shq(dir)))
    local rc, out, err = run(("%s check --app %s"):format(shq(S.bin), shq(dir)))
    os.execute("rm -rf " .. shq(dir))
    assert.equals(2, rc, out .. err)
    assert.matches("user 'nobody'.*cannot read the app directory %(%-%-app%)", err)
  end)
end)
