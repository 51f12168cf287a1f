-- LuaJIT FFI bindings to the few libc calls the integration specs need:
-- process control (fork/exec/kill/waitpid), non-blocking sockets and poll,
-- rlimits and a monotonic clock. Linux, x86_64/aarch64.
local ffi = require "ffi"
local bit = require "bit"
local C = ffi.C

-- Specs run in one VM and busted reloads this module for every file, while
-- ffi.cdef is VM-global: declare each item separately and ignore redefinitions.
local decls = {
  "struct triage_spec_pollfd { int fd; short events; short revents; };",
  "struct triage_spec_sockaddr_in { uint16_t sin_family; uint16_t sin_port; uint32_t sin_addr; uint8_t sin_zero[8]; };",
  "struct triage_spec_rlimit { unsigned long cur; unsigned long max; };",
  "struct triage_spec_timespec { long tv_sec; long tv_nsec; };",
  "int socket(int domain, int type, int protocol);",
  "int connect(int fd, const void *addr, uint32_t len);",
  "int poll(struct triage_spec_pollfd *fds, unsigned long n, int timeout);",
  "intptr_t read(int fd, void *buf, size_t n);",
  "intptr_t send(int fd, const void *buf, size_t n, int flags);",
  "int close(int fd);",
  "int shutdown(int fd, int how);",
  "int getsockopt(int fd, int level, int name, void *val, uint32_t *len);",
  "int setsockopt(int fd, int level, int name, const void *val, uint32_t len);",
  "int kill(int pid, int sig);",
  "int waitpid(int pid, int *status, int options);",
  "int fork(void);",
  "int execv(const char *path, char *const argv[]);",
  "int dup2(int oldfd, int newfd);",
  "int open(const char *path, int flags, ...);",
  "void _exit(int code);",
  "int prctl(int option, unsigned long a2, unsigned long a3, unsigned long a4, unsigned long a5);",
  "int getpid(void);",
  "int getrlimit(int resource, struct triage_spec_rlimit *rlim);",
  "int setrlimit(int resource, const struct triage_spec_rlimit *rlim);",
  "char *strerror(int errnum);",
  "char *mkdtemp(char *template);",
  "char *realpath(const char *path, char *resolved);",
  "void *signal(int sig, void *handler);",
  "int sigprocmask(int how, const void *set, void *oldset);",
  "int clock_gettime(int clk, struct triage_spec_timespec *ts);",
  "int rmdir(const char *path);",
  "int chdir(const char *path);",
  "int execve(const char *path, char *const argv[], char *const envp[]);",
  "extern char **environ;",
  "int chmod(const char *path, unsigned int mode);",
  "unsigned int geteuid(void);",
  "int setenv(const char *name, const char *value, int overwrite);",
  "int unsetenv(const char *name);",
}
for _, d in ipairs(decls) do pcall(ffi.cdef, d) end

local M = { ffi = ffi, C = C }

M.AF_INET, M.SOCK_STREAM = 2, 1
M.SOCK_NONBLOCK, M.SOCK_CLOEXEC = 0x800, 0x80000
M.POLLIN, M.POLLOUT, M.POLLERR, M.POLLHUP = 1, 4, 8, 16
M.EINTR, M.EAGAIN, M.EINPROGRESS = 4, 11, 115
M.ECONNRESET, M.ECONNREFUSED, M.EPIPE, M.ECHILD = 104, 111, 32, 10
M.SOL_SOCKET, M.SO_ERROR, M.SO_LINGER = 1, 4, 13
M.MSG_NOSIGNAL = 0x4000
M.SIGHUP, M.SIGINT, M.SIGQUIT, M.SIGKILL, M.SIGPIPE, M.SIGTERM, M.SIGCHLD = 1, 2, 3, 9, 13, 15, 17
M.SIGUSR1, M.SIGUSR2, M.SIGSTOP = 10, 12, 19
M.WNOHANG = 1
M.O_RDONLY, M.O_WRONLY, M.O_APPEND = 0, 1, 0x400
M.RLIMIT_NOFILE = 7
M.PR_SET_PDEATHSIG, M.PR_SET_CHILD_SUBREAPER = 1, 36

