-- GET /_triage/metrics (Prometheus text format 0.0.4): a scrape parses, its counters match the
-- requests sent (by route and status, across a reload), histograms are consistent; GET
-- /_triage/health on the admin listener and, with --public-health, on the public one (which answers
-- nothing else of the admin API); the JSON access log.
local spec_root = debug.getinfo(1, "S").source:match("^@(.*)/integration/[^/]+$")
if spec_root then package.path = spec_root .. "/?.lua;" .. package.path end
local server = require "support.server"
local http = server.http
local sys = server.sys
local cjson = require "cjson"

local FIXTURE = server.fixtures .. "/reload_app"

local function copy_app()
  local dir = sys.mkdtemp("/tmp/triage-metrics-")
  assert(os.execute(("cp -r %q/routes %q/scripts %q/"):format(FIXTURE, FIXTURE, dir)) == 0)
  return dir
end

-- A label set `{a="x",b="y"}` (the braces' inside) as a table; errors on anything malformed.
local function parse_labels(s, line)
  local labels, i = {}, 1
  while i <= #s do
    local name, after = s:match("^([%a_][%w_]*)=\"()", i)
    assert(name, "bad label at " .. i .. " in: " .. line)
    local value, j = {}, after
    while true do
      local ch = s:sub(j, j)
      assert(ch ~= "", "unterminated label value in: " .. line)
      if ch == "\\" then
        local nx = s:sub(j + 1, j + 1)
        assert(nx == "\\" or nx == "\"" or nx == "n", "bad escape in: " .. line)
        value[#value + 1] = nx == "n" and "\n" or nx
        j = j + 2
      elseif ch == "\"" then
        j = j + 1
        break
      else
        value[#value + 1] = ch
        j = j + 1
      end
    end
    assert(labels[name] == nil, "label " .. name .. " twice in: " .. line)
    labels[name] = table.concat(value)
    if s:sub(j, j) == "," then j = j + 1 end
    i = j
  end
  return labels
end

-- The family a sample belongs to: a histogram's _bucket, _sum and _count belong to their base name.
local function family_of(name, types)
  for _, suffix in ipairs { "_bucket", "_sum", "_count" } do
    local base = name:sub(1, #name - #suffix)
    if name:sub(-#suffix) == suffix and types[base] == "histogram" then return base end
  end
  return name
end

-- Parse a scrape strictly: every line a HELP, a TYPE or a sample `name{labels} value`; every family
-- declared once (HELP and TYPE) before its samples. Returns samples { name, labels, value } and types.
local function parse_prometheus(text)
  assert.equals("\n", text:sub(-1), "the exposition ends with a newline")
  local samples, types, helps = {}, {}, {}
  for line in text:gmatch("([^\n]*)\n") do
    if line:sub(1, 1) == "#" then
      local kind, name, rest = line:match("^# (%u+) ([%a_:][%w_:]*) (.*)$")
      assert(kind == "HELP" or kind == "TYPE", "bad comment line: " .. line)
      if kind == "HELP" then
        assert.is_nil(helps[name], "HELP twice for " .. name)
        helps[name] = rest
      else
        assert.is_nil(types[name], "TYPE twice for " .. name)
        assert.is_truthy(({ counter = 1, gauge = 1, histogram = 1, summary = 1, untyped = 1 })[rest],
          "bad type: " .. line)
        types[name] = rest
      end
    else
      assert.is_true(line ~= "", "empty line in the exposition")
      local name, labels, value = line:match("^([%a_:][%w_:]*){(.*)} (%S+)$")
      if not name then
        name, value = line:match("^([%a_:][%w_:]*) (%S+)$")
        labels = ""
      end
      assert(name, "bad sample line: " .. line)
      local v = tonumber(value) or (value == "+Inf" and math.huge) or nil
      assert(v, "bad value in: " .. line)
      local fam = family_of(name, types)
      assert(types[fam], "sample before its TYPE: " .. line)
      assert(helps[fam], "sample before its HELP: " .. line)
      if types[fam] == "counter" then assert.is_true(v >= 0, line) end
      samples[#samples + 1] = { name = name, labels = parse_labels(labels, line), value = v, line = line }
    end
  end
  return samples, types
end

local function key_of(labels, skip)
  local names = {}
  for k in pairs(labels) do if k ~= skip then names[#names + 1] = k end end
  table.sort(names)
  local parts = {}
  for _, k in ipairs(names) do parts[#parts + 1] = k .. "=" .. labels[k] end
  return table.concat(parts, ",")
end

-- Every histogram: buckets cumulative in increasing le, the last +Inf, equal to _count.
local function check_histograms(samples, types)
  local series = {}
  for _, s in ipairs(samples) do
    local fam = family_of(s.name, types)
    if types[fam] == "histogram" then
      local key = fam .. "|" .. key_of(s.labels, "le")
      local h = series[key] or { buckets = {} }
      series[key] = h
      if s.name == fam .. "_bucket" then
        local le = s.labels.le == "+Inf" and math.huge or tonumber(s.labels.le)
        assert(le, "bad le in " .. s.line)
        h.buckets[#h.buckets + 1] = { le = le, value = s.value }
      elseif s.name == fam .. "_count" then
        h.count = s.value
      else
        h.sum = s.value
      end
    end
  end
  local n = 0
  for key, h in pairs(series) do
    n = n + 1
    assert.is_truthy(h.count, key .. ": no _count")
    assert.is_truthy(h.sum, key .. ": no _sum")
    for i = 2, #h.buckets do
      assert.is_true(h.buckets[i].le > h.buckets[i - 1].le, key .. ": le not increasing")
      assert.is_true(h.buckets[i].value >= h.buckets[i - 1].value, key .. ": buckets not cumulative")
    end
    local last = h.buckets[#h.buckets]
    assert.equals(math.huge, last.le, key .. ": the last bucket is not +Inf")
    assert.equals(h.count, last.value, key .. ": _count differs from the +Inf bucket")
  end
  return n
end

local function scrape(srv)
  local r = assert(http.get(srv.admin_port, "/_triage/metrics"))
  assert.equals(200, r.status, r.body)
  assert.equals("text/plain; version=0.0.4; charset=utf-8", r.headers["content-type"])
  local samples, types = parse_prometheus(r.body)
  check_histograms(samples, types)
  return samples, types, r.body
end

-- The value of the sample name{labels} (exact label set), or 0 when absent.
local function value(samples, name, labels)
  local want = key_of(labels or {})
  for _, s in ipairs(samples) do
    if s.name == name and key_of(s.labels) == want then return s.value end
  end
  return 0
end

local function sum(samples, name)
  local total = 0
  for _, s in ipairs(samples) do
    if s.name == name then total = total + s.value end
  end
  return total
end

local function requests(samples, route, status)
  return value(samples, "triage_http_requests_total", { route = route, status = tostring(status) })
end

local function send(port, method, path, n, want)
  for _ = 1, n do
    local r = assert(http.request(port, method, path, { timeout = 5 }))
    assert.equals(want, r.status, method .. " " .. path)
  end
end

describe("GET /_triage/metrics", function()
  local app, srv
  setup(function()
    app = copy_app()
    srv = server.start { app = app, workers = 2, args = { "--no-watch" } }
  end)
  teardown(function()
    srv:stop()
    os.execute(("rm -rf %q"):format(app))
  end)

  it("parses as Prometheus text and names every family the README lists", function()
    local samples, types = scrape(srv)
    for fam, t in pairs {
      triage_http_requests_total = "counter", triage_http_request_duration_seconds = "histogram",
      triage_open_connections = "gauge", triage_reloads_total = "counter", triage_reload_errors_total = "counter",
      triage_lua_memory_bytes = "gauge", triage_pool_objects = "gauge", triage_timeouts_total = "counter",
      triage_refusals_total = "counter", triage_connections_shed_total = "counter",
      triage_worker_replacements_total = "counter", triage_workers_up = "gauge", triage_workers = "gauge",
      triage_generation = "gauge",
    } do
      assert.equals(t, types[fam], fam)
    end
    assert.equals(2, value(samples, "triage_workers_up"))
    assert.is_true(value(samples, "triage_lua_memory_bytes", { worker = "0" }) > 0)
    for _, reason in ipairs { "connection", "handler" } do
      assert.equals(0, value(samples, "triage_timeouts_total", { worker = "1", reason = reason }))
    end
  end)

  it("counts the requests sent, by route and status, across a reload", function()
    local before = scrape(srv)
    send(srv.port, "GET", "/version", 7, 200)
    send(srv.port, "GET", "/no/such/route", 3, 404)
    send(srv.port, "POST", "/version", 2, 405)
    -- a request the core refuses before any route: 400
    local c = assert(http.connect(srv.port))
    c:send("GET /version HTTP/1.1\r\nHost: a\r\nBad Header\r\n\r\n")
    local bad = assert(c:read_response())
    c:close()
    assert.equals(400, bad.status)
    local after = scrape(srv)
    local function delta(route, status)
      return requests(after, route, status) - requests(before, route, status)
    end
    assert.equals(7, delta("GET /version", 200))
    assert.equals(3, delta("unmatched", 404))
    assert.equals(2, delta("unmatched", 405))
    assert.equals(1, delta("unmatched", 400))
    assert.equals(0, delta("GET /visits", 200))
    local count = value(after, "triage_http_request_duration_seconds_count", { route = "GET /version" })
    assert.equals(7, count - value(before, "triage_http_request_duration_seconds_count", { route = "GET /version" }))
    -- every request counted is in the histogram, and every one was counted once
    assert.equals(sum(after, "triage_http_requests_total"), sum(after, "triage_http_request_duration_seconds_count"))

    local st = assert(srv:status())
    local r = assert(srv:reload())
    assert.equals(200, r.status, r.body)
    assert.is_truthy(srv:wait_generation(st.generation + 1), srv:logs())
    send(srv.port, "GET", "/version", 4, 200)
    send(srv.port, "GET", "/visits", 2, 200)
    local later = scrape(srv)
    assert.equals(11, requests(later, "GET /version", 200) - requests(before, "GET /version", 200))
    assert.equals(2, requests(later, "GET /visits", 200) - requests(before, "GET /visits", 200))
    assert.equals(1, value(later, "triage_reloads_total") - value(after, "triage_reloads_total"))
    assert.equals(0, value(later, "triage_reload_errors_total"))
    assert.equals(st.generation + 1, value(later, "triage_generation"))
  end)
end)

describe("GET /_triage/health", function()
  it("answers on the admin listener, and with --public-health on the public one, which answers nothing else",
    function()
      local srv = server.start { workers = 1, args = { "--public-health" } }
      local plain = server.start { workers = 1 }
      finally(function()
        srv:stop()
        plain:stop()
      end)
      for _, port in ipairs { srv.admin_port, srv.port, plain.admin_port } do
        local r = assert(http.get(port, "/_triage/health"))
        assert.equals(200, r.status)
        assert.same({ status = "ok" }, cjson.decode(r.body))
      end
      -- the public listener is not the admin API: the application's own 404
      for _, path in ipairs { "/_triage/status", "/_triage/metrics", "/_triage/health/x" } do
        local r = assert(http.get(srv.port, path))
        assert.equals(404, r.status, path)
      end
      local r = assert(http.request(srv.port, "POST", "/_triage/reload", { timeout = 5 }))
      assert.equals(404, r.status)
      r = assert(http.request(srv.port, "POST", "/_triage/reload",
        { timeout = 5, headers = { Authorization = "Bearer " .. srv:admin_token() } }))
      assert.equals(404, r.status)
      assert.equals(1, assert(srv:status()).generation)
      -- without the flag, the public listener does not answer it
      assert.equals(404, assert(http.get(plain.port, "/_triage/health")).status)
    end)
end)

describe("--access-log-format json", function()
  it("writes one JSON object a line with the request's fields", function()
    local srv = server.start { workers = 1, access_log = true, args = { "--access-log-format", "json" } }
    finally(function() srv:stop() end)
    local r = assert(http.get(srv.port, "/api/v1/protocols/NCT04356798?x=%22q%22",
      { headers = { ["X-Request-Id"] = "spec-json-1" } }))
    assert.equals(200, r.status)
    assert.equals(404, assert(http.get(srv.port, "/nope")).status)
    local lines = server.eventually(10, function()
      local text = srv:access_log()
      local out = {}
      for line in text:gmatch("[^\n]+") do out[#out + 1] = line end
      return #out >= 3 and out
    end)
    assert.is_truthy(lines, "access log: " .. srv:access_log())
    local found
    for _, line in ipairs(lines) do
      local ok, t = pcall(cjson.decode, line)
      assert.is_true(ok, "not JSON: " .. line)
      for _, k in ipairs { "time", "request_id", "method", "path", "status", "bytes", "duration_ms", "worker" } do
        assert.is_not_nil(t[k], k .. " missing in " .. line)
      end
      assert.matches("^%d%d%d%d%-%d%d%-%d%dT%d%d:%d%d:%d%d%.%d%d%dZ$", t.time)
      if t.request_id == "spec-json-1" then found = t end
    end
    assert.is_truthy(found, "no line for the request sent")
    assert.equals("GET", found.method)
    assert.equals("/api/v1/protocols/NCT04356798?x=%22q%22", found.path)
    assert.equals(200, found.status)
    assert.equals(#r.body, found.bytes)
    assert.equals(0, found.worker)
    assert.is_true(found.duration_ms >= 0)
  end)
end)
