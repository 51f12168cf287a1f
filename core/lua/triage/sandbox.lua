-- The environment an application's scripts run in (route files, scripts/ modules, and every
-- function they define, handlers and middleware included). The framework's own modules keep the
-- full Lua state; an app's code gets a table of its own (README.md, "Script environment"):
--
--   * the standard library minus what reaches outside the request: no `ffi`, `debug`, `jit`,
--     `os.execute`, `os.exit`, `os.remove`, `os.rename`, `os.tmpname`, `io.popen`, `io.open` for
--     writing, `package.loadlib`, C modules from package.cpath, `getfenv`/`setfenv`, and no
--     binary (bytecode) chunks for load/loadstring/loadfile/dofile (a hand-made bytecode chunk can
--     read and write memory outside the Lua state);
--   * reading files stays (io.open in "r"/"rb" mode, io.lines, os.getenv, os.date, os.time,
--     os.clock): an app reads its own data files at load, and the worker's user (--user) bounds
--     what it can read;
--   * an app that needs one of the above asks for it by name in a route file, before the routes
--     that use it: `allow { "ffi", "os.execute" }`. The grant holds for the whole app (one Lua
--     state per generation) and is shown in /_triage/status;
--   * strict globals: a global read or assigned that was never declared raises an error at
--     request time naming the file and line; globals assigned while the app loads are allowed and
--     reported (the preflight logs them and status lists them).
--
-- Standard globals are copied into the environment once, so a handler's `pairs` or `string` is a
-- plain table hit; the metatable is consulted only for keys that are missing.
local cjson = require "cjson"

local M = {
  -- In-process specs (triage.testing) set this: an app module loaded in the sandbox is also put in
  -- package.loaded, so that a spec's require("audit") sees the instance the handlers use.
  share_loaded = false,
}

-- What `allow` accepts, with what it gives.
local CAPABILITIES = {
  ["ffi"] = "require \"ffi\"",
  ["debug"] = "the debug library (global `debug`, require \"debug\")",
  ["jit"] = "the jit library (global `jit`, require \"jit.*\")",
  ["os.execute"] = "os.execute",
  ["os.exit"] = "os.exit",
  ["os.remove"] = "os.remove",
  ["os.rename"] = "os.rename",
  ["os.tmpname"] = "os.tmpname",
  ["io.popen"] = "io.popen",
  ["io.open"] = "io.open in every mode (writing too), io.input, io.output, io.tmpfile",
  ["package.loadlib"] = "package.loadlib",
  ["package.cpath"] = "require of C modules found on package.cpath",
  ["bytecode"] = "load, loadstring, loadfile and dofile of binary (bytecode) chunks",
  ["getfenv"] = "getfenv",
  ["setfenv"] = "setfenv",
}
M.capabilities = CAPABILITIES

-- Libraries the framework offers to every app: real require, nothing to ask.
local LIBRARIES = { ["cjson"] = true, ["cjson.safe"] = true, ["string.buffer"] = true }
-- The framework's modules meant for apps; the other triage.* modules are internal.
local PUBLIC = { ["triage"] = true, ["triage.store"] = true, ["triage.middleware"] = true,
  ["triage.schema"] = true, ["triage.auth"] = true }

local SAFE_GLOBALS = {
  "assert", "error", "ipairs", "next", "pairs", "pcall", "print", "rawequal", "rawget", "rawset",
  "select", "setmetatable", "getmetatable", "tonumber", "tostring", "type", "unpack", "xpcall",
  "collectgarbage", "gcinfo", "newproxy", "_VERSION",
}
local COPIED_LIBRARIES = { "string", "table", "math", "coroutine", "bit" }

local OS_SAFE = { "clock", "date", "difftime", "getenv", "time" }
local IO_SAFE = { "lines", "read", "write", "type", "stdout", "stderr", "stdin", "close" }

local getinfo = debug.getinfo
local real_load, real_loadfile = load, loadfile
local my_source = getinfo(1, "S").source

