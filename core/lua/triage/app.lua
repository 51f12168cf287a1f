-- An application generation: boot() loads it into this Lua state and returns the request loop
-- that each request coroutine runs.
local ffi = require "ffi"
local cjson = require "cjson"
local C = require("triage.ffi").C
local triage = require "triage"
local ctxmod = require "triage.ctx"
local routes = require "triage.routes"

local new_ctx = ctxmod.new
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

local function on_error(err)
  return traceback(tostring(err), 2)
end

-- The request loop: one request per iteration, yielding to C in between. The middleware cursor
-- (`nxt`) is made once per coroutine, not per request.
local function request_loop(chains, not_found_chain, not_allowed_chain)
  return function()
    local chain, i, ctx
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
      i = 0
      local ok, err = xpcall(nxt, on_error)
      if not ok then
        local id = ctx:request_id()
        local msg = ("request %s: %s %s failed: %s"):format(id, ctx:method(), ctx:path(), err)
        C.tr_ffi_log_error(msg, #msg)
        ctx:_reset()
        ctx:status(500):send_request_id():json { error = "internal server error", requestId = id }
      end
      ctx:_finish()
      ctx, chain = nil, nil
      yield()
    end
  end
end

-- Load the application in app_dir into this state: route files (absolute paths, in order), their
-- handlers and middleware, added to router; carried is what the previous generation exported for
-- triage.carry (or nil); code_dir is where this generation's copy of routes/ and scripts/ lives (the
-- app directory itself in specs). Returns the request loop function.
function M.boot(app_dir, router, generation, route_files, carried, code_dir)
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
  local chains, globals = routes.load(app_dir, router, route_files or {}, code_dir or app_dir)
  M.chains = chains
  return request_loop(chains, with(globals, not_found), with(globals, method_not_allowed))
end

return M
