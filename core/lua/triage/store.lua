-- The store, as handlers use it (backend-neutral: the same calls will run on PostgreSQL).
--
--   local db = require "triage.store"
--   local rows, err = db:query("SELECT id, title FROM protocols WHERE phase = ?", "III")
--   local row, err  = db:first("SELECT title FROM protocols WHERE id = ?", id)   -- nil, nil: none
--   local res, err, kind = db:exec("INSERT INTO tags(patient_id, tag) VALUES (?, ?)", p, t)
--   local res, err, kind = db:tx(function(tx)
--     tx:exec("INSERT INTO a(x) VALUES (?)", 1)
--     tx:exec("INSERT INTO b(y) VALUES (?)", 2)
--     tx:audit { action = "create", table = "a", record = 1, after = { x = 1 } } -- README, "Audit trail"
--   end)
--
-- SQL takes parameters only through `?` placeholders, never by building strings; values are nil,
-- booleans (stored as 1/0), numbers (integers stay integers) and strings. Rows are tables keyed by
-- column name (a NULL column is absent).
--
-- Writes (exec, tx) return when their transaction is on disk: the request's coroutine waits (the
-- worker goes on serving others) while the worker's writer thread commits it together with the
-- writes of other requests (group commit). They return { changes = n, last_id = rowid } (tx: one
-- per statement, in order), or nil, a message and a kind:
--   "constraint"   a constraint refused it (a duplicate key, a foreign key, an append-only table);
--   "unavailable"  the storage failed (I/O error, full disk, locked too long): answer 503 and let the
--                  client retry (nothing of it was acknowledged);
--   "sql"          the statement itself is wrong.
-- Nothing of a failed write is stored. A tx's statements run in order and all or nothing; they are
-- sent to the writer when the function returns, so a read inside it would not see them: read first.
--
-- Reads run at once on the worker's read connection (SQLite's WAL: readers never wait for writers)
-- and see every committed write.
--
-- On PostgreSQL (--store postgres://..., core/pg.h) the same calls run unchanged: `?` and `?N` become
-- `$N`; reads wait for their answer like writes (so they happen inside a request); an `INSERT INTO t`
-- without RETURNING gets `RETURNING <key>` when t's primary key is an identity or serial integer column,
-- so that last_id is the new row's key as SQLite's rowid is; integer and float columns come back as
-- numbers, booleans as 1/0, everything else as strings. A number parameter is a bigint or a double
-- precision there (compare it with a number column, or write tostring(n) for a text one); a string
-- takes the type its place in the statement gives it.
local ffi = require "ffi"
local cjson = require "cjson"
local C = require("triage.ffi").C
local ctx_running = require("triage.ctx").running

ffi.cdef [[
typedef struct sqlite3_stmt sqlite3_stmt;
int sqlite3_prepare_v2(struct sqlite3 *db, const char *sql, int n, sqlite3_stmt **stmt, const char **tail);
int sqlite3_finalize(sqlite3_stmt *stmt);
int sqlite3_reset(sqlite3_stmt *stmt);
int sqlite3_clear_bindings(sqlite3_stmt *stmt);
int sqlite3_bind_parameter_count(sqlite3_stmt *stmt);
int sqlite3_bind_null(sqlite3_stmt *stmt, int i);
int sqlite3_bind_int64(sqlite3_stmt *stmt, int i, int64_t v);
int sqlite3_bind_double(sqlite3_stmt *stmt, int i, double v);
int sqlite3_bind_text(sqlite3_stmt *stmt, int i, const char *s, int n, void *destructor);
int sqlite3_step(sqlite3_stmt *stmt);
int sqlite3_column_count(sqlite3_stmt *stmt);
const char *sqlite3_column_name(sqlite3_stmt *stmt, int i);
int sqlite3_column_type(sqlite3_stmt *stmt, int i);
int64_t sqlite3_column_int64(sqlite3_stmt *stmt, int i);
double sqlite3_column_double(sqlite3_stmt *stmt, int i);
const unsigned char *sqlite3_column_text(sqlite3_stmt *stmt, int i);
int sqlite3_column_bytes(sqlite3_stmt *stmt, int i);
const char *sqlite3_errmsg(struct sqlite3 *db);
int sqlite3_stmt_readonly(sqlite3_stmt *stmt);
typedef struct pg_result PGresult;
int PQntuples(const PGresult *res);
int PQnfields(const PGresult *res);
char *PQfname(const PGresult *res, int field);
unsigned int PQftype(const PGresult *res, int field);
char *PQgetvalue(const PGresult *res, int row, int field);
int PQgetlength(const PGresult *res, int row, int field);
int PQgetisnull(const PGresult *res, int row, int field);
]]

local SQLITE_ROW, SQLITE_DONE = 100, 101
local SQLITE_INTEGER, SQLITE_FLOAT, SQLITE_TEXT, SQLITE_BLOB, SQLITE_NULL = 1, 2, 3, 4, 5
local SQLITE_TRANSIENT = ffi.cast("void *", -1)

local FFI_OK, FFI_YIELD = C.TR_FFI_OK, C.TR_FFI_YIELD
local KINDS = {
  [C.TR_STORE_CONSTRAINT] = "constraint",
  [C.TR_STORE_UNAVAILABLE] = "unavailable",
  [C.TR_STORE_SQL_ERROR] = "sql",
}
local T_NULL, T_INT, T_DOUBLE, T_TEXT = C.TR_STORE_NULL, C.TR_STORE_INT, C.TR_STORE_DOUBLE, C.TR_STORE_TEXT
local POSTGRES = C.TR_STORE_POSTGRES

local ffi_string, tonumber, type, select, error = ffi.string, tonumber, type, select, error
local yield = coroutine.yield

local errmsg = ffi.new("const char *[1]")
local stmt_out = ffi.new("sqlite3_stmt *[1]")

local M = {}

-- ---- reads ----

local reader          -- the worker's read connection (struct sqlite3 *)
local statements = {} -- sql -> prepared statement on it, finalized with this Lua state
local columns = {}    -- sql -> its column names, as Lua strings

local function connection()
  local db = C.tr_ffi_store_reader(errmsg)
  if db == nil then
    return nil, "storage unavailable: " .. ffi_string(errmsg[0])
  end
  if db ~= reader then -- first use, or another store (in-process specs open one per app)
    reader, statements, columns = db, {}, {}
  end
  return db
end

local function check_sql(sql, what)
  if type(sql) ~= "string" then
    error(what .. ": SQL must be a string, got " .. type(sql), 3)
  end
end

local function prepare(db, sql)
  local stmt = statements[sql]
  if stmt then
    return stmt
  end
  if C.sqlite3_prepare_v2(db, sql, #sql, stmt_out, nil) ~= 0 then
    return nil, ffi_string(C.sqlite3_errmsg(db))
  end
  stmt = ffi.gc(stmt_out[0], C.sqlite3_finalize)
  statements[sql] = stmt
  local names = { n = C.sqlite3_column_count(stmt) }
  for i = 0, names.n - 1 do
    names[i] = ffi_string(C.sqlite3_column_name(stmt, i))
  end
  columns[sql] = names
  return stmt
end

local function bind_read(stmt, i, v, what)
  local t = type(v)
  if v == nil then
    C.sqlite3_bind_null(stmt, i)
  elseif t == "number" then
    if v % 1 == 0 and v >= -2 ^ 53 and v <= 2 ^ 53 then
      C.sqlite3_bind_int64(stmt, i, v)
    else
      C.sqlite3_bind_double(stmt, i, v)
    end
  elseif t == "string" then
    C.sqlite3_bind_text(stmt, i, v, #v, SQLITE_TRANSIENT)
  elseif t == "boolean" then
    C.sqlite3_bind_int64(stmt, i, v and 1 or 0)
  else
    error(("%s: parameter %d is a %s (use nil, a boolean, a number or a string)"):format(what, i, t), 4)
  end
end

local function row_of(stmt, names)
  local row = {}
  for i = 0, names.n - 1 do
    local t = C.sqlite3_column_type(stmt, i)
    local name = names[i]
    if t == SQLITE_INTEGER then
      row[name] = tonumber(C.sqlite3_column_int64(stmt, i))
    elseif t == SQLITE_FLOAT then
      row[name] = C.sqlite3_column_double(stmt, i)
    elseif t == SQLITE_TEXT or t == SQLITE_BLOB then
      row[name] = ffi_string(C.sqlite3_column_text(stmt, i), C.sqlite3_column_bytes(stmt, i))
    end
  end
  return row
end

-- Run a read; limit 1 for first(). Returns rows, or nil and a message.
local function read(what, limit, sql, ...)
  check_sql(sql, what)
  local db, err = connection()
  if not db then
    return nil, err
  end
  local stmt
  stmt, err = prepare(db, sql)
  if not stmt then
    return nil, what .. ": " .. err
  end
  if C.sqlite3_stmt_readonly(stmt) == 0 then
    error(what .. ": only reads here; write with db:exec or db:tx", 3)
  end
  local n = select("#", ...)
  if n ~= C.sqlite3_bind_parameter_count(stmt) then
    error(("%s: %d parameters given, the SQL has %d"):format(what, n, C.sqlite3_bind_parameter_count(stmt)), 3)
  end
  for i = 1, n do
    bind_read(stmt, i, (select(i, ...)), what)
  end
  local rows, names = {}, columns[sql]
  local rc = C.sqlite3_step(stmt)
  while rc == SQLITE_ROW do
    rows[#rows + 1] = row_of(stmt, names)
    if #rows == limit then
      rc = SQLITE_DONE
      break
    end
    rc = C.sqlite3_step(stmt)
  end
  if rc ~= SQLITE_DONE then
    err = ffi_string(C.sqlite3_errmsg(db))
  end
  C.sqlite3_reset(stmt)
  C.sqlite3_clear_bindings(stmt)
  if err then
    return nil, "storage unavailable: " .. err
  end
  return rows
end

-- ---- PostgreSQL ----

local function on_postgres()
  return C.tr_ffi_store_engine() == POSTGRES
end

-- sql with `?` and `?N` turned into `$N` (outside literals, quoted names and comments), the number of
-- parameters, and whether its first word is a read's.
local function to_postgres(sql)
  local out, pos, n, count = {}, 1, #sql, 0
  while pos <= n do
    local c = sql:sub(pos, pos)
    local stop
    if c == "'" or c == '"' then -- a literal or a quoted name: to its closing quote (doubled: escaped)
      stop = pos
      repeat
        stop = sql:find(c, stop + 1, true) or n
        local doubled = sql:sub(stop + 1, stop + 1) == c
        if doubled then stop = stop + 1 end
      until not doubled or stop >= n
    elseif sql:sub(pos, pos + 1) == "--" then
      stop = sql:find("\n", pos, true) or n
    elseif sql:sub(pos, pos + 1) == "/*" then
      stop = select(2, sql:find("*/", pos + 2, true)) or n
    elseif c == "?" then
      local digits = sql:match("^%d+", pos + 1)
      local k = digits and tonumber(digits) or count + 1
      if k > count then count = k end
      out[#out + 1] = "$" .. k
      pos = pos + 1 + (digits and #digits or 0)
    else
      stop = (sql:find("[%?'\"%-/]", pos + 1) or n + 1) - 1
    end
    if stop then
      out[#out + 1] = sql:sub(pos, stop)
      pos = stop + 1
    end
  end
  local first = (sql:match("^[%s]*(%a+)") or ""):upper()
  local reads = first == "SELECT" or first == "WITH" or first == "VALUES" or first == "TABLE"
  return table.concat(out), count, reads
end

local translated = {} -- sql -> { sql = for PostgreSQL, n = parameters, reads = bool }
local identity        -- table name -> its identity/serial integer key column (nil: not read yet)

local IDENTITY_KEYS = [[
SELECT c.relname AS t, a.attname AS col
FROM pg_index i
JOIN pg_class c ON c.oid = i.indrelid
JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0]
WHERE i.indisprimary AND i.indnatts = 1 AND pg_table_is_visible(c.oid) AND a.atttypid IN (20, 21, 23)
  AND (a.attidentity <> '' OR EXISTS (SELECT 1 FROM pg_attrdef d WHERE d.adrelid = a.attrelid
    AND d.adnum = a.attnum AND pg_get_expr(d.adbin, d.adrelid) LIKE 'nextval(%'))]]

local function translation(sql)
  local t = translated[sql]
  if not t then
    local pg, n, reads = to_postgres(sql)
    t = { sql = pg, n = n, reads = reads }
    translated[sql] = t
  end
  return t
end

local pg_read

-- The SQL to send for a write: translated, and with RETURNING of the new row's key added to an INSERT
-- into a table with an identity key. (Not cached while the keys cannot be read: it is tried again.)
local function write_sql(sql)
  local t = translation(sql)
  if t.write then
    return t.write
  end
  local lower = t.sql:lower()
  local into = lower:match("^%s*insert%s+into%s+\"?([%w_]+)\"?[%s%(]")
  if not into or lower:find("%f[%w_]returning%f[^%w_]") then
    t.write = t.sql
    return t.write
  end
  if not identity then
    local rows = pg_read("db:exec", -1, IDENTITY_KEYS)
    if not rows then
      return t.sql
    end
    identity = {}
    for _, r in ipairs(rows) do
      identity[r.t] = r.col
    end
  end
  local key = identity[into]
  t.write = key and (t.sql:gsub("[%s;]*$", "") .. " RETURNING " .. key) or t.sql
  return t.write
end

local INT_OIDS = { [20] = 1, [21] = 1, [23] = 1, [26] = 1, [700] = 1, [701] = 1, [1700] = 1, [16] = 2 }

local function rows_of(res, limit)
  local nrows, nfields = C.PQntuples(res), C.PQnfields(res)
  if limit > 0 and nrows > limit then
    nrows = limit
  end
  local names, conv = {}, {}
  for f = 0, nfields - 1 do
    names[f] = ffi_string(C.PQfname(res, f))
    conv[f] = INT_OIDS[tonumber(C.PQftype(res, f))]
  end
  local rows = {}
  for r = 0, nrows - 1 do
    local row = {}
    for f = 0, nfields - 1 do
      if C.PQgetisnull(res, r, f) == 0 then
        local v = ffi_string(C.PQgetvalue(res, r, f), C.PQgetlength(res, r, f))
        local cv = conv[f]
        if cv == 1 then
          v = tonumber(v)
        elseif cv == 2 then
          v = v == "t" and 1 or 0
        end
        row[names[f]] = v
      end
    end
    rows[r + 1] = row
  end
  return rows
end

local bind_write, submit

-- A read on PostgreSQL: a job of one statement, waited for like a write. Rows, or nil and a message.
function pg_read(what, limit, sql, ...)
  local t = translation(sql)
  if not t.reads then
    error(what .. ": only reads here; write with db:exec or db:tx", 3)
  end
  local n = select("#", ...)
  if n ~= t.n then
    error(("%s: %d parameters given, the SQL has %d"):format(what, n, t.n), 3)
  end
  local job = C.tr_ffi_store_read_job(errmsg)
  if job == nil then
    local msg = ffi_string(errmsg[0])
    if msg:find("inside a request", 1, true) then
      error(what .. ": " .. msg, 3)
    end
    return nil, "storage unavailable: " .. msg
  end
  if C.tr_ffi_store_add(job, t.sql, #t.sql) ~= FFI_OK then
    C.tr_ffi_store_release(job)
    error(what .. ": out of memory for the statement", 3)
  end
  for i = 1, n do
    bind_write(job, i, (select(i, ...)), what)
  end
  local kind, msg = submit(job)
  if kind ~= 0 then
    C.tr_ffi_store_release(job)
    return nil, msg
  end
  local rows = rows_of(C.tr_ffi_store_rows(job), limit)
  C.tr_ffi_store_release(job)
  return rows
end

-- Forget what was learnt of the store (the in-process library opens a new one per app).
function M._forget()
  translated, identity = {}, nil
end

-- Every row of a read, or nil and a message.
function M:query(sql, ...)
  if on_postgres() then
    check_sql(sql, "db:query")
    return pg_read("db:query", -1, sql, ...)
  end
  return read("db:query", -1, sql, ...)
end

-- The first row of a read; nil, nil when there is none; nil and a message on failure.
function M:first(sql, ...)
  local rows, err
  if on_postgres() then
    check_sql(sql, "db:first")
    rows, err = pg_read("db:first", 1, sql, ...)
  else
    rows, err = read("db:first", 1, sql, ...)
  end
  if not rows then
    return nil, err
  end
  return rows[1]
end

-- ---- writes ----

function bind_write(job, i, v, what)
  local t = type(v)
  local rc
  if v == nil then
    rc = C.tr_ffi_store_bind(job, T_NULL, 0, 0, nil, 0)
  elseif t == "number" then
    if v % 1 == 0 and v >= -2 ^ 53 and v <= 2 ^ 53 then
      rc = C.tr_ffi_store_bind(job, T_INT, v, 0, nil, 0)
    else
      rc = C.tr_ffi_store_bind(job, T_DOUBLE, 0, v, nil, 0)
    end
  elseif t == "string" then
    if v:find("\0", 1, true) and on_postgres() then
      C.tr_ffi_store_release(job)
      error(("%s: parameter %d holds a NUL byte, which PostgreSQL text cannot store"):format(what, i), 4)
    end
    rc = C.tr_ffi_store_bind(job, T_TEXT, 0, 0, v, #v)
  elseif t == "boolean" then
    rc = C.tr_ffi_store_bind(job, T_INT, v and 1 or 0, 0, nil, 0)
  else
    C.tr_ffi_store_release(job)
    error(("%s: parameter %d is a %s (use nil, a boolean, a number or a string)"):format(what, i, t), 4)
  end
  if rc ~= FFI_OK then
    C.tr_ffi_store_release(job)
    error(what .. ": out of memory for the parameters", 4)
  end
end

local function add(job, what, sql, ...)
  check_sql(sql, what)
  if on_postgres() then
    sql = write_sql(sql)
  end
  if C.tr_ffi_store_add(job, sql, #sql) ~= FFI_OK then
    C.tr_ffi_store_release(job)
    error(what .. ": too many statements in one transaction", 3)
  end
  for i = 1, select("#", ...) do
    bind_write(job, i, (select(i, ...)), what)
  end
end

-- Submit job and wait for its outcome: 0, or a TR_STORE_* kind and its message.
function submit(job)
  local rc = C.tr_ffi_store_submit(job, errmsg)
  if rc == FFI_YIELD then
    yield() -- resumed by the worker once the engine has committed (or failed) the job
  elseif rc ~= FFI_OK then
    return C.TR_STORE_SQL_ERROR, ffi_string(errmsg[0])
  end
  local kind = C.tr_ffi_store_result(job, errmsg)
  return kind, kind ~= 0 and ffi_string(errmsg[0]) or nil
end

-- Submit job, wait for its commit, and turn its outcome into results or nil, message, kind.
local function commit(job, nstmts)
  local kind, msg = submit(job)
  if kind ~= 0 then
    C.tr_ffi_store_release(job)
    return nil, msg, KINDS[kind] or "unavailable"
  end
  local results = {}
  for i = 1, nstmts do
    results[i] = {
      changes = tonumber(C.tr_ffi_store_changes(job, i - 1)),
      last_id = tonumber(C.tr_ffi_store_rowid(job, i - 1)),
    }
  end
  C.tr_ffi_store_release(job)
  return results
end

local function new_job(what)
  local job = C.tr_ffi_store_job(errmsg)
  if job == nil then
    local msg = ffi_string(errmsg[0])
    if msg == "writes happen inside a request" then
      error(what .. ": " .. msg, 3)
    end
    return nil, "storage unavailable: " .. msg
  end
  return job
end

-- One write statement: { changes, last_id }, or nil, message, kind.
function M:exec(sql, ...)
  local job, err = new_job("db:exec")
  if not job then
    return nil, err, "unavailable"
  end
  add(job, "db:exec", sql, ...)
  local results, msg, kind = commit(job, 1)
  if not results then
    return nil, msg, kind
  end
  return results[1]
end

local Tx = {}
Tx.__index = Tx

function Tx:exec(sql, ...)
  if self.closed then
    error("tx:exec after its db:tx returned", 2)
  end
  add(self.job, "tx:exec", sql, ...)
  self.n = self.n + 1
  return self
end

function Tx.query()
  error("db:tx: reads inside a transaction would not see its writes (they are sent when it ends): read before", 2)
end
Tx.first = Tx.query

-- ---- the audit trail ----

-- One INSERT: the writer thread runs it inside the write transaction, so the last entry it reads
-- (seq and hash) is the last one committed by any worker (SQLite's write lock serializes them), and
-- triage_audit_hash (core/audit.h, registered on the writer's connection) chains the new entry to it.
-- The time is the server's at the commit. ?1..?9: who, action, record_table, record_id, route,
-- request_id, before, after, reason.
local AUDIT_INSERT = "INSERT INTO audit_trail (seq, at, who, action, record_table, record_id, route,"
  .. " request_id, before, after, reason, prev_hash, hash)"
  .. " SELECT s, t, ?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, p,"
  .. " triage_audit_hash(s, t, ?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, p)"
  .. " FROM (SELECT coalesce((SELECT max(seq) FROM audit_trail), 0) + 1 AS s,"
  .. " strftime('%Y-%m-%dT%H:%M:%fZ', 'now') AS t,"
  .. " coalesce((SELECT hash FROM audit_trail ORDER BY seq DESC LIMIT 1), '" .. ("0"):rep(64) .. "') AS p)"

-- On PostgreSQL, triage_audit_append (core/pg_schema.c) does the same under a transaction-scoped
-- advisory lock, so that the entries of every worker of every node form one chain; it returns the seq.
local AUDIT_APPEND = "SELECT triage_audit_append(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)"

-- Who made the request: the sub of the principal its bearer token carries (ctx:principal(), set by
-- triage.auth), or "anonymous" on a route without authentication.
local function subject(ctx)
  local p = ctx and ctx:principal()
  return p and p.sub or "anonymous"
end

local function json_value(v, name)
  local t = type(v)
  if v == nil or t == "string" then
    return v
  elseif t == "table" then
    return cjson.encode(v)
  end
  error(("tx:audit: %s is a %s (a table, encoded as JSON, or a string of JSON)"):format(name, t), 3)
end

local function text(v, name)
  if v == nil or type(v) == "string" then
    return v
  elseif type(v) == "number" then
    return tostring(v)
  end
  error(("tx:audit: %s is a %s (a string)"):format(name, type(v)), 3)
end

-- Record the change this transaction makes in the audit trail, in the same commit: if the change is
-- refused, so is its entry, and the other way round.
--   tx:audit { action = "create" | "correct" | ..., table = "epro_submissions", record = id,
--              before = old (table or JSON text; nil for a new record), after = new,
--              reason = "...",  -- required when action is "correct"
--              who = "...", ctx = ctx }  -- who defaults to the request's authenticated subject
-- The route and request id are the running request's. Counts as one statement of the tx (its
-- result's last_id is the entry's seq).
function Tx:audit(entry)
  if self.closed then
    error("tx:audit after its db:tx returned", 2)
  end
  if type(entry) ~= "table" then
    error("tx:audit { action = ..., table = ..., record = ..., before = ..., after = ..., reason = ... }", 2)
  end
  local action = entry.action
  if type(action) ~= "string" or action == "" then
    error("tx:audit: action is required (a string such as \"create\" or \"correct\")", 2)
  end
  local reason = text(entry.reason, "reason")
  if action == "correct" and (reason == nil or reason:find("^%s*$")) then
    error("tx:audit: a correction needs a reason (reason = \"...\")", 2)
  end
  local ctx = entry.ctx or ctx_running()
  local who = entry.who ~= nil and text(entry.who, "who") or subject(ctx)
  if on_postgres() then
    C.tr_ffi_store_audited(self.job)
  end
  add(self.job, "tx:audit", on_postgres() and AUDIT_APPEND or AUDIT_INSERT, who, action, text(entry.table, "table"), text(entry.record, "record"),
    ctx and ctx._route, ctx and ctx:request_id(), json_value(entry.before, "before"),
    json_value(entry.after, "after"), reason)
  self.n = self.n + 1
  return self
end

-- Statements added by fn(tx) with tx:exec, committed together: results (one per statement), or nil,
-- message, kind. If fn raises, nothing is written and the error goes on.
function M:tx(fn)
  if type(fn) ~= "function" then
    error("db:tx(function(tx) ... end)", 2)
  end
  local job, err = new_job("db:tx")
  if not job then
    return nil, err, "unavailable"
  end
  local tx = setmetatable({ job = job, n = 0 }, Tx)
  local ok, raised = pcall(fn, tx)
  tx.closed = true
  if not ok then
    C.tr_ffi_store_release(job)
    error(raised, 0)
  end
  if tx.n == 0 then
    C.tr_ffi_store_release(job)
    return {}
  end
  return commit(job, tx.n)
end

-- SHA-256 of s, as 64 hex digits (fingerprints of bodies for idempotency keys).
local hex_out = ffi.new("char[65]")
function M.sha256(s)
  C.tr_ffi_sha256_hex(s, #s, hex_out)
  return ffi_string(hex_out, 64)
end

return M
