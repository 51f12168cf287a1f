-- Starts and stops the real build/triage binary for the integration specs.
--
--   local S = require "support.server"
--   local srv = S.start{ app = S.root, workers = 2, args = { "--max-body", "1k" } }
--   local other = S.start{ bin = "/opt/triage/bin/triage", app = dir, cwd = "/tmp/x" }
--   srv.port, srv.admin_port, srv.pid
--   srv:status()            -- /_triage/status decoded (or nil, err)
--   srv:admin_token()       -- the admin token (DATA/admin.token, made by the server at start)
--   srv:reload()            -- POST /_triage/reload with the token: the response (or nil, err)
--   srv:token{ sub = "P-1", role = "patient", trial = "T1" }  -- a bearer token (`triage token`) for
--                           -- the server's --token-keys (made for it unless token_keys = false)
--   srv:bearer{ ... }       -- { Authorization = "Bearer " .. srv:token{ ... } }
--   srv:error_log()         -- contents of the --error-log file
--   srv:stop()              -- SIGTERM, wait, SIGKILL; returns exit info
--   srv.user                -- the --user the server was given (nil: none)
--   S.stop_all()            -- in teardown: stops every server still running
--
-- The binary is $TRIAGE_BIN or <repo>/build/triage (or opts.bin for one server); the repo root
-- is $TRIAGE_ROOT or found from this file's location.
local sys = require "support.sys"
local http = require "support.http"
local loadgen = require "support.loadgen"
local backend = require "support.backend"
local cjson = require "cjson"

local M = { sys = sys, http = http, loadgen = loadgen, backend = backend }

local function find_root()
  local env = os.getenv("TRIAGE_ROOT")
  if env and env ~= "" then return sys.realpath(env) or env end
  local src = debug.getinfo(1, "S").source
  local file = src:sub(1, 1) == "@" and src:sub(2) or src
  local abs = sys.realpath(file) or file
  local root = abs:match("^(.*)/spec/support/server%.lua$")
  if root then return root end
  return sys.realpath(".") or "."
end

M.root = find_root()
M.bin = os.getenv("TRIAGE_BIN")
if not M.bin or M.bin == "" then M.bin = M.root .. "/build/triage" end
M.fixtures = M.root .. "/spec/fixtures"
M.fixture_app = M.fixtures .. "/app"
M.keep_logs = os.getenv("TRIAGE_KEEP_LOGS") ~= nil and os.getenv("TRIAGE_KEEP_LOGS") ~= ""

sys.raise_nofile(20000)
sys.become_subreaper()

-- Every server started and not yet stopped.
local running = {}

-- Free loopback ports: bind port 0, read the port, close. All sockets are
-- held open until every port is picked so the ports differ.
function M.free_ports(n)
  local socket = require "socket"
  local socks, ports = {}, {}
  for i = 1, n do
    local s = assert(socket.bind("127.0.0.1", 0))
    local _, port = s:getsockname()
    socks[i], ports[i] = s, tonumber(port)
  end
  for _, s in ipairs(socks) do s:close() end
  return (table.unpack or unpack)(ports)
end

function M.free_port()
  return (M.free_ports(1))
end

function M.binary_exists(path)
  local f = io.open(path or M.bin, "rb")
  if f then f:close(); return true end
  return false
end

-- The user a server started as root runs its workers as when no --user is given.
M.WORKER_USER, M.WORKER_GROUP = "nobody", "nogroup"

-- Can the workers' default user (nobody) do `test FLAGS path` (e.g. "-r", "-w")? Asked of the
-- system itself (setpriv runs `test` as that user), once per path and flags.
local reach_cache = {}
function M.unprivileged_can(flags, path)
  local key = flags .. " " .. path
  if reach_cache[key] == nil then
    local cmd = ("setpriv --reuid=%s --regid=%s --clear-groups test %s %q 2>/dev/null"):format(
      M.WORKER_USER, M.WORKER_GROUP, flags, path)
    local r = os.execute(cmd)
    reach_cache[key] = r == true or r == 0
  end
  return reach_cache[key]
end

