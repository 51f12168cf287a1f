-- Helpers for the durable-store specs (spec/integration/durability_spec.lua, idempotency_spec.lua):
-- ePRO submissions and their receipts, many concurrent submissions that keep every response, the
-- store's database (the sqlite3 CLI, or psql on PostgreSQL: support/backend.lua), the fault shim's
-- control file, and SIGKILL for a whole server.
--
--   local St = require "support.store"
--   local srv = St.start{ workers = 2, data = dir }         -- S.start, and a clear error if the
--   St.require_store(srv, dir)                              -- binary has no store (St.NOT_IN_BUILD)
--   local sub = St.submission{ patient = "P-1", key = "k-1" }  -- with M.AUTHORIZATION, for M.start's servers
--   local r = St.send(srv.port, sub); local receipt = St.receipt_of(r)
--   local res = St.load{ port = srv.port, concurrency = 32, next = function(i) return sub_i end }
--   St.rows(dir, "SELECT receipt_id FROM epro_submissions")  -- `sqlite3 -readonly -json`, or psql
--   St.exec(dir, "UPDATE ...")                              -- read-write: exit status, stdout, stderr
--   St.text(dir, "SELECT a, b FROM t")                      -- "1|x\n2|y", as the CLIs print it
--   St.store_words(dir)                                     -- "--data DIR [--store URL]" for the CLI
--   St.kill9(srv)                                           -- master and workers, at once
local S = require "support.server"
local sys, http, backend = S.sys, S.http, S.backend
local ffi, C = sys.ffi, sys.C
local cjson = require "cjson"

local M = {}

M.SUBMIT = "/api/epro/submit"

-- Every server started here (M.start) takes the same --token-keys, so that a submission made once,
-- its bearer token in its bytes, is taken by a server restarted on the same data too. The token is
-- an investigator's: it may submit for any patient (routes/api.lua).
M.TOKEN_KEYS = S.write_token_keys(os.tmpname())
M.AUTHORIZATION = "Bearer " .. S.token(M.TOKEN_KEYS, { sub = "site-spec", role = "investigator", ttl = 86400 })
local remove_keys = newproxy(true)
getmetatable(remove_keys).__gc = function() os.remove(M.TOKEN_KEYS) end
M._remove_keys = remove_keys
M.NOT_IN_BUILD = "the durable store is not in this build"
M.SQLITE3 = os.getenv("TRIAGE_SQLITE3") or "sqlite3"

M.quote = sys.quote -- a word for the shell
M.run = sys.run -- a shell command: exit status, stdout, stderr
local q = M.quote

-- A fresh directory that nothing else uses (for --data, control files).
function M.tempdir(prefix)
  return sys.mkdtemp(prefix or "/tmp/triage-durable-")
end

function M.remove_tree(dir)
  if dir and dir:match("^/tmp/triage%-") and not S.keep_logs then os.execute("rm -rf " .. q(dir)) end
end

-- A tag unique to this run, for idempotency keys and patient ids.
M.run_id = ("%x%x"):format(os.time(), C.getpid())

---------------------------------------------------------------------------------------------------
-- Submissions

-- A submission whose bytes are fixed once, so that a retry sends exactly the same body.
--   o.patient (patientId), o.key (Idempotency-Key header), o.submission_id (body field),
--   o.report (reportData, default a small questionnaire), o.captured_at (capturedAt).
-- Returns { patient, key (the idempotency key in effect), body (JSON text), headers, bytes }.
function M.submission(o)
  local body = {
    patientId = o.patient,
    reportData = o.report or { q1 = 3, q2 = "moderate", nausea = false, seq = o.seq },
    capturedAt = o.captured_at,
    submissionId = o.submission_id,
  }
  local text = cjson.encode(body)
  local headers = { ["Content-Type"] = "application/json", Authorization = M.AUTHORIZATION }
  if o.key then headers["Idempotency-Key"] = o.key end
  return {
    patient = o.patient,
    key = o.key or o.submission_id,
    body = text,
    headers = headers,
    bytes = http.build("POST", M.SUBMIT, { headers = headers, body = text }),
  }
end

-- One submission on a fresh connection: the response (with .json when the body is JSON) or nil, err.
function M.send(port, sub, timeout)
  local headers = {}
  for k, v in pairs(sub.headers) do headers[k] = v end
  local r, err = http.post(port, M.SUBMIT, sub.body, { headers = headers, timeout = timeout or 10 })
  if not r then return nil, err end
  local ok, t = pcall(cjson.decode, r.body)
  if ok and type(t) == "table" then r.json = t end
  return r
