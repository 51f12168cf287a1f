-- Validation of request input against schemas written as Lua tables (README.md, "Validation and
-- questionnaires"):
--
--   local schema = require "triage.schema"
--   local REPORT = { type = "object", fields = {
--     patientId = { type = "string", required = true, max_length = 128 },
--     answers   = { type = "array", min_items = 1, items = { type = "integer", min = 0, max = 3 } },
--   } }
--   local body = ctx:validate(REPORT)       -- nil once a 400 naming every failing field is set
--   if not body then return end
--
-- A schema is a table with a `type` ("string", "integer", "number", "boolean", "object", "array"
-- or "any") and the constraints of that type; a field is present when it is not nil, so a required
-- field accepts 0 and false. JSON null is cjson.null: refused unless `nullable = true`.
-- lua-cjson (2.1.0, Debian's) decodes {} and [] alike; ctx:json_body gives every empty array decoded
-- from a body the metatable M.array_mt, so an empty object and an empty array are told apart here.
-- Misuse (a schema with an unknown key, a constraint of the wrong type) raises when the schema is
-- first used, naming the key and where in the schema it is.
local cjson = require "cjson"

local type, pairs, ipairs, next, tostring, tonumber = type, pairs, ipairs, next, tostring, tonumber
local getmetatable, setmetatable, error, select = getmetatable, setmetatable, error, select
local floor, huge = math.floor, math.huge
local concat, sort = table.concat, table.sort

local null = cjson.null

local M = {}

-- At most this many errors are reported for one request (a body is bounded by --max-body, but an
-- array of 10,000 bad items should not answer with 10,000 lines); past it, `truncated` is true.
M.MAX_ERRORS = 100

-- The metatable of arrays decoded from JSON that are empty (a non-empty one has [1]).
local array_mt = { __name = "json array" }
M.array_mt = array_mt

-- An array for schema.validate from Lua: t (or a new empty table) marked as a JSON array.
function M.array(t)
  return setmetatable(t or {}, array_mt)
end

-- "object", "array", "string", "number", "boolean" or "null": what a decoded JSON value is.
local function json_kind(v)
  local t = type(v)
  if t == "table" then
    if getmetatable(v) == array_mt or v[1] ~= nil then
      return "array"
    end
    return "object"
  elseif v == null then
    return "null"
  end
  return t
end
M.kind = json_kind

-- ---- telling empty arrays from empty objects ----

local function skip_space(s, i)
  return s:find("[^ \t\r\n]", i)
end

-- s[i] is the opening quote of a string: the index of its closing quote.
local function string_end(s, i)
  local j = i + 1
  while true do
    local q = s:find('["\\]', j)
    if s:byte(q) == 34 then
      return q
    end
    j = q + 2
  end
end

-- Walks the JSON text s from i (a value's first byte) beside node, the value cjson decoded from it
-- (nil where they part: a duplicate key's earlier value). Returns the index after the value.
-- Each empty table is set from its text: [] gets array_mt, {} none. Duplicate keys: cjson keeps
-- the last value, and the last occurrence is walked last, so its text decides.
local function walk(s, i, node)
  local c = s:byte(i)
  local tbl = type(node) == "table" and node or nil
  if c == 123 then -- {
    if tbl and next(tbl) == nil then
      setmetatable(tbl, nil)
    end
    i = skip_space(s, i + 1)
    if s:byte(i) == 125 then
      return i + 1
    end
    while true do
      local close = string_end(s, i)
      local key = s:sub(i + 1, close - 1)
      if key:find("\\", 1, true) then
        key = cjson.decode(s:sub(i, close))
      end
      i = skip_space(s, skip_space(s, close + 1) + 1) -- past the ':'
      i = skip_space(s, walk(s, i, tbl and tbl[key]))
      if s:byte(i) ~= 44 then -- '}'
        return i + 1
      end
      i = skip_space(s, i + 1)
    end
  elseif c == 91 then -- [
    i = skip_space(s, i + 1)
    if s:byte(i) == 93 then
      if tbl and next(tbl) == nil then
        setmetatable(tbl, array_mt)
      end
      return i + 1
    end
    local n = 0
    while true do
      n = n + 1
      i = skip_space(s, walk(s, i, tbl and tbl[n]))
      if s:byte(i) ~= 44 then -- ']'
        return i + 1
      end
      i = skip_space(s, i + 1)
    end
  elseif c == 34 then
    return string_end(s, i) + 1
  end
  return s:find("[,%]} \t\r\n]", i) or #s + 1 -- a number, true, false or null
end

-- Marks the empty arrays of value, decoded by cjson from the valid JSON text: they get array_mt.
-- A text without "[ ]" (the usual case) costs one scan of the pattern.
function M.mark_empty_arrays(text, value)
  if type(value) == "table" and text:find("%[[ \t\r\n]*%]") then
    walk(text, skip_space(text, 1), value)
  end
  return value
end

-- Whether v holds an empty array marked with array_mt (the case cjson.encode would write as {}).
local function has_empty_array(v)
  if getmetatable(v) == array_mt and next(v) == nil then
    return true
  end
  for _, x in pairs(v) do
    if type(x) == "table" and has_empty_array(x) then
      return true
    end
  end
  return false
end

local function encode_into(v, out)
  if type(v) ~= "table" then
    out[#out + 1] = cjson.encode(v)
  elseif json_kind(v) == "array" then
    out[#out + 1] = "["
    for i = 1, #v do
      if i > 1 then
        out[#out + 1] = ","
      end
      encode_into(v[i], out)
    end
    out[#out + 1] = "]"
  else
    out[#out + 1] = "{"
    local first = true
    for k, x in pairs(v) do
      out[#out + 1] = (first and "" or ",") .. cjson.encode(tostring(k)) .. ":"
      first = false
      encode_into(x, out)
    end
    out[#out + 1] = "}"
  end
end

-- v as JSON text, its empty arrays (array_mt) written [] where cjson.encode writes {}: a decoded body
-- (or part of one) encodes as it was sent. Otherwise as cjson.encode (and its errors).
function M.encode(v)
  if type(v) ~= "table" or not has_empty_array(v) then
    return cjson.encode(v)
  end
  local out = {}
  encode_into(v, out)
  return concat(out)
end

-- ---- checking schemas ----

local TYPES = { string = true, integer = true, number = true, boolean = true, object = true, array = true,
  any = true }
local COMMON = { type = "string", required = "boolean", nullable = "boolean", enum = "table",
  check = "function", message = "string", description = "string", default = "any" }
local BY_TYPE = {
  string = { min_length = "number", max_length = "number", pattern = "string", format = "string" },
  integer = { min = "number", max = "number" },
  number = { min = "number", max = "number" },
  boolean = {},
  object = { fields = "table", additional = "any", min_fields = "number", max_fields = "number" },
  array = { items = "table", min_items = "number", max_items = "number" },
  any = {},
}
local FORMATS = { ["date-time"] = true, ["date"] = true }

local checked = setmetatable({}, { __mode = "k" }) -- schema -> { names = sorted field names, enum = set }

local function known_keys(t)
  local list = {}
  for k in pairs(COMMON) do list[#list + 1] = k end
  for k in pairs(t) do list[#list + 1] = k end
  sort(list)
  return concat(list, ", ")
end

local function where(at)
  return at == "" and "the schema" or ("the schema of %s"):format(at)
end

-- Key k of a schema path: `a.b`, `a[0]`, `a["44250-9"]`.
local function join(path, k)
  if type(k) == "number" then
    return ("%s[%d]"):format(path, k)
  end
  if k:find("^[%a_][%w_]*$") then
    return path == "" and k or path .. "." .. k
  end
  return path .. "[" .. cjson.encode(k) .. "]"
end
M.path = join

-- Checks schema s (at path `at`); returns nil or a message.
local function check_schema(s, at)
  if type(s) ~= "table" then
    return ("%s: a schema is a table, got %s"):format(where(at), type(s))
  end
  if checked[s] then
    return nil
  end
  local t = s.type
  if t == nil then
    return ("%s: no type (string, integer, number, boolean, object, array or any)"):format(where(at))
  end
  if not TYPES[t] then
    return ("%s: unknown type %q (string, integer, number, boolean, object, array or any)"):format(where(at),
      tostring(t))
  end
  local own = BY_TYPE[t]
  for k, v in pairs(s) do
    local want = COMMON[k] or own[k]
    if not want then
      return ("%s: unknown key %q in a %s schema (known: %s)"):format(where(at), tostring(k), t, known_keys(own))
    end
    if want ~= "any" and type(v) ~= want then
      return ("%s: %s must be a %s, got %s"):format(where(at), k, want, type(v))
    end
  end
  local info = {}
  if s.enum then
    if s.enum[1] == nil then
      return ("%s: enum must list the accepted values"):format(where(at))
    end
    info.enum = {}
    local shown = {}
    for i, v in ipairs(s.enum) do
      info.enum[v] = true
      shown[i] = type(v) == "string" and cjson.encode(v) or tostring(v)
    end
    info.enum_text = concat(shown, ", ")
  end
  if s.pattern and not pcall(string.find, "", s.pattern) then
    return ("%s: pattern %q is not a valid Lua pattern"):format(where(at), s.pattern)
  end
  if s.format and not FORMATS[s.format] then
    return ("%s: unknown format %q (date-time, date)"):format(where(at), s.format)
  end
  if t == "object" then
    info.names = {}
    for name, field in pairs(s.fields or {}) do
      if type(name) ~= "string" then
        return ("%s: field names are strings, got %s"):format(where(at), type(name))
      end
      local err = check_schema(field, join(at, name))
      if err then
        return err
      end
      info.names[#info.names + 1] = name
    end
    sort(info.names)
    local extra = s.additional
    if extra ~= nil and type(extra) ~= "boolean" then
      local err = check_schema(extra, join(at, "*"))
      if err then
        return err
      end
    end
  elseif t == "array" and s.items then
    local err = check_schema(s.items, at .. "[]")
    if err then
      return err
    end
  end
  checked[s] = info
  return nil
end

-- s, checked once (later uses cost a table lookup). Raises error(message, level) if it is wrong.
local function compiled(s, level)
  local info = checked[s]
  if info then
    return info
  end
  local err = check_schema(s, "")
  if err then
    error("triage.schema: " .. err, level + 1)
  end
  return checked[s]
end

-- Checks a schema now (at load, say) rather than at its first use; returns it.
function M.compile(s)
  compiled(s, 2)
  return s
end

-- ---- validating values ----

local A = { string = "a string", integer = "an integer", number = "a number", boolean = "a boolean",
  object = "an object", array = "an array" }

local function describe(v)
  local k = json_kind(v)
  if k == "number" then
    return ("%.14g"):format(v)
  elseif k == "array" and next(v) == nil then
    return "an empty array"
  elseif k == "object" and next(v) == nil then
    return "an empty object"
  end
  return A[k] or k
end

local function finite(v)
  return v == v and v ~= huge and v ~= -huge
end

local TYPE_OK = {
  string = function(v) return type(v) == "string" end,
  number = function(v) return type(v) == "number" and finite(v) end,
  integer = function(v) return type(v) == "number" and finite(v) and v % 1 == 0 end,
  boolean = function(v) return type(v) == "boolean" end,
  object = function(v) return type(v) == "table" and json_kind(v) == "object" end,
  array = function(v) return type(v) == "table" and json_kind(v) == "array" end,
  any = function() return true end,
}

local DAYS = { 31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31 }

local function date_ok(y, m, d)
  y, m, d = tonumber(y), tonumber(m), tonumber(d)
  if m < 1 or m > 12 or d < 1 then
    return false
  end
  local leap = (y % 4 == 0 and y % 100 ~= 0) or y % 400 == 0
  return d <= (m == 2 and leap and 29 or DAYS[m])
end

-- RFC 3339: 2026-11-27 (date), 2026-11-27T07:59:12.250Z or ...+01:00 (date-time).
local FORMAT_OK = {
  date = function(v)
    local y, m, d = v:match("^(%d%d%d%d)%-(%d%d)%-(%d%d)$")
    return y ~= nil and date_ok(y, m, d)
  end,
  ["date-time"] = function(v)
    local y, mo, d, h, mi, s, rest = v:match("^(%d%d%d%d)%-(%d%d)%-(%d%d)[Tt](%d%d):(%d%d):(%d%d)(.*)$")
    if not y or not date_ok(y, mo, d) or tonumber(h) > 23 or tonumber(mi) > 59 or tonumber(s) > 60 then
      return false
    end
    rest = rest:gsub("^%.%d+", "")
    if rest == "Z" or rest == "z" then
      return true
    end
    local oh, om = rest:match("^[+-](%d%d):(%d%d)$")
    return oh ~= nil and tonumber(oh) <= 23 and tonumber(om) <= 59
  end,
}

local function utf8_length(v)
  local _, n = v:gsub("[^\128-\191]", "")
  return n
end

local function add(errs, path, reason)
  local n = #errs
  if n >= M.MAX_ERRORS then
    errs.truncated = true
    return
  end
  errs[n + 1] = { path = path, reason = reason }
end

local validate

local function plural(n, word)
  return ("%d %s%s"):format(n, word, n == 1 and "" or "s")
end

-- A failure of the value at path: its schema's message, if it has one, stands for the reason.
local function fail(errs, path, s, reason)
  add(errs, path, s.message or reason)
end

-- v (not nil) against s at path; failures appended to errs.
validate = function(v, s, path, errs)
  local info = checked[s]
  local before = #errs
  if v == null then
    if not s.nullable then
      fail(errs, path, s, "must not be null")
    end
    return
  end
  local t = s.type
  if not TYPE_OK[t](v) then
    fail(errs, path, s, ("expected %s, got %s"):format(A[t], describe(v)))
    return
  end
  if info.enum and not info.enum[v] then
    fail(errs, path, s, "must be one of " .. info.enum_text)
  end
  if t == "string" then
    if s.min_length or s.max_length then
      local n = #v
      if (s.min_length and n < s.min_length) or (s.max_length and n > s.max_length) then
        n = utf8_length(v)
      end
      if s.min_length and n < s.min_length then
        fail(errs, path, s, ("must be at least %s long"):format(plural(s.min_length, "character")))
      elseif s.max_length and n > s.max_length then
        fail(errs, path, s, ("must be at most %s long"):format(plural(s.max_length, "character")))
      end
    end
    if s.pattern and not v:find(s.pattern) then
      fail(errs, path, s, ("must match the pattern %s"):format(s.pattern))
    end
    if s.format and not FORMAT_OK[s.format](v) then
      fail(errs, path, s, ("must be an RFC 3339 %s"):format(s.format == "date" and "date (2026-11-27)"
        or "date-time (2026-11-27T07:59:12Z)"))
    end
  elseif t == "integer" or t == "number" then
    if s.min and v < s.min then
      fail(errs, path, s, ("must be at least %.14g"):format(s.min))
    elseif s.max and v > s.max then
      fail(errs, path, s, ("must be at most %.14g"):format(s.max))
    end
  elseif t == "object" then
    local fields = s.fields
    for _, name in ipairs(info.names) do
      local field = fields[name]
      local fv = v[name]
      if fv == nil then
        if field.default ~= nil then
          v[name] = field.default
        elseif field.required then
          add(errs, join(path, name), "is required")
        end
      else
        validate(fv, field, join(path, name), errs)
      end
    end
    local extra = s.additional
    if extra == false or type(extra) == "table" or s.min_fields or s.max_fields then
      local count, unknown = 0, nil
      for k in pairs(v) do
        count = count + 1
        if not (fields and fields[k] ~= nil) and extra ~= nil and extra ~= true then
          unknown = unknown or {}
          unknown[#unknown + 1] = k
        end
      end
      if unknown then
        sort(unknown)
        for _, k in ipairs(unknown) do
          if extra == false then
            add(errs, join(path, k), "is not a known field")
          else
            validate(v[k], extra, join(path, k), errs)
          end
        end
      end
      if s.min_fields and count < s.min_fields then
        fail(errs, path, s, ("must have at least %s"):format(plural(s.min_fields, "field")))
      elseif s.max_fields and count > s.max_fields then
        fail(errs, path, s, ("must have at most %s"):format(plural(s.max_fields, "field")))
      end
    end
  elseif t == "array" then
    local n = #v
    if s.min_items and n < s.min_items then
      fail(errs, path, s, ("must have at least %s"):format(plural(s.min_items, "item")))
    elseif s.max_items and n > s.max_items then
      fail(errs, path, s, ("must have at most %s"):format(plural(s.max_items, "item")))
    end
    local items = s.items
    if items then
      for i = 1, n do
        validate(v[i], items, join(path, i - 1), errs)
        if errs.truncated then
          break
        end
      end
    end
  end
  if s.check and #errs == before then
    local ok, reason = s.check(v)
    if not ok then
      fail(errs, path, s, reason or "is not valid")
    end
  end
end

-- Validates value against schema s. Returns true, or false and the failures: an array of
-- { path = "reportData.items[3]", reason = "must be at most 3" } (array indices from 0, as in
-- JSON Pointer and JavaScript), in the order of the schema's fields sorted by name, with
-- `truncated = true` past M.MAX_ERRORS. path (optional) prefixes every path; errs (optional) is an
-- array to append to. A nil value counts as missing: it fails only if s.required.
function M.validate(value, s, path, errs)
  compiled(s, 2)
  errs = errs or {}
  path = path or ""
  local before = #errs
  if value == nil then
    if s.required then
      add(errs, path, "is required")
    end
  else
    validate(value, s, path, errs)
  end
  if #errs > before then
    return false, errs
  end
  return true, errs
end

-- ---- requests ----

-- The error body of a failed validation (every failure, with where it is: "body", "query",
-- "params" or "header"):
--   {"success":false,"error":"invalid request","fields":["patientId","reportData.q1"],
--    "errors":[{"in":"body","path":"patientId","reason":"is required"}, ...]}
-- `fields` lists each failing path once (what earlier clients read); `truncated` is there when
-- errors were left off.
function M.error_body(errs)
  local fields, seen, list = {}, {}, {}
  for i, e in ipairs(errs) do
    local at = e["in"] or "body"
    list[i] = { ["in"] = at, path = e.path, reason = e.reason }
    if not seen[e.path] then
      seen[e.path] = true
      fields[#fields + 1] = e.path
    end
  end
  return { success = false, error = "invalid request", fields = fields, errors = list,
    truncated = errs.truncated or nil }
end

-- Answers 400 with every failure of errs (the format above). Returns ctx.
function M.reject(ctx, errs)
  return ctx:status(400):json(M.error_body(errs))
end

-- The body decoded as a JSON object; otherwise answers 400 and returns nil:
-- {"success":false,"error":"invalid JSON: ..."} or
-- {"success":false,"error":"the body must be a JSON object, got an array"}.
function M.object_body(ctx)
  local body, err = ctx:json_body("any") -- any JSON value: what it is instead is named below
  if body == nil then
    ctx:status(400):json { success = false, error = err }
    return nil
  end
  if json_kind(body) ~= "object" then
    ctx:status(400):json { success = false, error = "the body must be a JSON object, got " .. describe(body) }
    return nil
  end
  return body
end

-- Query arguments and route parameters arrive as strings: a schema's integer, number and boolean
-- fields convert them ("42", "-1.5e3", "true"/"false"/"1"/"0") before the checks.
local function convert(raw, t)
  if t == "integer" then
    if raw:find("^%-?%d+$") then
      return tonumber(raw)
    end
  elseif t == "number" then
    if raw:find("^%-?%d*%.?%d+[eE]?[+-]?%d*$") or raw:find("^%-?%d+%.$") then
      local n = tonumber(raw)
      if n and finite(n) then
        return n
      end
    end
  elseif t == "boolean" then
    if raw == "true" or raw == "1" then
      return true
    elseif raw == "false" or raw == "0" then
      return false
    end
  else
    return raw
  end
  return nil
end

-- Names of the query string's arguments.
local function query_names(qs)
  local names = {}
  for name in qs:gmatch("([^&=]+)[^&]*") do
    names[#names + 1] = name:gsub("+", " "):gsub("%%(%x%x)", function(h) return string.char(tonumber(h, 16)) end)
  end
  return names
end

-- Query arguments (where = "query") or route parameters ("params") against an object schema
-- whose fields are strings, integers, numbers or booleans. Returns the converted values; the
-- failures are appended to errs, each with `in` = where.
local STRING_TYPES = { string = true, integer = true, number = true, boolean = true, any = true }
local function read_strings(ctx, s, where_, errs, level)
  local info = compiled(s, level + 1)
  local what = where_ == "query" and "query arguments" or "route parameters"
  if s.type ~= "object" then
    error(("triage.schema: the schema of the %s is an object schema (one field each), got a %s"):format(what,
      s.type), level + 1)
  end
  local fields = s.fields or {}
  for _, name in ipairs(info.names) do
    if not STRING_TYPES[fields[name].type] then
      error(("triage.schema: %s are strings, integers, numbers or booleans; %s is a %s"):format(what, name,
        fields[name].type), level + 1)
    end
  end
  local get = where_ == "query" and ctx.query or ctx.param
  local values, start = {}, #errs
  for _, name in ipairs(info.names) do
    local field = fields[name]
    local raw = get(ctx, name)
    if raw == nil then
      if field.default ~= nil then
        values[name] = field.default
      elseif field.required then
        add(errs, name, "is required")
      end
    else
      local v = convert(raw, field.type)
      if v == nil then
        add(errs, name, field.message or ("expected %s, got %s"):format(A[field.type], cjson.encode(raw)))
      else
        values[name] = v
        validate(v, field, name, errs)
      end
    end
  end
  if s.additional == false and where_ == "query" then
    for _, name in ipairs(query_names(ctx:query_string())) do
      if fields[name] == nil then
        add(errs, name, "is not a known query argument")
      end
    end
  end
  for i = start + 1, #errs do
    errs[i]["in"] = where_
  end
  return values
end

local REQUEST_KEYS = { body = true, query = true, params = true }

local function is_request_spec(spec)
  if type(spec) ~= "table" or spec.type ~= nil then
    return false
  end
  for k in pairs(spec) do
    if not REQUEST_KEYS[k] then
      return false
    end
  end
  return next(spec) ~= nil
end

-- ctx:validate(spec): spec is a schema of the JSON body, or { body = s, query = s, params = s }.
-- Returns the body (or { body, query, params }: query and params converted from strings); or
-- answers 400 naming every failure of all three and returns nil.
function M.request(ctx, spec, level)
  level = (level or 1) + 1
  if type(spec) ~= "table" then
    error("ctx:validate: expected a schema (a table), got " .. type(spec), level)
  end
  local single = not is_request_spec(spec)
  local parts = single and { body = spec } or spec
  local errs, out = {}, {}
  if parts.body then
    compiled(parts.body, level)
    local body
    if parts.body.type == "object" then
      body = M.object_body(ctx)
    else
      local err
      body, err = ctx:json_body("any") -- the schema says which values it takes
      if body == nil then
        ctx:status(400):json { success = false, error = err }
      end
    end
    if body == nil then
      return nil -- the 400 is set
    end
    validate(body, parts.body, "", errs)
    out.body = body
  end
  if parts.query then
    out.query = read_strings(ctx, parts.query, "query", errs, level)
  end
  if parts.params then
    out.params = read_strings(ctx, parts.params, "params", errs, level)
  end
  if #errs > 0 then
    M.reject(ctx, errs)
    return nil
  end
  if single then
    return out.body
  end
  return out
end

-- Middleware: the body (query, params) valid or a 400; the valid values go into ctx:get("body"),
-- ctx:get("query"), ctx:get("params").
--   group("/api/v1/tags", { schema.body(TAG) }, function() post("/add", "tags.add") end)
local function middleware(make_spec)
  return function(s)
    local spec = make_spec(s)
    for _, part in pairs(spec) do
      compiled(part, 2)
    end
    return function(ctx, nxt)
      local out = M.request(ctx, spec)
      if out == nil then
        return
      end
      for k in pairs(spec) do
        ctx:set(k, out[k])
      end
      return nxt()
    end
  end
end
M.body = middleware(function(s) return { body = s } end)
M.query = middleware(function(s) return { query = s } end)
M.params = middleware(function(s) return { params = s } end)
M.input = middleware(function(spec)
  if not is_request_spec(spec) then
    error("triage.schema.input: expected { body = schema, query = schema, params = schema }", 3)
  end
  return spec
end)

return M
