-- tx:audit in process (spec/fixtures/audit_app on a temporary database): an entry per write in its
-- transaction, with who, route, request id, before/after and reason; none for a refused write; clear
-- errors for misuse; entries of any text stored as given; a chain `triage audit verify` accepts.
local cjson = require "cjson"
local testing = require "triage.testing"
local db = require "triage.store"
local B = require "support.backend"

describe("tx:audit", function()
  local app

  setup(function()
    app = testing.app("spec/fixtures/audit_app")
  end)

  local function entry(seq)
    return db:first("SELECT * FROM audit_trail WHERE seq = ?", seq)
  end

  it("records the write with the request's route, id and subject, in the write's transaction", function()
    local res = app:request { method = "POST", path = "/items",
      headers = { ["X-Request-Id"] = "r-1" }, as = { sub = "dr.chen", role = "investigator" }, json = { name = "a", note = "first" } }
    assert.equals(200, res.status, res.body)
    local e = entry(res:json().seq)
    assert.equals(1, e.seq)
    assert.equals("dr.chen", e.who)
    assert.equals("create", e.action)
    assert.equals("items", e.record_table)
    assert.equals("a", e.record_id)
    assert.equals("POST /items", e.route)
    assert.equals("r-1", e.request_id)
    assert.is_nil(e.before)
    assert.same({ name = "a", note = "first" }, cjson.decode(e.after))
    assert.equals(("0"):rep(64), e.prev_hash)
    -- the sub of the token's principal, whatever its role; "anonymous" without a token
    res = app:request { method = "POST", path = "/items", as = { sub = "cra.li", role = "monitor", trial = "T1" },
      json = { name = "b" } }
    assert.equals("cra.li", entry(res:json().seq).who)
    res = app:request { method = "POST", path = "/items", json = { name = "c" } }
    local c = entry(res:json().seq)
    assert.equals("anonymous", c.who)
    assert.equals(res.headers["x-request-id"], c.request_id)
  end)

  it("records a correction with its previous value and reason, and an explicit who", function()
    local res = app:request { method = "POST", path = "/items", json = { name = "d", note = "old" } }
    local id = res:json().id
    res = app:request { method = "POST", path = "/items/" .. id .. "/note",
      json = { note = "new", reason = "typo in the note", who = "monitor.kim" } }
    assert.equals(200, res.status, res.body)
    local e = entry(res:json().seq)
    assert.equals("correct", e.action)
    assert.equals(tostring(id), e.record_id)
    assert.equals("POST /items/:id/note", e.route)
    assert.equals("monitor.kim", e.who)
    assert.equals("typo in the note", e.reason)
    assert.same({ name = "d", note = "old" }, cjson.decode(e.before))
    assert.same({ name = "d", note = "new" }, cjson.decode(e.after))
    assert.equals(entry(e.seq - 1).hash, e.prev_hash)
  end)

  it("records nothing for a refused write, and the chain goes on", function()
    local n = db:first("SELECT count(*) AS n, max(seq) AS last FROM audit_trail")
    local res = app:request { method = "POST", path = "/items", json = { name = "a" } } -- a duplicate name
    assert.equals(409, res.status)
    assert.equals("constraint", res:json().kind)
    assert.same(n, db:first("SELECT count(*) AS n, max(seq) AS last FROM audit_trail"))
    res = app:request { method = "POST", path = "/items", json = { name = "e" } }
    local e = entry(res:json().seq)
    assert.equals(n.last + 1, e.seq)
    assert.equals(entry(n.last).hash, e.prev_hash)
  end)

  it("refuses misuse loudly", function()
    local n = db:first("SELECT count(*) AS n FROM audit_trail").n
    local errors = app:request { method = "POST", path = "/misuse" }:json()
    assert.matches("tx:audit: action is required", errors["no action"], 1, true)
    assert.matches("tx:audit: a correction needs a reason", errors["correction without reason"], 1, true)
    assert.matches("tx:audit: before is a number", errors["before a number"], 1, true)
    assert.matches("tx:audit { action = ...", errors["not a table"], 1, true)
    assert.matches("tx:audit after its db:tx returned", errors["after the tx"], 1, true)
    -- the places named are the handler's
    assert.matches("scripts/items.lua:%d+:", errors["no action"])
    assert.equals(n, db:first("SELECT count(*) AS n FROM audit_trail").n)
  end)

  -- On PostgreSQL the hash of an entry is computed by the database (triage_audit_hash) and checked by
  -- `triage audit verify` in C: these entries are where the two would disagree if they could.
  it("stores any text as given: empty, '0', multi-byte, line breaks, long values", function()
    local awkward = {
      { action = "create", who = "", table = "", record = "0", before = "", after = "0", reason = "" },
      { action = "é", who = "日本語 🙂", table = "line 1\nline 2", record = "\r\n", before = '{"a":"x\\ny"}',
        after = "\226\128\168", reason = 'tab\tquote"back\\slash' },
      { action = "0", who = "null", table = cjson.null, record = cjson.null, before = cjson.null, after = cjson.null,
        reason = "=5:" },
      { action = ("x"):rep(3000), who = ("é"):rep(1500), after = ("[]"):rep(2000) },
    }
    local columns = { who = "who", action = "action", table = "record_table", record = "record_id", before = "before",
                      after = "after", reason = "reason" }
    for i, e in ipairs(awkward) do
      local res = app:request { method = "POST", path = "/raw", json = e }
      assert.equals(200, res.status, res.body)
      local row = entry(res:json().seq)
      for field, column in pairs(columns) do
        local want = e[field]
        if want == cjson.null then want = nil end
        assert.equals(want, row[column], ("entry %d, %s"):format(i, column))
      end
    end
  end)

  it("leaves a chain that triage audit verify accepts", function()
    local bin = os.getenv("TRIAGE_BIN") or "build/triage"
    -- (without this process's LD_PRELOAD: in a sanitizer build it preloads the test library, which
    -- shares globals with the binary)
    local store = ""
    if B.postgres then
      store = (" --store %q"):format(B.in_process_url(db:first("SELECT current_schema() AS s").s))
    end
    local p = io.popen(("env -u LD_PRELOAD %q audit verify --data %q%s 2>&1; echo \"exit $?\""):format(bin, app.data,
      store))
    local out = p:read("*a")
    p:close()
    local n = db:first("SELECT count(*) AS n FROM audit_trail").n
    assert.matches(("audit trail intact: %d entries"):format(n), out, 1, true)
    assert.matches("exit 0", out, 1, true)
  end)
end)
