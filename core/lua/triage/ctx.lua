-- ctx: the request and its response, as handlers and middleware see them.
--
-- A ctx is a small table holding the C request (a tr_req_pub_t *) and the serial the request had
-- when the ctx was made. Every method checks the serial first: once the request has finished, its
-- C context goes back to the pool (and may serve another request), its serial changes, and any call
-- on the old ctx raises instead of reading or writing someone else's request.
local ffi = require "ffi"
local cjson = require "cjson"
local cjson_safe = require "cjson.safe"
local C = require("triage.ffi").C
local schema = require "triage.schema"
local bit = require "bit"

local bor, band, bnot = bit.bor, bit.band, bit.bnot
local ffi_string = ffi.string
local type, tostring, tonumber, error, setmetatable = type, tostring, tonumber, error, setmetatable

local STALE = "ctx used after its request finished"

local FFI_OK = C.TR_FFI_OK

local len_out = ffi.new("size_t[1]")
local len_out2 = ffi.new("size_t[1]")
local ptr_out = ffi.new("const char *[1]")
local id_buf = ffi.new("char[128]")
local errmsg = ffi.new("const char *[1]")

-- Request bodies are decoded strictly (RFC 8259): by a cjson instance of their own, so that the
-- setting below (per instance) changes nothing for other users of cjson, after one pass of the
-- core's check (tr_ffi_json_check) for what lua-cjson lets through: invalid UTF-8, numbers that
-- overflow a double, control characters in strings, numbers outside the grammar, unpaired \u
-- surrogates. decode_invalid_numbers(false) refuses NaN, Infinity, hex, leading zeros and '+'
-- (the check finds those first, to name them).
local cjson_strict = cjson_safe.new()
cjson_strict.decode_invalid_numbers(false)
local json_at = ffi.new("size_t[1]")

-- tr_req_pub_t.flags: response headers the core writes itself, so that no FFI call is needed
local FLAG_REQUEST_ID = 1 -- X-Request-Id
local FLAG_JSON = 2       -- Content-Type: application/json (unless the handler set a Content-Type)

local method_names = {}

local Ctx = {}
Ctx.__index = Ctx

