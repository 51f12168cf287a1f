-- The store's PostgreSQL engine (core/pg.c, core/pg_migrate.c) on a throwaway server of its own, with
-- the fixture spec/fixtures/pg_app: what the shared store specs (run again on PostgreSQL as lua_pg_*)
-- cannot show because it is PostgreSQL's alone.
-- - Migrations: a migrations/postgres/ variant replaces its file, triage_app_file is substituted (a
--   text holding "$triage$" and "$$" included), column types come back as SQLite's would.
-- - last_id of an INSERT into a table with an identity key is the new row's key.
-- - One worker with one connection groups concurrent writes into one transaction: writes refused by a
--   constraint or wrong SQL fail alone, every other one is stored once and acknowledged.
-- - A text with a NUL byte is an error naming it.
-- - PostgreSQL down: writes get 503 with Retry-After at once, health says the store is unreachable;
--   back up, the server serves again by itself. Connections cut under load: nothing acknowledged is
--   missing.
-- - A server with synchronous_commit = off is refused at start.
local spec_root = debug.getinfo(1, "S").source:match("^@(.*)/integration/[^/]+$")
if spec_root then package.path = spec_root .. "/?.lua;" .. package.path end
local S = require "support.server"
local PG = require "support.postgres"
local cjson = require "cjson"
local http, sys, loadgen = S.http, S.sys, S.loadgen

local APP = S.fixtures .. "/pg_app"
local JSON = { ["Content-Type"] = "application/json" }

local function post(port, path, t)
  return assert(http.post(port, path, cjson.encode(t or {}), { headers = JSON, timeout = 20 }))
end

local function body(resp)
  return cjson.decode(resp.body)
end