-- The --user a server gets when the spec does not choose (opts.user). Started as root, triage runs
-- its workers as nobody, and refuses to start when nobody cannot read the app or the framework's
-- Lua modules or write the data directory. The suite runs as root from a checkout that may sit where
-- nobody cannot go (a home directory is often 0700), and many specs put apps and data in 0700
-- temporary directories: those servers run with --user root, which keeps the workers as root as
-- before. Where nobody can reach everything, servers run as nobody, as in production.
-- privilege_spec.lua proves the switch itself with an app copied where nobody can read it.
-- env: the server's environment; a path in it (TMPDIR, where the snapshots go; a fault shim's control
-- file) must be reachable too, and writable where it does not exist yet.
local function default_user(app, data, bin, env)
  if not sys.is_root() then return nil end
  local data_parent = data:match("^(.*)/[^/]+$") or "."
  local lua_dir = os.getenv("TRIAGE_LUA_DIR")
  if not lua_dir or lua_dir == "" then
    lua_dir = bin == M.bin and (M.root .. "/core/lua") or ((bin:match("^(.*)/[^/]+$") or ".") .. "/../share/triage/lua")
  end
  local reachable = M.unprivileged_can("-r", app) and M.unprivileged_can("-x", app)
    and M.unprivileged_can("-x", app .. "/routes")
    and M.unprivileged_can("-r", lua_dir .. "/triage/app.lua")
    and M.unprivileged_can("-x", data_parent)
  local tmpdir = env and env.TMPDIR or os.getenv("TMPDIR")
  if tmpdir and tmpdir ~= "" and not M.unprivileged_can("-x", tmpdir) then reachable = false end
  for name, value in pairs(env or {}) do
    if reachable and name ~= "TMPDIR" and name ~= "LD_PRELOAD" and type(value) == "string"
      and value:match("^/[^:]*$") then
      local parent = value:match("^(.*)/[^/]+$")
      if sys.read_all(value) then
        reachable = M.unprivileged_can("-r", value)
      else
        reachable = M.unprivileged_can("-w", parent) and M.unprivileged_can("-x", parent)
      end
    end
  end
  if reachable then return nil end
  return "root"
end

local Server = {}
Server.__index = Server

local function read_file(path)
  return sys.read_all(path) or ""
end

function Server:error_log()
  if self.final_error_log then return self.final_error_log end
  return read_file(self.error_log_path)
end

-- what the process wrote to stdout/stderr
function Server:output()
  if self.final_output then return self.final_output end
  return read_file(self.output_path)
end

function Server:access_log()
  if self.final_access_log then return self.final_access_log end
  return self.access_log_path and read_file(self.access_log_path) or ""
end

function Server:logs()
  return ("---- error log (%s) ----\n%s\n---- stdout/stderr ----\n%s"):format(
    tostring(self.error_log_path), self:error_log(), self:output())
end

-- Has the master exited? Returns the exit table or false.
function Server:exited()
  if self.exit then return self.exit end
  local e = sys.reap(self.pid)
  if e then
    self.exit = e
    return e
  end
  if e == nil then
    -- not our child any more (should not happen): treat a vanished pid as exited
    if not sys.alive(self.pid) then
      self.exit = { unknown = true }
      return self.exit
    end
  end
  return false
end

function Server:wait_exit(timeout)
  local deadline = sys.now() + (timeout or 10)
  while true do
    local e = self:exited()
    if e then return e end
    if sys.now() > deadline then return nil end
    sys.sleep(0.02)
  end
end

function Server:signal(sig)
  if self:exited() then return false end
  return sys.C.kill(self.pid, sig) == 0
end

-- Wait until every worker reports `generation` (or a later one) in status; returns the status, or
-- nil after timeout seconds (default 5).
function Server:wait_generation(generation, timeout)
  return M.eventually(timeout or 5, function()
    local st = self:status()
    if not st then return false end
    for _, w in ipairs(st.workers) do
      if w.generation < generation then return false end
    end
    return st
  end)
end