end

-- The receipt { id, receivedAt } of a 200 response, or nil and why not.
function M.receipt_of(resp)
  if not resp then return nil, "no response" end
  local ok, t = pcall(cjson.decode, resp.body or "")
  local receipt = ok and type(t) == "table" and t.receipt
  if resp.status ~= 200 then
    return nil, ("HTTP %d %s"):format(resp.status, http.quote(resp.body or ""))
  end
  if type(receipt) ~= "table" or type(receipt.id) ~= "string" or receipt.id == ""
    or type(receipt.receivedAt) ~= "string" or receipt.receivedAt == "" then
    return nil, "HTTP 200 without a receipt {id, receivedAt}: " .. http.quote(resp.body or "")
  end
  return receipt
end

function M.replayed(resp)
  return resp and (resp.headers["idempotent-replayed"] or ""):lower() == "true"
end

-- Send acknowledged submissions ({ sub, receipt }) again, one after the other, to port: each must get
-- 200 with its original receipt and Idempotent-Replayed: true; raises naming the first that does not.
function M.resend(port, list, label)
  for _, a in ipairs(list) do
    local what = ("%s: %s/%s sent again"):format(label, a.sub.patient, a.sub.key)
    local r, err = M.send(port, a.sub)
    if not r then error(what .. ": " .. tostring(err), 2) end
    local receipt, why = M.receipt_of(r)
    if not receipt then error(what .. ": " .. tostring(why), 2) end
    if receipt.id ~= a.receipt.id or receipt.receivedAt ~= a.receipt.receivedAt then
      error(("%s: receipt %s %s, acknowledged with %s %s"):format(what, receipt.id, receipt.receivedAt,
        a.receipt.id, a.receipt.receivedAt), 2)
    end
    if not M.replayed(r) then error(what .. ": no Idempotent-Replayed: true in " .. http.quote(r.raw_head), 2) end
  end
  return #list
end

---------------------------------------------------------------------------------------------------
-- Many submissions at once, every response kept
--
-- M.load{
--   port = N,
--   concurrency = 32,           -- connections in use at once (one new connection per submission)
--   next = function(i) ... end, -- the i-th submission (M.submission) and, optionally, the port to send
--                               -- it to (default port); false: nothing to send yet (asked again about
--                               -- every 10 ms); nil: no more
--   timeout = 10,               -- per submission, seconds
--   deadline = 60,              -- whole run, seconds
--   on_tick = function(stats)   -- about every 10 ms; return false to start no more
--   on_done = function(result)  -- as each submission finishes (the result below)
-- }
-- returns results (one per submission started, in order of completion:
--   { sub, port, resp = response or nil, status, err, start, finish }) and stats
--   { started, done, in_flight, statuses = {[code] = n}, errors = {[msg] = n}, elapsed }.

local rbuf = ffi.new("char[65536]")

