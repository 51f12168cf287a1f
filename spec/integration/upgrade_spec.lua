-- Binary upgrade, the server run from a copy of the binary in a temporary directory so
-- the file can be swapped, the sample app on a temporary --data, under a steady load of 50 slots
-- (keep-alive and new connections, 50 ms GETs and durable ePRO submissions):
-- - SIGUSR2, then `triage upgrade --data DIR`: zero failed requests and zero refused connections
--   (a keep-alive request that crossed the old worker's close of its idle connection is sent again,
--   as HTTP clients do, and counted), every acknowledged submission stored once; after each, the pid
--   file names a new master, the old one has exited 0, and the serving workers are its children;
-- - the binary replaced by a script that exits 1: `triage upgrade` fails (exit 1), SIGUSR2 too, the
--   old master keeps serving with zero failed requests and logs why; the same file replaced by a
--   good binary upgrades again.
local spec_root = debug.getinfo(1, "S").source:match("^@(.*)/integration/[^/]+$")
if spec_root then package.path = spec_root .. "/?.lua;" .. package.path end
local S = require "support.server"
local St = require "support.store"
local steady = require "support.steady"
local sys = S.sys

local function read_pid(data)
  local text = sys.read_all(data .. "/triage.pid")
  return text and tonumber(text:match("^(%d+)"))
end

local function install(path, content_from, script)
  local tmp = path .. ".new"
  if script then
    local f = assert(io.open(tmp, "wb"))
    f:write(script)
    f:close()
  else
    assert(St.run(("cp %s %s"):format(St.quote(content_from), St.quote(tmp))) == 0)
  end
  assert(St.run("chmod 755 " .. St.quote(tmp)) == 0)
  assert(os.rename(tmp, path)) -- replaced in one step, as a package manager does
end

-- Stop a master that is no longer the one S.start made (we are its subreaper once its parent
-- exited), and everything under it.
local function stop_master(pid)
  local family = sys.descendants(pid)
  sys.C.kill(pid, sys.SIGTERM)
  local deadline = sys.now() + 15
  while sys.alive(pid) and sys.now() < deadline do
    sys.reap(pid)
    sys.sleep(0.02)
  end
  for _, p in ipairs(family) do sys.C.kill(p, sys.SIGKILL) end
  sys.C.kill(pid, sys.SIGKILL)
  for _, p in ipairs(family) do sys.reap(p) end
  sys.reap(pid)
end

-- The workers of status all children of master, and as many as asked for.
local function workers_of(srv, master, n)
  local st = S.eventually(10, function()
    local st = srv:status()
    if not st or st.master_pid ~= master or #st.workers ~= n then return nil end
    for _, w in ipairs(st.workers) do
      if type(w.pid) ~= "number" or w.pid <= 0 then return nil end
      local _, ppid = sys.proc_stat(w.pid)
      if ppid ~= master then return nil end
    end
    return st
  end)
  assert(st, ("the workers in status are not %d children of master %d: %s"):format(n, master,
    S.json.encode(srv:status() or {})))
  return st
end

-- Wait (while the load runs) for an upgrade started at `asked` to finish: a new pid in the pid file,
-- the old master gone. Returns the new pid, or nil once `timeout` has passed.
local function upgraded(data, old, asked, timeout, reap_old)
  local pid = read_pid(data)
  if pid and pid ~= old and reap_old() then return pid end
  if sys.now() - asked > timeout then return nil, "timeout" end
end

