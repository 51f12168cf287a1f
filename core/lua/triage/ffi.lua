-- The FFI boundary: declares the C request API from cdef.h (the same file the C core includes) and
-- returns the namespace its functions live in: the server executable itself, or, outside the server
-- (handler specs under busted), the in-process test library: $TRIAGE_TEST_LIB if set; for an installed
-- triage (PREFIX/share/triage/lua/triage/cdef.h), PREFIX/lib/triage/libtriage_test.so; in a checkout
-- (core/lua/triage/cdef.h), build/libtriage_test.so; in a rocks tree (TREE/share/lua/5.1/triage/cdef.h,
-- `luarocks make`), TREE/lib/lua/5.1/triage/libtriage_test.so.
local ffi = require "ffi"

local M = {}

local function read_cdef()
  local template = package.path:gsub("%.lua", ".h")
  local path, err = package.searchpath("triage.cdef", template)
  if not path then
    error("triage.ffi: cannot find triage/cdef.h on package.path:" .. err)
  end
  local f = assert(io.open(path, "rb"))
  local text = f:read("*a")
  f:close()
  return text, path
end

local cdef_text, cdef_path = read_cdef()
ffi.cdef(cdef_text)

local function in_server()
  return pcall(function() return ffi.C.tr_ffi_method_name end)
end

if in_server() then
  M.C = ffi.C
  M.testing = false
else
  local lib = os.getenv("TRIAGE_TEST_LIB")
  if not lib or lib == "" then
    -- PREFIX/share/triage/lua/triage/cdef.h -> PREFIX/lib/triage/libtriage_test.so
    local prefix = cdef_path:match("^(.*)/share/triage/lua/triage/cdef%.h$")
      or (cdef_path:match("^share/triage/lua/triage/cdef%.h$") and ".")
    local tree = cdef_path:match("^(.*)/share/lua/5%.1/triage/cdef%.h$")
    if prefix then
      lib = prefix .. "/lib/triage/libtriage_test.so"
    elseif tree then
      lib = tree .. "/lib/lua/5.1/triage/libtriage_test.so"
    else
      -- core/lua/triage/cdef.h -> <repo>/build/libtriage_test.so
      local root = cdef_path:match("^(.*)/core/lua/triage/cdef%.h$") or "."
      lib = root .. "/build/libtriage_test.so"
    end
  end
  M.C = ffi.load(lib)
  M.testing = true
end

return M