function M.strerror(e)
  return ffi.string(C.strerror(e))
end

local ts = ffi.new("struct triage_spec_timespec")
function M.now()
  C.clock_gettime(1, ts) -- CLOCK_MONOTONIC
  return tonumber(ts.tv_sec) + tonumber(ts.tv_nsec) * 1e-9
end

function M.sleep(seconds)
  if seconds > 0 then C.poll(nil, 0, math.floor(seconds * 1000 + 0.5)) end
end

-- Raise RLIMIT_NOFILE (soft) as far as the hard limit allows.
function M.raise_nofile(want)
  local r = ffi.new("struct triage_spec_rlimit")
  if C.getrlimit(M.RLIMIT_NOFILE, r) ~= 0 then return nil, M.strerror(ffi.errno()) end
  local hard = tonumber(r.max)
  local target = want and math.min(want, hard) or hard
  if tonumber(r.cur) < target then
    r.cur = target
    if C.setrlimit(M.RLIMIT_NOFILE, r) ~= 0 then return nil, M.strerror(ffi.errno()) end
  end
  C.getrlimit(M.RLIMIT_NOFILE, r)
  return tonumber(r.cur), tonumber(r.max)
end

function M.sockaddr(port, host)
  local sa = ffi.new("struct triage_spec_sockaddr_in")
  sa.sin_family = M.AF_INET
  sa.sin_port = bit.bor(bit.rshift(port, 8), bit.lshift(bit.band(port, 0xff), 8))
  local a, b, c, d = (host or "127.0.0.1"):match("^(%d+)%.(%d+)%.(%d+)%.(%d+)$")
  assert(a, "IPv4 address expected")
  -- network byte order in memory: a.b.c.d
  local bytes = ffi.cast("uint8_t *", sa) + 4
  bytes[0], bytes[1], bytes[2], bytes[3] = tonumber(a), tonumber(b), tonumber(c), tonumber(d)
  return sa
end

-- Start a non-blocking connect. Returns fd, "connected"|"inprogress" or nil, err.
function M.connect_start(port, host)
  local fd = C.socket(M.AF_INET, bit.bor(M.SOCK_STREAM, M.SOCK_NONBLOCK, M.SOCK_CLOEXEC), 0)
  if fd < 0 then return nil, "socket: " .. M.strerror(ffi.errno()) end
  local sa = M.sockaddr(port, host)
  if C.connect(fd, sa, ffi.sizeof(sa)) == 0 then return fd, "connected" end
  local e = ffi.errno()
  if e == M.EINPROGRESS or e == M.EAGAIN then return fd, "inprogress" end
  C.close(fd)
  return nil, "connect: " .. M.strerror(e)
end

function M.socket_error(fd)
  local v = ffi.new("int[1]")
  local len = ffi.new("uint32_t[1]", 4)
  if C.getsockopt(fd, M.SOL_SOCKET, M.SO_ERROR, v, len) ~= 0 then return ffi.errno() end
  return v[0]
end

-- Poll one fd for events until `timeout` seconds; returns revents (0 on timeout).
local one = ffi.new("struct triage_spec_pollfd[1]")
function M.poll1(fd, events, timeout)
  local deadline = M.now() + math.max(timeout, 0)
  while true do
    one[0].fd, one[0].events, one[0].revents = fd, events, 0
    local ms = math.max(0, math.ceil((deadline - M.now()) * 1000))
    local n = C.poll(one, 1, ms)
    if n > 0 then return one[0].revents end
    if n == 0 then return 0 end
    if ffi.errno() ~= M.EINTR then return nil, M.strerror(ffi.errno()) end
  end
end

-- Decode a waitpid status word.
function M.decode_status(st)
  local sig = bit.band(st, 0x7f)
  if sig == 0 then return { code = bit.band(bit.rshift(st, 8), 0xff), status = st } end
  return { signal = sig, status = st }
end

function M.describe_exit(e)
  if not e then return "still running" end
  if e.code then return "exited with status " .. e.code end
  return "killed by signal " .. tostring(e.signal)
