-- Least privilege (--user): started as root, the master stays root and the workers, which run the
-- scripts, switch to the unprivileged user (nobody/nogroup by default), checked in
-- /proc/<pid>/status; the data directory and the store become theirs. A path that user cannot use,
-- or a --user that does not exist, is refused at start with a message naming it and the fix.
-- The app and the framework's Lua modules are copied under a fresh world-readable temporary
-- directory, so that the spec proves the switch whatever the permissions of the checkout.
-- Needs root; pending otherwise.
local spec_root = debug.getinfo(1, "S").source:match("^@(.*)/integration/[^/]+$")
if spec_root then package.path = spec_root .. "/?.lua;" .. package.path end
local S = require "support.server"
local http = S.http
local sys = S.sys

local function id_of(flag, name) -- `id -u nobody`
  local p = io.popen(("id %s %s 2>/dev/null"):format(flag, name))
  local v = tonumber(p:read("*l") or "")
  p:close()
  return v
end

local function group_id(name)
  local p = io.popen("getent group " .. name)
  local line = p:read("*l") or ""
  p:close()
  return tonumber(line:match("^[^:]*:[^:]*:(%d+)"))
end

-- The four ids of a "Uid:" or "Gid:" line of /proc/<pid>/status (real, effective, saved, fs).
local function ids(pid, what)
  local status = assert(sys.read_all("/proc/" .. pid .. "/status"), "no /proc/" .. pid)
  local a, b, c, d = status:match("\n" .. what .. ":%s*(%d+)%s+(%d+)%s+(%d+)%s+(%d+)")
  return { tonumber(a), tonumber(b), tonumber(c), tonumber(d) }
end

local function owner(path)
  local p = io.popen(("stat -c %%u %q"):format(path))
  local v = tonumber(p:read("*l") or "")
  p:close()
  return v
end

-- A world-readable copy of the fixture app and of the Lua half: { dir, app, lua }.
local function readable_copy()
  local dir = sys.mkdtemp("/tmp/triage-privilege-")
  sys.chmod(dir, tonumber("755", 8))
  assert(os.execute(("cp -r %q %q/app && cp -r %q %q/lua && chmod -R a+rX %q"):format(
    S.fixture_app, dir, S.root .. "/core/lua", dir, dir)) == 0)
  return { dir = dir, app = dir .. "/app", lua = dir .. "/lua" }
end

local function refused_start(opts, needles)
  local srv = S.start(opts)
  local e = srv:wait_exit(15)
  srv:stop({ timeout = 3 })
  assert(e, "the server started: " .. table.concat(srv.argv, " "))
  assert.is_true(e.code ~= nil and e.code ~= 0, sys.describe_exit(e))
  local said = srv:error_log() .. srv:output()
  for _, needle in ipairs(needles) do
    assert.truthy(said:find(needle, 1, true), ("no %q in what the server said:\n%s"):format(needle, said))
  end
  return said
end

local describe_root = sys.is_root() and describe or pending

