-- An application generation: boot() loads it into this Lua state and returns the request loop
-- that each request coroutine runs.
local ffi = require "ffi"
local cjson = require "cjson"
local C = require("triage.ffi").C
local triage = require "triage"
local ctxmod = require "triage.ctx"
local routes = require "triage.routes"
local sandbox = require "triage.sandbox"

local new_ctx = ctxmod.new
local running = ctxmod.running_by_coroutine
local yield = coroutine.yield
local xpcall, traceback = xpcall, debug.traceback

local M = {}

local function not_found(ctx)
  return ctx:status(404):json { error = "not found" }
end

local function method_not_allowed(ctx)
  local len = ffi.new("size_t[1]")
  local p = C.tr_ffi_req_allow(ctx._r, ctx._s, len)
  local allow = p ~= nil and ffi.string(p, len[0]) or ""
  return ctx:status(405):set_header("Allow", allow):json { error = "method not allowed" }
end

local function with(globals, last)
  local chain = {}
  for i = 1, #globals do
    chain[i] = globals[i]
  end
  chain[#chain + 1] = last
  return chain
end

-- The message handler of the request's xpcall: the error and a traceback from the function that
-- raised it (level 1 is on_error itself). Not a tail call: `return traceback(...)` would replace
-- on_error's frame with traceback's, shifting the levels by one, so that level 2 would skip the
-- frame of the handler (or middleware) in which a runtime error such as indexing nil happened.
local function on_error(err)
  local tb = traceback(tostring(err), 2)
  return tb
end

-- Modules of the application's scripts/ get chunk names relative to the app ("@scripts/gad7.lua",
-- "@scripts/auth/init.lua"), not the path of the generation's snapshot they are read from: a
-- searcher placed ahead of the standard Lua-file searcher resolves module names against
-- <code_dir>/scripts/?.lua and <code_dir>/scripts/?/init.lua. The framework's own modules (found in
-- the directory triage/app.lua was loaded from) are left to the standard searcher, as before.
-- script_dirs: the code directories booted in this state, the newest first (one in the server, whose
-- states each run one generation; in-process specs may load several apps into one state).
local script_dirs = {}

local framework_path
do
  local lua_dir = debug.getinfo(1, "S").source:match("^@(.*)/triage/app%.lua$")
  if lua_dir then
    framework_path = lua_dir .. "/?.lua;" .. lua_dir .. "/?/init.lua"
  end
end

local function is_framework(name)
  if framework_path then
    return package.searchpath(name, framework_path) ~= nil
  end
  return name == "triage" or name:sub(1, 7) == "triage."
end

local function search_scripts(name)
  if type(name) ~= "string" or #script_dirs == 0 or is_framework(name) then
    return nil
  end
  local file = name:gsub("%.", "/")
  for i = 1, #script_dirs do
    for _, rel in ipairs { "scripts/" .. file .. ".lua", "scripts/" .. file .. "/init.lua" } do
      local path = script_dirs[i] .. "/" .. rel
      local f = io.open(path, "rb")
      if f then
        f:close()
        local chunk, err = routes.load_chunk(path, rel)
        if not chunk then
          error(("error loading module '%s' from file '%s':\n\t%s"):format(name, rel, err), 0)
        end
        return chunk -- require calls it with the module name, as with the standard searcher
      end
    end
  end
  return nil -- not an app module: the standard searchers go on (and list what they tried)
end

local function add_script_dir(dir)
  for i = #script_dirs, 1, -1 do
    if script_dirs[i] == dir then
      table.remove(script_dirs, i)
    end
  end
  table.insert(script_dirs, 1, dir)
  local searchers = package.loaders or package.searchers
  local me = debug.getinfo(search_scripts, "S")
  for i = #searchers, 1, -1 do
    local f = searchers[i]
    if f == search_scripts then
      return
    end
    -- this searcher from an earlier load of this module (busted reloads modules between spec files)
    local info = type(f) == "function" and debug.getinfo(f, "S")
    if info and info.source == me.source and info.linedefined == me.linedefined then
      table.remove(searchers, i)
    end
  end
  table.insert(searchers, 2, search_scripts) -- after package.preload, before the Lua-file searcher
end

