-- Several triage nodes on one PostgreSQL database (issue 12, "Tests"): the sample app at the repo root,
-- each node with its own --data, --workers 2 and the same --store, on a PostgreSQL server of this
-- spec's own (spec/support/postgres.lua) that it stops and starts again:
-- - kill -9 of one node (master and workers; the other reaches PostgreSQL through its unix socket)
--   under a load of ePRO submissions spread over both nodes: a client whose submission failed or got
--   no answer sends it again, same key and bytes, to the other node until it gets a 200; every
--   acknowledged submission is stored exactly once, with the receipt its client got, and sent again
--   to the other node it gets that receipt back; the killed node started again on its --data serves
--   them too; no 503 (PostgreSQL is up all along);
-- - PostgreSQL stopped (fast, then in another case immediate) and started again on the same port under
--   load on two nodes: no 503 before; meanwhile every answer is 200 or 503 with Retry-After (or no
--   answer) and health is 503 on both nodes; after it both serve again with the same processes and
--   health is 200; every acknowledged submission is stored exactly once;
-- - two nodes started at once on an empty database: both serve, each migration is applied once (in
--   triage_migrations, and by one master or the other: their logs), each table exists once, neither
--   logs an error;
-- - the audit chain of each database written by two nodes above: `triage audit verify --store` finds it
--   intact, one entry per stored submission.
-- No assertion on time: each load run is bounded by a deadline and its counts are asserted.
local spec_root = debug.getinfo(1, "S").source:match("^@(.*)/integration/[^/]+$")
if spec_root then package.path = spec_root .. "/?.lua;" .. package.path end
local S = require "support.server"
local St = require "support.store"
local PG = require "support.postgres"
local http = S.http
local sys = S.sys

local CLIENTS = 32 -- clients at once, half of them with the first node as their own, half the second
local RETRY_PAUSE = 0.1 -- seconds a client waits before it sends a failed submission again
local LOAD_DEADLINE = 60 -- seconds: the bound of one load run, its phases and its retries

-- The database of a case, for St.check_stored and St.value.
local function store_of(pg, db)
  return { pg = pg, db = db }
end

-- Nodes on one database, each with a --data of its own: one per --store URL in urls (a URL or a list).
-- opts.wait = false: started, not waited for. opts.env: the nodes' environment. opts.data: the --data
-- of each node by index (default: a new directory, removed when the node stops).
local function start_nodes(urls, opts)
  opts = opts or {}
  if type(urls) == "string" then urls = { urls, urls } end
  local nodes = {}
  for i, url in ipairs(urls) do
    nodes[i] = St.start { app = S.root, workers = 2, store = url, ready_timeout = 30,
                          wait = opts.wait, env = opts.env, data = opts.data and opts.data[i] }
  end
  return nodes
end

local function health(node)
  local r, err = http.get(node.admin_port, "/_triage/health", { timeout = 2 })
  return r and r.status, r and r.body or err
end

-- What the app logged of its 503 answers (scripts/replies.lua: "epro: <why>"), from every node.
local function logged_unavailable(nodes)
  local lines = {}
  for i, n in ipairs(nodes) do
    for line in n:error_log():gmatch("[^\n]+") do
      if line:match("%] %d+: epro: ") and #lines < 10 then lines[#lines + 1] = ("node %d: %s"):format(i, line) end
    end
  end
  return table.concat(lines, "\n")
end

