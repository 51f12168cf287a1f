-- The admin API's guard: the token (reload refused without it, 401 / 403), `triage reload` and
-- `triage status` finding the token by themselves, a public --admin refused without a token, the
-- token file's mode, accept paused at the descriptor limit, and no admin socket in a worker or in a
-- --reload-check command.
local spec_root = debug.getinfo(1, "S").source:match("^@(.*)/integration/[^/]+$")
if spec_root then package.path = spec_root .. "/?.lua;" .. package.path end
local server = require "support.server"
local http = server.http
local sys = server.sys
local cjson = require "cjson"

local FIXTURE = server.fixtures .. "/reload_app"

local function copy_app()
  local dir = sys.mkdtemp("/tmp/triage-admin-")
  assert(os.execute(("cp -r %q/routes %q/scripts %q/"):format(FIXTURE, FIXTURE, dir)) == 0)
  return dir
end

-- Run a shell command: its output (stdout and stderr) and exit code.
local function run(cmd)
  local p = io.popen(cmd .. " 2>&1; echo \"exit=$?\"")
  local out = p:read("*a")
  p:close()
  local body, code = out:match("^(.-)exit=(%d+)%s*$")
  return body, tonumber(code)
end

local function post_reload(srv, headers)
  return assert(http.request(srv.admin_port, "POST", "/_triage/reload", { timeout = 10, headers = headers }))
end

