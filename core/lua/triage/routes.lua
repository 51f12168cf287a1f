-- Route tables: runs the application's routes/*.lua files with the route DSL in scope, adds each
-- route to the C router and builds each route's middleware chain.
local ffi = require "ffi"
local C = require("triage.ffi").C

local M = {}

local METHODS = { "GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "HEAD" }

local function plain_replace(s, what, with)
  local out, i = {}, 1
  while true do
    local a, b = s:find(what, i, true)
    if not a then break end
    out[#out + 1] = s:sub(i, a - 1)
    out[#out + 1] = with
    i = b + 1
  end
  out[#out + 1] = s:sub(i)
  return table.concat(out)
end

-- s (made a string) with every "<dir>/" of the given directories removed: paths in a message made
-- relative to the app. Nil directories are skipped.
function M.relative(s, ...)
  s = tostring(s)
  for i = 1, select("#", ...) do
    local dir = select(i, ...)
    if dir then
      s = plain_replace(s, dir .. "/", "")
    end
  end
  return s
end

-- Compile one of the application's own files (a route file, a module under scripts/) with the chunk
-- name "@" .. name, name being its path relative to the app ("routes/api.lua", "scripts/gad7.lua"),
-- whatever directory it was read from (a generation's snapshot under $TMPDIR, in the server): error
-- messages, tracebacks and debug.getinfo().source then name the file as it is known in the app.
-- Returns the chunk, or nil and a message naming name (not path).
function M.load_chunk(path, name)
  local f, open_err = io.open(path, "rb")
  if not f then
    return nil, ("cannot open %s: %s"):format(name, tostring(open_err):match(": ([^:]*)$") or "error")
  end
  local text = f:read("*a")
  f:close()
  if not text then
    return nil, ("cannot read %s"):format(name)
  end
  -- Text only: a binary (bytecode) chunk could read and write memory outside the Lua state.
  return load(text, "@" .. name, "t")
end

-- "module.function" -> the function, via the app's require (its sandbox). Errors name what is missing.
local function resolve_name(name, require)
  local mod, fn = name:match("^([%w_%.]+)%.([%w_]+)$")
  if not mod then
    error(("'%s' is not of the form 'module.function'"):format(name), 0)
  end
  local ok, m = pcall(require, mod)
  if not ok then
    error(("'%s': %s"):format(name, tostring(m)), 0)
  end
  local f = type(m) == "table" and m[fn]
  if type(f) ~= "function" then
    error(("'%s': module '%s' has no function '%s'"):format(name, mod, fn), 0)
  end
  return f
end

-- A handler or middleware reference: a function, "mod.fn", or "mod.factory(args)" (or, as in Lua,
-- "mod.factory{ ... }" with one table) which calls the factory with the (constant) arguments and uses
-- the function it returns.
local function resolve(ref, what, require)
  if type(ref) == "function" then
    return ref
  end
  if type(ref) ~= "string" then
    error(("%s must be a function or a 'module.function' name, got %s"):format(what, type(ref)), 0)
  end
  local name, args = ref:match("^%s*([%w_%.]+)%s*%((.*)%)%s*$")
  if not name then
    name, args = ref:match("^%s*([%w_%.]+)%s*(%b{})%s*$")
  end
  if not name then
    return resolve_name(ref, require)
  end
  local factory = resolve_name(name, require)
  local chunk, err = loadstring("return " .. args, "=" .. ref)
  if not chunk then
    error(("%s '%s': bad arguments: %s"):format(what, ref, err), 0)
  end
  setfenv(chunk, {})
  local f = factory(chunk())
  if type(f) ~= "function" then
    error(("%s '%s' did not return a function"):format(what, ref), 0)
  end
  return f
end

local function join(prefix, pattern)
  if prefix == "" then
    return pattern
  end
  if pattern == "/" or pattern == "" then
    return prefix
  end
  if prefix:sub(-1) == "/" then
    prefix = prefix:sub(1, -2)
  end
  if pattern:sub(1, 1) ~= "/" then
    pattern = "/" .. pattern
  end
  return prefix .. pattern
end

local function copy(t)
  local c = {}
  for i = 1, #t do
    c[i] = t[i]
  end
  return c
end

-- Load the route files (absolute paths, in order) of the app in app_dir, read from code_dir, into
-- router; box is the app's sandbox (triage.sandbox): route files run in its route environment,
-- handler names resolve through its require.
-- on_problem (optional, for `triage check`): called with each problem ("file:line: message") instead of
-- raising at the first; the route, middleware or file that has it is skipped and loading goes on.
-- Returns chains (handler id -> array of functions, handler last), globals (global middleware) and
-- sites (handler id -> "routes/api.lua:12 (GET /x/:id)", where the route was declared).
function M.load(app_dir, router, files, code_dir, box, on_problem)
  local routes, globals = {}, {}
  local groups = {} -- stack of { prefix = "/x", middleware = { ... } }
  local errbuf = ffi.new("char[512]")

  code_dir = code_dir or app_dir

  -- The app's files are compiled with chunk names relative to the app (load_chunk, and the scripts/
  -- searcher of triage.app), so their positions already read "routes/api.lua:3". What can still
  -- carry the directory the code was read from is a message listing paths, such as require's
  -- "module 'x' not found: ... no file '<code_dir>/scripts/x.lua'": those are made relative here.
  local function rel(s)
    return M.relative(s, code_dir, app_dir)
  end

  -- A route file's path -> its name relative to the app ("routes/api.lua"), or nil.
  local function app_name(path)
    for _, dir in ipairs { code_dir, app_dir } do
      if path:sub(1, #dir + 1) == dir .. "/" then
        return path:sub(#dir + 2)
      end
    end
  end

  local function where(level)
    local info = debug.getinfo(level + 1, "Sl")
    return ("%s:%d"):format(info.source:gsub("^@", ""), info.currentline or 0)
  end

  local function fail(at, msg)
    error(at .. ": " .. rel(msg), 0)
  end

  local function prefix()
    local p = ""
    for i = 1, #groups do
      p = join(p, groups[i].prefix)
    end
    return p
  end

  local function group_middleware()
    local mw = {}
    for i = 1, #groups do
      for j = 1, #groups[i].middleware do
        mw[#mw + 1] = groups[i].middleware[j]
      end
    end
    return mw
  end

  local function add(at, method, pattern, handler)
    if type(method) ~= "string" or type(pattern) ~= "string" then
      fail(at, "a route needs a method and a pattern string")
    end
    method = method:upper()
    local ok, fn = pcall(resolve, handler, "handler", box.env.require)
    if not ok then
      fail(at, fn)
    end
    local full = join(prefix(), pattern)
    local id = #routes + 1
    if C.tr_ffi_router_add(router, method, full, #full, id, errbuf, 512) ~= 0 then
      fail(at, ffi.string(errbuf))
    end
    routes[id] = { handler = fn, middleware = group_middleware(), where = at, method = method, pattern = full,
                   route = method .. " " .. full }
  end

  -- f(...) raising at its first problem, or, with on_problem, reporting it and going on.
  local function collecting(f)
    if not on_problem then
      return f
    end
    return function(...)
      local ok, err = pcall(f, ...)
      if not ok then
        on_problem(rel(err))
      end
    end
  end
  add = collecting(add)

  local dsl = {}
  for _, m in ipairs(METHODS) do
    dsl[m:lower()] = function(pattern, handler)
      add(where(2), m, pattern, handler)
    end
  end
  dsl.route = function(method, pattern, handler)
    add(where(2), method, pattern, handler)
  end
  -- allow { "ffi", "os.execute" }: what the app's scripts may use beyond the default environment.
  dsl.allow = function(list)
    box:grant(list, where(2))
  end
  local use = collecting(function(at, ref)
    local ok, fn = pcall(resolve, ref, "middleware", box.env.require)
    if not ok then
      fail(at, fn)
    end
    local target = #groups > 0 and groups[#groups].middleware or globals
    target[#target + 1] = fn
  end)
  dsl.use = function(...)
    local at = where(2)
    for i = 1, select("#", ...) do
      use(at, (select(i, ...)))
    end
  end
  dsl.group = function(pfx, middleware, body)
    local at = where(2)
    if type(middleware) == "function" and body == nil then
      middleware, body = {}, middleware
    end
    if type(pfx) ~= "string" or type(middleware) ~= "table" or type(body) ~= "function" then
      fail(at, "group(prefix, { middleware... }, function() ... end)")
    end
    local resolved = {}
    local resolve_one = collecting(function(ref)
      local ok, fn = pcall(resolve, ref, "middleware", box.env.require)
      if not ok then
        fail(at, fn)
      end
      resolved[#resolved + 1] = fn
    end)
    for _, ref in ipairs(middleware) do
      resolve_one(ref)
    end
    groups[#groups + 1] = { prefix = pfx, middleware = resolved }
    local ok, err = pcall(body)
    groups[#groups] = nil
    if not ok then
      error(err, 0)
    end
  end

  local env = box:route_env(dsl)
  for _, path in ipairs(files) do
    local name = app_name(path)
    local chunk, err
    if name then
      chunk, err = M.load_chunk(path, name)
    else
      chunk, err = loadfile(path, "t")
    end
    if not chunk then
      if not on_problem then
        error(rel(err), 0)
      end
      on_problem(rel(err))
    else
      setfenv(chunk, env)
      local ok, run_err = pcall(chunk)
      if not ok then
        if not on_problem then
          error(rel(run_err), 0)
        end
        on_problem(rel(run_err))
      end
    end
  end

  local chains, sites = {}, {}
  for id, r in ipairs(routes) do
    sites[id] = ("%s (%s %s)"):format(r.where, r.method, r.pattern)
    local chain = copy(globals)
    for _, mw in ipairs(r.middleware) do
      chain[#chain + 1] = mw
    end
    chain[#chain + 1] = r.handler
    chain.route = r.route -- "POST /api/epro/submit", for the audit trail (triage.store, tx:audit)
    chains[id] = chain
  end
  return chains, globals, sites
end

return M