end

-- /proc helpers -------------------------------------------------------------

local function read_all(path)
  local f = io.open(path, "rb")
  if not f then return nil end
  local s = f:read("*a")
  f:close()
  return s
end
M.read_all = read_all

-- state letter and ppid of a process, or nil if it does not exist
function M.proc_stat(pid)
  local s = read_all("/proc/" .. tostring(pid) .. "/stat")
  if not s then return nil end
  local rest = s:match("^%d+ %b() (.*)$") or s:match("%) (.*)$")
  if not rest then return nil end
  local state, ppid = rest:match("^(%S+) (%d+)")
  return state, tonumber(ppid)
end

-- alive = exists and is not a zombie
function M.alive(pid)
  if not pid or pid <= 0 then return false end
  local state = M.proc_stat(pid)
  return state ~= nil and state ~= "Z" and state ~= "X"
end

function M.list_pids()
  local pids = {}
  local ok, lfs = pcall(require, "lfs")
  if ok then
    for name in lfs.dir("/proc") do
      if name:match("^%d+$") then pids[#pids + 1] = tonumber(name) end
    end
  else
    local p = io.popen("ls /proc")
    for name in p:lines() do
      if name:match("^%d+$") then pids[#pids + 1] = tonumber(name) end
    end
    p:close()
  end
  return pids
end

-- all descendants of pid (children, grandchildren, ...)
function M.descendants(pid)
  local children = {}
  for _, p in ipairs(M.list_pids()) do
    local _, ppid = M.proc_stat(p)
    if ppid then
      children[ppid] = children[ppid] or {}
      table.insert(children[ppid], p)
    end
  end
  local out, queue = {}, { pid }
  while #queue > 0 do
    local p = table.remove(queue)
    for _, c in ipairs(children[p] or {}) do
      out[#out + 1] = c
      queue[#queue + 1] = c
    end
  end
  return out
end

function M.realpath(path)
  local buf = ffi.new("char[4096]")
  local r = C.realpath(path, buf)
  if r == nil then return nil, M.strerror(ffi.errno()) end
  return ffi.string(buf)
end

function M.mkdtemp(prefix)
  local tmpl = (prefix or "/tmp/triage-spec-") .. "XXXXXX"
  local buf = ffi.new("char[?]", #tmpl + 1, tmpl)
  local r = C.mkdtemp(buf)
  if r == nil then error("mkdtemp: " .. M.strerror(ffi.errno())) end
  return ffi.string(buf)
end

function M.chmod(path, mode)
  return C.chmod(path, mode) == 0
end

function M.is_root()
  return C.geteuid() == 0
end

-- Set a variable in this process's own environment (what C code loaded into it reads with getenv).
function M.setenv(name, value)
  if C.setenv(name, value, 1) ~= 0 then error("setenv " .. name .. ": " .. M.strerror(ffi.errno()), 2) end
end

-- Remove a variable from this process's own environment (what its children inherit).
function M.unsetenv(name)
  if C.unsetenv(name) ~= 0 then error("unsetenv " .. name .. ": " .. M.strerror(ffi.errno()), 2) end
end

-- A word for the shell.
function M.quote(s)
  return "'" .. tostring(s):gsub("'", "'\\''") .. "'"
end

-- Run a shell command: exit status (a number), stdout, stderr.
function M.run(cmd)
  local out, err, rc = os.tmpname(), os.tmpname(), os.tmpname()
  os.execute(("(%s) >%s 2>%s; echo $? >%s"):format(cmd, M.quote(out), M.quote(err), M.quote(rc)))
  local o, e, r = read_all(out) or "", read_all(err) or "", read_all(rc) or ""
  os.remove(out)
  os.remove(err)
  os.remove(rc)
  return tonumber(r:match("%d+")) or -1, o, e
end

-- Become a child subreaper so that workers orphaned by a dying master are
-- re-parented to this process, where teardown can find and reap them.
local subreaper_done = false
function M.become_subreaper()
  if not subreaper_done then
    C.prctl(M.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    subreaper_done = true
  end
end

-- This process's environment with `env`'s entries set (a string or number) or removed (false), as
-- a NULL-terminated char *[]; the strings are kept alive in `keep`.
function M.environment(env, keep)
  local list = {}
  local ep = C.environ
  local i = 0
  while ep ~= nil and ep[i] ~= nil do
    local s = ffi.string(ep[i])
    local name = s:match("^([^=]*)=") or s
    if env[name] == nil then list[#list + 1] = s end
    i = i + 1
  end
  local names = {}
  for name, v in pairs(env) do
    if v then names[#names + 1] = name end
  end
  table.sort(names)
  for _, name in ipairs(names) do list[#list + 1] = name .. "=" .. tostring(env[name]) end
  local envp = ffi.new("char *[?]", #list + 1)
  for j, s in ipairs(list) do
    local b = ffi.new("char[?]", #s + 1, s)
    keep[#keep + 1] = b
    envp[j - 1] = b
  end
  envp[#list] = nil
  keep[#keep + 1] = envp
  return envp
end

-- fork + execv argv[1] with stdout/stderr to `output` (a file path).
-- The child gets SIGKILL if this process dies, default signal dispositions,
-- an empty signal mask, and no inherited descriptors beyond 0-2.
-- env (optional): variables to set (name = value) or remove (name = false) in the child; without it
-- the child inherits this process's environment unchanged.
function M.spawn(argv, output, cwd, env)
  local n = #argv
  local cargv = ffi.new("char *[?]", n + 1)
  local keep = {}
  for i = 1, n do
    local s = tostring(argv[i])
    local b = ffi.new("char[?]", #s + 1, s)
    keep[i] = b
    cargv[i - 1] = b
  end
  cargv[n] = nil
  local path = keep[1]
  local f = assert(io.open(output, "ab")); f:close()
  local outfd = C.open(output, bit.bor(M.O_WRONLY, M.O_APPEND))
  if outfd < 0 then error("open " .. output .. ": " .. M.strerror(ffi.errno())) end
  local nullfd = C.open("/dev/null", M.O_RDONLY)
  local cwdbuf = cwd and ffi.new("char[?]", #cwd + 1, cwd) or nil
  local r = ffi.new("struct triage_spec_rlimit")
  C.getrlimit(M.RLIMIT_NOFILE, r)
  local maxfd = math.min(tonumber(r.cur), 65536)
  local emptyset = ffi.new("uint8_t[128]")
  local sigs = { M.SIGHUP, M.SIGINT, M.SIGQUIT, M.SIGPIPE, M.SIGTERM, M.SIGCHLD }
  local envp = env and M.environment(env, keep) or nil

  local pid = C.fork()
  if pid == 0 then
    -- child: no Lua allocation-heavy work, no return to the caller
    collectgarbage("stop")
    C.prctl(M.PR_SET_PDEATHSIG, M.SIGKILL, 0, 0, 0)
    for i = 1, #sigs do C.signal(sigs[i], nil) end
    C.sigprocmask(2, emptyset, nil) -- SIG_SETMASK
    if cwdbuf ~= nil then C.chdir(cwdbuf) end
    C.dup2(nullfd, 0)
    C.dup2(outfd, 1)
    C.dup2(outfd, 2)
    for fd = 3, maxfd do C.close(fd) end
    if envp ~= nil then
      C.execve(path, cargv, envp)
    else
      C.execv(path, cargv)
    end
    C._exit(127)
  end
  C.close(outfd)
  C.close(nullfd)
  if pid < 0 then error("fork: " .. M.strerror(ffi.errno())) end
  return pid
end

-- waitpid(pid, WNOHANG): returns exit table if it has exited, false if not,
-- nil if it is not our child (or already reaped).
local stbuf = ffi.new("int[1]")
function M.reap(pid)
  local r = C.waitpid(pid, stbuf, M.WNOHANG)
  if r == pid then return M.decode_status(stbuf[0]) end
  if r == 0 then return false end
  return nil, M.strerror(ffi.errno())
end

return M