-- The error lines of a node's log (its --error-log and its output).
local function logged_errors(node)
  local lines = {}
  for line in (node:error_log() .. "\n" .. node:output()):gmatch("[^\n]+") do
    if line:match("%[error%]") or line:lower():match("^error") or line:match("FATAL") then
      lines[#lines + 1] = line
    end
  end
  return lines
end

---------------------------------------------------------------------------------------------------
-- Clients spread over nodes (St.load with one connection per client): a client sends one submission
-- at a time, first to its own node; a 200 with a receipt acknowledges it and the client goes on with a
-- new one; a 503 with Retry-After or no answer sends the same submission (same key, same bytes) to the
-- next node, after RETRY_PAUSE, until it is acknowledged. Any other answer is a problem (the client gives that
-- submission up). Once `draining` is set no new submission starts; the run ends when every client's
-- submission is acknowledged (or given up).

local Clients = {}
Clients.__index = Clients

local function clients(nodes, tag)
  local self = setmetatable({
    nodes = nodes, tag = tag, list = {}, owner = {}, seq = 0, draining = false,
    acked = {}, problems = {},
    store_up = true, -- PostgreSQL is known to be up (the case clears it while it is stopped or starting)
    unavailable_while_up = 0, -- 503 answers while store_up: nothing explains them
    acked_by_node = {}, -- acknowledgements by node index
    counts = { acked = 0, retried = 0, replayed = 0, unavailable = 0, refused = 0, cut = 0 },
  }, Clients)
  for i = 1, CLIENTS do
    self.list[i] = { index = i, home = (i - 1) % #nodes + 1, ready_at = 0 }
  end
  for i = 1, #nodes do self.acked_by_node[i] = 0 end
  return self
end

function Clients:problem(fmt, ...)
  if #self.problems < 20 then self.problems[#self.problems + 1] = fmt:format(...) end
  self.problems.n = (self.problems.n or 0) + 1
end

-- St.load's next: a ready client's submission and its node's port; false: none ready yet; nil: done.
function Clients:next()
  local now, waiting = sys.now(), false
  for _, c in ipairs(self.list) do
    if c.busy or c.sub then waiting = true end
    if not c.busy and now >= c.ready_at and (c.sub or not self.draining) then
      if not c.sub then
        self.seq = self.seq + 1
        c.sub = St.submission { patient = ("P-%s-%02d"):format(St.run_id, c.index),
                                key = ("%s%06d"):format(self.tag, self.seq), seq = self.seq }
        c.attempts, c.node = 0, c.home
        self.owner[c.sub] = c
      end
      c.busy, c.attempts = true, c.attempts + 1
      return c.sub, self.nodes[c.node].port
    end
  end
  if self.draining and not waiting then return nil end
  return false
end

-- St.load's on_done.
function Clients:done(r)
  local c = self.owner[r.sub]
  local sub, node = r.sub, c.node
  c.busy = false
  local function again()
    c.node = c.node % #self.nodes + 1
    c.ready_at = sys.now() + RETRY_PAUSE
  end
  if r.status == 200 then
    local receipt, why = St.receipt_of(r.resp)
    if not receipt then
      self:problem("%s/%s on node %d: %s", sub.patient, sub.key, node, why)
    else
      self.acked[#self.acked + 1] = { sub = sub, receipt = receipt, node = node }
      self.counts.acked = self.counts.acked + 1
      self.acked_by_node[node] = self.acked_by_node[node] + 1
      if c.attempts > 1 then
        self.counts.retried = self.counts.retried + 1
        if St.replayed(r.resp) then self.counts.replayed = self.counts.replayed + 1 end
      end
    end
    c.sub = nil
  elseif r.status == 503 then
    self.counts.unavailable = self.counts.unavailable + 1
    if self.store_up then self.unavailable_while_up = self.unavailable_while_up + 1 end
    if (r.resp.headers["retry-after"] or "") == "" then
      self:problem("%s/%s on node %d: 503 without Retry-After: %s", sub.patient, sub.key, node,
        http.quote(r.resp.raw_head))
    end
    again()
  elseif not r.status then
    if r.err == "timeout" then
      self:problem("%s/%s on node %d: no answer within the request timeout", sub.patient, sub.key, node)
    elseif tostring(r.err):match("^connect") then
      self.counts.refused = self.counts.refused + 1
    else
      self.counts.cut = self.counts.cut + 1
    end
    again()
  else
    self:problem("%s/%s on node %d: HTTP %d %s", sub.patient, sub.key, node, r.status, http.quote(r.resp.body))
    c.sub = nil
  end
end

-- Run the clients until they are drained (on_tick(self, stats) sets self.draining when the case has
-- seen what it wants) or the deadline; then every submission must be acknowledged, with no problem.
function Clients:run(on_tick)
  local _, stats = St.load {
    concurrency = CLIENTS, timeout = 15, deadline = LOAD_DEADLINE,
    next = function() return self:next() end,
    on_done = function(r) self:done(r) end,
    on_tick = function(st) on_tick(self, st) end,
  }
  self.stats = stats
  return stats
end

function Clients:summary()
  local c = self.counts
  local nodes = {}
  for i, n in ipairs(self.acked_by_node) do nodes[i] = ("node %d: %d"):format(i, n) end
  local text = ("%d acknowledged (%s), %d of them after a retry (%d replayed); %d answers 503, %d connections"
    .. " refused, %d cut off; %s"):format(c.acked, table.concat(nodes, ", "), c.retried, c.replayed,
    c.unavailable, c.refused, c.cut, St.summary(self.stats))
  if #self.problems > 0 then
    text = ("%s; %d unexpected answers, the first: %s"):format(text, self.problems.n, self.problems[1])
  end
  return text
end

-- Every client's submission acknowledged, no problem on the way.
function Clients:check(label)
  if #self.problems > 0 then
    error(("%s: %d unexpected answers:\n  %s\n%s"):format(label, self.problems.n,
      table.concat(self.problems, "\n  "), self:summary()), 2)
  end
  for _, c in ipairs(self.list) do
    if c.sub then
      error(("%s: %s/%s was never acknowledged (%d attempts) before the %d s deadline; %s"):format(label,
        c.sub.patient, c.sub.key, c.attempts, LOAD_DEADLINE, self:summary()), 2)
    end
  end
end

-- Every acknowledged submission stored exactly once, with its receipt, and nothing else under the tag.
function Clients:check_stored(store, label)
  St.check_stored(store, self.tag, self.acked, label)
  local stored = St.value(store, "SELECT count(*) FROM epro_submissions WHERE substr(idempotency_key, 1, "
    .. #self.tag .. ") = " .. St.lit(self.tag))
  assert.are.equal(#self.acked, tonumber(stored), label .. ": rows stored under " .. self.tag)
end

-- Up to n acknowledged submissions, each sent again to the node that choose(node index it was
-- acknowledged by) names, if any: each gets its original receipt, Idempotent-Replayed. Returns how many.
function Clients:resend(n, choose, label)
  local by_port = {}
  local sent = 0
  for _, a in ipairs(self.acked) do
    local node = sent < n and choose(a.node)
    if node then
      by_port[node.port] = by_port[node.port] or {}
      table.insert(by_port[node.port], a)
      sent = sent + 1
    end
  end
  for port, list in pairs(by_port) do St.resend(port, list, label) end
  return sent
end

---------------------------------------------------------------------------------------------------

describe("two triage nodes on one PostgreSQL database", function()
  local pg
  local written = {} -- { db, url, label }: the databases cases 1 and 2 wrote, for the audit check

  setup(function()
    local why = PG.available()
    if why then error(why, 0) end
    pg = PG.start()
  end)

  teardown(function()
    S.stop_all()
    if pg then pg:destroy() end
  end)

  it("kill -9 of one node under load: retried on the other node, every acknowledged submission is stored"
    .. " exactly once", function()
    local db = "cluster_kill"
    local url = pg:create_database(db)
    -- TMPDIR: where the killed node leaves its code snapshots (triage-code-*)
    local tmp = St.tempdir("/tmp/triage-cluster-tmp-")
    sys.chmod(tmp, tonumber("711", 8)) -- started as root, the workers (nobody) read the snapshots in it
    local victim_data = St.tempdir("/tmp/triage-cluster-data-") -- kept for its restart
    finally(function()
      S.stop_all()
      St.remove_tree(tmp)
      St.remove_tree(victim_data)
    end)
    -- one node through TCP, the other through the server's unix socket
    local nodes = start_nodes({ url, pg:socket_url(db) }, { env = { TMPDIR = tmp }, data = { victim_data } })
    local victim, survivor = nodes[1], nodes[2]
    local cl = clients(nodes, "kill-" .. St.run_id .. "-")
    local kill, killed, acked_at_kill
    cl:run(function(self)
      if not kill then
        -- both nodes serving: SIGKILL to the first one 0 to 0.5 s later, from another process
        if self.acked_by_node[1] >= 20 and self.acked_by_node[2] >= 20 then
          kill = St.kill9_later(victim, math.random() * 0.5)
        end
      elseif not killed then
        if victim:exited() then killed, acked_at_kill = true, self.counts.acked end
      elseif self.counts.acked - acked_at_kill >= 300 then
        self.draining = true
      end
    end)
    written[#written + 1] = { db = db, url = url, label = "kill -9" }
    assert(kill, "the nodes did not both acknowledge 20 submissions: " .. cl:summary())
    St.reap_killed(victim, kill)
    print("kill -9 of one node: " .. cl:summary())
    assert(killed, "the node was not killed: " .. cl:summary())
    cl:check("kill -9 of one node")
    assert.is_true(cl.counts.cut > 0, "the kill cut off no submission in flight: " .. cl:summary())
    assert.is_true(cl.counts.retried > 0, "no submission was acknowledged after a retry: " .. cl:summary())
    assert.is_falsy(survivor:exited(), "the other node exited")
    cl:check_stored(store_of(pg, db), "kill -9 of one node")
    -- the killed node's acknowledgements, sent again to the other node: the same receipts
    local resent = cl:resend(50, function(i) return i == 1 and survivor end, "kill -9 of one node")
    assert.are.equal(50, resent)
    -- the killed node started again on its --data: it serves, and the other node's acknowledgements
    -- sent to it get their receipts
    local again = start_nodes({ pg:socket_url(db) }, { data = { victim_data } })[1]
    assert.are.equal(20, cl:resend(20, function(i) return i == 2 and again end, "the killed node started again"))
    cl:check_stored(store_of(pg, db), "kill -9 of one node, after its restart")
    -- PostgreSQL was up all along: a node killed cuts its requests off, it does not make anyone's fail
    assert(cl.unavailable_while_up == 0, ("kill -9 of one node: %d answers 503 while PostgreSQL was up; the"
      .. " nodes logged:\n%s"):format(cl.unavailable_while_up, logged_unavailable(nodes)))
  end)

  for _, mode in ipairs { "fast", "immediate" } do
    it(("PostgreSQL stopped (%s) and started again under load: 503 with Retry-After meanwhile, health 503"
      .. " then 200, both nodes serve again by themselves, every acknowledged submission stored once"):format(mode),
    function()
      local db = "cluster_restart_" .. mode
      local url = pg:create_database(db)
      finally(function()
        S.stop_all()
        if not pg:pid() then pg:start_again() end
      end)
      local nodes = start_nodes(url)
      local masters, workers = {}, {}
      for i, n in ipairs(nodes) do
        masters[i], workers[i] = n.pid, assert(n:worker_pids())
      end
      local cl = clients(nodes, ("restart-%s-%s-"):format(mode, St.run_id))
      local phase, mark = "before", {}
      local down_health = {} -- node index -> the first health answer 503 while PostgreSQL was down
      local probes, last_probe = 0, 0 -- health asked of both nodes while PostgreSQL was down
      local outage -- what the clients got while PostgreSQL was down: { finished, unavailable, acked }
      cl:run(function(self, st)
        if phase == "before" then
          if self.acked_by_node[1] >= 20 and self.acked_by_node[2] >= 20 then
            self.store_up = false
            pg:stop { mode = mode }
            phase = "down"
            mark = { done = st.done, unavailable = self.counts.unavailable, acked = self.counts.acked }
          end
        elseif phase == "down" then
          if sys.now() - last_probe >= 0.1 then
            last_probe, probes = sys.now(), probes + 1
            for i, n in ipairs(nodes) do
              if not down_health[i] then
                local status, body = health(n)
                if status == 503 then down_health[i] = body end
              end
            end
          end
          -- up again once 200 submissions finished and health was asked 20 times (a few seconds: the
          -- nodes' reconnection backoff grows meanwhile)
          if st.done - mark.done >= 200 and probes >= 20 then
            outage = { finished = st.done - mark.done, unavailable = self.counts.unavailable - mark.unavailable,
                       acked = self.counts.acked - mark.acked }
            pg:start_again()
            phase = "up"
            mark = { by_node = { self.acked_by_node[1], self.acked_by_node[2] } }
          end
        elseif phase == "up" then
          if self.acked_by_node[1] - mark.by_node[1] >= 20 and self.acked_by_node[2] - mark.by_node[2] >= 20 then
            phase = "drained"
            self.draining = true
          end
        end
      end)
      written[#written + 1] = { db = db, url = url, label = "PostgreSQL stopped " .. mode }
      local label = "PostgreSQL stopped " .. mode
      print(("%s: %s; while it was down: %d finished, %d answered 503, %d acknowledged"):format(label, cl:summary(),
        outage and outage.finished or 0, outage and outage.unavailable or 0, outage and outage.acked or 0))
      assert(phase ~= "before", label .. ": the nodes did not both acknowledge 20 submissions: " .. cl:summary())
      assert(phase ~= "down", label .. ": fewer than 200 submissions finished while PostgreSQL was down: "
        .. cl:summary())
      assert(phase == "drained", label .. ": after PostgreSQL was back, the nodes did not both acknowledge 20"
        .. " submissions: " .. cl:summary())
      cl:check(label)
      cl:check_stored(store_of(pg, db), label)
      -- sent again to the other node: the same receipts
      assert.are.equal(40, cl:resend(40, function(i) return nodes[i % 2 + 1] end, label))
      -- the same processes serve: no node or worker was restarted
      for i, n in ipairs(nodes) do
        assert.is_falsy(n:exited(), label .. ": node " .. i .. " exited")
        assert.are.same(workers[i], assert(n:worker_pids()), label .. ": a worker of node " .. i .. " was replaced")
        assert.are.equal(masters[i], n.pid)
        local status, body = S.eventually(10, function()
          local s, b = health(n)
          return s == 200 and s, b
        end)
        assert.are.equal(200, status, label .. ": health of node " .. i .. " after the restart: " .. tostring(body))
      end
      assert.is_true(outage.unavailable > 0, label .. ": no 503 while PostgreSQL was down: " .. cl:summary())
      assert(cl.unavailable_while_up == 0, ("%s: %d answers 503 before PostgreSQL was stopped; the nodes logged:\n%s")
        :format(label, cl.unavailable_while_up, logged_unavailable(nodes)))
      for i in ipairs(nodes) do
        assert(down_health[i], ("%s: node %d never answered 503 to GET /_triage/health while PostgreSQL was"
          .. " down (asked %d times)"):format(label, i, probes))
        assert.matches('"status":"unavailable"', down_health[i], 1, true)
      end
    end)
  end

  it("two nodes started at once on an empty database: both serve, each migration applied once, each table"
    .. " there once, no error logged", function()
    -- the migrations of the sample app, by number, and the tables they create
    local versions, tables = {}, { triage_migrations = true }
    local _, listing = St.run("ls " .. St.quote(S.root .. "/migrations"))
    for name in listing:gmatch("[^\n]+") do
      local n = name:match("^(%d+)_.*%.sql$")
      if n then
        versions[#versions + 1] = tonumber(n)
        for t in (sys.read_all(S.root .. "/migrations/" .. name) or ""):gmatch("CREATE TABLE%s+([%w_]+)") do
          tables[t] = true
        end
      end
    end
    table.sort(versions)
    assert.is_true(#versions > 0, "no migrations in " .. S.root .. "/migrations")
    for round = 1, 3 do
      local db = "cluster_migrate_" .. round
      local url = pg:create_database(db)
      local label = ("round %d"):format(round)
      local nodes = start_nodes(url, { wait = false })
      for _, n in ipairs(nodes) do n:wait_ready(30) end
      for i, n in ipairs(nodes) do
        local sub = St.submission { patient = "P-MIGRATE-" .. St.run_id, key = ("migrate-%d-%d"):format(round, i) }
        local receipt, why = St.receipt_of(St.send(n.port, sub))
        assert(receipt, ("%s: node %d: %s"):format(label, i, tostring(why)))
      end
      local applied = pg:rows(db, "SELECT version, count(*) AS n FROM triage_migrations GROUP BY version"
        .. " ORDER BY version")
      local got = {}
      for _, r in ipairs(applied) do
        assert.are.equal(1, r.n, ("%s: migration %d applied %d times"):format(label, r.version, r.n))
        got[#got + 1] = r.version
      end
      assert.are.same(versions, got, label .. ": the migrations applied")
      local there = pg:rows(db, "SELECT table_schema || '.' || table_name AS name, table_name AS t FROM"
        .. " information_schema.tables WHERE table_schema NOT IN ('pg_catalog', 'information_schema')")
      local count = {}
      for _, r in ipairs(there) do count[r.t] = (count[r.t] or 0) + 1 end
      for t in pairs(tables) do
        assert.are.equal(1, count[t] or 0, ("%s: table %s exists %d times"):format(label, t, count[t] or 0))
      end
      for _, n in ipairs(nodes) do n:stop() end
      local applied_by = {} -- what each node's master says it applied
      for i, n in ipairs(nodes) do
        local errors = logged_errors(n)
        assert.are.equal(0, #errors, ("%s: node %d logged:\n%s"):format(label, i, table.concat(errors, "\n")))
        applied_by[i] = 0
        for count in n:error_log():gmatch("store on PostgreSQL: (%d+) migration%(s%) applied") do
          applied_by[i] = applied_by[i] + tonumber(count)
        end
      end
      print(("two nodes on an empty database, %s: node 1 applied %d migrations, node 2 %d"):format(label,
        applied_by[1], applied_by[2]))
      assert.are.equal(#versions, applied_by[1] + applied_by[2], ("%s: the nodes applied %d and %d migrations"
        .. " (their logs)"):format(label, applied_by[1], applied_by[2]))
    end
  end)

  it("keeps one audit chain with two nodes writing: `triage audit verify --store` finds each database's"
    .. " chain intact, one entry per stored submission", function()
    assert(#written == 3, ("the kill and restart cases wrote %d databases of 3 (they failed before their"
      .. " load ran)"):format(#written))
    for _, w in ipairs(written) do
      local stored = pg:rows(w.db, "SELECT count(*) AS n FROM epro_submissions")[1].n
      assert.is_true(stored > 0, w.label .. ": nothing stored")
      local rc, out, err = St.run(("%s audit verify --store %s"):format(St.quote(S.bin), St.quote(w.url)))
      assert.are.equal(0, rc, ("%s: triage audit verify --store %s: %s%s"):format(w.label, w.url, out, err))
      assert.matches(("intact: %d entries (1 to %d)"):format(stored, stored), out, 1, true,
        ("%s: %d submissions stored, and the audit trail says: %s"):format(w.label, stored, out))
    end
  end)
end)