-- "file:line" of the first frame at or above `level` (counted from the caller) that is neither
-- this module nor a C function: the line of the app's code that did what is refused.
local function where(level)
  level = (level or 1) + 1
  while true do
    local info = getinfo(level, "Sl")
    if not info then
      return "?"
    end
    if info.what ~= "C" and info.source ~= my_source then
      return ("%s:%d"):format(info.source:gsub("^[@=]", ""), info.currentline or 0)
    end
    level = level + 1
  end
end
M.where = where

local function ask(capability)
  return ("ask for it with allow { %q } at the top of a route file (README.md, \"Script environment\")")
    :format(capability)
end

local function refuse(capability, what)
  error(("%s: %s is not available to the app's scripts; %s"):format(where(2), what or capability,
    ask(capability)), 0)
end

local function copy(t)
  local c = {}
  for k, v in pairs(t) do
    c[k] = v
  end
  return c
end

local function is_binary(chunk)
  return type(chunk) == "string" and chunk:byte(1) == 0x1b
end

-- A new environment for one app. code_dir: where its routes/ and scripts/ are read from;
-- load_chunk(path, name): compiles one of its files (text only) with a name relative to the app.
-- Returns the box: box.env (the scripts' globals), box:route_env(dsl), box:grant(list, at),
-- box:done_loading(), box:report().
function M.new(code_dir, load_chunk)
  local box = {
    granted = {},   -- capability -> "file:line" of its allow
    order = {},     -- capabilities in the order they were asked for
    globals = {},   -- load-time globals: { name = , at = "file:line" }
    reads = {},     -- load-time reads of undeclared globals (nil then): { name = , at = "file:line" }
    loading = true, -- false once the app has loaded: from then on undeclared globals are errors
    loaded = {},    -- the app's modules (its own package.loaded)
  }
  local env = {}
  box.env = env

  for _, name in ipairs(SAFE_GLOBALS) do
    env[name] = _G[name]
  end
  for _, name in ipairs(COPIED_LIBRARIES) do
    env[name] = copy(_G[name]) -- replacing string.format in a script does not touch the framework's
  end
  env._G = env

  -- os and io: the safe part copied; the rest named with how to ask for it.
  local OS_GATED = { execute = "os.execute", exit = "os.exit", remove = "os.remove", rename = "os.rename",
    tmpname = "os.tmpname" }
  local IO_GATED = { popen = "io.popen", input = "io.open", output = "io.open", tmpfile = "io.open" }
  local function gated(real, safe, gates, libname)
    local t = {}
    for _, k in ipairs(safe) do
      t[k] = real[k]
    end
    return setmetatable(t, { __index = function(_, k)
      local cap = gates[k]
      if cap then
        refuse(cap, libname .. "." .. k)
      end
      return nil
    end })
  end
  local os_box = gated(os, OS_SAFE, OS_GATED, "os")
  local io_box = gated(io, IO_SAFE, IO_GATED, "io")
  -- io.open: reading without asking; writing, appending or updating needs "io.open".
  io_box.open = function(path, mode)
    if mode ~= nil and mode ~= "r" and mode ~= "rb" and not box.granted["io.open"] then
      refuse("io.open", ("io.open(..., %q)"):format(tostring(mode)))
    end
    return io.open(path, mode)
  end
  local package_box = setmetatable({ config = package.config, loaded = box.loaded, path = package.path },
    { __index = function(_, k)
      if k == "loadlib" then
        refuse("package.loadlib")
      elseif k == "cpath" then
        refuse("package.cpath")
      end
      return nil
    end })
  env.os, env.io, env.package = os_box, io_box, package_box

  -- Loading code: text chunks only (unless "bytecode" is granted), in this environment by default.
  local function mode_for(mode)
    if box.granted["bytecode"] then
      return mode or "bt"
    end
    if mode ~= nil and mode ~= "t" then
      refuse("bytecode", "loading binary chunks")
    end
    return "t"
  end
  local function checked(f, err)
    if not f and tostring(err):find("wrong mode", 1, true) then
      return nil, ("binary (bytecode) chunks are not available to the app's scripts; %s"):format(ask("bytecode"))
    end
    return f, err
  end
  env.load = function(chunk, name, mode, fenv)
    if type(chunk) == "function" then -- pieces: read them to see whether the chunk is binary
      local parts = {}
      for piece in chunk do
        if piece == "" then break end
        parts[#parts + 1] = piece
      end
      chunk = table.concat(parts)
    end
    return checked(real_load(chunk, name or (type(chunk) == "string" and chunk) or "=(load)", mode_for(mode),
      fenv or env))
  end
  env.loadstring = function(s, name)
    return env.load(s, name)
  end
  env.loadfile = function(path, mode, fenv)
    return checked(real_loadfile(path, mode_for(mode), fenv or env))
  end
  env.dofile = function(path)
    local f, err = env.loadfile(path)
    if not f then
      error(err, 2)
    end
    return f()
  end

  -- require: the app's own modules (scripts/), the public framework modules, the offered
  -- libraries and the standard ones; other pure-Lua modules on package.path run in this
  -- environment too; ffi, debug, jit and C modules only when asked for.
  local standard = { string = env.string, table = env.table, math = env.math, coroutine = env.coroutine,
    bit = env.bit, os = os_box, io = io_box, package = package_box, _G = env }
  local function load_module(name, path, rel)
    local chunk, err = load_chunk(path, rel)
    if not chunk then
      error(("error loading module '%s' from file '%s':\n\t%s"):format(name, rel, err), 0)
    end
    setfenv(chunk, env)
    local value = chunk(name)
    if value == nil then
      value = box.loaded[name] ~= nil and box.loaded[name] or true
    end
    box.loaded[name] = value
    if M.share_loaded then
      package.loaded[name] = value
    end
    return value
  end
  env.require = function(name)
    if type(name) ~= "string" then
      error(("bad argument #1 to 'require' (string expected, got %s)"):format(type(name)), 2)
    end
    local value = box.loaded[name]
    if value ~= nil then
      return value
    end
    if standard[name] then
      return standard[name]
    end
    local head = name:match("^[^.]+")
    if name == "ffi" or head == "debug" or head == "jit" then
      local cap = head == "debug" and "debug" or head == "jit" and "jit" or "ffi"
      if not box.granted[cap] then
        refuse(cap, ("require %q"):format(name))
      end
      return require(name)
    end
    if LIBRARIES[name] or PUBLIC[name] then
      return require(name)
    end
    if head == "triage" then
      error(("%s: module '%s' is internal to the framework; the app's scripts may require %s"):format(
        where(2), name, "triage, triage.store, triage.middleware, triage.schema, triage.auth"), 0)
    end
    local file = name:gsub("%.", "/")
    for _, rel in ipairs { "scripts/" .. file .. ".lua", "scripts/" .. file .. "/init.lua" } do
      local path = code_dir .. "/" .. rel
      local f = io.open(path, "rb")
      if f then
        f:close()
        return load_module(name, path, rel)
      end
    end
    local path = package.searchpath(name, package.path)
    if path then
      return load_module(name, path, path)
    end
    if package.searchpath(name, package.cpath) then
      if not box.granted["package.cpath"] then
        refuse("package.cpath", ("the C module %q"):format(name))
      end
      return require(name)
    end
    error(("module '%s' not found: no file 'scripts/%s.lua', 'scripts/%s/init.lua', nor on package.path")
      :format(name, file, file), 2)
  end

  -- Strict globals: only keys missing from the table reach these.
  local GATED_GLOBALS = { ffi = "ffi", debug = "debug", jit = "jit", getfenv = "getfenv", setfenv = "setfenv" }
  local function missing(name)
    local cap = GATED_GLOBALS[name]
    if cap then
      refuse(cap, ("the global '%s'"):format(tostring(name)))
    end
    if box.loading then
      box.reads[#box.reads + 1] = { name = tostring(name), at = where(2) }
      return nil
    end
    error(("%s: read of undeclared global '%s' in a request; declare it with local (local %s = ...) in the "
      .. "function or at the top of its file"):format(where(2), tostring(name), tostring(name)), 0)
  end
  local function assign(t, name, value)
    if box.loading then
      box.globals[#box.globals + 1] = { name = tostring(name), at = where(2) }
      rawset(t, name, value)
      return
    end
    error(("%s: assignment to undeclared global '%s' in a request (it would be shared by every request "
      .. "of this worker); declare it with local (local %s = ...)"):format(where(2), tostring(name),
      tostring(name)), 0)
  end
  setmetatable(env, {
    __index = function(_, name)
      local v = missing(name)
      return v
    end,
    __newindex = assign,
  })

  -- The environment of a route file: the DSL, then everything the scripts see; its globals are
  -- the scripts' globals.
  function box:route_env(dsl)
    local renv = {}
    for k, v in pairs(env) do
      renv[k] = v
    end
    for k, v in pairs(dsl) do
      renv[k] = v
    end
    return setmetatable(renv, {
      __index = function(_, name)
        local v = rawget(env, name)
        if v == nil then
          v = missing(name)
        end
        return v
      end,
      __newindex = function(_, name, value)
        assign(env, name, value)
      end,
    })
  end

  -- allow { "ffi", ... } at `at`: grants each capability to the app. Errors name unknown ones.
  function box:grant(list, at)
    if type(list) == "string" then
      list = { list }
    end
    if type(list) ~= "table" then
      error(("%s: allow { \"name\", ... } wants a list of names"):format(at), 0)
    end
    if not self.loading then
      error(("%s: allow is for route files, while the app loads"):format(at), 0)
    end
    for _, cap in ipairs(list) do
      if not CAPABILITIES[cap] then
        local known = {}
        for k in pairs(CAPABILITIES) do
          known[#known + 1] = k
        end
        table.sort(known)
        error(("%s: allow: unknown name %q; known: %s"):format(at, tostring(cap), table.concat(known, ", ")), 0)
      end
      if not self.granted[cap] then
        self.granted[cap] = at
        self.order[#self.order + 1] = cap
        if cap == "debug" or cap == "jit" or cap == "getfenv" or cap == "setfenv" then
          rawset(env, cap, _G[cap])
        elseif cap == "os.execute" or cap == "os.exit" or cap == "os.remove" or cap == "os.rename"
          or cap == "os.tmpname" then
          rawset(os_box, cap:sub(4), os[cap:sub(4)])
        elseif cap == "io.popen" then
          rawset(io_box, "popen", io.popen)
        elseif cap == "io.open" then
          rawset(io_box, "input", io.input)
          rawset(io_box, "output", io.output)
          rawset(io_box, "tmpfile", io.tmpfile)
        elseif cap == "package.loadlib" then
          rawset(package_box, "loadlib", package.loadlib)
        elseif cap == "package.cpath" then
          rawset(package_box, "cpath", package.cpath)
        end
      end
    end
  end

  function box:done_loading()
    self.loading = false
  end

  -- What the app asked for and the globals it assigned while loading, as JSON:
  -- {"allowed":["ffi",...],"load_time_globals":["scripts/x.lua:3: name",...]} (at most 16 of
  -- each, so that it fits the status document's slot).
  function box:report()
    local allowed, globals = {}, {}
    for i = 1, math.min(#self.order, 16) do
      allowed[i] = self.order[i]
    end
    for i = 1, math.min(#self.globals, 16) do
      local g = self.globals[i]
      globals[i] = ("%s: %s"):format(g.at, g.name:sub(1, 40))
    end
    local function array(t)
      local parts = {}
      for i = 1, #t do
        parts[i] = cjson.encode(t[i])
      end
      return "[" .. table.concat(parts, ",") .. "]"
    end
    return ('{"allowed":%s,"load_time_globals":%s}'):format(array(allowed), array(globals))
  end

  return box
end

return M