function M.load(o)
  assert(o.next, "next")
  local concurrency = o.concurrency or 32
  local timeout = o.timeout or 10
  local t0 = sys.now()
  local run_deadline = t0 + (o.deadline or 60)
  local results = {}
  local stats = { started = 0, done = 0, in_flight = 0, statuses = {}, errors = {} }
  local slots = {}
  for i = 1, concurrency do slots[i] = { fd = -1 } end
  local stopping, exhausted = false, false
  local pfds = ffi.new("struct triage_spec_pollfd[?]", concurrency)
  local map = {}

  local function finish(s, resp, err)
    if s.fd >= 0 then C.close(s.fd) end
    s.fd = -1
    s.state = nil
    stats.done = stats.done + 1
    stats.in_flight = stats.in_flight - 1
    if resp then
      stats.statuses[resp.status] = (stats.statuses[resp.status] or 0) + 1
    else
      stats.errors[err] = (stats.errors[err] or 0) + 1
    end
    local result = {
      sub = s.sub, port = s.port, resp = resp, status = resp and resp.status, err = err, start = s.start,
      finish = sys.now(),
    }
    results[#results + 1] = result
    if o.on_done then o.on_done(result) end
  end

  local function start(s)
    local sub, port = o.next(stats.started + 1)
    if sub == false then return end
    if not sub then
      exhausted = true
      return
    end
    assert(port or o.port, "no port: neither o.port nor a second value from next")
    stats.started = stats.started + 1
    stats.in_flight = stats.in_flight + 1
    s.sub, s.port, s.start, s.out, s.outpos, s.inbuf = sub, port or o.port, sys.now(), sub.bytes, 0, ""
    s.req_deadline = s.start + timeout
    local fd, how = sys.connect_start(s.port)
    if not fd then return finish(s, nil, how) end
    s.fd = fd
    s.state = how == "connected" and "writing" or "connecting"
  end

  -- a complete response in s.inbuf finishes the submission; eof: nothing more will come
  local function parse(s, eof)
    local he = s.inbuf:find("\r\n\r\n", 1, true)
    if he then
      local resp, perr = http.parse_head(s.inbuf:sub(1, he - 1))
      if not resp then return finish(s, nil, perr) end
      local cl = tonumber(resp.headers["content-length"] or "")
      if not cl then return finish(s, nil, "response without Content-Length") end
      if #s.inbuf - (he + 3) >= cl then
        resp.body = s.inbuf:sub(he + 4, he + 3 + cl)
        return finish(s, resp, nil)
      end
    end
    if eof then return finish(s, nil, #s.inbuf == 0 and "closed before a response" or "closed mid-response") end
  end

  local function do_write(s)
    local n = #s.out - s.outpos
    local w = C.send(s.fd, ffi.cast("const char *", s.out) + s.outpos, n, sys.MSG_NOSIGNAL)
    if w > 0 then
      s.outpos = s.outpos + tonumber(w)
      if s.outpos >= #s.out then s.state = "reading" end
    elseif w < 0 then
      local e = ffi.errno()
      if e ~= sys.EAGAIN and e ~= sys.EINTR then finish(s, nil, "send: " .. sys.strerror(e)) end
    end
  end

  local function do_read(s)
    while true do
      local r = C.read(s.fd, rbuf, 65536)
      if r > 0 then
        s.inbuf = s.inbuf .. ffi.string(rbuf, r)
      elseif r == 0 then
        return parse(s, true)
      else
        local e = ffi.errno()
        if e == sys.EAGAIN or e == sys.EINTR then return parse(s, false) end
        if #s.inbuf > 0 then parse(s, true) end
        if s.state then finish(s, nil, "read: " .. sys.strerror(e)) end
        return
      end
    end
  end

  local last_tick = t0
  while true do
    local now = sys.now()
    if now > run_deadline then stopping = true end
    if not stopping and not exhausted then
      for _, s in ipairs(slots) do
        if not s.state then
          start(s)
          if exhausted then break end
        end
      end
    end
    if stats.in_flight == 0 and (stopping or exhausted) then break end
    local n = 0
    for _, s in ipairs(slots) do
      if s.state then
        pfds[n].fd = s.fd
        pfds[n].events = s.state == "reading" and sys.POLLIN or sys.POLLOUT
        pfds[n].revents = 0
        map[n] = s
        n = n + 1
      end
    end
    if C.poll(pfds, n, 10) > 0 then
      for i = 0, n - 1 do
        local s = map[i]
        if pfds[i].revents ~= 0 and s.state then
          if s.state == "connecting" then
            local e = sys.socket_error(s.fd)
            if e ~= 0 then
              finish(s, nil, "connect: " .. sys.strerror(e))
            else
              s.state = "writing"
              do_write(s)
            end
          elseif s.state == "writing" then
            do_write(s)
          else
            do_read(s)
          end
        end
      end
    end
    now = sys.now()
    for _, s in ipairs(slots) do
      if s.state and now > s.req_deadline then finish(s, nil, "timeout") end
    end
    if o.on_tick and now - last_tick >= 0.01 then
      last_tick = now
      stats.elapsed = now - t0
      if o.on_tick(stats) == false then stopping = true end
    end
  end
  stats.elapsed = sys.now() - t0
  return results, stats
end

function M.summary(stats)
  local parts = { ("started=%d done=%d elapsed=%.2fs"):format(stats.started, stats.done, stats.elapsed or 0) }
  local codes = {}
  for code, n in pairs(stats.statuses) do codes[#codes + 1] = code .. ":" .. n end
  table.sort(codes)
  parts[#parts + 1] = "statuses={" .. table.concat(codes, ",") .. "}"
  local errs = {}
  for e, n in pairs(stats.errors) do errs[#errs + 1] = ("%q x%d"):format(e, n) end
  table.sort(errs)
  if #errs > 0 then parts[#parts + 1] = "errors={" .. table.concat(errs, ", ") .. "}" end
  return table.concat(parts, " ")
end

---------------------------------------------------------------------------------------------------
-- The database: DATA/triage.db through the sqlite3 CLI, or on PostgreSQL (TRIAGE_TEST_BACKEND=postgres)
-- the data directory's database through psql (support/backend.lua). The SQL the specs pass is kept
-- portable (M.portable refuses what is not).

M.backend = backend

function M.db_path(data_dir)
  return data_dir .. "/triage.db"
end

function M.sqlite_available()
  return (M.run("command -v " .. q(M.SQLITE3))) == 0
end

-- The SQL for the backend in use: unchanged, but on PostgreSQL an SQLite-only statement (a PRAGMA)
-- raises naming it rather than failing in psql.
function M.portable(sql)
  if not backend.postgres then return sql end
  if sql:match("^%s*[Pp][Rr][Aa][Gg][Mm][Aa]") then
    error("SQLite only: " .. sql, 3)
  end
  return sql
end

-- PostgreSQL rows as the sqlite3 CLI gives them: booleans as 1/0 (what SQLite stores), the rest as is.
local function sqlite_like(rows)
  for _, row in ipairs(rows) do
    for k, v in pairs(row) do
      if v == true then row[k] = 1 elseif v == false then row[k] = 0 end
    end
  end
  return rows
end

-- Rows of a query on the store of data_dir (DATA/triage.db opened read-only, or its PostgreSQL
-- database): a list of { column = value }, NULL as cjson.null; raises on error.
-- data_dir may also be a PostgreSQL database, { pg = <a support.postgres server>, db = name }: what
-- several nodes share (spec/integration/cluster_spec.lua); M.value, M.stored_by_key and M.check_stored
-- take it too.
function M.rows(data_dir, sql)
  if type(data_dir) == "table" then return sqlite_like(data_dir.pg:rows(data_dir.db, M.portable(sql))) end
  if backend.postgres then
    local pg = backend.pg()
    local ok, rows = pcall(pg.rows, pg, backend.database(data_dir), M.portable(sql))
    if not ok then error(tostring(rows), 2) end
    return sqlite_like(rows)
  end
  local rc, out, err = M.run(("%s -readonly -batch -json -cmd %s %s %s"):format(
    q(M.SQLITE3), q(".timeout 10000"), q(M.db_path(data_dir)), q(sql)))
  if rc ~= 0 then error(("sqlite3 -readonly %s %q: exit status %d: %s"):format(M.db_path(data_dir), sql, rc, err), 2) end
  if out:match("^%s*$") then return {} end
  local ok, t = pcall(cjson.decode, out)
  if not ok then error("sqlite3 -json gave no JSON: " .. http.quote(out), 2) end
  return t
end

-- One value (the first column of the first row), or nil.
function M.value(data_dir, sql)
  local row = M.rows(data_dir, sql)[1]
  if not row then return nil end
  local _, v = next(row)
  return v
end

-- Statements on the store of data_dir, read-write (the sqlite3 CLI, or psql stopping at the first
-- error): exit status, stdout, stderr.
function M.exec(data_dir, sql)
  if backend.postgres then
    return backend.pg():try_psql(backend.database(data_dir), M.portable(sql))
  end
  return M.run(("%s -batch -cmd %s %s %s"):format(q(M.SQLITE3), q(".timeout 10000"), q(M.db_path(data_dir)), q(sql)))
end

M.store_words = backend.store_words -- "--data DIR [--store URL]" for `triage audit ...`

-- The output of sql on the store of data_dir as the CLIs print it in their plain list mode (one line
-- per row, columns joined by |, NULL empty), trailing white space trimmed; raises on error.
function M.text(data_dir, sql)
  if backend.postgres then
    local pg = backend.pg()
    local ok, out = pcall(pg.psql, pg, backend.database(data_dir), M.portable(sql), "-At")
    if not ok then error(tostring(out), 2) end
    return (out:gsub("%s+$", ""))
  end
  local rc, out, err = M.run(("%s -readonly -batch -cmd %s %s %s"):format(
    q(M.SQLITE3), q(".timeout 10000"), q(M.db_path(data_dir)), q(sql)))
  if rc ~= 0 then error(("sqlite3 -readonly %s %q: exit status %d: %s"):format(M.db_path(data_dir), sql, rc, err), 2) end
  return (out:gsub("%s+$", ""))
end

-- An SQL string literal.
function M.lit(s)
  return "'" .. tostring(s):gsub("'", "''") .. "'"
end

-- Every stored submission whose idempotency key starts with prefix: { [patient .. "\0" .. key] = {rows} }
-- and { [receipt_id] = count }.
function M.stored_by_key(data_dir, prefix)
  local rows = M.rows(data_dir, ("SELECT receipt_id, patient_id, idempotency_key, received_at, report_json"
    .. " FROM epro_submissions WHERE substr(idempotency_key, 1, %d) = %s"):format(#prefix, M.lit(prefix)))
  local by_key, by_receipt = {}, {}
  for _, r in ipairs(rows) do
    local k = tostring(r.patient_id) .. "\0" .. tostring(r.idempotency_key)
    by_key[k] = by_key[k] or {}
    table.insert(by_key[k], r)
    by_receipt[r.receipt_id] = (by_receipt[r.receipt_id] or 0) + 1
  end
  return by_key, by_receipt, #rows
end

function M.key_of(patient, key)
  return tostring(patient) .. "\0" .. tostring(key)
end

-- Check acknowledged submissions against the database: each acked = { sub, receipt } must be stored
-- exactly once under its patient and key, with its receipt id (stored once) and receivedAt.
-- Returns the number checked, or raises listing what is wrong (the first few).
function M.check_stored(data_dir, prefix, acked, label)
  local by_key, by_receipt, nrows = M.stored_by_key(data_dir, prefix)
  local problems = {}
  local function problem(fmt, ...)
    if #problems < 10 then problems[#problems + 1] = fmt:format(...) end
    problems.n = (problems.n or 0) + 1
  end
  for _, a in ipairs(acked) do
    local rows = by_key[M.key_of(a.sub.patient, a.sub.key)] or {}
    if #rows ~= 1 then
      problem("%s/%s (receipt %s): stored %d times", a.sub.patient, a.sub.key, a.receipt.id, #rows)
    else
      local r = rows[1]
      if r.receipt_id ~= a.receipt.id then
        problem("%s/%s: acknowledged with receipt %s, stored with %s", a.sub.patient, a.sub.key, a.receipt.id,
          tostring(r.receipt_id))
      elseif by_receipt[r.receipt_id] ~= 1 then
        problem("receipt %s is stored %d times", r.receipt_id, by_receipt[r.receipt_id])
      elseif r.received_at ~= a.receipt.receivedAt then
        problem("%s/%s: receivedAt %s in the receipt, received_at %s in the database", a.sub.patient, a.sub.key,
          a.receipt.receivedAt, tostring(r.received_at))
      end
    end
  end
  for k, rows in pairs(by_key) do
    if #rows > 1 then problem("%s: %d rows for one key", (k:gsub("%z", "/")), #rows) end
  end
  if #problems > 0 then
    error(("%s: %d of %d acknowledged submissions are not stored exactly once as acknowledged (%d rows under %s):\n  %s")
      :format(label or "store", problems.n, #acked, nrows, prefix, table.concat(problems, "\n  ")), 2)
  end
  return #acked
end

---------------------------------------------------------------------------------------------------
-- Servers with the store

-- S.start(opts), but a binary that does not take --data fails with M.NOT_IN_BUILD.
function M.start(opts)
  if opts.token_keys == nil then opts.token_keys = M.TOKEN_KEYS end
  local ok, srv = pcall(S.start, opts)
  if ok then return srv end
  local msg = tostring(srv)
  for line in msg:gmatch("[^\n]+") do
    if line:match("%-%-data") and not line:match("^command:") and (line:match("unrecognized")
      or line:match("unknown") or line:match("invalid")) then
      error(M.NOT_IN_BUILD .. ": triage does not take --data (" .. line .. ")", 0)
    end
  end
  error(msg, 0)
end

-- Raises M.NOT_IN_BUILD unless POST /api/epro/submit answers 200 with a receipt and the submission is
-- in the store of data_dir (DATA/triage.db, read with the sqlite3 CLI; or its PostgreSQL database).
-- Returns the receipt.
function M.require_store(srv, data_dir)
  if not backend.postgres and not M.sqlite_available() then
    error("the sqlite3 command-line tool is not installed (make test-deps installs it)", 0)
  end
  local sub = M.submission { patient = "P-PROBE-" .. M.run_id, key = "probe-" .. M.run_id .. "-" .. tostring(sys.now()) }
  local r, err = M.send(srv.port, sub)
  if not r then error(M.NOT_IN_BUILD .. ": POST " .. M.SUBMIT .. " got no answer: " .. tostring(err), 0) end
  local receipt, why = M.receipt_of(r)
  if not receipt then error(M.NOT_IN_BUILD .. ": POST " .. M.SUBMIT .. " answered " .. why, 0) end
  local f = io.open(M.db_path(data_dir), "rb")
  if f then f:close() end
  if not backend.postgres and not f then
    error(M.NOT_IN_BUILD .. ": a receipt, but no database at " .. M.db_path(data_dir), 0)
  elseif backend.postgres and f then -- (so that a spec cannot pass on SQLite when it should not)
    error("TRIAGE_TEST_BACKEND=postgres, but the server wrote " .. M.db_path(data_dir), 0)
  end
  local ok, n = pcall(M.value, data_dir, "SELECT count(*) FROM epro_submissions WHERE receipt_id = " .. M.lit(receipt.id))
  if not ok then error(M.NOT_IN_BUILD .. ": " .. tostring(n), 0) end
  if n ~= 1 then error(M.NOT_IN_BUILD .. ": receipt " .. receipt.id .. " is stored " .. tostring(n) .. " times", 0) end
  return receipt
end

-- Start a throw-away server on a fresh data directory and check that the store is there; nil, or the
-- message that says why not (for a describe's setup: error(msg, 0)).
function M.probe(opts)
  local dir = M.tempdir("/tmp/triage-probe-")
  local srv
  local ok, err = pcall(function()
    local o = { app = S.root, workers = 1, data = dir }
    for k, v in pairs(opts or {}) do o[k] = v end
    srv = M.start(o)
    M.require_store(srv, dir)
  end)
  if srv then srv:stop() end
  M.remove_tree(dir)
  if ok then return nil end
  return tostring(err)
end

-- Sum of a per-worker counter in /_triage/status (nil if a worker does not report it).
function M.worker_sum(srv, field)
  local st = srv:status()
  if not st then return nil end
  local sum = 0
  for _, w in ipairs(st.workers or {}) do
    if type(w[field]) ~= "number" then return nil end
    sum = sum + w[field]
  end
  return sum
end

-- SIGKILL the whole server at once: the master (stopped first, so that it forks no replacement in
-- between), then every process under it. Waits until all are gone and reaped; marks it stopped.
function M.kill9(srv)
  return M.reap_killed(srv, M.kill9_later(srv, 0))
end

-- The same from another process, `delay` seconds from now, whatever this one is doing then (in the
-- middle of a St.load, say). Returns a handle for M.reap_killed.
function M.kill9_later(srv, delay)
  local family = sys.descendants(srv.pid)
  local cmd = ("sleep %.3f; kill -STOP %d; kill -KILL %d %s"):format(delay, srv.pid, srv.pid, table.concat(family, " "))
  local out = os.tmpname()
  local pid = sys.spawn({ "/bin/sh", "-c", cmd }, out)
  return { pid = pid, family = family, output = out }
end

-- Wait for a kill9_later to have happened; reap the master and the processes it had.
function M.reap_killed(srv, h)
  local deadline = sys.now() + 15
  local e
  while sys.now() < deadline do
    e = sys.reap(h.pid)
    if e ~= false then break end
    sys.sleep(0.005)
  end
  local said = sys.read_all(h.output) or ""
  os.remove(h.output)
  assert(e, "the kill -9 helper did not finish: " .. said)
  assert(srv:wait_exit(10), "the master did not die of SIGKILL within 10 s " .. said)
  for _, p in ipairs(h.family) do
    while sys.reap(p) == false and sys.now() < deadline do sys.sleep(0.005) end
    assert(not sys.alive(p), "process " .. p .. " survived SIGKILL")
  end
  srv:stop() -- bookkeeping only: nothing is left to signal
  return h.family
end

-- The fault shim's control file, replaced in one step (text nil or "": no faults); then the shim's
-- 2 ms re-check and a margin.
function M.set_fault(path, text)
  local tmp = path .. ".tmp"
  local f = assert(io.open(tmp, "wb"))
  f:write(text or "")
  f:close()
  assert(os.rename(tmp, path))
  sys.sleep(0.05)
end

-- PHQ-9 answers keyed by LOINC item code, in item order: phq9 { 0, 1, 2, ... } (nil: unanswered).
M.PHQ9 = { "44250-9", "44255-8", "44259-0", "44254-1", "44251-7", "44258-2", "44252-5", "44253-3", "44260-8" }

function M.phq9(values)
  local a = {}
  for i, code in ipairs(M.PHQ9) do a[code] = values[i] end
  return a
end

return M