-- The request loop: one request per iteration, yielding to C in between. The middleware cursor
-- (`nxt`) is made once per coroutine, not per request. code_dir is stripped from the message of a
-- failed request: positions in the app's files are relative already, but a message can list paths
-- (require's "module 'x' not found: ... no file '<code_dir>/scripts/x.lua'").
-- A request whose handler chain returned without setting a response (no body and the status left at
-- its 200): a slip, such as a forgotten ctx:json. The client gets a 500 rather than an empty 200 it
-- would take for success, and the log names the route. site: where the route was declared.
local function no_response(ctx, site)
  local id = ctx:request_id()
  local msg = ("request %s: %s %s: the handler of %s returned without setting a response (ctx:json, ctx:send, "
    .. "ctx:json_text or ctx:status): answered 500"):format(id, ctx:method(), ctx:path(), site or "the route")
  C.tr_ffi_log_error(msg, #msg)
  ctx:_reset()
  ctx:status(500):send_request_id():json { error = "the handler set no response", requestId = id }
end

local function request_loop(chains, not_found_chain, not_allowed_chain, code_dir, sites)
  return function()
    local chain, i, ctx
    local co = coroutine.running()
    local function nxt()
      i = i + 1
      local f = chain[i]
      if f then
        return f(ctx, nxt)
      end
    end
    while true do
      local r = C.tr_ffi_req_running()
      ctx = new_ctx(r)
      local h = r.handler
      chain = h > 0 and chains[h] or (h == -2 and not_allowed_chain or not_found_chain)
      ctx._route = chain.route
      running[co] = ctx
      i = 0
      local ok, err = xpcall(nxt, on_error)
      if not ok then
        local id = ctx:request_id()
        err = routes.relative(err, code_dir)
        local msg = ("request %s: %s %s failed: %s"):format(id, ctx:method(), ctx:path(), err)
        C.tr_ffi_log_error(msg, #msg)
        ctx:_reset()
        if C.tr_ffi_req_stopped(ctx._r, ctx._s) ~= 0 then
          -- the watchdog stopped it past --handler-timeout (guard.h): the client may retry later
          ctx:status(503):set_header("Retry-After", "1"):send_request_id():json {
            error = "the handler ran past --handler-timeout and was stopped",
            requestId = id,
          }
        else
          ctx:status(500):send_request_id():json { error = "internal server error", requestId = id }
        end
      elseif ctx._resp == nil and r.status == 200 then
        no_response(ctx, sites[h])
      end
      ctx:_finish()
      running[co] = nil
      ctx, chain = nil, nil
      yield()
    end
  end
end

-- Load the application in app_dir into this state: route files (absolute paths, in order), their
-- handlers and middleware, added to router; carried is what the previous generation exported for
-- triage.carry (or nil); code_dir is where this generation's copy of routes/ and scripts/ lives (the
-- app directory itself in specs). on_problem (optional, `triage check`): reports each problem of the
-- route files instead of raising at the first (routes.load). Returns the request loop function.
function M.boot(app_dir, router, generation, route_files, carried, code_dir, on_problem)
  local jit_log = os.getenv("TRIAGE_JIT_LOG") -- trace compiler diagnostics, for profiling
  if jit_log and jit_log ~= "" then
    require("jit.v").start(jit_log)
  end
  triage._import(carried)
  triage.app_dir = app_dir
  triage.generation = generation
  if type(router) ~= "cdata" then
    router = ffi.cast("tr_router_t *", router)
  end
  code_dir = code_dir or app_dir
  add_script_dir(code_dir)
  local box = sandbox.new(code_dir, routes.load_chunk)
  M.box = box
  local chains, globals, sites = routes.load(app_dir, router, route_files or {}, code_dir, box, on_problem)
  box:done_loading()
  M.chains = chains
  -- Read by the core after a load (tr_gen_environment): what the app asked for and the globals it
  -- assigned while loading, for status and the preflight's warnings.
  M.environment = box:report()
  local warnings = {}
  for i, g in ipairs(box.globals) do
    warnings[i] = ("%s: global '%s' assigned while the app loads (shared by every request); declare it with local")
      :format(g.at, g.name)
  end
  M.environment_warnings = table.concat(warnings, "\n")
  return request_loop(chains, with(globals, not_found), with(globals, method_not_allowed), code_dir, sites)
end

return M
