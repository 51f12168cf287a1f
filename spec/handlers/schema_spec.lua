-- triage.schema: schemas as Lua tables for bodies, query arguments and route parameters, in process
-- (spec/fixtures/schema_app), and schema.validate on its own.
local testing = require "triage.testing"
local schema = require "triage.schema"
local cjson = require "cjson"

-- errors of a 400 as { [path] = reason }, checking the documented format on the way
local function failures(res)
  assert.equals(400, res.status, res.body)
  local j = res:json()
  assert.is_false(j.success)
  assert.equals("invalid request", j.error)
  local by_path = {}
  for _, e in ipairs(j.errors) do
    assert.is_string(e.path)
    assert.is_string(e.reason)
    assert.is_string(e["in"])
    by_path[e.path] = by_path[e.path] or e.reason -- the first, when a field fails several rules
  end
  return by_path, j
end

local function count(t)
  local n = 0
  for _ in pairs(t) do n = n + 1 end
  return n
end

describe("triage.schema", function()
  local app

  setup(function()
    app = testing.app("spec/fixtures/schema_app")
  end)

  local function post(path, body)
    return app:request { method = "POST", path = path, body = body,
      headers = { ["Content-Type"] = "application/json" } }
  end

  local VALID = '{"patientId":"P-1","visit":3,"consent":true,"reportData":{"items":[1,2]}}'

  describe("a body", function()
    it("passes when valid", function()
      local res = post("/visits", VALID)
      assert.equals(200, res.status, res.body)
      assert.same({ ok = true, visit = 3, consent = true }, res:json())
    end)

    it("accepts 0 and false for required fields", function()
      local res = post("/visits", '{"patientId":"P-1","visit":0,"consent":false,"reportData":{}}')
      assert.equals(200, res.status, res.body)
      assert.same({ ok = true, visit = 0, consent = false }, res:json())
    end)

    it("names every failing field, with its path and reason, in one 400", function()
      local res = post("/visits", cjson.encode {
        patientId = "X-123456789", -- too long and not ^P-
        visit = 2.5,               -- not an integer
        weight = 0.1,              -- below min
        consent = "yes",           -- not a boolean
        arm = "other",             -- not in enum
        seenAt = "2026-02-30T10:00:00Z", -- no such day
        born = "27/11/1990",
        surprise = 1,              -- unknown with additional = false
        reportData = {
          items = { 1, 2, 7, "3", 0 },                     -- too many; [2] above max; [3] a string
          meds = { { dose = 1 }, { name = "x", dose = -1 } }, -- [0].name missing; [1].dose below 0
          extra = { 1 },                                    -- an array, not an object
          scores = { a = 1, b = "two" },                    -- additional values: integers
          even = 3,                                         -- custom check
        },
      })
      local errs, j = failures(res)
      assert.same({
        patientId = "must be at most 8 characters long",
        visit = "expected an integer, got 2.5",
        weight = "must be at least 0.5",
        consent = "expected a boolean, got a string",
        arm = 'must be one of "placebo", "active"',
        seenAt = "must be an RFC 3339 date-time (2026-11-27T07:59:12Z)",
        born = "must be an RFC 3339 date (2026-11-27)",
        surprise = "is not a known field",
        ["reportData.items"] = "must have at most 4 items",
        ["reportData.items[2]"] = "must be at most 3",
        ["reportData.items[3]"] = "expected an integer, got a string",
        ["reportData.meds[0].name"] = "is required",
        ["reportData.meds[1].dose"] = "must be at least 0",
        ["reportData.extra"] = "expected an object, got an array",
        ["reportData.scores.b"] = "expected an integer, got a string",
        ["reportData.even"] = "must be even",
      }, errs)
      -- patientId fails two rules: both are reported, the path once in `fields`
      local reasons = {}
      for _, e in ipairs(j.errors) do
        if e.path == "patientId" then reasons[#reasons + 1] = e.reason end
      end
      assert.same({ "must be at most 8 characters long", "must match the pattern ^P%-" }, reasons)
      assert.equals(count(errs), #j.fields)
      for _, e in ipairs(j.errors) do
        assert.equals("body", e["in"])
      end
    end)

    it("names missing required fields, and the nested ones of a present object", function()
      local errs = failures(post("/visits", '{"reportData":{"meds":[{}]}}'))
      assert.same({ patientId = "is required", visit = "is required", consent = "is required",
        ["reportData.meds[0].name"] = "is required" }, errs)
    end)

    it("counts string lengths in characters, not bytes", function()
      local ok = schema.validate("Jürgen", { type = "string", max_length = 6 })
      assert.is_true(ok)
      local _, errs = schema.validate("Jürgen!", { type = "string", max_length = 6 })
      assert.equals("must be at most 6 characters long", errs[1].reason)
      _, errs = schema.validate("", { type = "string", min_length = 1 })
      assert.equals("must be at least 1 character long", errs[1].reason)
    end)
  end)

  describe("null", function()
    it("is accepted only where nullable", function()
      local res = post("/visits",
        '{"patientId":"P-1","visit":1,"consent":true,"note":null,"reportData":{}}')
      assert.equals(200, res.status, res.body)
      local errs = failures(post("/visits",
        '{"patientId":"P-1","visit":null,"consent":true,"arm":null,"reportData":{"items":[null]}}'))
      assert.same({ visit = "must not be null", arm = "must not be null",
        ["reportData.items[0]"] = "must not be null" }, errs)
    end)

    it("counts as present for a required nullable field", function()
      local s = { type = "object", fields = { v = { type = "integer", required = true, nullable = true } } }
      assert.is_true((schema.validate(cjson.decode('{"v":null}'), s)))
      local ok, errs = schema.validate({}, s)
      assert.is_false(ok)
      assert.same({ { path = "v", reason = "is required" } }, errs)
    end)
  end)

  describe("empty objects and arrays", function()
    it("are told apart in a body", function()
      local errs = failures(post("/visits",
        '{"patientId":"P-1","visit":1,"consent":true,"reportData":{"items":{},"extra":[ ]}}'))
      assert.same({ ["reportData.items"] = "expected an array, got an empty object",
        ["reportData.extra"] = "expected an object, got an empty array" }, errs)
      errs = failures(post("/visits", '{"patientId":"P-1","visit":1,"consent":true,"reportData":[]}'))
      assert.same({ reportData = "expected an object, got an empty array" }, errs)
      errs = failures(post("/visits",
        '{"patientId":"P-1","visit":1,"consent":true,"reportData":{"items":[]}}'))
      assert.same({ ["reportData.items"] = "must have at least 1 item" }, errs)
    end)

    it("reach a handler as what they were", function()
      for text, kind in pairs { ["{}"] = "object", ["[]"] = "array", ["[\n ]"] = "array", ['{"a":[]}'] = "object",
                                ["[{}]"] = "array", ["null"] = "null", ['"[]"'] = "string", ["0"] = "number",
                                ["false"] = "boolean" } do
        local res = post("/mw/kind", '{"value":' .. text .. '}')
        assert.equals(200, res.status, text .. ": " .. res.body)
        assert.equals(kind, res:json().kind, text)
      end
    end)

    it("are marked however deep, whatever strings and duplicate keys say", function()
      local text = '{"s":"[] {} \\"[]","a":[[],{},[[]]],"o":{"x":[],"y":{}},"d":[],"d":{},"k\\u0041":[]}'
      local v = schema.mark_empty_arrays(text, cjson.decode(text))
      assert.equals("array", schema.kind(v.a[1]))
      assert.equals("object", schema.kind(v.a[2]))
      assert.equals("array", schema.kind(v.a[3][1]))
      assert.equals("array", schema.kind(v.o.x))
      assert.equals("object", schema.kind(v.o.y))
      assert.equals("object", schema.kind(v.d)) -- the last of the duplicates
      assert.equals("array", schema.kind(v.kA))
      assert.equals("[] {} \"[]", v.s)
    end)
  end)

  it("encodes empty arrays back as arrays", function()
    local text = '{"a":[],"o":{},"n":[[],{"x":[]}],"s":"[]","z":null}'
    local v = schema.mark_empty_arrays(text, cjson.decode(text))
    local back = schema.encode(v)
    assert.equals("[]", back:match('"a":(%[%])'))
    assert.equals("{}", back:match('"o":({})'))
    assert.equals('[[],{"x":[]}]', back:match('"n":(%b[])'))
    assert.equals('"[]"', back:match('"s":("%[%]")'))
    assert.equals("null", back:match('"z":(null)'))
    assert.equals(cjson.encode { a = 1 }, schema.encode { a = 1 })
    assert.equals("[]", schema.encode(schema.array()))
  end)

  describe("a body that is not a JSON object", function()
    it("is a 400 saying what it is", function()
      for body, message in pairs { ["5"] = "the body must be a JSON object, got 5",
                                   ["[]"] = "the body must be a JSON object, got an empty array",
                                   ["[1]"] = "the body must be a JSON object, got an array",
                                   ['"x"'] = "the body must be a JSON object, got a string",
                                   ["null"] = "the body must be a JSON object, got null" } do
        local res = post("/visits", body)
        assert.equals(400, res.status, body)
        assert.same({ success = false, error = message }, res:json())
      end
    end)

    it("is a 400 naming the JSON error when it is not JSON", function()
      local res = post("/visits", '{"patientId": "P-')
      assert.equals(400, res.status)
      assert.matches("^invalid JSON: ", res:json().error)
      res = post("/visits", "")
      assert.equals("invalid JSON: empty body", res:json().error)
    end)
  end)

  describe("route parameters and query arguments", function()
    it("are converted from strings, with defaults", function()
      local res = app:request "/patients/P-17/visits?active=true"
      assert.equals(200, res.status, res.body)
      assert.same({ id = "P-17", limit = 20, active = true }, res:json())
      res = app:request "/patients/P-17/visits?limit=5&active=0"
      assert.same({ id = "P-17", limit = 5, active = false }, res:json())
    end)

    it("fail together, in one 400 saying where", function()
      local res = app:request "/patients/Q-17/visits?limit=ten&active=maybe&since=2026-13-01&page=2"
      local errs, j = failures(res)
      assert.same({
        id = "must match the pattern ^P%-%d+$",
        limit = 'expected an integer, got "ten"',
        active = 'expected a boolean, got "maybe"',
        since = "must be an RFC 3339 date (2026-11-27)",
        page = "is not a known query argument",
      }, errs)
      for _, e in ipairs(j.errors) do
        assert.equals(e.path == "id" and "params" or "query", e["in"])
      end
      errs = failures(app:request "/patients/P-1/visits?limit=0")
      assert.same({ limit = "must be at least 1" }, errs)
    end)

    it("go through the middleware into ctx:get", function()
      assert.same({ n = 3 }, app:request("/mw/page?n=3"):json())
      local errs = failures(app:request "/mw/page")
      assert.same({ n = "is required" }, errs)
    end)
  end)

  describe("schema.validate", function()
    it("quotes keys that are not names in paths, and counts array indices from 0", function()
      local s = { type = "object", fields = { ["44250-9"] = { type = "integer", max = 3 },
        list = { type = "array", items = { type = "object", fields = { ["a b"] = { type = "boolean" } } } } } }
      local ok, errs = schema.validate({ ["44250-9"] = 4, list = { { ["a b"] = 1 } } }, s, "reportData")
      assert.is_false(ok)
      assert.same({ { path = 'reportData["44250-9"]', reason = "must be at most 3" },
        { path = 'reportData.list[0]["a b"]', reason = "expected a boolean, got 1" } }, errs)
    end)

    it("stops at MAX_ERRORS and says so", function()
      local many = {}
      for i = 1, schema.MAX_ERRORS + 50 do many[i] = "x" end
      local ok, errs = schema.validate(many, { type = "array", items = { type = "integer" } })
      assert.is_false(ok)
      assert.equals(schema.MAX_ERRORS, #errs)
      assert.is_true(errs.truncated)
      assert.is_true(schema.error_body(errs).truncated)
    end)

    it("accepts Lua-made empty arrays marked with schema.array", function()
      assert.is_true((schema.validate(schema.array(), { type = "array" })))
      local _, errs = schema.validate({}, { type = "array" })
      assert.equals("expected an array, got an empty object", errs[1].reason)
    end)

    it("refuses what is not finite as a number", function()
      for _, v in ipairs { math.huge, -math.huge, 0 / 0 } do
        assert.is_false((schema.validate(v, { type = "number" })))
      end
    end)

    it("raises on a wrong schema, naming the key and where it is", function()
      local function raises(s, message)
        local ok, err = pcall(function() schema.validate(1, s) end)
        assert.is_false(ok)
        assert.matches(message, err, 1, true)
        assert.matches("schema_spec.lua", err, 1, true) -- the caller's line, not the module's
      end
      raises({ type = "string", max_len = 3 }, 'the schema: unknown key "max_len" in a string schema')
      raises({ type = "object", fields = { a = { type = "text" } } }, 'the schema of a: unknown type "text"')
      raises({ type = "object", fields = { a = { type = "array", items = { kind = 1 } } } },
        "the schema of a[]: no type")
      raises({ type = "string", pattern = "[a-" }, 'pattern "[a-" is not a valid Lua pattern')
      raises({ type = "integer", min = "1" }, "min must be a number, got string")
      raises({ type = "string", format = "email" }, 'unknown format "email"')
      raises({ type = "string", enum = {} }, "enum must list the accepted values")
      raises("string", "a schema is a table, got string")
    end)
  end)

  it("is offered to the app's scripts by the sandbox", function()
    -- the fixture's route file and script require it: the app loaded
    assert.equals(200, post("/mw/kind", '{"value":1}').status)
  end)
end)
