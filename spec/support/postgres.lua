-- A throwaway PostgreSQL for the specs: Debian's server binaries (/usr/lib/postgresql/<newest>/bin),
-- a cluster made by initdb in a temporary directory (trust authentication, superuser `triage`),
-- fsync and synchronous_commit on, listening on TCP 127.0.0.1:<a free port> and on a unix socket in
-- its own directory. Started as root, the server runs as the unprivileged `postgres` user (created if
-- missing), as bench/triagebench/postgres.py does.
--
--   local PG = require "support.postgres"
--   PG.available()              -- nil, or why there is no PostgreSQL to start
--   local pg = PG.shared()      -- one server per busted process, started on first use, removed at the
--                               -- end of the run
--   local pg2 = PG.start()      -- a server of its own: the caller stops it (pg2:destroy() removes it)
--   pg:url(db)                  -- "postgres://triage@127.0.0.1:PORT/db?sslmode=disable"
--   pg:socket_url(db)           -- the same database through the unix socket
--   pg:create_database(name)    -- dropped first if it exists; returns pg:url(name)
--   pg:ensure_database(name)    -- created if missing, kept if there; returns pg:url(name)
--   pg:copy_database(from, to)  -- to (dropped first) as a pg_dump of from; returns pg:url(to)
--   pg:psql(db, sql)            -- runs sql (psql -X -q -v ON_ERROR_STOP=1): stdout, or raises
--   pg:try_psql(db, sql)        -- the same, never raises: exit status, stdout, stderr
--   pg:rows(db, sql)            -- the rows of a query, as Lua tables (json_agg; NULL is cjson.null)
--   pg:stop{ mode = "fast" }    -- "smart" | "fast" | "immediate" (no checkpoint: WAL replay at the
--                               -- next start, as after a crash) | "kill" (SIGKILL, every process)
--   pg:start_again()            -- the same data directory on the same port
--   pg:pid()                    -- the postmaster's pid, nil while stopped
--   pg:log()                    -- what the server wrote to its log
--   pg:destroy()                -- stopped (fast) and its directory removed
--
-- Every server is also watched by a small shell process that stops it and removes its directory
-- once this process is gone, however it ended. TRIAGE_KEEP_LOGS keeps the directory of a destroyed
-- server (its log, postgres.log, with it).
-- Needs spec/support/sys.lua of the same tree (sys.run, sys.quote, sys.SIGSTOP) and, for a free
-- port, support/server.lua.
local sys = require "support.sys"
local cjson = require "cjson"

local M = {}

M.SUPERUSER = "triage"
M.MAX_CONNECTIONS = 300 -- many triage workers x --store-connections 4, psql, and room to spare

-- Settings appended to the cluster's postgresql.conf (everything else is initdb's default).
local SETTINGS = {
  { "listen_addresses", "'127.0.0.1'" },
  { "max_connections", tostring(M.MAX_CONNECTIONS) },
  { "fsync", "on" },
  { "synchronous_commit", "on" },
  { "full_page_writes", "on" },
  { "logging_collector", "off" },
  { "log_min_messages", "warning" },
  { "timezone", "'UTC'" },
}

local q = sys.quote

-- A shell command, without what the test process preloads (the sanitizer runtimes and
-- libtriage_test.so under make test-asan: a plain mkdir hung with them): exit status, stdout, stderr.
local function run(cmd)
  return sys.run("unset LD_PRELOAD; " .. cmd)
end
local CLEAN_ENV = { LC_ALL = "C", LANG = "C", TZ = "UTC", LD_PRELOAD = false }

local function exists(path)
  local f = io.open(path, "rb")
  if f then f:close() end
  return f ~= nil
end

local function command_path(name)
  local rc, out = run("command -v " .. q(name))
  return rc == 0 and out:match("^(%S+)") or nil
end

-- The newest /usr/lib/postgresql/<major>/bin holding a postgres binary ($TRIAGE_PG_BIN overrides).
local function bindir()
  local env = os.getenv("TRIAGE_PG_BIN")
  if env and env ~= "" then return env end
  local best, best_major
  local _, out = run("ls -d /usr/lib/postgresql/*/bin 2>/dev/null")
  for dir in out:gmatch("[^\n]+") do
    local major = tonumber(dir:match("^/usr/lib/postgresql/(%d+)/bin$"))
    if major and exists(dir .. "/postgres") and (not best_major or major > best_major) then
      best, best_major = dir, major
    end
  end
  return best, best_major
end