describe_root("least privilege (--user)", function()
  local copy
  local nobody, nogroup = id_of("-u", S.WORKER_USER), group_id(S.WORKER_GROUP)

  setup(function() copy = readable_copy() end)
  teardown(function()
    S.stop_all()
    os.execute(("rm -rf %q"):format(copy.dir))
  end)

  it("started as root without --user: the workers run as nobody/nogroup, the master stays root", function()
    assert(nobody and nogroup, "no nobody/nogroup on this system")
    local srv = S.start { app = copy.app, workers = 2, user = false, args = { "--lua-dir", copy.lua } }
    finally(function() srv:stop() end)
    local r = assert(http.get(srv.port, "/hello"))
    assert.are.equal(200, r.status, http.quote(r.body))
    local pids = assert(srv:worker_pids())
    local n = 0
    for _, pid in pairs(pids) do
      n = n + 1
      assert.are.same({ nobody, nobody, nobody, nobody }, ids(pid, "Uid"))
      assert.are.same({ nogroup, nogroup, nogroup, nogroup }, ids(pid, "Gid"))
      local groups = sys.read_all("/proc/" .. pid .. "/status"):match("\nGroups:([^\n]*)")
      assert.is_nil((" " .. groups .. " "):find("%s0%s"), "the worker kept group root: " .. groups)
    end
    assert.are.equal(2, n)
    assert.are.same({ 0, 0, 0, 0 }, ids(srv.pid, "Uid"))
    -- the store is the workers'; its directory stays root's (group-writable, sticky), so that the
    -- workers cannot replace the admin token beside it, which they cannot read either
    assert.are.equal(0, owner(srv.data))
    assert.are.equal(nobody, owner(srv.data .. "/triage.db"))
    assert.are.equal(0, owner(srv.data .. "/admin.token"))
    local rc = os.execute(("setpriv --reuid=nobody --regid=nogroup --clear-groups cat %q/admin.token >/dev/null 2>&1")
      :format(srv.data))
    assert.is_not.equal(0, rc == true and 0 or rc)
    rc = os.execute(("setpriv --reuid=nobody --regid=nogroup --init-groups rm -f %q/admin.token 2>/dev/null"):format(srv.data))
    assert.is_truthy(sys.read_all(srv.data .. "/admin.token"), "the workers' user removed the admin token")
    assert.truthy(srv:error_log():find("with 2 workers (user nobody)", 1, true), srv:error_log())
  end)

  it("the app's code never runs as root: the preflight loads it as nobody too", function()
    -- a route file that records, each time the app is loaded, the user loading it
    local marks = copy.dir .. "/marks"
    assert(os.execute(("mkdir -m 777 %q"):format(marks)) == 0)
    local f = assert(io.open(copy.app .. "/routes/zz_who.lua", "w"))
    f:write([[
allow { "io.popen", "io.open" }
local p = io.popen("id -u")
local uid = p:read("*l")
p:close()
local out = io.open(os.getenv("TRIAGE_SPEC_MARKS") .. "/loads", "a")
out:write(uid, "\n")
out:close()
]])
    f:close()
    local srv = S.start { app = copy.app, workers = 2, user = false, args = { "--lua-dir", copy.lua },
      env = { TRIAGE_SPEC_MARKS = marks } }
    finally(function()
      srv:stop()
      os.remove(copy.app .. "/routes/zz_who.lua")
    end)
    local loads = assert(sys.read_all(marks .. "/loads"))
    local n = 0
    for uid in loads:gmatch("[^\n]+") do
      n = n + 1
      assert.are.equal(tostring(nobody), uid, "the app was loaded as uid " .. uid)
    end
    assert.is_true(n >= 3, "expected the preflight's load and one per worker, got " .. n)
  end)

  it("--user root keeps the workers root, with a warning at start", function()
    local srv = S.start { app = copy.app, workers = 1, user = "root", args = { "--lua-dir", copy.lua } }
    finally(function() srv:stop() end)
    local pid = assert(srv:worker_pids())[0]
    assert.are.same({ 0, 0, 0, 0 }, ids(pid, "Uid"))
    assert.truthy(srv:error_log():find("warning: --user root: the workers and the application's scripts run as root",
      1, true), srv:error_log())
  end)

  it("refuses a --user that does not exist", function()
    refused_start({ app = copy.app, user = "no-such-user-for-triage", wait = false },
      { "--user no-such-user-for-triage: no such user" })
  end)

  describe("refuses a path the workers' user cannot use, naming it and the fix", function()
    local hidden
    setup(function()
      hidden = sys.mkdtemp("/tmp/triage-privilege-hidden-") -- 0700: nobody cannot enter it
      assert(os.execute(("cp -r %q %q/app && cp -r %q %q/lua"):format(S.fixture_app, hidden, S.root .. "/core/lua",
        hidden)) == 0)
    end)
    teardown(function() os.execute(("rm -rf %q"):format(hidden)) end)

    it("the app directory", function()
      refused_start({ app = hidden .. "/app", user = false, wait = false, args = { "--lua-dir", copy.lua } },
        { "cannot start: the workers run as user 'nobody'", "the app directory (--app) " .. hidden .. "/app",
          "--user NAME" })
    end)

    it("the framework's Lua modules", function()
      refused_start({ app = copy.app, user = false, wait = false, args = { "--lua-dir", hidden .. "/lua" } },
        { "the framework's Lua modules (--lua-dir) " .. hidden .. "/lua/triage/app.lua", "--user NAME" })
    end)

    it("the data directory", function()
      refused_start({ app = copy.app, user = false, wait = false, data = hidden .. "/data",
        args = { "--lua-dir", copy.lua } },
        { "cannot write to the data directory (--data) " .. hidden .. "/data", "--user NAME" })
    end)
  end)
end)
