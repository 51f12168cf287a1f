-- triage.store in process (spec/fixtures/store_app on a temporary database): writes inside requests,
-- reads anywhere, clear errors for misuse (the engine's own message for SQL it refuses).
local testing = require "triage.testing"
local db = require "triage.store"
local B = require "support.backend"

describe("triage.store in process", function()
  local app

  setup(function()
    app = testing.app("spec/fixtures/store_app")
  end)

  it("writes through a handler and reads back", function()
    local res = app:request { method = "POST", path = "/notes", json = { author = "ann", text = "hi" } }
    assert.equals(200, res.status, res.body)
    local id = res:json().id
    assert.same({ id = id, author = "ann", text = "hi" }, db:first("SELECT id, author, text FROM notes WHERE id = ?", id))
    assert.same({}, db:query("SELECT id FROM notes WHERE author = ?", "nobody"))
    assert.is_nil((db:first("SELECT id FROM notes WHERE author = ?", "nobody")))
  end)

  it("reports a refused statement as a constraint and stores nothing", function()
    local res = app:request { method = "POST", path = "/notes/edit", json = { id = 1, text = "changed" } }
    assert.equals(409, res.status)
    local j = res:json()
    assert.equals("constraint", j.update_kind)
    assert.matches("append-only", j.update_error, 1, true)
    assert.equals("constraint", j.delete_kind)
  end)

  it("refuses misuse loudly", function()
    assert.has_error(function() db:exec("INSERT INTO notes (author, text) VALUES ('a', 'b')") end,
      "db:exec: writes happen inside a request")
    assert.has_error(function() db:query("DELETE FROM notes") end, "db:query: only reads here; write with db:exec or db:tx")
    assert.has_error(function() db:query("SELECT ? + ?", 1) end, "db:query: 1 parameters given, the SQL has 2")
    assert.has_error(function() db:query("SELECT ?", {}) end, "db:query: parameter 1 is a table (use nil, a boolean, a number or a string)")
    assert.has_error(function() db:query(42) end, "db:query: SQL must be a string, got number")
    local rows, err = db:query("SELECT * FROM no_such_table")
    assert.is_nil(rows)
    assert.matches(B.postgres and 'relation "no_such_table" does not exist' or "no such table: no_such_table", err, 1, true)
  end)

  it("binds numbers, strings, booleans and nil as SQL values", function()
    local row = db:first("SELECT ? AS i, ? AS f, ? AS s, ? AS b, ? AS n", 42, 1.5, "x", true, nil)
    assert.same({ i = 42, f = 1.5, s = "x", b = 1 }, row)
  end)
end)
