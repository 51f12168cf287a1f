-- The throwaway PostgreSQL of the specs (spec/support/postgres.lua), whatever TRIAGE_TEST_BACKEND says:
-- a server of its own with the settings the store relies on, psql and rows, a database made again
-- empty, a triage server on its TCP and on its unix socket URL, and a restart (fast, immediate, kill)
-- on the same port that keeps every committed row.
local spec_root = debug.getinfo(1, "S").source:match("^@(.*)/integration/[^/]+$")
if spec_root then package.path = spec_root .. "/?.lua;" .. package.path end
local S = require "support.server"
local St = require "support.store"
local PG = require "support.postgres"
local cjson = require "cjson"

describe("the specs' PostgreSQL", function()
  local pg

  setup(function()
    local why = PG.available()
    if why then error(why, 0) end
    pg = PG.start()
  end)

  teardown(function()
    S.stop_all()
    if pg then pg:destroy() end
  end)

  it("runs with fsync and synchronous_commit on, room for many workers, and answers psql and rows", function()
    assert.equals("on\non\n300\n", pg:psql("postgres", "SHOW fsync; SHOW synchronous_commit; SHOW max_connections;", "-At"))
    pg:create_database("harness")
    pg:psql("harness", "CREATE TABLE t (id bigint PRIMARY KEY, s text, b boolean, f float8); "
      .. "INSERT INTO t VALUES (1, 'x''y', true, 1.5), (2, NULL, false, NULL);")
    assert.same({ { id = 1, s = "x'y", b = true, f = 1.5 }, { id = 2, s = cjson.null, b = false, f = cjson.null } },
      pg:rows("harness", "SELECT * FROM t ORDER BY id;"))
    assert.same({}, pg:rows("harness", "SELECT * FROM t WHERE id = 3"))
    local rc, _, err = pg:try_psql("harness", "SELECT no_such_column FROM t")
    assert.is_not.equal(0, rc)
    assert.matches("no_such_column", err, 1, true)
    assert.has_error(function() pg:psql("harness", "SELECT 1 FROM no_such_table") end)
    -- made again: empty
    pg:create_database("harness")
    assert.equals("0\n", pg:psql("harness", "SELECT count(*) FROM pg_tables WHERE tablename = 't'", "-At"))
  end)

  it("serves triage on its TCP URL and on its unix socket URL", function()
    for _, how in ipairs { "url", "socket_url" } do
      local data = St.tempdir()
      local db = "served_" .. how
      pg:create_database(db)
      local srv = St.start { app = S.root, workers = 1, data = data, store = pg[how](pg, db) }
      local sub = St.submission { patient = "P-HARNESS", key = "harness-" .. how .. "-" .. St.run_id }
      local receipt = assert(St.receipt_of(St.send(srv.port, sub)))
      srv:stop()
      St.remove_tree(data)
      assert.same({ { receipt_id = receipt.id } },
        pg:rows(db, "SELECT receipt_id FROM epro_submissions WHERE patient_id = 'P-HARNESS'"))
    end
  end)

  it("starts again on the same port and data after a fast, an immediate and a killing stop", function()
    pg:create_database("restarts")
    pg:psql("restarts", "CREATE TABLE kept (n int)")
    local url = pg:url("restarts")
    for n, mode in ipairs { "fast", "immediate", "kill" } do
      pg:psql("restarts", ("INSERT INTO kept VALUES (%d)"):format(n))
      local pid = pg:pid()
      pg:stop { mode = mode }
      assert.is_nil(pg:pid())
      assert.is_false(S.sys.alive(pid), mode .. ": the postmaster is still there")
      assert.is_not.equal(0, (pg:try_psql("restarts", "SELECT 1")), mode .. ": psql still answered")
      pg:start_again()
      assert.equals(url, pg:url("restarts"))
      assert.equals(("%d\n"):format(n), pg:psql("restarts", "SELECT count(*) FROM kept", "-At"), mode)
    end
  end)
end)
