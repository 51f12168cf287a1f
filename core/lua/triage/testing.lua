-- In-process testing of an application's handlers, for busted specs:
--
--   local testing = require "triage.testing"
--   local app = testing.app("/path/to/app")          -- routes/ and scripts/ loaded in this process
--   local res = app:request { method = "POST", path = "/api/epro/submit",
--                             json = { patientId = "P-1", reportData = { q1 = 3 } } }
--   assert.equals(200, res.status); assert.is_true(res:json().success)
--
-- Requests go as raw bytes over a socketpair through the server's own connection layer, parser,
-- router and response serializer (the C core built as build/libtriage_test.so); only the coroutine
-- is resumed here rather than by a worker's loop, so triage.sleep blocks instead of yielding.
local ffi = require "ffi"
local cjson = require "cjson.safe"
local tffi = require "triage.ffi"
local triage = require "triage"
local app_mod = require "triage.app"
require("triage.sandbox").share_loaded = true -- a spec's require("x") gets the app's own module x

local C = tffi.C

local M = {}

ffi.cdef [[ int poll(void *fds, unsigned long nfds, int timeout); ]]

triage._blocking_sleep = function(seconds)
  if seconds > 0 then
    ffi.C.poll(nil, 0, math.floor(seconds * 1000 + 0.5))
  end
end

local Response = {}
Response.__index = Response

-- The body decoded as JSON (nil and an error if it is not JSON).
function Response:json()
  return cjson.decode(self.body)
end

local function parse_response(raw)
  local head, body = raw:match("^(.-)\r\n\r\n(.*)$")
  if not head then
    error("malformed response: " .. raw, 2)
  end
  local status = tonumber(head:match("^HTTP/1%.1 (%d%d%d)"))
  local headers = {}
  for name, value in head:gmatch("\r\n([^:\r\n]+):%s*([^\r\n]*)") do
    headers[name:lower()] = value
  end
  return setmetatable({ status = status, headers = headers, body = body, raw = raw }, Response)
end

local App = {}
App.__index = App

