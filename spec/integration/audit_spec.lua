-- The audit trail (README.md, "Audit trail") on the sample app with a temporary --data: every write
-- records a chained entry (who, what, when, route, request id, before/after, reason) in its own
-- transaction; two workers writing at once keep one valid chain; `triage audit verify` finds a changed,
-- a removed and a reordered entry, each by its sequence number, in copies of the database; `triage
-- audit export` writes JSON lines and CSV that parse back to the same entries. On either backend
-- (spec/support/backend.lua): on PostgreSQL the copies are pg_dump copies of the database.
local spec_root = debug.getinfo(1, "S").source:match("^@(.*)/integration/[^/]+$")
if spec_root then package.path = spec_root .. "/?.lua;" .. package.path end
local S = require "support.server"
local St = require "support.store"
local http = S.http
local sys = S.sys
local B = S.backend
local cjson = require "cjson"

-- Run a shell command: its exit status (0, or 1 for any failure) and its output (stdout and stderr).
local function sh(cmd)
  local out = os.tmpname()
  local status = os.execute(("(%s) >%q 2>&1"):format(cmd, out))
  local text = sys.read_all(out) or ""
  os.remove(out)
  return status == 0 and 0 or 1, text
end

-- `triage audit ...`: its exit code (0, 1 or 2, told apart, unlike sh) and its output.
local function audit(args)
  local out = os.tmpname()
  local status = os.execute(("%q audit %s >%q 2>&1"):format(S.bin, args, out))
  local text = sys.read_all(out) or ""
  os.remove(out)
  -- LuaJIT's os.execute returns the wait status (exit code * 256)
  local code = type(status) == "number" and math.floor(status / 256) or (status and 0 or 1)
  return code, text
end

-- Statements on the store of a data directory (a tamperable copy), which must succeed.
local function tamper(dir, query)
  local rc, out, err = St.exec(dir, query)
  assert(rc == 0, query .. ": " .. out .. err)
end

