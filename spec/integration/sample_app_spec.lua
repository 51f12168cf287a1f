-- The sample clinical app (routes/, scripts/, data/ at the repo root) against
-- the README's table of endpoints.
local spec_root = debug.getinfo(1, "S").source:match("^@(.*)/integration/[^/]+$")
if spec_root then package.path = spec_root .. "/?.lua;" .. package.path end
local S = require "support.server"
local http = S.http
local cjson = require "cjson"

describe("sample clinical app", function()
  local srv, protocols, site -- site: an investigator's Authorization header (routes/api.lua)

  setup(function()
    local f = assert(io.open(S.root .. "/data/protocols.json", "rb"))
    protocols = cjson.decode(f:read("*a"))
    f:close()
    srv = S.start{ app = S.root }
    site = srv:bearer{ sub = "dr.chen", role = "investigator", trial = "T1" }
  end)

  teardown(function()
    S.stop_all()
  end)

  -- every response of the app carries X-Request-Id, a Date and a Content-Length
  local function checked(resp, is_head)
    local rid = resp.headers["x-request-id"]
    assert(rid and rid ~= "", "no X-Request-Id header in " .. http.quote(resp.raw_head))
    assert(http.check_common(resp, is_head))
    return resp
  end

  local function get(path, headers)
    return checked(assert(http.get(srv.port, path, { headers = headers })))
  end

  -- A POST with the investigator's token unless headers are given.
  local function post(path, body, headers)
    local h = headers or { Authorization = site.Authorization }
    if not h["Content-Type"] then h["Content-Type"] = "application/json" end
    return checked(assert(http.post(srv.port, path, body, { headers = h })))
  end

  local function json_of(resp)
    assert.matches("^application/json", resp.headers["content-type"] or "",
      "Content-Type should be application/json, got " .. tostring(resp.headers["content-type"]))
    return assert(http.json(resp))
  end

  local function expect_status(resp, code)
    assert.are.equal(code, resp.status, ("expected %d, got %d: %s"):format(code, resp.status, http.quote(resp.body)))
  end

  describe("GET /api/v1/protocols/:id", function()
    it("answers 200 with exactly the documented fields for every protocol in data/protocols.json", function()
      assert.is_true(#protocols > 0)
      for _, p in ipairs(protocols) do
        local r = get("/api/v1/protocols/" .. p.id)
        expect_status(r, 200)
        local body = json_of(r)
        assert.are.same({ "createdAt", "id", "phase", "sponsor", "status", "title" }, S.keys(body))
        assert.are.same(p, body)
      end
    end)

    it("answers 404 with the id for an unknown protocol", function()
      local r = get("/api/v1/protocols/NCT00000000")
      expect_status(r, 404)
      assert.are.same({ error = "protocol not found", id = "NCT00000000" }, json_of(r))
    end)

    it("gives each request its own X-Request-Id", function()
      local seen = {}
      for _ = 1, 20 do
        local r = get("/api/v1/protocols/NCT04356798")
        local rid = r.headers["x-request-id"]
        assert.is_nil(seen[rid], "X-Request-Id repeated: " .. rid)
        seen[rid] = true
      end
    end)
  end)

  describe("POST /api/epro/submit", function()
    it("accepts a valid report", function()
      local r = post("/api/epro/submit", '{"patientId":"P-0001","reportData":{"q1":3,"q2":"mild"}}')
      expect_status(r, 200)
      local j = json_of(r)
      assert.are.equal(true, j.success)
      assert.are.equal("report accepted", j.message)
      assert.is_string(j.receipt.id)
      assert.is_string(j.receipt.receivedAt)
    end)

    local invalid = {
      { "missing patientId", '{"reportData":{"q1":3}}', { "patientId" } },
      { "empty patientId", '{"patientId":"","reportData":{"q1":3}}', { "patientId" } },
      { "missing reportData", '{"patientId":"P-0001"}', { "reportData" } },
      { "empty reportData object", '{"patientId":"P-0001","reportData":{}}', { "reportData" } },
      { "reportData an array", '{"patientId":"P-0001","reportData":[1,2,3]}', { "reportData" } },
      { "reportData a string", '{"patientId":"P-0001","reportData":"q1=3"}', { "reportData" } },
      { "both fields bad", '{"patientId":"","reportData":[]}', { "patientId", "reportData" } },
      { "empty object", '{}', { "patientId", "reportData" } },
    }
    for _, case in ipairs(invalid) do
      local name, body, fields = case[1], case[2], case[3]
      it("rejects a report with " .. name .. " naming " .. table.concat(fields, ", "), function()
        local r = post("/api/epro/submit", body)
        expect_status(r, 400)
        local j = json_of(r)
        assert.are.equal(false, j.success)
        assert.are.equal("invalid request", j.error)
        assert.are.equal("table", type(j.fields), "fields should be a list: " .. r.body)
        local got = {}
        for _, f in ipairs(j.fields) do got[#got + 1] = f end
        table.sort(got)
        assert.are.same(fields, got)
      end)
    end

    for _, case in ipairs{
      { "garbage", "this is not json" },
      { "truncated JSON", '{"patientId":"P-0001","reportData":{"q1":' },
      { "an empty body", "" },
    } do
      it("answers 400 invalid JSON for " .. case[1], function()
        local r = post("/api/epro/submit", case[2])
        expect_status(r, 400)
        local j = json_of(r)
        assert.are.equal(false, j.success)
        assert.are.equal("string", type(j.error))
        assert.matches("^invalid JSON: .", j.error)
        assert.is_nil(j.fields)
      end)
    end

    for _, body in ipairs{ "[]", "42", '"P-0001"', "null" } do
      it("answers 400 (not 500) for the JSON value " .. body, function()
        local r = post("/api/epro/submit", body)
        expect_status(r, 400)
        assert.are.equal(false, json_of(r).success)
      end)
    end
  end)

  describe("POST /api/v1/tags/add", function()
    it("adds a tag", function()
      local r = post("/api/v1/tags/add", '{"patientId":"P-0001","tagName":"high-risk"}')
      expect_status(r, 200)
      assert.are.same({ success = true, added = true }, json_of(r))
      r = post("/api/v1/tags/add", '{"patientId":"P-0001","tagName":"high-risk"}')
      expect_status(r, 200)
      assert.are.same({ success = true, added = false, message = "the patient has this tag already" }, json_of(r))
    end)

    for _, case in ipairs{
      { "missing tagName", '{"patientId":"P-0001"}', "tagName" },
      { "empty tagName", '{"patientId":"P-0001","tagName":""}', "tagName" },
      { "missing patientId", '{"tagName":"high-risk"}', "patientId" },
    } do
      it("rejects " .. case[1] .. " naming " .. case[3], function()
        local r = post("/api/v1/tags/add", case[2])
        expect_status(r, 400)
        local j = json_of(r)
        assert.are.equal(false, j.success)
        assert.are.equal("invalid request", j.error)
        assert.is_true(S.contains(j.fields, case[3]), "fields should name " .. case[3] .. ": " .. r.body)
      end)
    end

    it("rejects a body that is not JSON", function()
      local r = post("/api/v1/tags/add", "tagName=high-risk")
      expect_status(r, 400)
      local j = json_of(r)
      assert.are.equal(false, j.success)
      assert.matches("^invalid JSON: .", j.error)
    end)
  end)

  describe("GET /api/v1/sleep", function()
    it("waits about 50 ms and answers {\"ok\":true}", function()
      local r, elapsed = http.get(srv.port, "/api/v1/sleep")
      assert(r, elapsed)
      checked(r)
      expect_status(r, 200)
      assert.are.same({ ok = true }, json_of(r))
      assert.is_true(elapsed >= 0.045, ("answered after %.3f s, before 50 ms"):format(elapsed))
    end)
  end)

  describe("GET /api/v1/secure/protocols/:id", function()
    it("answers the protocol to an investigator's token", function()
      local r = get("/api/v1/secure/protocols/NCT04356798", site)
      expect_status(r, 200)
      local public = json_of(get("/api/v1/protocols/NCT04356798"))
      assert.are.same(public, json_of(r))
    end)

    it("answers 404 for an unknown protocol with a valid token", function()
      local r = get("/api/v1/secure/protocols/NCT00000000", site)
      expect_status(r, 404)
    end)

    for _, case in ipairs{
      { "no Authorization header", nil },
      { "a wrong token", "Bearer not-the-token" },
      { "an empty bearer token", "Bearer " },
      { "another scheme", "Basic ZGVtbzpkZW1v" },
      { "the token without a scheme", "eyJhbGciOiJIUzI1NiJ9.e30.e30" },
    } do
      it("answers 401 with " .. case[1], function()
        local headers = case[2] and { Authorization = case[2] } or nil
        local r = get("/api/v1/secure/protocols/NCT04356798", headers)
        expect_status(r, 401)
        assert.is_nil(r.body:find("Remdesivir", 1, true), "401 leaked the protocol: " .. r.body)
      end)
    end
  end)

  it("serves all of the above on one keep-alive connection", function()
    local c = assert(http.connect(srv.port))
    finally(function() c:close() end)
    local seq = {
      { "GET", "/api/v1/protocols/NCT04280705", nil, 200 },
      { "POST", "/api/epro/submit", '{"patientId":"P-0002","reportData":{"q1":1}}', 200 },
      { "POST", "/api/epro/submit", '{"patientId":""}', 400 },
      { "POST", "/api/v1/tags/add", '{"patientId":"P-0002","tagName":"follow-up"}', 200 },
      { "GET", "/api/v1/secure/protocols/NCT04280705", nil, 401 },
      { "GET", "/api/v1/protocols/nope", nil, 404 },
    }
    for i, s in ipairs(seq) do
      local r = assert(c:request(s[1], s[2], { body = s[3], headers = s[1] == "POST" and site or nil }))
      assert.are.equal(s[4], r.status, ("request %d %s %s: %s"):format(i, s[1], s[2], http.quote(r.body)))
      checked(r)
    end
  end)
end)