-- Resident memory of the master and its descendants, in kB (VmRSS summed).
function Server:tree_rss_kb()
  local total = 0
  local pids = sys.descendants(self.pid)
  pids[#pids + 1] = self.pid
  for _, p in ipairs(pids) do
    local s = sys.read_all("/proc/" .. p .. "/status") or ""
    total = total + (tonumber(s:match("VmRSS:%s*(%d+)")) or 0)
  end
  return total
end

-- GET /_triage/status on the admin listener, decoded. With the admin token when there is one (a
-- server whose --admin is not loopback wants it for status too).
function Server:status(timeout)
  local token = self:admin_token()
  local r, err = http.get(self.admin_port, "/_triage/status",
    { timeout = timeout or 5, headers = token and { Authorization = "Bearer " .. token } or nil })
  if not r then return nil, "status: " .. tostring(err) end
  if r.status ~= 200 then return nil, ("status: HTTP %d %s"):format(r.status, http.quote(r.body)) end
  local t, jerr = http.json(r)
  if not t then return nil, "status: " .. jerr end
  return t
end

-- The admin token the server made at its first start (DATA/admin.token), or nil.
function Server:admin_token()
  if self.env_token then return self.env_token end
  local t = sys.read_all(self.token_file or (self.data .. "/admin.token"))
  return t and t:match("^(%S+)")
end

-- Headers carrying the admin token, for http.request's opts.headers.
local function random_hex()
  local f = assert(io.open("/dev/urandom", "rb"))
  local bytes = f:read(16)
  f:close()
  return (bytes:gsub(".", function(c) return ("%02x"):format(c:byte()) end))
end

-- A key file for a server's --token-keys, at path (mode 0600): two keys, as while rotating.
function M.write_token_keys(path)
  local f = assert(io.open(path, "wb"))
  f:write("current ", random_hex(), "-spec-token-secret-of-32-bytes+\n")
  f:write("previous ", random_hex(), "-older-spec-token-secret-32-bytes\n")
  f:close()
  sys.chmod(path, tonumber("600", 8))
  return path
end

-- A token made by `triage token` (the build's binary) with the given key file. claims: sub, role,
-- trial (a string or a list), ttl, kid.
function M.token(keys, claims)
  local argv = { M.bin, "token", "--keys", keys, "--sub", claims.sub, "--role", claims.role }
  local trials = type(claims.trial) == "table" and claims.trial or { claims.trial }
  for _, t in ipairs(trials) do
    argv[#argv + 1] = "--trial"; argv[#argv + 1] = t
  end
  if claims.ttl then argv[#argv + 1] = "--ttl"; argv[#argv + 1] = tostring(claims.ttl) end
  if claims.kid then argv[#argv + 1] = "--kid"; argv[#argv + 1] = claims.kid end
  for i, a in ipairs(argv) do argv[i] = "'" .. tostring(a):gsub("'", "'\\''") .. "'" end
  local p = assert(io.popen(table.concat(argv, " ") .. " 2>&1"))
  local out = p:read("*a")
  local ok = p:close()
  local token = out:match("^([%w%-_]+%.[%w%-_]+%.[%w%-_]+)\n$")
  assert(ok and token, "triage token failed: " .. out)
  return token
end

function Server:token(claims)
  assert(self.token_keys, "this server has no --token-keys (started with token_keys = false)")
  return M.token(self.token_keys, claims)
end

function Server:bearer(claims)
  return { Authorization = "Bearer " .. self:token(claims) }
end

function Server:admin_headers()
  return { Authorization = "Bearer " .. assert(self:admin_token(), "no admin token in " .. self.data) }
end

-- POST /_triage/reload with the admin token; the response, or nil and an error.
function Server:reload(timeout)
  return http.request(self.admin_port, "POST", "/_triage/reload",
    { timeout = timeout or 10, headers = self:admin_headers() })
end

-- worker pids by slot (from status): { [slot] = pid }, status
function Server:worker_pids()
  local st, err = self:status()
  if not st then return nil, err end
  local out = {}
  for _, w in ipairs(st.workers or {}) do out[w.slot] = w.pid end
  return out, st
end

local function ready_error(self, msg)
  local logs = self:logs()
  self:stop({ timeout = 3 })
  error(("triage %s\ncommand: %s\n%s"):format(msg, table.concat(self.argv, " "), logs), 0)
end

function Server:wait_ready(timeout)
  local deadline = sys.now() + (timeout or 10)
  local listener_ok, admin_ok = false, false
  local last_err
  while sys.now() < deadline do
    local e = self:exited()
    if e then ready_error(self, "exited during start-up (" .. sys.describe_exit(e) .. ")") end
    if not listener_ok then
      local r, err = http.get(self.port, "/__spec_ready_probe", { timeout = 1 })
      if r then listener_ok = true else last_err = "listener: " .. tostring(err) end
    end
    if not admin_ok then
      local st, err = self:status(1)
      if st then admin_ok = true else last_err = "admin: " .. tostring(err) end
    end
    if listener_ok and admin_ok then break end
    sys.sleep(0.05)
  end
  if not (listener_ok and admin_ok) then
    ready_error(self, ("did not answer within %ds (%s)"):format(timeout or 10, tostring(last_err)))
  end
  -- give every worker a moment to show up in the status (bounded)
  local wdeadline = math.min(deadline, sys.now() + 3)
  while sys.now() < wdeadline do
    local st = self:status(1)
    local ws = st and type(st.workers) == "table" and st.workers
    if ws and #ws >= self.workers then
      local all = true
      for _, w in ipairs(ws) do
        if type(w.pid) ~= "number" or w.pid <= 0 then all = false end
      end
      if all then break end
    end
    sys.sleep(0.05)
  end
  return self
end

-- Start a server. opts:
--   app (dir, default the repo root), workers (default 2), args (extra flags),
--   access_log (true: --access-log to a temp file), wait (default true),
--   ready_timeout (default 10), port/admin_port (default: free ports),
--   cwd (working directory of the server, default this process's),
--   bin (the binary to run, default M.bin), admin_host (default 127.0.0.1),
--   data (the store's directory, default a new one in the server's temporary directory),
--   env (environment variables for the server: name = value to set, name = false to remove;
--        default: this process's environment as it is),
--   user (--user NAME; false: no --user at all; default: see default_user above),
--   token_keys (the --token-keys file; default a new one, M.write_token_keys; false: none),
--   store (--store URL; default: none on SQLite, and on PostgreSQL (TRIAGE_TEST_BACKEND=postgres) the
--          database of the data directory, support/backend.lua; false: none, whatever the backend).
-- srv.store is the --store URL the server was given (nil: SQLite in DATA/triage.db).
function M.start(opts)
  opts = opts or {}
  local bin = opts.bin or M.bin
  if not M.binary_exists(bin) then
    error("triage binary not found at " .. bin .. " (set TRIAGE_BIN or build it)", 2)
  end
  local port, admin = M.free_ports(2)
  port = opts.port or port
  admin = opts.admin_port or admin
  local dir = sys.mkdtemp("/tmp/triage-spec-")
  sys.chmod(dir, tonumber("711", 8)) -- the workers' user reaches the data directory made in it
  local workers = opts.workers or 2
  local self = setmetatable({
    port = port, admin_port = admin, dir = dir, workers = workers,
    app = opts.app or M.root,
    error_log_path = dir .. "/error.log",
    output_path = dir .. "/output.log",
  }, Server)
  local argv = {
    bin, "--app", self.app,
    "--listen", "127.0.0.1:" .. port,
    "--admin", (opts.admin_host or "127.0.0.1") .. ":" .. admin,
    "--workers", tostring(workers),
    "--error-log", self.error_log_path,
    "--data", opts.data or (dir .. "/data"),
  }
  self.data = opts.data or (dir .. "/data")
  self.env_token = opts.env and opts.env.TRIAGE_ADMIN_TOKEN or nil
  for i, a in ipairs(opts.args or {}) do
    if a == "--admin-token-file" then self.token_file = opts.args[i + 1] end
  end
  self.own_data = opts.data == nil -- made for this server: removed with its logs
  local data = self.data:sub(1, 1) == "/" and self.data or ((opts.cwd or sys.realpath(".")) .. "/" .. self.data)
  local user = opts.user
  if user == nil then
    local app = sys.realpath(self.app) or self.app
    user = default_user(app, data, bin, opts.env)
  end
  if user then
    self.user = user
    argv[#argv + 1] = "--user"
    argv[#argv + 1] = user
  end
  if opts.access_log then
    self.access_log_path = dir .. "/access.log"
    argv[#argv + 1] = "--access-log"
    argv[#argv + 1] = self.access_log_path
  end
  if opts.token_keys ~= false then
    self.token_keys = opts.token_keys or M.write_token_keys(dir .. "/token.keys")
    argv[#argv + 1] = "--token-keys"
    argv[#argv + 1] = self.token_keys
  end
  local store = opts.store
  for i, a in ipairs(opts.args or {}) do
    if a == "--store" then -- the spec chose
      store = false
      self.store = opts.args[i + 1]
    end
  end
  if store == nil then store = backend.store_url(data) end
  if store then
    self.store = store
    argv[#argv + 1] = "--store"
    argv[#argv + 1] = store
  end
  for _, a in ipairs(opts.args or {}) do argv[#argv + 1] = a end
  if opts.wrap then -- a command that runs the server (e.g. prlimit ... --): the same pid, exec'd
    local wrapped = {}
    for _, a in ipairs(opts.wrap) do wrapped[#wrapped + 1] = a end
    for _, a in ipairs(argv) do wrapped[#wrapped + 1] = a end
    argv = wrapped
  end
  self.argv = argv
  self.pid = sys.spawn(argv, self.output_path, opts.cwd, opts.env)
  self.started_at = sys.now()
  running[self] = true
  if opts.wait ~= false then self:wait_ready(opts.ready_timeout or 10) end
  return self
end

-- Stop: signal (default SIGTERM), wait up to opts.timeout (default 15 s), then
-- SIGKILL. Processes descended from the master that are still alive after it
-- exited are killed too and listed in the second result.
function Server:stop(opts)
  opts = opts or {}
  running[self] = nil
  if self.stopped then return self.exit, self.leftovers end
  self.stopped = true
  local family = sys.descendants(self.pid)
  local e = self:exited()
  if not e then
    sys.C.kill(self.pid, opts.signal or sys.SIGTERM)
    e = self:wait_exit(opts.timeout or 15)
    if not e then
      self.killed = true
      sys.C.kill(self.pid, sys.SIGKILL)
      e = self:wait_exit(5)
    end
  end
  -- anything the master left behind (re-parented to us: we are a subreaper)
  local leftovers = {}
  local deadline = sys.now() + (opts.orphan_grace or 2)
  for _, p in ipairs(family) do
    while sys.alive(p) and sys.now() < deadline do sys.sleep(0.02) end
    if sys.alive(p) then
      leftovers[#leftovers + 1] = p
      sys.C.kill(p, sys.SIGKILL)
    end
    for _ = 1, 50 do
      local r = sys.reap(p)
      if r ~= false then break end
      sys.sleep(0.01)
    end
  end
  self.leftovers = leftovers
  self.final_error_log = read_file(self.error_log_path)
  self.final_output = read_file(self.output_path)
  if self.access_log_path then self.final_access_log = read_file(self.access_log_path) end
  if not M.keep_logs then
    os.remove(self.error_log_path)
    os.remove(self.output_path)
    if self.access_log_path then os.remove(self.access_log_path) end
    if self.own_data then os.execute(("rm -rf %q"):format(self.data)) end
    sys.C.rmdir(self.dir)
  end
  return e, leftovers
end

function M.stop_all()
  local list = {}
  for s in pairs(running) do list[#list + 1] = s end
  for _, s in ipairs(list) do s:stop({ timeout = 10 }) end
end

-- Wait until fn() returns a truthy value (polling every `interval` s) or the
-- timeout passes. Returns fn's values, or nil plus the last values.
function M.eventually(timeout, fn, interval)
  local deadline = sys.now() + timeout
  local last
  while true do
    last = { fn() }
    if last[1] then return unpack(last) end
    if sys.now() > deadline then return nil, unpack(last, 2) end
    sys.sleep(interval or 0.05)
  end
end

-- Is anything accepting connections on 127.0.0.1:port?
function M.port_open(port)
  local c = http.connect(port, { timeout = 1 })
  if c then c:close(); return true end
  return false
end

-- The set of keys of a table, sorted, for exact key-set comparisons.
function M.keys(t)
  local out = {}
  for k in pairs(t) do out[#out + 1] = k end
  table.sort(out)
  return out
end

function M.contains(list, value)
  for _, v in ipairs(list or {}) do
    if v == value then return true end
  end
  return false
end

-- A test that failed before stopping its servers: stop them when its spec file ends, while the Lua
-- state is whole (a finalizer run as the state closes can no longer rely on the FFI: luajit crashed
-- there, and the failure's report was lost with it).
local has_busted, busted = pcall(require, "busted")
if has_busted and type(busted) == "table" and busted.subscribe then
  busted.subscribe({ "file", "end" }, function()
    pcall(M.stop_all)
    return nil, true
  end)
end

-- Last line of defence: when this module is collected (busted drops it after
-- each spec file) or the Lua state closes, stop whatever is still running.
M._sentinel = newproxy(true)
getmetatable(M._sentinel).__gc = function() pcall(M.stop_all) end

M.json = cjson
return M