-- ctx._r is a reference to the request's public part, not a pointer: a script can read its fields
-- but cannot do arithmetic or indexing on it, which would reach any memory of the worker (other
-- requests' bytes among it) without the ffi module. The C functions take it as the pointer.
local req_ref = ffi.typeof("tr_req_pub_t &")
local cast = ffi.cast

local function new(r)
  return setmetatable({ _r = cast(req_ref, r), _s = r.serial }, Ctx)
end

-- The app's code (its files are compiled as "@routes/..." and "@scripts/...") nearest to the top of
-- the stack from level on, as "file:line", or nil.
local function app_caller(level)
  while true do
    local info = debug.getinfo(level + 1, "Sl")
    if not info then
      return nil
    end
    if info.source:match("^@routes/") or info.source:match("^@scripts/") then
      return ("%s:%d"):format(info.source:sub(2), info.currentline)
    end
    level = level + 1
  end
end

-- Where the running request's handler is defined, as "file:line", or nil: for a slip in a tail call
-- (`return ctx.json{...}`), which leaves no frame of the function that made it.
local function running_handler()
  local app = package.loaded["triage.app"]
  local r = C.tr_ffi_req_running()
  local chain = type(app) == "table" and app.chains and r ~= nil and app.chains[r.handler]
  if chain then
    local info = debug.getinfo(chain[#chain], "S")
    return ("%s:%d"):format(info.source:gsub("^@", ""), info.linedefined)
  end
end

-- Raise msg, a slip of the app's code, at the app's line that made it: the nearest frame of the app
-- above the ctx method that found it, or, when the method was reached by a tail call
-- (`return ctx.json{...}`, which leaves no frame of its caller), the first line of the running
-- handler, saying so. level: the ctx method's stack level as raise_slip's caller counts it (1: the
-- caller itself); name: the method's name.
local function raise_slip(msg, level, name)
  local at = app_caller(level + 1)
  if not at then
    at = running_handler()
    msg = msg .. (" in `return ctx%s%s ...` of this handler or of a function it calls"):format(
      msg:match("^ctx%.") and "." or ":", name)
  end
  error(at and (at .. ": " .. msg) or msg, 0)
end

-- A method called with '.' instead of ':' (`ctx.json{...}`): self is then the first argument, not a
-- ctx. Reached only on that error path: names the method (the function two levels up) and the line
-- of the app that called it.
local function not_a_ctx(self)
  local f = debug.getinfo(3, "f").func
  local name = "method"
  for k, v in pairs(Ctx) do
    if v == f then
      name = k
    end
  end
  raise_slip(("ctx.%s called with '.', use ctx:%s(...) (got a %s as the ctx)"):format(name, name, type(self)), 3,
    name)
end

-- The request of a live ctx. The type test and the nil test are the slip checks for a dot call:
-- both are guards the JIT-compiled code tests anyway when it loads self._r.
local function req(self)
  local r = type(self) == "table" and self._r
  if not r then
    not_a_ctx(self)
  end
  if r.serial ~= self._s then
    error(STALE, 3)
  end
  return r
end

local function hex_char(h)
  return string.char(tonumber(h, 16))
end

-- Percent-decoding (and '+' as space in query strings). Kept free of closures so the JIT can
-- compile the common case, a value with nothing to decode.
local function unescape(s, plus)
  if plus and s:find("+", 1, true) then
    s = s:gsub("+", " ")
  end
  if s:find("%", 1, true) then
    s = s:gsub("%%(%x%x)", hex_char)
  end
  return s
end

function Ctx:method()
  local m = req(self).method
  local name = method_names[m]
  if not name then
    name = ffi_string(C.tr_ffi_method_name(m))
    method_names[m] = name
  end
  return name
end

function Ctx:path()
  local p = C.tr_ffi_req_path(req(self), self._s, len_out)
  return ffi_string(p, len_out[0])
end

-- A route parameter (`:id`, `*rest`), percent-decoded; nil if the route has none of that name.
function Ctx:param(name)
  local p = C.tr_ffi_req_param(req(self), self._s, name, #name, len_out)
  if p == nil then
    return nil
  end
  return unescape(ffi_string(p, len_out[0]), false)
end

-- A query argument, decoded ('+' is a space); "" for `?flag`; nil if absent.
function Ctx:query(name)
  local p = C.tr_ffi_req_query(req(self), self._s, name, #name, len_out)
  if p == nil then
    return nil
  end
  return unescape(ffi_string(p, len_out[0]), true)
end

-- The raw query string (without '?'), "" if none.
function Ctx:query_string()
  local p = C.tr_ffi_req_query_string(req(self), self._s, len_out)
  return ffi_string(p, len_out[0])
end

-- A request header by case-insensitive name (the first if repeated), or nil.
function Ctx:header(name)
  local p = C.tr_ffi_req_header(req(self), self._s, name, #name, len_out)
  if p == nil then
    return nil
  end
  return ffi_string(p, len_out[0])
end

-- All request headers as a table keyed by lower-case name (repeated headers joined with ", ").
function Ctx:headers()
  local r = req(self)
  local t = {}
  for i = 0, C.tr_ffi_req_header_count(r, self._s) - 1 do
    local n = C.tr_ffi_req_header_at(r, self._s, i, len_out, ptr_out, len_out2)
    local name = ffi_string(n, len_out[0]):lower()
    local value = ffi_string(ptr_out[0], len_out2[0])
    t[name] = t[name] and (t[name] .. ", " .. value) or value
  end
  return t
end

-- The request body ("" if none). The string is made once and kept, so middleware and handler can
-- both read it.
function Ctx:body()
  local r = req(self)
  local b = self._body
  if b == nil then
    local p = C.tr_ffi_req_body(r, self._s, len_out)
    b = ffi_string(p, len_out[0])
    self._body = b
  end
  return b
end

-- What json_body(kind) accepts at the top level of a body: kind "object" wants '{', "array" '[',
-- nil either (a table, which a handler can index without raising); "any" takes scalars too.
local JSON_KINDS = { object = "an object", array = "an array", any = true }
local JSON_OPENERS = { object = "{", array = "[" }

-- v (decoded from the body b) if it is of the kind asked for, else nil and a message naming both.
local function of_kind(v, b, kind)
  if kind == "any" or (type(v) == "table" and (kind == nil or b:match("^%s*(.)") == JSON_OPENERS[kind])) then
    return v
  end
  local got = type(v) == "table" and (b:match("^%s*%[") and "an array" or "an object")
    or (v == cjson.null and "null" or ("a %s (%s)"):format(type(v), tostring(v)))
  return nil, ("invalid JSON: the body must be %s, got %s"):format(JSON_KINDS[kind] or "an object or an array", got)
end

-- The body decoded as JSON, or nil and a message. Never raises on bad input. kind: "object",
-- "array", "any", or nil (an object or an array: a body of `5` or `null` is refused rather than
-- handed to code that would index it).
function Ctx:json_body(kind)
  req(self)
  if kind ~= nil and not JSON_KINDS[kind] then
    error("ctx:json_body: kind must be \"object\", \"array\" or \"any\", got " .. tostring(kind), 2)
  end
  local b = self:body()
  if self._json == nil and self._json_err == nil then
    local v, err
    if b == "" then
      err = "invalid JSON: empty body"
    else
      local e = C.tr_ffi_json_check(b, #b, json_at, errmsg)
      if e ~= FFI_OK then
        err = "invalid JSON: " .. ffi_string(errmsg[0]) .. " at byte " .. tonumber(json_at[0])
      else
        v, err = cjson_strict.decode(b)
        if v == nil then
          err = "invalid JSON: " .. tostring(err)
        else
          schema.mark_empty_arrays(b, v) -- [] apart from {} (lua-cjson 2.1.0 decodes both as {})
        end
      end
    end
    self._json, self._json_err = v, err
  end
  if self._json_err ~= nil then
    return nil, self._json_err
  end
  return of_kind(self._json, b, kind)
end

-- The JSON body checked against a schema (triage.schema), or { body = s, query = s, params = s }.
-- Returns the body (or { body, query, params }), or nil once a 400 naming every failure is set.
function Ctx:validate(spec)
  req(self)
  return schema.request(self, spec, 2)
end

-- This request's id: the X-Request-Id the client sent (1 to 128 characters of letters, digits and
-- . _ : -) or one made by the worker.
function Ctx:request_id()
  local r = req(self)
  local id = self._id
  if not id then
    local n = C.tr_ffi_req_id(r, self._s, id_buf, 128)
    id = n > 0 and ffi_string(id_buf, n) or "-"
    self._id = id
  end
  return id
end

-- Values shared along the middleware chain for this request.
function Ctx:get(key)
  req(self)
  local l = self._locals
  return l and l[key]
end

function Ctx:set(key, value)
  req(self)
  local l = self._locals
  if not l then
    l = {}
    self._locals = l
  end
  l[key] = value
  return self
end

-- Who sent this request, once an auth middleware (triage.auth) has verified its token: a new table
-- { sub = , role = , trial = (the first), trials = { ... } } on each call, or nil.
function Ctx:principal()
  req(self)
  local p = self._principal
  if not p then
    return nil
  end
  local trials = {}
  for i = 1, #p.trials do
    trials[i] = p.trials[i]
  end
  return { sub = p.sub, role = p.role, trial = p.trial, trials = trials }
end

-- Internal (triage.auth): the verified principal of this request.
local function set_principal(ctx, principal)
  req(ctx)
  ctx._principal = principal
end

function Ctx:status(code)
  local r = req(self)
  if code == nil then
    return r.status
  end
  if type(code) ~= "number" or code < 100 or code > 599 or code % 1 ~= 0 then
    if type(code) == "string" then
      raise_slip(("ctx:status wants a number, got the string %q: use ctx:status(%s)")
        :format(code, tonumber(code) and code or "400"), 1, "status")
    end
    error("ctx:status: expected an HTTP status from 100 to 599, got " .. tostring(code), 2)
  end
  if code < 200 then
    -- A 1xx is interim: sent as the answer, the client would take the next response for this one's.
    error(("ctx:status: 1xx is not a final status (got %d)"):format(code), 2)
  end
  r.status = code
  return self
end

function Ctx:set_header(name, value)
  local r = req(self)
  name, value = tostring(name), tostring(value)
  if C.tr_ffi_resp_header(r, self._s, name, #name, value, #value, errmsg) ~= FFI_OK then
    error("ctx:set_header('" .. name .. "'): " .. ffi_string(errmsg[0]), 2)
  end
  return self
end

-- Send this request's id back as X-Request-Id (what the request_id middleware does).
function Ctx:send_request_id()
  local r = req(self)
  r.flags = bor(r.flags, FLAG_REQUEST_ID)
  return self
end

function Ctx:send(body)
  req(self)
  local t = type(body)
  if t == "number" then
    body = tostring(body)
  elseif t ~= "string" then
    error("ctx:send: expected a string, got " .. t, 2)
  end
  self._resp = body
  return self
end

function Ctx:json(value)
  local r = req(self)
  local body = cjson.encode(value)
  r.flags = bor(r.flags, FLAG_JSON)
  self._resp = body
  return self
end

-- Send text that is JSON already (a document kept encoded), with the JSON content type.
function Ctx:json_text(text)
  local r = req(self)
  if type(text) ~= "string" then
    error("ctx:json_text: expected a string of JSON, got " .. type(text), 2)
  end
  r.flags = bor(r.flags, FLAG_JSON)
  self._resp = text
  return self
end

-- Internal: serialize the response. Called once, by the request loop.
function Ctx:_finish()
  local body = self._resp or ""
  return C.tr_ffi_resp_finish(self._r, self._s, body, #body)
end

-- Internal: forget the response the handler set, before an error response.
function Ctx:_reset()
  self._resp = nil
  local r = self._r
  r.flags = band(r.flags, bnot(FLAG_JSON))
  C.tr_ffi_resp_reset(r, self._s)
end

-- The ctx of the request each request coroutine is running (kept by the request loop), so that code
-- called by a handler can find its request without being handed the ctx (triage.store's tx:audit).
local running_by_coroutine = setmetatable({}, { __mode = "k" })

local function running()
  local ctx = running_by_coroutine[coroutine.running()]
  if ctx and ctx._r.serial == ctx._s then
    return ctx
  end
  return nil
end

-- The route that served the request ("POST /api/epro/submit"), nil when none matched.
function Ctx:route()
  req(self)
  return self._route
end

return { new = new, Ctx = Ctx, STALE = STALE, set_principal = set_principal, running = running,
  running_by_coroutine = running_by_coroutine }