-- The rows of an RFC 4180 CSV text (quoted fields may hold commas, quotes and line breaks).
local function parse_csv(text)
  local rows, row, field, i, quoted = {}, {}, {}, 1, false
  while i <= #text do
    local c = text:sub(i, i)
    if quoted then
      if c == '"' and text:sub(i + 1, i + 1) == '"' then
        field[#field + 1] = '"'
        i = i + 1
      elseif c == '"' then
        quoted = false
      else
        field[#field + 1] = c
      end
    elseif c == '"' then
      quoted = true
    elseif c == "," then
      row[#row + 1] = table.concat(field)
      field = {}
    elseif c == "\r" and text:sub(i + 1, i + 1) == "\n" then
      row[#row + 1] = table.concat(field)
      rows[#rows + 1] = row
      row, field = {}, {}
      i = i + 1
    else
      field[#field + 1] = c
    end
    i = i + 1
  end
  assert(#field == 0 and #row == 0, "the CSV does not end with CRLF")
  return rows
end

describe("the audit trail", function()
  local data, srv, copies = nil, nil, {}

  -- A POST with an investigator's token (dr.chen), unless headers give another.
  local function post(path, body, headers)
    local h = headers or {}
    h["Content-Type"] = "application/json"
    if not h.Authorization then
      h.Authorization = srv:bearer { sub = "dr.chen", role = "investigator", trial = "T1" }.Authorization
    end
    local r = assert(http.post(srv.port, path, cjson.encode(body), { headers = h }))
    return r, r.body ~= "" and cjson.decode(r.body) or nil
  end

  -- Every entry, through `triage audit export` (JSON lines), in sequence order.
  local function entries(dir)
    local file = os.tmpname()
    local code, out = audit(("export %s --format jsonl --output %q"):format(B.store_words(dir or data), file))
    assert.equals(0, code, out)
    local list = {}
    for line in (sys.read_all(file) or ""):gmatch("[^\n]+") do
      list[#list + 1] = cjson.decode(line)
    end
    os.remove(file)
    return list
  end

  -- A consistent copy of the live database (triage backup, or pg_dump) as the store of a directory of
  -- its own, triggers dropped so that the copy can be tampered with.
  local function tamperable_copy()
    local dir = sys.mkdtemp("/tmp/triage-audit-copy-")
    copies[#copies + 1] = dir
    if B.postgres then
      B.copy_database(data, dir)
      tamper(dir, "ALTER TABLE audit_trail DISABLE TRIGGER USER;")
    else
      local code, out = sh(("%q backup %q --data %q"):format(S.bin, dir .. "/triage.db", data))
      assert(code == 0, out)
      tamper(dir, "DROP TRIGGER audit_trail_no_update; DROP TRIGGER audit_trail_no_delete;")
    end
    return dir
  end

  setup(function()
    data = sys.mkdtemp("/tmp/triage-audit-data-")
    srv = S.start { app = S.root, data = data, workers = 2 }
  end)

  teardown(function()
    if srv then srv:stop() end
    for _, dir in ipairs(copies) do os.execute(("rm -rf %q"):format(dir)) end
    os.execute(("rm -rf %q"):format(data))
  end)

  it("is intact and empty before any write", function()
    local code, out = audit("verify " .. B.store_words(data))
    assert.equals(0, code, out)
    assert.matches("audit trail intact: no entries", out, 1, true)
  end)

  it("records who, what, when, the route, the request id, and before/after with the reason of a correction", function()
    -- the patient submits with their own token, the site corrects and tags with an investigator's
    local patient = srv:bearer { sub = "P-A1", role = "patient", trial = "T1" }.Authorization
    local r, j = post("/api/epro/submit", { patientId = "P-A1", reportData = { q1 = 2, q9 = 0 } },
      { ["X-Request-Id"] = "audit-submit-1", Authorization = patient })
    assert.equals(200, r.status, r.body)
    local original = j.receipt.id
    local reason = 'item 1 misread, said "2", meant 1\nconfirmed by phone'
    r, j = post("/api/epro/submit", { patientId = "P-A1", reportData = { q1 = 1, q9 = 0 }, corrects = original,
      reason = reason }, { ["X-Request-Id"] = "audit-correct-1" })
    assert.equals(200, r.status, r.body)
    local correction = j.receipt.id
    r = post("/api/v1/tags/add", { patientId = "P-A1", tagName = "needs, review" }, { ["X-Request-Id"] = "audit-tag-1" })
    assert.equals(200, r.status, r.body)
    -- refused writes record nothing: a correction without a reason, a duplicate tag
    r = post("/api/epro/submit", { patientId = "P-A1", reportData = { q1 = 0 }, corrects = original })
    assert.equals(400, r.status, r.body)
    r = post("/api/v1/tags/add", { patientId = "P-A1", tagName = "needs, review" })
    assert.is_false(cjson.decode(r.body).added)

    local list = entries()
    assert.equals(3, #list)
    local created, corrected, tagged = list[1], list[2], list[3]
    for i, e in ipairs(list) do
      assert.equals(i, e.seq)
      assert.matches("^%d%d%d%d%-%d%d%-%d%dT%d%d:%d%d:%d%d%.%d%d%dZ$", e.at)
      assert.equals(i == 1 and "P-A1" or "dr.chen", e.who)
      assert.matches("^%x+$", e.hash)
      assert.equals(64, #e.hash)
      assert.equals(i == 1 and ("0"):rep(64) or list[i - 1].hash, e.prev_hash)
    end
    assert.equals("create", created.action)
    assert.equals("epro_submissions", created.record_table)
    assert.equals(original, created.record_id)
    assert.equals("POST /api/epro/submit", created.route)
    assert.equals("audit-submit-1", created.request_id)
    assert.equals(cjson.null, created.before)
    assert.same({ q1 = 2, q9 = 0 }, cjson.decode(created.after).reportData)
    assert.equals(cjson.null, created.reason)

    assert.equals("correct", corrected.action)
    assert.equals(correction, corrected.record_id)
    assert.equals("audit-correct-1", corrected.request_id)
    assert.equals(reason, corrected.reason)
    local before, after = cjson.decode(corrected.before), cjson.decode(corrected.after)
    assert.equals(original, before.receiptId)
    assert.same({ q1 = 2, q9 = 0 }, before.reportData)
    assert.same({ q1 = 1, q9 = 0 }, after.reportData)
    assert.equals(original, after.corrects)

    assert.equals("patient_tags", tagged.record_table)
    assert.equals("POST /api/v1/tags/add", tagged.route)
    assert.equals("audit-tag-1", tagged.request_id)
    assert.equals("needs, review", cjson.decode(tagged.after).tag)

    local code, out = audit("verify " .. B.store_words(data))
    assert.equals(0, code, out)
    assert.matches("intact: 3 entries (1 to 3), last hash " .. tagged.hash, out, 1, true)
  end)

  -- The store hashes what it stores (on PostgreSQL, the database's triage_audit_hash) and `triage audit
  -- verify` recomputes it in C: text that either could mangle (multi-byte, line breaks, quotes, "0").
  -- The tests below verify the whole chain, these entries included, and recompute each hash in Lua.
  it("stores entries of any UTF-8 text as given", function()
    local names = { "é", "0", "日本語 🙂", "line 1\nline 2\r\n", "\226\128\168 (U+2028)", 'quote " and \\' }
    local before = #entries()
    for _, name in ipairs(names) do
      local r = post("/api/v1/tags/add", { patientId = "P-Ü1", tagName = name })
      assert.equals(200, r.status, r.body)
    end
    local list = entries()
    assert.equals(before + #names, #list)
    for i, name in ipairs(names) do
      local e = list[before + i]
      assert.equals(cjson.encode { "P-Ü1", name }, e.record_id)
      assert.equals(name, cjson.decode(e.after).tag)
    end
  end)

  it("refuses UPDATE and DELETE on the trail", function()
    local rc, out, err = St.exec(data, "UPDATE audit_trail SET who = 'mallory' WHERE seq = 1")
    assert.is_not.equal(0, rc)
    assert.matches("audit_trail is append-only", out .. err, 1, true)
    rc, out, err = St.exec(data, "DELETE FROM audit_trail WHERE seq = 1")
    assert.is_not.equal(0, rc)
    assert.matches("audit_trail is append-only", out .. err, 1, true)
    if B.postgres then
      rc, out, err = St.exec(data, "TRUNCATE audit_trail")
      assert.is_not.equal(0, rc)
      assert.matches("audit_trail is append-only", out .. err, 1, true)
    end
  end)

  it("keeps one valid chain while both workers write at once", function()
    local before = #entries()
    local total = 240
    local authorization = srv:bearer { sub = "dr.chen", role = "investigator", trial = "T1" }.Authorization
    local stats = S.loadgen.run {
      port = srv.port, concurrency = 24, total = total, deadline = 120,
      request = function(i)
        local body
        if i % 2 == 0 then
          body = cjson.encode { patientId = "P-C" .. i, reportData = { q1 = i % 4 } }
          return "POST /api/epro/submit HTTP/1.1\r\nHost: x\r\nAuthorization: " .. authorization
            .. "\r\nContent-Type: application/json\r\nContent-Length: " .. #body .. "\r\n\r\n" .. body
        end
        body = cjson.encode { patientId = "P-C" .. i, tagName = "t" .. i }
        return "POST /api/v1/tags/add HTTP/1.1\r\nHost: x\r\nAuthorization: " .. authorization
          .. "\r\nContent-Type: application/json\r\nContent-Length: " .. #body .. "\r\n\r\n" .. body
      end,
    }
    local outcomes = {}
    for k, n in pairs(stats.statuses) do outcomes[#outcomes + 1] = ("status %s: %d"):format(k, n) end
    for k, n in pairs(stats.errors) do outcomes[#outcomes + 1] = ("%s: %d"):format(k, n) end
    assert.equals(total, stats.ok, table.concat(outcomes, ", "))
    local list = entries()
    assert.equals(before + total, #list)
    -- both workers wrote (a receipt id is <ms>-<process tag>-<worker>-<sequence>, in hex)
    local workers = {}
    for _, e in ipairs(list) do
      if e.record_table == "epro_submissions" then
        workers[e.record_id:match("^%x+%-%x+%-(%x+)%-")] = true
      end
    end
    assert.is_true(workers["0"] and workers["1"], "one worker served every submission: " .. cjson.encode(workers))
    local code, out = audit("verify " .. B.store_words(data))
    assert.equals(0, code, out)
    assert.matches(("intact: %d entries"):format(before + total), out, 1, true)
  end)

  it("names an entry whose field was changed", function()
    local dir = tamperable_copy()
    local code, out = audit("verify " .. B.store_words(dir))
    assert.equals(0, code, out) -- the copy itself is intact
    tamper(dir, "UPDATE audit_trail SET who = 'someone.else' WHERE seq = 2")
    code, out = audit("verify " .. B.store_words(dir))
    assert.equals(1, code, out)
    assert.matches("entry 2: hash mismatch", out, 1, true)
  end)

  it("names a changed link", function()
    local dir = tamperable_copy()
    tamper(dir, "UPDATE audit_trail SET prev_hash = '" .. ("ab"):rep(32) .. "' WHERE seq = 3")
    local code, out = audit("verify " .. B.store_words(dir))
    assert.equals(1, code, out)
    assert.matches("entry 3: broken link", out, 1, true)
  end)

  it("names the gap a removed entry leaves", function()
    local dir = tamperable_copy()
    tamper(dir, "DELETE FROM audit_trail WHERE seq = 5")
    local code, out = audit("verify " .. B.store_words(dir))
    assert.equals(1, code, out)
    assert.matches("entry 6: gap in sequence: entry 5 is missing", out, 1, true)
  end)

  it("names two entries swapped", function()
    local dir = tamperable_copy()
    tamper(dir, "UPDATE audit_trail SET seq = -1 WHERE seq = 7;"
      .. " UPDATE audit_trail SET seq = 7 WHERE seq = 8; UPDATE audit_trail SET seq = 8 WHERE seq = -1;")
    local code, out = audit("verify " .. B.store_words(dir))
    assert.equals(1, code, out)
    assert.matches("entry 7: reordering: its prev_hash is the hash of entry 8", out, 1, true)
  end)

  it("follows the documented canonical form, and names a rewritten entry by the link of the next", function()
    local FIELDS = { "seq", "at", "who", "action", "record_table", "record_id", "route", "request_id", "before",
                     "after", "reason", "prev_hash" }
    -- core/audit.h: "triage-audit-1\n", then per field "name=null\n" or "name=<bytes>:<value>\n"
    local function hash_of(e)
      local parts = { "triage-audit-1\n" }
      for _, name in ipairs(FIELDS) do
        local v = e[name]
        v = v ~= cjson.null and tostring(v) or nil
        parts[#parts + 1] = name .. "=" .. (v and (#v .. ":" .. v) or "null") .. "\n"
      end
      local file = os.tmpname()
      local f = assert(io.open(file, "wb"))
      f:write(table.concat(parts))
      f:close()
      local rc, out = sh(("sha256sum %q"):format(file))
      os.remove(file)
      assert(rc == 0, out)
      return out:match("^(%x+)")
    end
    local list = entries()
    for _, e in ipairs(list) do
      assert.equals(e.hash, hash_of(e), "entry " .. e.seq)
    end
    -- entry 4 rewritten consistently (a new who, its hash recomputed): the chain breaks at entry 5
    local dir = tamperable_copy()
    local e = list[4]
    e.who = "someone.else"
    tamper(dir,
      ("UPDATE audit_trail SET who = 'someone.else', hash = '%s' WHERE seq = 4"):format(hash_of(e)))
    local code, out = audit("verify " .. B.store_words(dir))
    assert.equals(1, code, out)
    assert.matches("entry 5: broken link: its prev_hash is not the hash of entry 4", out, 1, true)
  end)

  it("exports every entry as JSON lines and as CSV, the same entries in both", function()
    local jsonl = entries()
    assert.is_true(#jsonl > 3)
    local file = os.tmpname()
    local code, out = audit(("export %s --format csv --output %q"):format(B.store_words(data), file))
    assert.equals(0, code, out)
    assert.matches(("%d entries written"):format(#jsonl), out, 1, true)
    local rows = parse_csv(sys.read_all(file))
    os.remove(file)
    local header = rows[1]
    assert.same({ "seq", "at", "who", "action", "record_table", "record_id", "route", "request_id", "before",
                  "after", "reason", "prev_hash", "hash" }, header)
    assert.equals(#jsonl + 1, #rows)
    for i, e in ipairs(jsonl) do
      local row = rows[i + 1]
      for k, name in ipairs(header) do
        local want = e[name]
        if want == cjson.null then want = "" end
        assert.equals(tostring(want), row[k], ("entry %d, %s"):format(i, name))
      end
    end
    -- stdout when no --output; a wrong format is named
    code, out = audit("export " .. B.store_words(data))
    assert.equals(0, code, out)
    assert.equals(#jsonl, select(2, out:gsub("\n", "")))
    code, out = audit(("export %s --format xml"):format(B.store_words(data)))
    assert.equals(1, code)
    assert.matches("--format xml: jsonl or csv", out, 1, true)
  end)

  it("says so when there is no trail to read", function()
    local empty = sys.mkdtemp("/tmp/triage-audit-none-")
    copies[#copies + 1] = empty
    local code, out = audit("verify " .. B.store_words(empty))
    assert.equals(1, code, out)
    if not B.postgres then
      assert.matches("cannot read " .. empty .. "/triage.db", out, 1, true)
    else -- a database without the trail
      assert.matches("audit_trail", out, 1, true)
    end
    code, out = audit("verify --nope")
    assert.equals(2, code)
    assert.matches("unexpected argument '--nope'", out, 1, true)
  end)
end)