describe("the admin token", function()
  local app, srv
  setup(function()
    app = copy_app()
    srv = server.start { app = app, workers = 2, args = { "--no-watch" } }
  end)
  teardown(function()
    srv:stop()
    os.execute(("rm -rf %q"):format(app))
  end)

  it("is made at the first start: 64 hex digits in DATA/admin.token, mode 0600", function()
    local token = srv:admin_token()
    assert.is_truthy(token, "no DATA/admin.token")
    assert.matches("^%x+$", token)
    assert.equals(64, #token)
    local mode = io.popen(("stat -c %%a %q"):format(srv.data .. "/admin.token")):read("*l")
    assert.equals("600", mode)
  end)

  it("is required to reload: without it 401, a wrong one 403, and nothing reloads", function()
    local r = post_reload(srv)
    assert.equals(401, r.status, r.body)
    assert.matches("Authorization: Bearer", cjson.decode(r.body).error, 1, true)
    assert.matches("Bearer", r.headers["www-authenticate"] or "", 1, true)
    r = post_reload(srv, { Authorization = "Bearer " .. string.rep("0", 64) })
    assert.equals(403, r.status, r.body)
    assert.equals("wrong admin token", cjson.decode(r.body).error)
    r = post_reload(srv, { Authorization = "Basic " .. srv:admin_token() })
    assert.equals(401, r.status, r.body)
    local st = assert(srv:status())
    assert.equals(1, st.generation)
    assert.equals(0, st.reload.reloads + st.reload.failures)
    r = assert(srv:reload())
    assert.equals(200, r.status, r.body)
    assert.is_truthy(srv:wait_generation(2), srv:logs())
  end)

  it("is not needed for status, metrics and health on a loopback listener", function()
    for _, path in ipairs { "/_triage/status", "/_triage/metrics", "/_triage/health" } do
      local r = assert(http.get(srv.admin_port, path))
      assert.equals(200, r.status, path .. ": " .. r.body)
    end
  end)

  it("is found by `triage reload` and `triage status` from --data, as the server has it", function()
    local st = assert(srv:status())
    local out, code = run(("%q reload --json --admin 127.0.0.1:%d --data %q"):format(server.bin, srv.admin_port,
      srv.data))
    assert.equals(0, code, out)
    assert.matches('"ok":true', out, 1, true)
    assert.is_truthy(srv:wait_generation(st.generation + 1), srv:logs())
    out, code = run(("%q status --json --admin 127.0.0.1:%d --data %q"):format(server.bin, srv.admin_port, srv.data))
    assert.equals(0, code, out)
    local doc = cjson.decode(out)
    assert.equals(srv.pid, doc.master_pid)
    -- and from --admin-token-file, or the environment
    out, code = run(("%q reload --admin 127.0.0.1:%d --admin-token-file %q"):format(server.bin, srv.admin_port,
      srv.data .. "/admin.token"))
    assert.equals(0, code, out)
    out, code = run(("TRIAGE_ADMIN_TOKEN=%s %q reload --admin 127.0.0.1:%d --data /nonexistent"):format(
      srv:admin_token(), server.bin, srv.admin_port))
    assert.equals(0, code, out)
  end)

  it("missing, makes `triage reload` fail and say where it looked", function()
    local st = assert(srv:status())
    local out, code = run(("env -u TRIAGE_ADMIN_TOKEN %q reload --admin 127.0.0.1:%d --data /nonexistent/x"):format(
      server.bin, srv.admin_port))
    assert.equals(1, code, out)
    assert.matches("/nonexistent/x/admin.token does not exist", out, 1, true)
    assert.equals(st.generation, assert(srv:status()).generation)
  end)
end)

describe("a non-loopback --admin", function()
  it("is refused at start without a token configured, naming the flag and the fix", function()
    local srv = server.start { admin_host = "0.0.0.0", workers = 1, wait = false,
                               env = { TRIAGE_ADMIN_TOKEN = false } }
    finally(function() srv:stop() end)
    local e = srv:wait_exit(20)
    assert.is_truthy(e, "still running with a public admin listener and no token")
    assert.is_true(e.code ~= 0, sys.describe_exit(e))
    local log = srv:error_log()
    assert.matches("is not a loopback address", log, 1, true)
    assert.matches("--admin-token-file", log, 1, true)
    assert.matches("TRIAGE_ADMIN_TOKEN", log, 1, true)
  end)

  it("with a token from the environment, wants it for status and metrics too (not for health)", function()
    local token = "spec-token-" .. string.rep("ab", 16)
    local srv = server.start { admin_host = "0.0.0.0", workers = 1, env = { TRIAGE_ADMIN_TOKEN = token } }
    finally(function() srv:stop() end)
    for _, path in ipairs { "/_triage/status", "/_triage/metrics" } do
      local r = assert(http.get(srv.admin_port, path))
      assert.equals(401, r.status, path)
      r = assert(http.get(srv.admin_port, path, { headers = { Authorization = "Bearer " .. token } }))
      assert.equals(200, r.status, path)
    end
    assert.equals(200, assert(http.get(srv.admin_port, "/_triage/health")).status)
    -- no token file is made when the environment gives it, and the workers do not see it
    assert.is_nil(sys.read_all(srv.data .. "/admin.token"))
    local pids = assert(srv:worker_pids())
    local environ = sys.read_all("/proc/" .. pids[0] .. "/environ") or ""
    assert.is_nil(environ:find(token, 1, true))
  end)
end)

describe("the token file", function()
  it("is refused when others may read it, with the chmod to run", function()
    local data = sys.mkdtemp("/tmp/triage-admin-data-")
    local f = assert(io.open(data .. "/admin.token", "w"))
    f:write(string.rep("c", 64), "\n")
    f:close()
    os.execute(("chmod 644 %q"):format(data .. "/admin.token"))
    local srv = server.start { workers = 1, wait = false, data = data, env = { TRIAGE_ADMIN_TOKEN = false } }
    finally(function()
      srv:stop()
      os.execute(("rm -rf %q"):format(data))
    end)
    local e = srv:wait_exit(20)
    assert.is_truthy(e, "started with a token file others can read")
    local log = srv:error_log()
    assert.matches("may be read or written by other users (mode 0644)", log, 1, true)
    assert.matches("chmod 600 " .. data .. "/admin.token", log, 1, true)
  end)
end)

describe("an admin client that trickles its request", function()
  it("is closed at the request deadline, though each byte comes within the idle limit", function()
    local srv = server.start { workers = 1 }
    local c
    finally(function()
      if c then c:close() end
      srv:stop()
    end)
    c = assert(http.connect(srv.admin_port))
    assert(c:send("GET /_triage/status HTTP/1.1\r\nX-Slow: "))
    local closed, how
    local deadline = sys.now() + 60 -- the deadline is 30 s; the idle limit (10 s) never passes
    while sys.now() < deadline do
      closed, how = c:wait_closed(2)
      if closed or how == "data" then break end
      if not c:send("a") then closed = true; break end
    end
    assert.is_true(closed == true, "the trickling client was still connected after 60 s (" .. tostring(how) .. ")")
    assert.is_truthy(srv:status(), "status after the close")
  end)
end)

-- /proc/<pid>/stat: user + system CPU time, in clock ticks.
local function cpu_ticks(pid)
  local s = assert(sys.read_all("/proc/" .. pid .. "/stat"))
  local rest = s:match("^%d+ %b() (.*)$")
  local fields = {}
  for w in rest:gmatch("%S+") do fields[#fields + 1] = w end
  -- fields[1] is the state (field 3 of stat): utime and stime are fields 14 and 15
  return tonumber(fields[12]) + tonumber(fields[13])
end

local function count_fds(pid)
  local n = 0
  local p = io.popen("ls /proc/" .. pid .. "/fd")
  for _ in p:lines() do n = n + 1 end
  p:close()
  return n
end

describe("the admin listener at the descriptor limit", function()
  it("pauses accepting instead of spinning, and serves again when descriptors come back", function()
    local srv = server.start { workers = 1 }
    local clients = {}
    finally(function()
      for _, c in ipairs(clients) do c:close() end
      srv:stop()
    end)
    -- Room for two more descriptors in the master only (the workers keep their own limit).
    local limit = count_fds(srv.pid) + 2
    assert(os.execute(("prlimit --pid %d --nofile=%d:%d"):format(srv.pid, limit, limit)) == 0)
    for _ = 1, 12 do -- silent clients: two are accepted, the rest wait in the accept queue
      local c = http.connect(srv.admin_port, { timeout = 2 })
      if c then clients[#clients + 1] = c end
    end
    assert.is_true(#clients >= 10, "connections made: " .. #clients)
    sys.sleep(0.5)
    local before = cpu_ticks(srv.pid)
    sys.sleep(3)
    local used = cpu_ticks(srv.pid) - before
    -- Spinning on the ready listener would burn about 300 ticks (100 a second) here.
    assert.is_true(used < 100, ("the master used %d ticks of CPU in 3 s at the descriptor limit"):format(used))
    assert.matches("admin accept: Too many open files; pausing it", srv:error_log(), 1, true)
    -- said once, not ten times a second
    local _, times = srv:error_log():gsub("admin accept:", "")
    assert.equals(1, times)
    for _, c in ipairs(clients) do c:close() end
    clients = {}
    -- the idle deadline frees the accepted ones; then the queue drains and status answers again
    assert.is_truthy(server.eventually(30, function() return srv:status(1) end), srv:logs())
  end)
end)

-- The inodes of the admin port's sockets (the listener and any connection) from /proc/net/tcp{,6}.
local function admin_inodes(port, tables)
  local inodes = {}
  for _, text in ipairs(tables) do
    for line in text:gmatch("[^\n]+") do
      local lport, inode = line:match("^%s*%d+: %x+:(%x+) %x+:%x+ %x+ %x+:%x+ %x+:%x+ %x+%s+%d+%s+%d+%s+(%d+)")
      if lport and tonumber(lport, 16) == port and inode ~= "0" then inodes[inode] = true end
    end
  end
  return inodes
end

local function socket_inodes_of(pid)
  local out = {}
  local p = io.popen(("for f in /proc/%d/fd/*; do readlink $f; done 2>/dev/null"):format(pid))
  for line in p:lines() do
    local inode = line:match("^socket:%[(%d+)%]$")
    if inode then out[#out + 1] = inode end
  end
  p:close()
  return out
end

describe("admin sockets", function()
  it("are in no worker, not even one started while an admin connection is open", function()
    local srv = server.start { workers = 2 }
    local c
    finally(function()
      if c then c:close() end
      srv:stop()
    end)
    c = assert(http.connect(srv.admin_port))
    c:send("GET /_triage/status HTTP/1.1\r\n") -- half a request: the connection stays open
    local pids = assert(srv:worker_pids())
    assert(sys.C.kill(pids[0], sys.SIGKILL) == 0)
    local fresh = server.eventually(10, function()
      local now = srv:worker_pids()
      return now and now[0] and now[0] ~= pids[0] and now[0] > 0 and now
    end)
    assert.is_truthy(fresh, srv:logs())
    local inodes = admin_inodes(srv.admin_port,
      { sys.read_all("/proc/net/tcp") or "", sys.read_all("/proc/net/tcp6") or "" })
    local n = 0
    for _ in pairs(inodes) do n = n + 1 end
    assert.is_true(n >= 2, "the admin listener and the open connection were not found in /proc/net/tcp")
    -- the master holds them (the test sees what it should), the workers do not
    local master_has = 0
    for _, inode in ipairs(socket_inodes_of(srv.pid)) do
      if inodes[inode] then master_has = master_has + 1 end
    end
    assert.is_true(master_has >= 2, "the master's admin sockets were not found")
    for slot, pid in pairs(fresh) do
      for _, inode in ipairs(socket_inodes_of(pid)) do
        assert.is_nil(inodes[inode], ("worker %d (pid %d) holds admin socket %s"):format(slot, pid, inode))
      end
    end
  end)

  it("are in no --reload-check command, run while the reload's admin connection waits", function()
    local app = copy_app()
    local dir = sys.mkdtemp("/tmp/triage-admin-check-")
    local check = ([[for f in /proc/$$/fd/*; do readlink $f; done > %q/fds; cat /proc/net/tcp /proc/net/tcp6 > %q/tcp]])
      :format(dir, dir)
    local srv = server.start { app = app, workers = 1, args = { "--no-watch", "--reload-check", check } }
    finally(function()
      srv:stop()
      os.execute(("rm -rf %q %q"):format(app, dir))
    end)
    local r = assert(srv:reload())
    assert.equals(200, r.status, r.body)
    local inodes = admin_inodes(srv.admin_port, { assert(sys.read_all(dir .. "/tcp")) })
    local n = 0
    for _ in pairs(inodes) do n = n + 1 end
    assert.is_true(n >= 2, "the admin listener and the reload's connection were not in the check's view")
    local fds = assert(sys.read_all(dir .. "/fds"))
    for inode in fds:gmatch("socket:%[(%d+)%]") do
      assert.is_nil(inodes[inode], "the --reload-check command holds admin socket " .. inode)
    end
  end)

  it("are in no process that loads the app's code: the preflight of a reload", function()
    local app = copy_app()
    local dir = sys.mkdtemp("/tmp/triage-admin-load-")
    os.execute(("chmod 755 %q; chmod 777 %q"):format(app, dir))
    local srv = server.start { app = app, workers = 1, args = { "--no-watch" } }
    local c
    finally(function()
      if c then c:close() end
      srv:stop()
      os.execute(("rm -rf %q %q"):format(app, dir))
    end)
    -- a route file that, each time the app is loaded, names the loading process and keeps it alive
    -- for a while, so that its descriptors can be read (as root: a process that changed user cannot
    -- read its own /proc/<pid>/fd)
    local f = assert(io.open(app .. "/routes/zz_fds.lua", "w"))
    f:write(('allow { "io.popen" }\nio.popen([[echo $PPID > %s/loader-$PPID; sleep 2]]):close()\n'):format(dir))
    f:close()
    c = assert(http.connect(srv.admin_port))
    assert(c:send(http.build("POST", "/_triage/reload", { body = "", headers = srv:admin_headers() })))
    local pid = server.eventually(10, function()
      local p = io.popen(("ls %q"):format(dir))
      local files = p:read("*a")
      p:close()
      return tonumber(files:match("loader%-(%d+)"))
    end, 0.05)
    assert.is_truthy(pid, "the preflight did not load the route file")
    local held = socket_inodes_of(pid)
    local inodes = admin_inodes(srv.admin_port,
      { sys.read_all("/proc/net/tcp") or "", sys.read_all("/proc/net/tcp6") or "" })
    local seen = 0
    for _ in pairs(inodes) do seen = seen + 1 end
    assert.is_true(seen >= 2, "the admin listener and the reload's connection were not found")
    assert.is_true(#sys.read_all("/proc/" .. pid .. "/cmdline") > 0, "the loader exited before it was read")
    for _, inode in ipairs(held) do
      assert.is_nil(inodes[inode], ("the preflight (pid %d) holds admin socket %s"):format(pid, inode))
    end
    local r = assert(c:read_response { timeout = 20 })
    assert.equals(200, r.status, r.body)
  end)
end)