-- nil when a server can be started here, else why not.
function M.available()
  local bin = bindir()
  if not bin then
    return "PostgreSQL is not installed: no /usr/lib/postgresql/<version>/bin/postgres"
      .. " (make test-deps installs postgresql)"
  end
  for _, tool in ipairs { "initdb", "postgres", "psql", "pg_isready" } do
    if not exists(bin .. "/" .. tool) then
      return ("PostgreSQL's %s is missing from %s (make test-deps installs postgresql)"):format(tool, bin)
    end
  end
  if sys.is_root() and not command_path("setpriv") then
    return "setpriv (util-linux) is needed to run PostgreSQL as the postgres user"
  end
  return nil
end

-- As root: the `postgres` user the server runs as, created like the package does when missing.
local function server_user()
  if not sys.is_root() then return nil end
  if run("id -u postgres") ~= 0 then
    local rc, out, err = run("useradd --system --user-group --no-create-home --home-dir /var/lib/postgresql"
      .. " --shell /usr/sbin/nologin postgres")
    if rc ~= 0 then error("useradd postgres: " .. out .. err, 0) end
  end
  return "postgres"
end

local Pg = {}
Pg.__index = Pg

-- argv that runs a command as the server's user (setpriv execs: the pid stays the command's).
function Pg:as_user(argv)
  if not self.user then return argv end
  local out = { self.setpriv, "--reuid=" .. self.user, "--regid=" .. self.user, "--clear-groups", "--" }
  for _, a in ipairs(argv) do out[#out + 1] = a end
  return out
end

local function shell_words(argv)
  local words = {}
  for i, a in ipairs(argv) do words[i] = q(a) end
  return table.concat(words, " ")
end

function Pg:log()
  return sys.read_all(self.logfile) or ""
end

local function log_tail(self, lines)
  local all = {}
  for line in self:log():gmatch("[^\n]+") do all[#all + 1] = line end
  return table.concat(all, "\n", math.max(1, #all - (lines or 30) + 1))
end

function Pg:url(db)
  return ("postgres://%s@127.0.0.1:%d/%s?sslmode=disable&gssencmode=disable"):format(M.SUPERUSER, self.port, db or "postgres")
end

function Pg:socket_url(db)
  return ("postgresql:///%s?host=%s&port=%d&user=%s"):format(db or "postgres", self.socket_dir, self.port, M.SUPERUSER)
end

function Pg:pid()
  return self.postmaster
end

-- initdb, the settings, the watchdog; then the server (Pg:start_again).
function Pg:init()
  self.dir = sys.mkdtemp("/tmp/triage-pg-")
  self.data = self.dir .. "/data"
  self.socket_dir = self.dir .. "/socket"
  self.logfile = self.dir .. "/postgres.log"
  local made, _, why = run("mkdir -m 0755 " .. q(self.socket_dir))
  if made ~= 0 then error("mkdir " .. self.socket_dir .. ": " .. why, 0) end
  sys.chmod(self.dir, tonumber("711", 8)) -- the socket's directory is reachable by every user
  if self.user then
    local rc, out, err = run(("chown %s: %s %s"):format(self.user, q(self.dir), q(self.socket_dir)))
    if rc ~= 0 then error("chown " .. self.dir .. ": " .. out .. err, 0) end
  end
  self:watch()
  -- --no-sync: only initdb's own flush of the new cluster is skipped; every commit is flushed later.
  local rc, out, err = run(("cd %s && LC_ALL=C LANG=C TZ=UTC %s"):format(q(self.dir), shell_words(self:as_user {
    self.bin .. "/initdb", "-D", self.data, "-U", M.SUPERUSER, "--auth=trust", "--encoding=UTF8",
    "--locale=C", "--no-sync",
  })))
  if rc ~= 0 then error(("initdb failed (exit status %d):\n%s%s"):format(rc, out, err), 0) end
  local conf = assert(io.open(self.data .. "/postgresql.conf", "ab"))
  conf:write("\n# support/postgres.lua\n")
  for _, kv in ipairs(SETTINGS) do conf:write(kv[1], " = ", kv[2], "\n") end
  conf:write("port = ", self.port, "\n")
  conf:write("unix_socket_directories = '", self.socket_dir, "'\n")
  if self.major and self.major >= 14 then
    -- after an immediate stop, one syncfs() before the WAL replay instead of an fsync per file
    conf:write("recovery_init_sync_method = syncfs\n")
  end
  conf:close()
end

-- A shell that outlives this process (its parent-death signal cleared), waits for it to end, then
-- stops the server (immediate) and removes its directory.
local WATCHDOG = [[
while kill -0 "$1" 2>/dev/null; do sleep 1; done
if [ -f "$2/data/postmaster.pid" ]; then
  pid=$(head -n 1 "$2/data/postmaster.pid")
  kill -QUIT "$pid" 2>/dev/null
  i=0
  while kill -0 "$pid" 2>/dev/null && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
  kill -KILL "$pid" 2>/dev/null
fi
rm -rf "$2"
]]

function Pg:watch()
  local argv = { "/bin/sh", "-c", WATCHDOG, "triage-spec-pg-watchdog", tostring(sys.C.getpid()), self.dir }
  if self.setpriv then
    table.insert(argv, 1, "--")
    table.insert(argv, 1, "--pdeathsig=clear")
    table.insert(argv, 1, self.setpriv)
  end
  self.watchdog = sys.spawn(argv, "/dev/null", nil, CLEAN_ENV)
end

-- Is the server accepting connections on its TCP port?
function Pg:ready()
  return run(("%s -q -h 127.0.0.1 -p %d -U %s -d postgres"):format(q(self.bin .. "/pg_isready"),
    self.port, M.SUPERUSER)) == 0
end

-- Start the postmaster on the cluster's data directory and port; wait until it takes connections
-- (a start after an immediate stop or a kill replays the WAL first). Raises with the log's tail.
function Pg:start_again(timeout)
  assert(not self.postmaster, "the PostgreSQL server is already running (pid " .. tostring(self.postmaster) .. ")")
  local argv = self:as_user { self.bin .. "/postgres", "-D", self.data }
  self.postmaster = sys.spawn(argv, self.logfile, self.dir, CLEAN_ENV)
  local deadline = sys.now() + (timeout or 60)
  while true do
    local e = sys.reap(self.postmaster)
    if e then
      self.postmaster = nil
      error(("postgres %s at start:\n%s"):format(sys.describe_exit(e), log_tail(self)), 0)
    end
    if self:ready() then return self end
    if sys.now() > deadline then
      local pid = self.postmaster
      self:stop { mode = "immediate" }
      error(("postgres (pid %d) took no connections within %d s:\n%s"):format(pid, timeout or 60, log_tail(self)), 0)
    end
    sys.sleep(0.05)
  end
end

local SIGNALS = { smart = sys.SIGTERM, fast = sys.SIGINT, immediate = sys.SIGQUIT, kill = sys.SIGKILL }

-- Stop the server: opts.mode "fast" (default: clients disconnected, a checkpoint), "smart" (waits for
-- clients to leave), "immediate" (no checkpoint), "kill" (SIGKILL to the postmaster and every backend
-- at once). SIGKILL after opts.timeout (default 60) seconds. Waits until every server process is gone.
function Pg:stop(opts)
  opts = opts or {}
  local pid = self.postmaster
  if not pid then return end
  local sig = SIGNALS[opts.mode or "fast"]
  if not sig then error("pg:stop: mode must be smart, fast, immediate or kill, got " .. tostring(opts.mode), 2) end
  local family = sys.descendants(pid)
  if sig == sys.SIGKILL then
    sys.C.kill(pid, sys.SIGSTOP) -- no backend forked in between
    sys.C.kill(pid, sig)
    for _, p in ipairs(family) do sys.C.kill(p, sig) end
  else
    sys.C.kill(pid, sig)
  end
  local deadline = sys.now() + (opts.timeout or 60)
  local e = sys.reap(pid)
  while e == false and sys.now() < deadline do
    sys.sleep(0.02)
    e = sys.reap(pid)
  end
  if e == false then
    sys.C.kill(pid, sys.SIGKILL)
    for _, p in ipairs(family) do sys.C.kill(p, sys.SIGKILL) end
    while sys.reap(pid) == false do sys.sleep(0.02) end
  end
  self.postmaster = nil
  -- backends left by a killed postmaster are ours to reap once it is gone (a subreaper) or init's
  deadline = sys.now() + 10
  for _, p in ipairs(family) do
    while sys.alive(p) and sys.now() < deadline do
      sys.reap(p)
      sys.sleep(0.01)
    end
    if sys.alive(p) then sys.C.kill(p, sys.SIGKILL) end
    sys.reap(p)
  end
end

-- Stop the server and remove its directory (the watchdog goes too).
function Pg:destroy()
  self:stop { mode = "fast" }
  if self.watchdog then
    sys.C.kill(self.watchdog, sys.SIGKILL)
    for _ = 1, 100 do
      if sys.reap(self.watchdog) ~= false then break end
      sys.sleep(0.01)
    end
    self.watchdog = nil
  end
  if self.dir and os.getenv("TRIAGE_KEEP_LOGS") == nil then run("rm -rf " .. q(self.dir)) end
end

-- psql on database db with the SQL text (any number of statements, each in its own transaction
-- unless it says BEGIN); extra: more psql flags (a string, e.g. "-At"). Exit status, stdout, stderr.
function Pg:try_psql(db, sql, extra)
  local file = os.tmpname()
  local f = assert(io.open(file, "wb"))
  f:write(sql)
  f:close()
  local rc, out, err = run(("PGCONNECT_TIMEOUT=10 %s -X -q -v ON_ERROR_STOP=1 %s -h 127.0.0.1 -p %d -U %s -d %s -f %s")
    :format(q(self.bin .. "/psql"), extra or "", self.port, M.SUPERUSER, q(db), q(file)))
  os.remove(file)
  return rc, out, err
end

function Pg:psql(db, sql, extra)
  local rc, out, err = self:try_psql(db, sql, extra)
  if rc ~= 0 then
    error(("psql -d %s: exit status %d: %s\nSQL: %s"):format(db, rc, err ~= "" and err or out, sql), 2)
  end
  return out
end

-- The rows of a query (a SELECT, VALUES or WITH ... SELECT) as a list of { column = value }: numbers as
-- numbers, text as strings, booleans as booleans, NULL as cjson.null (as `sqlite3 -json` gives them).
function Pg:rows(db, sql)
  local query = sql:gsub("[%s;]+$", "")
  local out = self:psql(db, ("SELECT coalesce(json_agg(r), '[]'::json) FROM (%s\n) r;"):format(query), "-At")
  local ok, t = pcall(cjson.decode, out)
  if not ok then error("psql gave no JSON for " .. query .. ": " .. out, 2) end
  return t
end

-- A database name as an SQL identifier.
local function ident(name)
  return '"' .. tostring(name):gsub('"', '""') .. '"'
end
M.ident = ident

function Pg:create_database(name)
  self:psql("postgres", ("DROP DATABASE IF EXISTS %s WITH (FORCE);\nCREATE DATABASE %s;"):format(ident(name), ident(name)))
  return self:url(name)
end

function Pg:ensure_database(name)
  local there = self:psql("postgres", ("SELECT 1 FROM pg_database WHERE datname = '%s';"):format(
    tostring(name):gsub("'", "''")), "-At")
  if not there:match("1") then self:psql("postgres", ("CREATE DATABASE %s;"):format(ident(name))) end
  return self:url(name)
end

-- A copy of database from (pg_dump, while it is in use) as database to, which is dropped first if it
-- exists; returns pg:url(to).
function Pg:copy_database(from, to)
  self:create_database(to)
  local dump = os.tmpname()
  local rc, out, err = run(("%s -h 127.0.0.1 -p %d -U %s -d %s --no-owner -f %s"):format(
    q(self.bin .. "/pg_dump"), self.port, M.SUPERUSER, q(from), q(dump)))
  if rc ~= 0 then
    os.remove(dump)
    error(("pg_dump -d %s: exit status %d: %s"):format(from, rc, out .. err), 2)
  end
  rc, out, err = run(("%s -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p %d -U %s -d %s -f %s"):format(
    q(self.bin .. "/psql"), self.port, M.SUPERUSER, q(to), q(dump)))
  os.remove(dump)
  if rc ~= 0 then error(("restoring a dump of %s into %s: exit status %d: %s"):format(from, to, rc, out .. err), 2) end
  return self:url(to)
end

-- A new server of its own (the caller stops it). Raises naming why when none can start.
function M.start()
  local why = M.available()
  if why then error(why, 2) end
  local bin, major = bindir()
  local self = setmetatable({ bin = bin, major = major, setpriv = command_path("setpriv") }, Pg)
  self.user = server_user()
  self.port = require("support.server").free_port() -- (required here: server.lua requires this file)
  self:init()
  self:start_again()
  return self
end

-- One server for the whole busted process: busted reloads spec modules for every file, so it is kept
-- in the registry. It is stopped and removed when the run ends (busted's "suite end", while the Lua
-- state is whole); failing that, a sentinel sends it an immediate stop as the Lua state closes (only
-- a signal there, through a function pointer taken beforehand: the C modules Pg:stop leans on may be
-- unloaded by then), and the watchdog removes its directory once this process is gone. A failed start
-- is remembered and raised again, not retried per file.
local REGISTRY_KEY = "triage.spec.postgres.shared"

function M.shared()
  local reg = debug.getregistry()
  local entry = reg[REGISTRY_KEY]
  if not entry then
    entry = {}
    reg[REGISTRY_KEY] = entry
    local ok, pg = pcall(M.start)
    if ok then
      entry.pg = pg
      local kill, sigquit = sys.C.kill, sys.SIGQUIT
      entry.sentinel = newproxy(true)
      getmetatable(entry.sentinel).__gc = function()
        if pg.postmaster then kill(pg.postmaster, sigquit) end
      end
      local has_busted, busted = pcall(require, "busted")
      if has_busted and type(busted) == "table" and busted.subscribe then
        busted.subscribe({ "suite", "end" }, function()
          pcall(pg.destroy, pg)
          return nil, true
        end)
      end
    else
      entry.err = tostring(pg)
    end
  end
  if entry.err then error("PostgreSQL for the specs: " .. entry.err, 2) end
  return entry.pg
end

return M