local function raw_post(path, t)
  local b = cjson.encode(t)
  return ("POST %s HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: %d\r\n"
    .. "Connection: close\r\n\r\n%s"):format(path, #b, b)
end

describe("the store on PostgreSQL", function()
  local pg, n = nil, 0

  setup(function()
    local why = PG.available()
    if why then error(why, 0) end
    pg = PG.start()
  end)

  teardown(function()
    if pg then pg:destroy() end
  end)

  -- A server of pg_app on a new database; opts are S.start's.
  local function start(opts)
    n = n + 1
    local db = "pgspec" .. n
    opts = opts or {}
    opts.app, opts.store = APP, pg:create_database(db)
    opts.workers = opts.workers or 1
    local srv = S.start(opts)
    return srv, db
  end

  it("applies the PostgreSQL variants and substitutes triage_app_file", function()
    local srv, db = start()
    local kinds = body(assert(http.get(srv.port, "/kinds"))).kinds
    assert.same({
      { code = "a", label = "Alpha: 'quoted', $triage$ and $$ inside", weight = 1.5, active = 1, rank = 1 },
      { code = "b", label = "Beta", active = 0, rank = 2 },
    }, kinds)
    local versions = pg:rows(db, "SELECT version, name FROM triage_migrations ORDER BY version")
    assert.same({ { version = 1, name = "001_kinds.sql" }, { version = 2, name = "002_items.sql" },
      { version = 3, name = "003_seed.sql" } }, versions)
    -- the variant's identity key, not a SQLite rowid alias
    local ident = pg:rows(db, "SELECT attidentity FROM pg_attribute WHERE attrelid = 'items'::regclass AND attname = 'id'")
    assert.equal("d", ident[1].attidentity)
    srv:stop()
  end)

  it("gives the new row's key as last_id, and its append-only trigger refuses as a constraint", function()
    local srv = start()
    local first = body(post(srv.port, "/items", { name = "one" }))
    local second = body(post(srv.port, "/items", { name = "two", note = "n" }))
    assert.same({ id = 1, changes = 1 }, first)
    assert.same({ id = 2, changes = 1 }, second)
    assert.same({ id = 2, name = "two", note = "n" }, body(assert(http.get(srv.port, "/items/2"))))
    local edit = post(srv.port, "/items/edit")
    assert.equal(409, edit.status)
    assert.same({ kind = "constraint", error = "items are append-only" }, body(edit))
    srv:stop()
  end)

  it("groups concurrent writes: refused and wrong ones fail alone, the rest are stored once", function()
    local srv, db = start { args = { "--store-connections", "1" } }
    -- 60 distinct names, 20 of them sent twice, and 20 statements that cannot run, all at once
    local requests = {}
    for i = 1, 60 do requests[#requests + 1] = { path = "/items", name = "n" .. i } end
    for i = 1, 20 do requests[#requests + 1] = { path = "/items", name = "n" .. i } end
    for _ = 1, 20 do requests[#requests + 1] = { path = "/items/bad" } end
    local stats = loadgen.run {
      port = srv.port, concurrency = #requests, total = #requests, expect = false, record = true,
      request = function(i)
        local r = requests[i]
        return raw_post(r.path, { name = r.name })
      end,
      timeout = 30, deadline = 60,
    }
    assert.equal(#requests, stats.ok + stats.failed)
    assert.same({ [201] = 60, [409] = 20, [500] = 20 }, stats.statuses)
    local rows = pg:rows(db, "SELECT count(*) AS n, count(DISTINCT name) AS names FROM items")
    assert.same({ n = 60, names = 60 }, rows[1])
    -- they were grouped: fewer commits than writes committed (one worker, one connection)
    local w = srv:status().workers[1]
    assert.is_true(w.store_writes >= 60)
    assert.is_true(w.store_commits < w.store_writes, ("commits %d, writes %d"):format(w.store_commits, w.store_writes))
    srv:stop()
  end)

  it("names a NUL byte in a text parameter", function()
    local srv = start()
    local r = post(srv.port, "/items/nul")
    assert.equal(500, r.status)
    srv:stop()
    assert.matches("parameter 1 holds a NUL byte, which PostgreSQL text cannot store", srv:error_log(), 1, true)
  end)

  it("answers 503 while PostgreSQL is down and serves again by itself; nothing acknowledged is lost", function()
    local srv, db = start { workers = 2 }
    assert.equal(201, post(srv.port, "/items", { name = "before" }).status)
    pg:stop { mode = "fast" }
    local r = post(srv.port, "/items", { name = "during" })
    assert.equal(503, r.status)
    assert.equal("1", http.header_values(r, "Retry-After")[1])
    assert.equal("unavailable", body(r).kind)
    local health = assert(http.get(srv.admin_port, "/_triage/health"))
    assert.equal(503, health.status)
    assert.same({ status = "unavailable", store = "unreachable" }, body(health))
    pg:start_again()
    local deadline = sys.now() + 30
    repeat
      health = assert(http.get(srv.admin_port, "/_triage/health"))
      if health.status ~= 200 then sys.sleep(0.1) end
    until health.status == 200 or sys.now() > deadline
    assert.equal(200, health.status)
    local after
    repeat -- each worker reconnects on its own: the one answering may still be a moment behind
      after = post(srv.port, "/items", { name = "after" })
      if after.status ~= 201 then sys.sleep(0.1) end
    until after.status == 201 or sys.now() > deadline
    assert.equal(201, after.status)

    -- Connections cut while writes are in flight: each acknowledged write is stored. (A write
    -- answered 503 may have committed too, its COMMIT sent before the cut: the client's retry with
    -- its idempotency key is what makes that safe, as the cluster spec shows.)
    -- (psql runs in the background: the load must go on while the connections are cut)
    local terminate = ("psql -X -q %s -c %s >/dev/null 2>&1 &"):format(sys.quote(pg:url("postgres")),
      sys.quote("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '" .. db .. "'"))
    local acked, refused = {}, {}
    local cuts = 0
    local stats = loadgen.run {
      port = srv.port, concurrency = 40, total = 3000, expect = false, record = true,
      request = function(i) return raw_post("/items", { name = "load" .. i }) end,
      on_tick = function(st)
        if cuts < 4 and st.ok + st.failed >= 300 * (cuts + 1) then
          cuts = cuts + 1
          os.execute(terminate)
        end
      end,
      timeout = 30, deadline = 120,
    }
    assert.equal(4, cuts)
    for _, rec in ipairs(stats.records) do
      if rec.status == 201 then acked[#acked + 1] = "load" .. rec.index
      elseif rec.status == 503 then refused[#refused + 1] = rec.index end
    end
    local stored = {}
    for _, row in ipairs(pg:rows(db, "SELECT name FROM items WHERE name LIKE 'load%'")) do stored[row.name] = true end
    local missing = {}
    for _, name in ipairs(acked) do
      if not stored[name] then missing[#missing + 1] = name end
    end
    assert.same({}, missing)
    assert.is_true(#acked > 0)
    assert.is_true(#refused > 0, "no write was in flight when the connections were cut")
    srv:stop()
    assert.matches("PostgreSQL unreachable", srv:error_log(), 1, true)
    assert.matches("PostgreSQL reachable again", srv:error_log(), 1, true)
  end)

  it("refuses a PostgreSQL that reports commits before they are durable", function()
    n = n + 1
    local db = "pgspec" .. n
    local url = pg:create_database(db)
    pg:psql("postgres", "ALTER DATABASE " .. db .. " SET synchronous_commit = off")
    local srv = S.start { app = APP, store = url, workers = 1, wait = false }
    local exit = srv:wait_exit(20)
    assert.is_truthy(exit)
    assert.matches("synchronous_commit = off", srv:error_log(), 1, true)
    srv:stop()
  end)
end)
