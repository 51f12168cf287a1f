-- The store (fixture spec/fixtures/store_app, copied per spec): migrations applied once and in order,
-- a broken migration that stops the start and leaves the database as it was, transactions that are
-- all or nothing, append-only tables, and `triage backup` while the server runs (SQLite; refused on
-- PostgreSQL, naming pg_dump). On either backend (spec/support/backend.lua).
local spec_root = debug.getinfo(1, "S").source:match("^@(.*)/integration/[^/]+$")
if spec_root then package.path = spec_root .. "/?.lua;" .. package.path end
local S = require "support.server"
local St = require "support.store"
local http = S.http
local sys = S.sys
local B = S.backend
local cjson = require "cjson"

local FIXTURE = S.fixtures .. "/store_app"

-- Run a shell command: its exit status (0 or not) and its output.
local function sh(cmd)
  local out = os.tmpname()
  local status = os.execute(("(%s) >%q 2>&1"):format(cmd, out))
  local text = sys.read_all(out) or ""
  os.remove(out)
  return status == 0 and 0 or 1, text
end

-- A query on the store of data (the sqlite3 CLI, or psql): its output, trimmed.
local sql = St.text

-- Everything in the database, to compare before and after: SQLite's .dump; on PostgreSQL the
-- tables with their columns and their row counts, and the migrations recorded.
local function snapshot(data)
  if not B.postgres then return sql(data, ".dump") end
  local tables = sql(data, "SELECT table_name || '(' || string_agg(column_name || ' ' || data_type, ', '"
    .. " ORDER BY ordinal_position) || ')' FROM information_schema.columns WHERE table_schema = current_schema()"
    .. " GROUP BY table_name ORDER BY table_name")
  local counts = {}
  for name in tables:gmatch("([%w_]+)%(") do
    counts[#counts + 1] = name .. ": " .. sql(data, "SELECT count(*) FROM " .. name)
  end
  return tables .. "\n" .. table.concat(counts, "\n") .. "\n" .. sql(data, "SELECT * FROM triage_migrations ORDER BY version")
end

-- The message each engine gives for a refused statement.
local REFUSED = B.postgres and {
  check = 'violates check constraint "note_log_what_check"',
  not_null = 'null value in column "author" of relation "notes" violates not-null constraint',
  no_table = 'relation "no_such_table" does not exist',
} or {
  check = "CHECK constraint failed",
  not_null = "NOT NULL constraint failed: notes.author",
  no_table = "no such table: no_such_table",
}

local function copy_app()
  local dir = sys.mkdtemp("/tmp/triage-store-")
  assert(os.execute(("cp -r %q/routes %q/scripts %q/migrations %q/"):format(FIXTURE, FIXTURE, FIXTURE, dir)) == 0)
  return dir
end

local function post(port, path, t)
  local r = assert(http.post(port, path, cjson.encode(t), { headers = { ["Content-Type"] = "application/json" } }))
  return r, cjson.decode(r.body)
end

describe("migrations", function()
  it("are applied once each, in order, and recorded", function()
    local app, data = copy_app(), sys.mkdtemp("/tmp/triage-store-data-")
    local srv
    finally(function()
      if srv then srv:stop() end
      os.execute(("rm -rf %q %q"):format(app, data))
    end)
    srv = S.start { app = app, data = data, workers = 1 }
    assert.matches("2 migration%(s%) applied", srv:error_log())
    srv:stop()
    srv = S.start { app = app, data = data, workers = 1 }
    assert.is_nil(srv:error_log():match("migration%(s%) applied"))
    assert.equals("1|001_notes.sql\n2|002_note_log.sql", sql(data, "SELECT version, name FROM triage_migrations ORDER BY version"))
    -- A new one is applied at the next start, alone.
    local f = assert(io.open(app .. "/migrations/003_tags.sql", "w"))
    f:write("CREATE TABLE note_tags (note INTEGER REFERENCES notes(id), tag TEXT);\n")
    f:close()
    srv:stop()
    srv = S.start { app = app, data = data, workers = 1 }
    assert.matches("1 migration%(s%) applied", srv:error_log())
    assert.equals("3", sql(data, "SELECT count(*) FROM triage_migrations"))
  end)

  it("stops the start on a broken one, naming its file, and leaves the database as it was", function()
    local app, data = copy_app(), sys.mkdtemp("/tmp/triage-store-data-")
    local srv, broken
    finally(function()
      if srv then srv:stop() end
      if broken then broken:stop() end
      os.execute(("rm -rf %q %q"):format(app, data))
    end)
    srv = S.start { app = app, data = data, workers = 1 }
    post(srv.port, "/notes", { author = "ana", text = "before" })
    srv:stop()
    srv = nil
    -- Its first statement works, its second fails: the first must not stay either.
    local f = assert(io.open(app .. "/migrations/003_broken.sql", "w"))
    f:write("CREATE TABLE half_done (x INTEGER);\nINSERT INTO no_such_table VALUES (1);\n")
    f:close()
    local before = snapshot(data)
    broken = S.start { app = app, data = data, workers = 1, wait = false }
    local e = broken:wait_exit(10)
    assert.is_truthy(e, "the server started on a broken migration")
    assert.is_not.equal(0, e.code)
    assert.matches("migrations/003_broken.sql: " .. REFUSED.no_table, broken:error_log(), 1, true)
    assert.equals(before, snapshot(data))
    assert.equals("", sql(data, B.postgres
      and "SELECT table_name FROM information_schema.tables WHERE table_name = 'half_done'"
      or "SELECT name FROM sqlite_master WHERE name = 'half_done'"))
  end)
end)

describe("the store", function()
  local app, data, srv

  setup(function()
    app, data = copy_app(), sys.mkdtemp("/tmp/triage-store-data-")
    srv = S.start { app = app, data = data, workers = 2 }
  end)

  teardown(function()
    if srv then srv:stop() end
    os.execute(("rm -rf %q %q"):format(app, data))
  end)

  it("commits a transaction's statements together and reads them back", function()
    local r, j = post(srv.port, "/notes", { author = "ben", text = "hello" })
    assert.equals(200, r.status, r.body)
    assert.equals(2, j.changes)
    local got = cjson.decode(assert(http.get(srv.port, "/notes/" .. j.id)).body)
    assert.same({ id = j.id, author = "ben", text = "hello" }, got)
    assert.equals("added by ben", sql(data, "SELECT what FROM note_log ORDER BY id DESC LIMIT 1"))
  end)

  it("stores nothing of a transaction when one of its statements is refused", function()
    local notes, log = sql(data, "SELECT count(*) FROM notes"), sql(data, "SELECT count(*) FROM note_log")
    -- The first statement passes, the second is refused by note_log's CHECK: the first goes too.
    local r, j = post(srv.port, "/notes", { author = "eve", text = "half", log = "" })
    assert.equals(409, r.status, r.body)
    assert.equals("constraint", j.kind)
    assert.matches(REFUSED.check, j.error, 1, true)
    assert.equals("", sql(data, "SELECT id FROM notes WHERE author = 'eve'"))
    -- And a refused first statement.
    r, j = post(srv.port, "/notes", { text = "no author" })
    assert.equals(409, r.status, r.body)
    assert.matches(REFUSED.not_null, j.error, 1, true)
    assert.equals(notes, sql(data, "SELECT count(*) FROM notes"))
    assert.equals(log, sql(data, "SELECT count(*) FROM note_log"))
  end)

  it("refuses UPDATE and DELETE on an append-only table, through the store and through SQL", function()
    local _, j = post(srv.port, "/notes", { author = "cy", text = "kept" })
    local r, e = post(srv.port, "/notes/edit", { id = j.id, text = "changed" })
    assert.equals(409, r.status, r.body)
    assert.equals("constraint", e.update_kind)
    assert.matches("notes are append-only", e.update_error, 1, true)
    assert.equals("constraint", e.delete_kind)
    local rc, out, err = St.exec(data, "UPDATE notes SET text = 'x' WHERE id = " .. j.id)
    assert.is_not.equal(0, rc)
    assert.matches("append-only", out .. err, 1, true)
    rc = St.exec(data, "DELETE FROM notes WHERE id = " .. j.id)
    assert.is_not.equal(0, rc)
    assert.equals("kept", sql(data, "SELECT text FROM notes WHERE id = " .. j.id))
  end)

  it("takes a consistent backup while serving, which restores by copying it in place", function()
    if B.postgres then return pending("SQLite only: triage backup copies DATA/triage.db (pg_dump backs up PostgreSQL)") end
    for i = 1, 20 do
      post(srv.port, "/notes", { author = "dee", text = "note " .. i })
    end
    local dest = sys.mkdtemp("/tmp/triage-backup-")
    local restored_srv
    finally(function()
      if restored_srv then restored_srv:stop() end
      os.execute(("rm -rf %q"):format(dest))
    end)
    local rc, out = sh(("%q backup %q --data %q"):format(S.bin, dest .. "/copy.db", data))
    assert.equals(0, rc, out)
    local rc2 = sh(("%q backup %q --data %q"):format(S.bin, dest .. "/copy.db", data))
    assert.is_not.equal(0, rc2) -- never overwrites
    -- Restore: the copy becomes triage.db of a data directory.
    os.execute(("mkdir -p %q/data && cp %q/copy.db %q/data/triage.db"):format(dest, dest, dest))
    assert.equals(sql(data, "SELECT count(*) FROM notes"), sql(dest .. "/data", "SELECT count(*) FROM notes"))
    restored_srv = S.start { app = app, data = dest .. "/data", workers = 1 }
    local last = sql(dest .. "/data", "SELECT max(id) FROM notes")
    local got = cjson.decode(assert(http.get(restored_srv.port, "/notes/" .. last)).body)
    assert.equals("note 20", got.text)
  end)

  it("refuses triage backup on PostgreSQL, naming pg_dump", function()
    if not B.postgres then return pending("PostgreSQL only: SQLite's backup is the spec above") end
    local dest = sys.mkdtemp("/tmp/triage-backup-")
    finally(function() os.execute(("rm -rf %q"):format(dest)) end)
    local rc, out = sh(("%q backup %q %s"):format(S.bin, dest .. "/copy.db", B.store_words(data)))
    assert.is_not.equal(0, rc, out)
    assert.matches("pg_dump", out, 1, true)
    assert.is_nil(sys.read_all(dest .. "/copy.db"), "a file was written")
  end)
end)
