-- Strict JSON (RFC 8259) for request bodies, in process, through the sample app's POST /api/epro/submit:
-- what lua-cjson would let through (NaN, Infinity, hex, 1e999, invalid UTF-8, ...) is a 400 naming the
-- problem; valid edge cases are accepted and stored as they were sent.
local testing = require "triage.testing"
local db = require "triage.store"
local cjson = require "cjson"

describe("strict JSON request bodies", function()
  local app

  setup(function()
    app = testing.app(".", { as = { sub = "P-0001", role = "patient", trial = "T1" } })
  end)

  local function submit(body)
    return app:request { method = "POST", path = "/api/epro/submit", body = body,
      headers = { ["Content-Type"] = "application/json" } }
  end

  -- body with the report's value in place of X
  local function report(x)
    return '{"patientId":"P-0001","reportData":{"q1":' .. x .. '}}'
  end
  local PREFIX = #'{"patientId":"P-0001","reportData":{"q1":' -- the byte before X

  local function refused(body, message)
    local res = submit(body)
    assert.equals(400, res.status, body)
    local j = res:json()
    assert.is_false(j.success)
    assert.equals("invalid JSON: " .. message, j.error, body)
    return j
  end

  describe("refuses with 400 naming the problem", function()
    it("NaN and Infinity, in any case and with either sign", function()
      for _, x in ipairs { "NaN", "nan", "-NaN", "Infinity", "-Infinity", "+Infinity", "infinity", "INF", "-inf" } do
        refused(report(x), "NaN and Infinity are not JSON at byte " .. (PREFIX + 1))
      end
    end)

    it("hexadecimal numbers", function()
      refused(report("0x1F"), "hexadecimal numbers are not JSON at byte " .. (PREFIX + 1))
      refused(report("-0X10"), "hexadecimal numbers are not JSON at byte " .. (PREFIX + 1))
    end)

    it("numbers that overflow a double", function()
      refused(report("1e999"), "number out of range at byte " .. (PREFIX + 1))
      refused(report("-1e400"), "number out of range at byte " .. (PREFIX + 1))
      refused(report("[1, 2, 1.8e308]"), "number out of range at byte " .. (PREFIX + 8))
      refused(report("1" .. string.rep("0", 400)), "number out of range at byte " .. (PREFIX + 1))
    end)

    it("leading zeros, a leading '+' and numbers outside the grammar", function()
      refused(report("01"), "leading zeros are not allowed in numbers at byte " .. (PREFIX + 1))
      refused(report("-007"), "leading zeros are not allowed in numbers at byte " .. (PREFIX + 1))
      refused(report("+1"), "a number cannot start with '+' at byte " .. (PREFIX + 1))
      for _, x in ipairs { "1.", ".5", "-.5", "1.e5", "1e", "-" } do
        refused(report(x), "invalid number at byte " .. (PREFIX + 1))
      end
    end)

    it("invalid UTF-8 anywhere in the body", function()
      local cases = {
        ["\xc0\xaf"] = "overlong",
        ["\xe0\x80\xaf"] = "overlong, 3 bytes",
        ["\xf0\x80\x80\xaf"] = "overlong, 4 bytes",
        ["\xed\xa0\x80"] = "U+D800 encoded",
        ["\xed\xbf\xbf"] = "U+DFFF encoded",
        ["\xf4\x90\x80\x80"] = "above U+10FFFF",
        ["\xf8\x88\x80\x80\x80"] = "5-byte form",
        ["\xe2\x82"] = "truncated",
        ["\x80"] = "stray continuation byte",
        ["\xff"] = "never in UTF-8",
      }
      for bytes, what in pairs(cases) do
        local j = refused(report('"ok ' .. bytes .. '"'), "invalid UTF-8 at byte " .. (PREFIX + 5))
        assert.is_string(j.error, what)
      end
      refused('{"patientId":"P-\xe9","reportData":{"q1":1}}', "invalid UTF-8 at byte 17")
      refused(report("1") .. "\xc3", "invalid UTF-8 at byte " .. (#report("1") + 1))
    end)

    it("unpaired surrogates in \\u escapes", function()
      refused(report('"\\ud800"'), "unpaired surrogate in a \\u escape at byte " .. (PREFIX + 2))
      refused(report('"\\udc00"'), "unpaired surrogate in a \\u escape at byte " .. (PREFIX + 2))
      refused(report('"\\ud83d\\u0041"'), "unpaired surrogate in a \\u escape at byte " .. (PREFIX + 2))
    end)

    it("control characters in strings and NUL bytes", function()
      refused(report('"a\tb"'), "control character in a string at byte " .. (PREFIX + 3))
      refused(report("1") .. "\0trailing", "NUL byte at byte " .. (#report("1") + 1))
    end)

    it("still gives lua-cjson's message for what the check leaves to it", function()
      local j = refused(report("nul"), "Expected value but found invalid token at character " .. (PREFIX + 1))
      assert.is_string(j.error)
      assert.matches("^invalid JSON: ", submit("{oops"):json().error)
      assert.equals("invalid JSON: empty body", submit(""):json().error)
    end)
  end)

  describe("accepts valid edge cases, decoded as before", function()
    local function stored(body)
      local res = submit(body)
      assert.equals(200, res.status, res.body)
      local row = db:first("SELECT report_json FROM epro_submissions WHERE receipt_id = ?", res:json().receipt.id)
      return cjson.decode(row.report_json)
    end

    it("escaped unicode, surrogate pairs and 4-byte UTF-8", function()
      local r = stored(report('"\\u00e9\\ud83d\\ude00 caf\xc3\xa9 \xf0\x9f\x98\x80 \xf4\x8f\xbf\xbf"'))
      assert.equals("\xc3\xa9\xf0\x9f\x98\x80 caf\xc3\xa9 \xf0\x9f\x98\x80 \xf4\x8f\xbf\xbf", r.q1)
    end)

    it("words that look like numbers inside strings", function()
      local r = stored(report('"NaN Infinity 0x1F 1e999 +1 01"'))
      assert.equals("NaN Infinity 0x1F 1e999 +1 01", r.q1)
    end)

    it("numbers at the edges of a double", function()
      local r = stored(report("[1e308, -0, 0.5e-10, -1E+2, 1e-400, 0e999, 1.7976931348623157e308]"))
      assert.same({ 1e308, 0, 0.5e-10, -100, 0, 0 }, { unpack(r.q1, 1, 6) })
      assert.equals(-math.huge, 1 / r.q1[2]) -- -0 stays -0
      assert.is_true(r.q1[7] > 1.79e308 and r.q1[7] < math.huge) -- (stored with cjson's 14 digits)
    end)

    it("deep nesting within lua-cjson's limit", function()
      local depth = 900
      local r = stored(report(string.rep("[", depth) .. "1" .. string.rep("]", depth)))
      r = r.q1
      for _ = 1, depth do
        r = r[1]
      end
      assert.equals(1, r)
    end)
  end)

  it("leaves other users of lua-cjson as they were", function()
    local v = require("cjson.safe").decode("[NaN, 0x10]")
    assert.is_table(v)
    assert.equals(16, v[2])
  end)
end)
