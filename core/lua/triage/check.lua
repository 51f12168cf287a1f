-- `triage check`: the application loaded as a generation loads it (the same sandbox, route loader
-- and router), with every problem found reported as "FILE:LINE: message" (paths relative to the
-- app) instead of the first one stopping the load:
--
--   * every .lua file under routes/ and scripts/ is compiled (syntax errors), whether routes use it
--     or not;
--   * the route files run with the route DSL: bad patterns, conflicting routes, handler and
--     middleware names that do not resolve (missing module, missing function), errors raised while
--     loading;
--   * globals the app assigns or reads undeclared while it loads;
--   * reads and assignments of undeclared globals in the functions of the app's files, found in
--     their bytecode: at request time each would raise.
local routes = require "triage.routes"
local sandbox = require "triage.sandbox"

local M = {}

local DSL_NAMES = { "get", "post", "put", "patch", "delete", "options", "head", "route", "allow", "use", "group" }

-- The .lua files under dir/sub, as paths relative to dir, sorted.
local function lua_files(dir, sub)
  local files = {}
  local quoted = "'" .. (dir .. "/" .. sub):gsub("'", "'\\''") .. "'"
  local p = io.popen("find " .. quoted .. " -type f -name '*.lua' 2>/dev/null")
  if p then
    for path in p:lines() do
      local rel = path:sub(#dir + 2)
      if not rel:match("/%.") then
        files[#files + 1] = rel
      end
    end
    p:close()
  end
  table.sort(files)
  return files
end

-- The global names read (GGET) and assigned (GSET) by fn and the functions nested in it, as
-- { op = "read" | "assignment", name =, line =, main = (in the file's top level) }, or nil when the
-- bytecode cannot be read (jit.vmdef missing).
local function global_accesses(fn)
  local ok_vm, vmdef = pcall(require, "jit.vmdef")
  local ok_util, jutil = pcall(require, "jit.util")
  if not (ok_vm and ok_util) then
    return nil
  end
  local bit = require "bit"
  local out = {}
  local function walk(f, main)
    local info = jutil.funcinfo(f)
    for pc = 1, info.bytecodes - 1 do
      local ins = jutil.funcbc(f, pc)
      if not ins then
        break
      end
      local op = vmdef.bcnames:sub(bit.band(ins, 0xff) * 6 + 1, bit.band(ins, 0xff) * 6 + 6)
      if op == "GGET  " or op == "GSET  " then
        local name = jutil.funck(f, -bit.rshift(ins, 16) - 1)
        out[#out + 1] = { op = op == "GGET  " and "read" or "assignment", name = name,
          line = jutil.funcinfo(f, pc).currentline, main = main }
      end
    end
    for i = 1, info.gcconsts or 0 do
      local k = jutil.funck(f, -i)
      if type(k) == "proto" or (type(k) == "function" and k ~= f) then
        walk(k, false)
      end
    end
  end
  walk(fn, true)
  return out
end

-- Check the app in app_dir whose code is read from code_dir (the same directory, in `triage check`)
-- into router (a tr_router_t *). Returns the problems, an array of "FILE:LINE: message" strings in
-- the order found, and the number of routes.
function M.run(app_dir, router, route_files, code_dir)
  code_dir = code_dir or app_dir
  local problems, seen = {}, {}
  local function problem(msg)
    msg = routes.relative(msg, code_dir, app_dir)
    if not seen[msg] then
      seen[msg] = true
      problems[#problems + 1] = msg
    end
  end

  -- Compile everything first: a file that does not compile is reported once, here.
  local broken, chunks = {}, {}
  for _, sub in ipairs { "routes", "scripts" } do
    for _, rel in ipairs(lua_files(code_dir, sub)) do
      local chunk, err = routes.load_chunk(code_dir .. "/" .. rel, rel)
      if chunk then
        chunks[rel] = chunk
      else
        broken[rel] = true
        problem(err)
      end
    end
  end

  local app = require "triage.app"
  local ok, err = pcall(app.boot, app_dir, router, 1, route_files, nil, code_dir, function(msg)
    -- a require of a module that does not compile fails again for each name that uses it
    local file = msg:match("from file '([^']+)'")
    if not (file and broken[file]) then
      problem(msg)
    end
  end)
  if not ok then
    problem(err)
  end
  local box = app.box
  local nroutes = app.chains and #app.chains or 0
  if not box then
    return problems, nroutes
  end

  for _, g in ipairs(box.globals) do
    problem(("%s: global '%s' assigned while the app loads (shared by every request); declare it with local")
      :format(g.at, g.name))
  end
  for _, g in ipairs(box.reads) do
    problem(("%s: read of undeclared global '%s' while the app loads (it is nil); declare it with local")
      :format(g.at, g.name))
  end

  local known = {}
  for _, name in ipairs(DSL_NAMES) do
    known[name] = true
  end
  local names = {}
  for rel in pairs(chunks) do
    names[#names + 1] = rel
  end
  table.sort(names)
  for _, rel in ipairs(names) do
    local accesses = global_accesses(chunks[rel]) or {}
    local in_routes = rel:sub(1, 7) == "routes/"
    for _, a in ipairs(accesses) do
      local declared = rawget(box.env, a.name) ~= nil or (in_routes and known[a.name])
      -- top-level assignments and reads ran while loading: reported above, from the sandbox
      if not declared and not a.main then
        problem(("%s:%d: %s of undeclared global '%s' in a function: it raises when the function runs; "
          .. "declare it with local"):format(rel, a.line, a.op, a.name))
      end
    end
  end
  return problems, nroutes
end

return M
