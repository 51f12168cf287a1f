-- Bearer tokens and permissions (README.md, "Authentication and permissions") on the sample app:
-- why a token is refused (401), who may do what (403), that neither tells whether a record exists,
-- and that `triage token` makes tokens the server takes.
local spec_root = debug.getinfo(1, "S").source:match("^@(.*)/integration/[^/]+$")
if spec_root then package.path = spec_root .. "/?.lua;" .. package.path end
local S = require "support.server"
local jwt = require "support.jwt"
local http = S.http
local cjson = require "cjson"

local REPORTS = "/api/v1/trials/%s/patients/%s/reports"

describe("authentication and permissions", function()
  local srv, keys

  setup(function()
    srv = S.start{ app = S.root, workers = 1 }
    keys = jwt.keys(srv.token_keys)
  end)

  teardown(function()
    S.stop_all()
  end)

  local function request(method, path, auth, body)
    local headers = {}
    if type(auth) == "table" then
      headers.Authorization = "Bearer " .. srv:token(auth)
    elseif auth then
      headers.Authorization = auth
    end
    if body then headers["Content-Type"] = "application/json" end
    return assert(http.request(srv.port, method, path, { headers = headers, body = body }))
  end

  local function submit(auth, patient)
    return request("POST", "/api/epro/submit", auth, cjson.encode { patientId = patient, reportData = { q1 = 2 } })
  end

  local function expect(code, r)
    assert.are.equal(code, r.status, ("expected %d, got %d: %s"):format(code, r.status, http.quote(r.body)))
    return r
  end

  local function signed(header, claims, kid)
    return "Bearer " .. jwt.sign(header, claims, keys[kid or "current"])
  end

  describe("401", function()
    local now = os.time()
    local claims = { sub = "dr.chen", role = "investigator", trial = "T1", exp = now + 600 }
    for _, case in ipairs {
      { "missing", nil },
      { "malformed", "Bearer not-a-jwt" },
      { "malformed", "Basic ZGVtbzpkZW1v" },
      { "malformed", "Bearer " .. jwt.b64url('{"alg":"HS256"}') .. ".@@@." .. jwt.b64url(("x"):rep(32)) },
      { "unsupported alg", "Bearer " .. jwt.b64url('{"alg":"none"}') .. "." .. jwt.b64url(cjson.encode(claims)) .. "." },
      { "expired", function() return signed({ alg = "HS256" }, { sub = "dr.chen", role = "investigator",
          trial = "T1", exp = os.time() - 3600 }) end },
      { "not yet valid", function() return signed({ alg = "HS256" }, { sub = "dr.chen", role = "investigator",
          trial = "T1", nbf = os.time() + 3600, exp = os.time() + 7200 }) end },
      { "bad signature", function() return "Bearer " .. jwt.sign({ alg = "HS256" }, claims,
          "a-secret-the-server-does-not-have-at-all") end },
      { "bad signature", function() return signed({ alg = "HS256", kid = "current" }, claims, "previous") end },
      { "malformed", function() return signed({ alg = "HS256" }, { sub = "x", role = "superuser", exp = os.time() + 60 }) end },
    } do
      it(("names the reason: %s (%s)"):format(case[1], type(case[2]) == "string" and case[2]:sub(1, 30) or "made"),
        function()
          local auth = type(case[2]) == "function" and case[2]() or case[2]
          local r = expect(401, request("GET", REPORTS:format("T1", "P-1"), auth))
          local www = r.headers["www-authenticate"]
          assert.matches("^Bearer realm=\"triage\"", www)
          if case[1] ~= "missing" then
            assert.matches('error="invalid_token"', www, 1, true)
          end
          local body = assert(http.json(r))
          assert.are.equal("unauthorized", body.error)
          assert.are.equal(case[1], body.reason)
          assert.is_string(body.message)
        end)
    end

    it("takes a token of either key, chosen by kid or tried in turn", function()
      for _, kid in ipairs { "current", "previous" } do
        expect(200, request("GET", REPORTS:format("T1", "P-1"), signed({ alg = "HS256", typ = "JWT", kid = kid }, claims, kid)))
        expect(200, request("GET", REPORTS:format("T1", "P-1"), signed({ alg = "HS256" }, claims, kid)))
      end
    end)

    it("accepts a token just past exp within the clock-skew allowance (60 s)", function()
      expect(200, request("GET", REPORTS:format("T1", "P-1"), signed({ alg = "HS256" }, {
        sub = "dr.chen", role = "investigator", trial = "T1", exp = os.time() - 20 })))
    end)
  end)

  describe("403", function()
    it("keeps an investigator to their trials", function()
      expect(200, request("GET", REPORTS:format("T1", "P-1"), { sub = "dr.chen", role = "investigator", trial = "T1" }))
      expect(403, request("GET", REPORTS:format("T1", "P-1"), { sub = "dr.li", role = "investigator", trial = "T2" }))
      expect(200, request("GET", REPORTS:format("T2", "P-1"),
        { sub = "dr.li", role = "investigator", trial = { "T2", "T3" } }))
      expect(403, request("GET", REPORTS:format("T1", "P-1"), { sub = "dr.ng", role = "investigator" }))
    end)

    it("admits only the roles a route names", function()
      local body = '{"patientId":"P-1","tagName":"follow-up"}'
      expect(200, request("POST", "/api/v1/tags/add", { sub = "dr.chen", role = "investigator" }, body))
      expect(403, request("POST", "/api/v1/tags/add", { sub = "cra.li", role = "monitor", trial = "T1" }, body))
      expect(403, request("POST", "/api/v1/tags/add", { sub = "P-1", role = "patient", trial = "T1" }, body))
      expect(403, request("POST", "/api/v1/tags/add", { sub = "root", role = "admin" }, body))
      expect(200, request("GET", REPORTS:format("T1", "P-1"), { sub = "cra.li", role = "monitor", trial = "T1" }))
      expect(403, submit({ sub = "cra.li", role = "monitor", trial = "T1" }, "P-1"))
    end)

    it("lets a patient submit and read only their own reports", function()
      local me = { sub = "P-7", role = "patient", trial = "T1" }
      local receipt = assert(http.json(expect(200, submit(me, "P-7")))).receipt.id
      expect(403, submit(me, "P-8"))
      local mine = assert(http.json(expect(200, request("GET", REPORTS:format("T1", "P-7"), me))))
      assert.are.equal("P-7", mine.patientId)
      assert.are.equal(receipt, mine.reports[#mine.reports].receiptId)
      expect(403, request("GET", REPORTS:format("T1", "P-8"), me))
      expect(403, request("GET", REPORTS:format("T2", "P-7"), me)) -- not their trial
      expect(200, request("GET", "/api/v1/patients/P-7/tags", me))
      expect(403, request("GET", "/api/v1/patients/P-8/tags", me))
    end)

    it("answers a missing record and a forbidden one alike", function()
      -- P-9 has a report; P-404 has none. A patient asking for either, an investigator of another
      -- trial asking for an existing or a made-up trial: the same status and body.
      expect(200, submit({ sub = "dr.chen", role = "investigator", trial = "T1" }, "P-9"))
      local function answer(auth, path)
        local r = request("GET", path, auth)
        return r.status .. " " .. r.body
      end
      local patient = { sub = "P-7", role = "patient", trial = "T1" }
      local a = answer(patient, REPORTS:format("T1", "P-9"))
      assert.are.equal(a, answer(patient, REPORTS:format("T1", "P-404")))
      assert.matches("^403 ", a)
      local outsider = { sub = "dr.li", role = "investigator", trial = "T2" }
      local b = answer(outsider, REPORTS:format("T1", "P-9"))
      assert.are.equal(b, answer(outsider, REPORTS:format("T-none", "P-404")))
      assert.matches("^403 ", b)
      -- Without a token the answer does not depend on the record either.
      assert.are.equal(answer(nil, REPORTS:format("T1", "P-9")), answer(nil, REPORTS:format("T1", "P-404")))
    end)
  end)

  it("keeps the protocol lookup open", function()
    expect(200, request("GET", "/api/v1/protocols/NCT04356798"))
  end)

  it("makes tokens with `triage token` that the server takes", function()
    local token = srv:token{ sub = "dr.chen", role = "investigator", trial = "T1", ttl = 120 }
    local header = jwt.payload("x." .. token:match("^([^.]+)") .. ".y")
    assert.are.same({ alg = "HS256", typ = "JWT", kid = "current" }, header)
    local claims = jwt.payload(token)
    assert.are.equal("dr.chen", claims.sub)
    assert.are.equal("investigator", claims.role)
    assert.are.equal("T1", claims.trial)
    assert.are.equal(120, claims.exp - claims.iat)
    expect(200, request("GET", REPORTS:format("T1", "P-1"), "Bearer " .. token))
    -- Signed with the other key (--kid), and with two trials.
    local other = srv:token{ sub = "dr.li", role = "monitor", trial = { "T1", "T2" }, kid = "previous" }
    assert.are.same({ "T1", "T2" }, jwt.payload(other).trials)
    expect(200, request("GET", REPORTS:format("T2", "P-1"), "Bearer " .. other))
  end)

  it("refuses a role `triage token` does not know, and a key file others can read", function()
    local ok, err = pcall(S.token, srv.token_keys, { sub = "x", role = "superuser" })
    assert.is_false(ok)
    assert.matches("--role wants patient, investigator, monitor or admin", err, 1, true)
    local path = os.tmpname()
    S.write_token_keys(path)
    S.sys.chmod(path, tonumber("644", 8))
    ok, err = pcall(S.token, path, { sub = "x", role = "admin" })
    os.remove(path)
    assert.is_false(ok)
    assert.matches("chmod 600", err, 1, true)
  end)

  it("does not start with a --token-keys file others may read, and says why", function()
    local path = os.tmpname()
    S.write_token_keys(path)
    S.sys.chmod(path, tonumber("640", 8))
    local bad = S.start{ app = S.root, workers = 1, token_keys = path, wait = false }
    finally(function() os.remove(path) end)
    assert.is_truthy(bad:wait_exit(10))
    assert.matches("--token-keys " .. path .. ": group or others may access it", bad:error_log(), 1, true)
  end)

  it("verifies in workers that cannot read the key file (the master read it)", function()
    if not S.sys.is_root() or srv.user ~= nil then
      pending("the workers run as the master's user here (not root, or --user root): nothing to show")
      return
    end
    assert.is_false(S.unprivileged_can("-r", srv.token_keys))
    expect(200, request("GET", REPORTS:format("T1", "P-1"), { sub = "dr.chen", role = "investigator", trial = "T1" }))
  end)
end)