describe("binary upgrade", function()
  local dir, bin, data, srv, masters
  setup(function()
    local why = St.probe()
    if why then error(why, 0) end
  end)

  before_each(function()
    dir = St.tempdir("/tmp/triage-upgrade-")
    bin = dir .. "/triage"
    data = dir .. "/data"
    install(bin, S.bin)
    srv = St.start { app = S.root, bin = bin, workers = 2, data = data }
    masters = {}
    assert(S.eventually(10, function() return read_pid(data) == srv.pid end), "no pid file names the master")
  end)

  after_each(function()
    for _, pid in ipairs(masters) do stop_master(pid) end
    srv:stop()
    St.remove_tree(dir)
  end)

  it("by SIGUSR2 and by `triage upgrade`, under load: no failed request, none refused", function()
    local tag = "upg-" .. St.run_id
    local phase, asked, cli = "warm", nil, nil
    local first, second, first_exit, problem
    local olds = { [srv.pid] = true }
    local function reap_master(pid)
      if pid == srv.pid then return srv:exited() end
      local e = sys.reap(pid) -- our child once its own parent, the master before it, has gone
      if e then olds[pid] = e end
      return e or (not sys.alive(pid) and { unknown = true })
    end
    local recs, stats = steady.run {
      port = srv.port, slots = steady.sample_slots(50, tag), timeout = 20, deadline = 120,
      on_tick = function(st)
        local now = sys.now()
        if phase == "warm" and st.elapsed > 1.0 then
          assert(srv:signal(sys.SIGUSR2))
          phase, asked = "first", now
        elseif phase == "first" then
          local pid, why = upgraded(data, srv.pid, asked, 30, function() return reap_master(srv.pid) end)
          if pid then
            first, first_exit = pid, srv:exited()
            masters[#masters + 1] = pid
            phase, asked = "between", now
          elseif why then
            problem = "SIGUSR2: no new master in the pid file, or the old one still runs, after 30 s"
            return false
          end
        elseif phase == "between" and now - asked > 1.0 then
          cli = sys.spawn({ S.bin, "upgrade", "--data", data }, dir .. "/cli.out")
          phase, asked = "second", now
        elseif phase == "second" then
          local pid, why = upgraded(data, first, asked, 30, function() return reap_master(first) end)
          if pid then
            second = pid
            masters[#masters + 1] = pid
            phase, asked = "after", now
          elseif why then
            problem = "triage upgrade: no new master in the pid file, or the old one still runs, after 30 s"
            return false
          end
        elseif phase == "after" and now - asked > 1.0 then
          return false
        end
      end,
    }
    print(("\n    masters %d -> %d -> %d; %s"):format(srv.pid, first or 0, second or 0, steady.summary(stats)))
    assert(not problem, problem)
    assert.are.equal(0, stats.failed, steady.summary(stats))
    assert.are.same({ [200] = stats.ok }, stats.statuses)
    assert.is_true(stats.ok > 200, "too few requests: " .. steady.summary(stats))

    -- the old masters exited 0; the command said what happened
    assert.are.equal(0, first_exit.code, sys.describe_exit(first_exit))
    assert.are.equal(0, olds[first] and olds[first].code, "the second master's exit: " .. S.json.encode(olds[first] or {}))
    local cli_exit = S.eventually(10, function() return sys.reap(cli) end)
    local said = sys.read_all(dir .. "/cli.out") or ""
    assert(cli_exit, "triage upgrade did not finish")
    assert.are.equal(0, cli_exit.code, said)
    assert.is_truthy(said:find("new master is pid " .. second, 1, true), said)

    -- the workers serving now are the newest master's children
    assert.is_true(sys.alive(second))
    workers_of(srv, second, 2)
    St.check_stored(data, tag, steady.acknowledged(recs), "across two upgrades")
    local log = srv:error_log()
    assert.is_truthy(log:find("upgrade: the new master (pid " .. first .. ") serves", 1, true), log)
    assert.is_truthy(log:find("upgrade: the new master (pid " .. second .. ") serves", 1, true), log)
  end)

  it("to a binary that does not start leaves the old master serving, and logs why", function()
    install(bin, nil, "#!/bin/sh\necho 'this binary is broken' >&2\nexit 1\n")
    local tag = "upgfail-" .. St.run_id
    local phase, asked, cli, cli_exit, problem = "warm", nil, nil, nil, nil
    local recs, stats = steady.run {
      port = srv.port, slots = steady.sample_slots(50, tag), timeout = 20, deadline = 120,
      on_tick = function(st)
        local now = sys.now()
        if phase == "warm" and st.elapsed > 0.5 then
          cli = sys.spawn({ S.bin, "upgrade", "--data", data }, dir .. "/cli.out")
          phase, asked = "cli", now
        elseif phase == "cli" then
          cli_exit = sys.reap(cli)
          if cli_exit then
            assert(srv:signal(sys.SIGUSR2))
            phase, asked = "signal", now
          elseif now - asked > 30 then
            problem = "triage upgrade did not finish in 30 s"
            return false
          end
        elseif phase == "signal" then
          local _, n = srv:error_log():gsub("upgrade failed", "")
          if n >= 2 then phase, asked = "after", now end
          if now - asked > 30 then
            problem = "no second failure logged 30 s after SIGUSR2"
            return false
          end
        elseif phase == "after" and now - asked > 0.5 then
          return false
        end
      end,
    }
    print("\n    " .. steady.summary(stats))
    assert(not problem, problem)
    assert.are.equal(0, stats.failed, steady.summary(stats))
    assert.are.same({ [200] = stats.ok }, stats.statuses)
    local said = sys.read_all(dir .. "/cli.out") or ""
    assert.are.equal(1, cli_exit.code, said)
    assert.is_truthy(said:find("keeps serving", 1, true), said)
    assert.is_false(srv:exited(), "the old master exited")
    assert.are.equal(srv.pid, read_pid(data))
    workers_of(srv, srv.pid, 2)
    St.check_stored(data, tag, steady.acknowledged(recs), "after failed upgrades")
    local log = srv:error_log()
    assert.is_truthy(log:find("exited with status 1 before serving", 1, true), log)

    -- the same path with a good binary again: the upgrade goes through
    install(bin, S.bin)
    assert(srv:signal(sys.SIGUSR2))
    local pid = S.eventually(30, function()
      local p = read_pid(data)
      return p ~= srv.pid and srv:exited() and p
    end)
    assert(pid, "no upgrade after the good binary was put back:\n" .. srv:error_log())
    masters[#masters + 1] = pid
    workers_of(srv, pid, 2)
  end)
end)

describe("binary upgrade with the admin token in the environment", function()
  it("hands the token to the new master, which answers the admin API with it", function()
    local dir = St.tempdir("/tmp/triage-upgrade-env-")
    local bin = dir .. "/triage"
    install(bin, S.bin)
    local token = ("e"):rep(64)
    local srv = S.start { app = S.root, bin = bin, workers = 1, data = dir .. "/data",
                          env = { TRIAGE_ADMIN_TOKEN = token } }
    local new
    finally(function()
      if new then stop_master(new) end
      srv:stop()
      St.remove_tree(dir)
    end)
    local data = srv.data or (dir .. "/data")
    assert(S.eventually(10, function() return read_pid(data) == srv.pid end), "no pid file names the master")
    assert(srv:signal(sys.SIGUSR2))
    new = S.eventually(30, function()
      local pid = read_pid(data)
      return pid and pid ~= srv.pid and pid
    end)
    assert.is_truthy(new, srv:error_log())
    assert.is_truthy(S.eventually(15, function() return not sys.alive(srv.pid) or srv:exited() end), "the old master did not stop")
    local r = assert(S.http.request(srv.admin_port, "POST", "/_triage/reload",
      { timeout = 10, headers = { Authorization = "Bearer " .. token } }))
    assert.equals(200, r.status, r.body)
    local st = assert(S.http.request(srv.admin_port, "GET", "/_triage/status", { timeout = 5 }))
    assert.equals(new, S.json.decode(st.body).master_pid)
    -- the new master, like the first, keeps it out of its environment
    local environ = sys.read_all("/proc/" .. new .. "/environ") or ""
    assert.is_nil(environ:find(token, 1, true), "the token is in the new master's environment")
  end)
end)