local function list_route_files(dir)
  local files = {}
  local p = io.popen('ls -1 "' .. dir .. '/routes" 2>/dev/null')
  for name in p:lines() do
    if name:match("%.lua$") and not name:match("^%.") then
      files[#files + 1] = dir .. "/routes/" .. name
    end
  end
  p:close()
  table.sort(files)
  return files
end

local function random_hex()
  local f = assert(io.open("/dev/urandom", "rb"))
  local bytes = f:read(16)
  f:close()
  return (bytes:gsub(".", function(c) return ("%02x"):format(c:byte()) end))
end

-- Token keys for the in-process specs: one key, in a file of this process's own (mode 0600), made
-- once; what the workers get from --token-keys.
local keys_ready = false
local function test_keys()
  if keys_ready then
    return
  end
  local path = os.tmpname()
  local f = assert(io.open(path, "wb"))
  f:write("spec ", random_hex(), "-in-process-spec-secret-of-triage\n")
  f:close()
  os.execute(("chmod 600 '%s'"):format(path))
  local err = ffi.new("char[512]")
  local rc = C.tr_ffi_test_auth_keys(path, 60, err, 512)
  os.remove(path)
  if rc ~= 0 then
    error("triage.testing: token keys: " .. ffi.string(err), 3)
  end
  keys_ready = true
end

-- A bearer token for { sub = , role = , trial = (or trials = { ... }), ttl = seconds (default 3600),
-- nbf = , exp = (absolute, to test them) }, signed with the in-process specs' key.
function M.token(claims)
  test_keys()
  local now = math.floor(triage.now())
  local payload = assert(cjson.encode {
    sub = claims.sub, role = claims.role, trial = claims.trial, trials = claims.trials,
    iat = now, nbf = claims.nbf or now, exp = claims.exp or now + (claims.ttl or 3600),
  })
  local out = ffi.new("char[8192]")
  local n = C.tr_ffi_test_auth_sign(nil, payload, #payload, out, 8192)
  if n < 0 then
    error("triage.testing.token: the claims do not fit in a token", 2)
  end
  return ffi.string(out, n)
end

-- Load the application in dir (absolute or relative to the current directory).
-- opts.data: the data directory of its store (created and migrated; default: a new temporary
-- directory, removed when the app is collected).
-- opts.as: claims ({ sub = , role = , trial = }) of a bearer token every request carries unless it
-- gives its own (request{ as = claims }, or as = false for none, or an Authorization header).
function M.app(dir, opts)
  opts = opts or {}
  dir = dir or "."
  if dir:sub(1, 1) ~= "/" then
    local pwd = io.popen("pwd"):read("*l")
    dir = pwd .. "/" .. dir
  end
  dir = dir:gsub("/%.$", ""):gsub("/$", "")
  local scripts = dir .. "/scripts/?.lua;" .. dir .. "/scripts/?/init.lua;"
  if not package.path:find(scripts, 1, true) then
    package.path = scripts .. package.path
  end
  local data, cleanup = opts.data, nil
  if not data then
    data = io.popen("mktemp -d /tmp/triage-spec-data-XXXXXX"):read("*l")
    cleanup = newproxy(true)
    getmetatable(cleanup).__gc = function() os.execute(("rm -rf '%s'"):format(data)) end
  end
  local err = ffi.new("char[1024]")
  if C.tr_ffi_test_store_open(data, dir, err, 1024) ~= 0 then
    error("triage.testing: the store of " .. dir .. ": " .. ffi.string(err), 2)
  end
  require("triage.store")._forget() -- a new store: what triage.store learnt of the last one is stale
  local router = ffi.gc(C.tr_ffi_test_router_new(), C.tr_ffi_test_router_free)
  local loop = app_mod.boot(dir, router, 1, list_route_files(dir), nil, dir)
  test_keys()
  return setmetatable({ dir = dir, data = data, router = router, loop = loop, cleanup = cleanup, as = opts.as }, App)
end

-- Send one request: { method = "GET", path = "/x?y=1", headers = { Name = "v" }, body = "...",
-- json = table, as = claims of its bearer token (M.token) or false }. Returns a response { status, headers (lower-case names), body, json() }.
function App:request(opts)
  if type(opts) == "string" then
    opts = { path = opts }
  end
  local method = opts.method or "GET"
  local body = opts.body
  local headers = {}
  local authorization = false
  for k, v in pairs(opts.headers or {}) do
    headers[#headers + 1] = k .. ": " .. v .. "\r\n"
    authorization = authorization or k:lower() == "authorization"
  end
  local as = opts.as
  if as == nil then
    as = self.as
  end
  if as and not authorization then
    headers[#headers + 1] = "Authorization: Bearer " .. M.token(as) .. "\r\n"
  end
  if opts.json ~= nil then
    body = assert(cjson.encode(opts.json))
    headers[#headers + 1] = "Content-Type: application/json\r\n"
  end
  if body then
    headers[#headers + 1] = "Content-Length: " .. #body .. "\r\n"
  end
  local raw = method .. " " .. (opts.path or "/") .. " HTTP/1.1\r\nHost: test\r\n" .. table.concat(headers) .. "\r\n"
    .. (body or "")
  local err = ffi.new("char[256]")
  local r = C.tr_ffi_test_request(raw, #raw, self.router, err, 256)
  if r == nil then -- refused by the core (the answer a client would get), or incomplete
    local msg = ffi.string(err)
    local len = ffi.new("size_t[1]")
    local p = C.tr_ffi_test_response(len)
    local res = len[0] > 0 and parse_response(ffi.string(p, len[0])) or setmetatable({ headers = {}, body = "" }, Response)
    res.error = msg
    return res
  end
  if not self.co or coroutine.status(self.co) == "dead" then
    self.co = coroutine.create(self.loop)
  end
  local ok, e = coroutine.resume(self.co)
  if not ok then
    error("request loop failed: " .. tostring(e))
  end
  local len = ffi.new("size_t[1]")
  local p = C.tr_ffi_test_response(len)
  return parse_response(ffi.string(p, len[0]))
end

return M
