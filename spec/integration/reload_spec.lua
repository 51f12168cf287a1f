-- Hot reload: edits to routes/ and scripts/ go live in the running server, with no restart, no
-- failed request, and no broken code ever serving.
local server = require "support.server"
local http = require "support.http"
local loadgen = require "support.loadgen"
local sys = require "support.sys"

local FIXTURE = server.fixtures .. "/reload_app"

-- A JSON string from status, or nil for null.
local function str(v)
  return type(v) == "string" and v or nil
end

local function copy_app()
  local dir = sys.mkdtemp("/tmp/triage-reload-")
  assert(os.execute(("cp -r %q/routes %q/scripts %q/"):format(FIXTURE, FIXTURE, dir)) == 0)
  return dir
end

local function write_file(path, text, how)
  if how == "rename" then -- what most editors do: write a temporary file, rename it over
    local tmp = path .. ".tmp~"
    local f = assert(io.open(tmp, "wb"))
    f:write(text)
    f:close()
    assert(os.rename(tmp, path))
  else -- in place
    local f = assert(io.open(path, "wb"))
    f:write(text)
    f:close()
  end
end

local function read_file(path)
  local f = assert(io.open(path, "rb"))
  local s = f:read("*a")
  f:close()
  return s
end

local function body_of(port, path)
  local r = http.get(port, path, { timeout = 5 })
  return r and r.body, r and r.status
end


describe("hot reload", function()
  local srv, app, version_file

  before_each(function()
    app = copy_app()
    version_file = app .. "/scripts/version.lua"
    srv = server.start { app = app, workers = 2 }
  end)

  after_each(function()
    if srv then srv:stop() end
    os.execute(("rm -rf %q"):format(app))
  end)

  it("puts an edited handler live under constant load without failing a request", function()
    local original = read_file(version_file)
    local edited_at, seen_at
    local t0 = sys.now()
    local st = loadgen.run {
      port = srv.port, concurrency = 20, keepalive = true, deadline = 20,
      request = "GET /version HTTP/1.1\r\nHost: t\r\n\r\n",
      on_tick = function()
        local now = sys.now()
        if not edited_at and now - t0 > 0.5 then
          write_file(version_file, original:gsub('"v1"', '"v2"'), "rename")
          edited_at = now
        elseif edited_at and not seen_at then
          if body_of(srv.port, "/version") == "v2" and srv:wait_generation(2, 0.01) then
            seen_at = sys.now()
          end
        elseif seen_at and now - seen_at > 0.5 then
          return false
        end
        if now - t0 > 10 then return false end
      end,
    }
    assert.is_not_nil(seen_at, "the new code never went live: " .. srv:logs())
    print(("\n  reload: new code on every worker %.0f ms after the save; %d requests during the run"):format(
      (seen_at - edited_at) * 1000, st.ok))
    assert.is_true(seen_at - edited_at < 1.0, "the new code took more than a second")
    assert.equals(0, st.failed, loadgen.summary(st))
    assert.is_true(st.ok > 100, loadgen.summary(st))
    assert.equals("v2", body_of(srv.port, "/version"))
  end)

  it("keeps serving the old code after a bad save, reports it, and recovers when fixed", function()
    local original = read_file(version_file)
    write_file(version_file, original .. "\nlocal broken = = 1\n")
    local st = server.eventually(5, function()
      local s = srv:status()
      return s and str(s.reload.last_error) and s
    end)
    assert.is_truthy(st, "no reload error in status: " .. srv:logs())
    assert.matches("scripts/version%.lua:%d+:", st.reload.last_error)
    for _, w in ipairs(st.workers) do
      assert.matches("scripts/version%.lua:%d+:", str(w.last_error))
      assert.equals(1, w.generation)
    end
    assert.equals("v1", body_of(srv.port, "/version"))
    assert.matches("reload rejected", srv:error_log())

    write_file(version_file, original:gsub('"v1"', '"v3"'), "rename")
    assert.is_truthy(srv:wait_generation(2), srv:logs())
    assert.equals("v3", body_of(srv.port, "/version"))
    st = srv:status()
    assert.is_nil(str(st.reload.last_error))
    for _, w in ipairs(st.workers) do
      assert.is_nil(str(w.last_error))
    end
  end)

  it("refuses a route conflict and keeps the running routes", function()
    write_file(app .. "/routes/zz_conflict.lua", 'get("/version", "version.show")\n')
    local st = server.eventually(5, function()
      local s = srv:status()
      return s and str(s.reload.last_error) and s
    end)
    assert.is_truthy(st, srv:logs())
    assert.matches("routes/zz_conflict%.lua:1:.*conflicts", st.reload.last_error)
    assert.equals("v1", body_of(srv.port, "/version"))
  end)

  it("adds a new route file, then drops its route when the file is deleted", function()
    local _, status = body_of(srv.port, "/extra")
    assert.equals(404, status)
    write_file(app .. "/scripts/extra.lua", 'return { hi = function(ctx) return ctx:send("extra") end }\n', "rename")
    write_file(app .. "/routes/extra.lua", 'get("/extra", "extra.hi")\n', "rename")
    assert.is_truthy(server.eventually(5, function() return body_of(srv.port, "/extra") == "extra" end), srv:logs())
    local st = srv:status()
    os.remove(app .. "/routes/extra.lua")
    assert.is_truthy(srv:wait_generation(st.generation + 1), srv:logs())
    assert.is_truthy(server.eventually(5, function() return select(2, body_of(srv.port, "/extra")) == 404 end))
  end)

  it("keeps a keep-alive connection open across the swap", function()
    local c = assert(http.connect(srv.port))
    local r = assert(c:request("GET", "/version"))
    assert.equals("v1", r.body)
    write_file(version_file, read_file(version_file):gsub('"v1"', '"v4"'))
    assert.is_truthy(srv:wait_generation(2), srv:logs())
    r = assert(c:request("GET", "/version"))
    assert.equals("v4", r.body)
    c:close()
  end)

  it("finishes a request on the generation it started on, then closes that generation", function()
    local c = assert(http.connect(srv.port))
    assert(c:send("GET /slow HTTP/1.1\r\nHost: t\r\n\r\n"))
    sys.sleep(0.05) -- the request is now sleeping on generation 1
    write_file(version_file, read_file(version_file):gsub('"v1"', '"v7"'), "rename")
    local st = srv:wait_generation(2)
    assert.is_truthy(st, srv:logs())
    local old = 0
    for _, w in ipairs(st.workers) do old = old + w.old_generations end
    assert.equals(1, old, "the sleeping request should keep generation 1 alive")
    assert.equals("v7", body_of(srv.port, "/version"))
    local r = assert(c:read_response())
    assert.equals("v1", r.body)
    c:close()
    assert.is_truthy(server.eventually(5, function()
      local s = srv:status()
      if not s then return false end
      for _, w in ipairs(s.workers) do
        if w.old_generations ~= 0 then return false end
      end
      return true
    end), "the old generation was not closed after its last request")
  end)

  it("carries triage.carry values into the new generation", function()
    for _ = 1, 3 do body_of(srv.port, "/visits") end
    local before = srv:status()
    -- both workers count on their own; push the count on every worker past zero
    for _ = 1, 20 do body_of(srv.port, "/visits") end
    write_file(version_file, read_file(version_file):gsub('"v1"', '"v5"'))
    assert.is_truthy(srv:wait_generation(before.generation + 1), srv:logs())
    assert.equals("v5", body_of(srv.port, "/version"))
    -- a fresh generation would restart at 1; carried, the counters go on past what they had
    local n = tonumber((body_of(srv.port, "/visits")))
    assert.is_true(n > 1, "counter restarted at " .. tostring(n))
  end)

  it("reloads on SIGHUP and on `triage reload`", function()
    assert.is_true(srv:signal(1))
    assert.is_truthy(srv:wait_generation(2), srv:logs())
    -- the token comes from the same --data as the server's: nothing more to type
    local cmd = ("%q reload --admin 127.0.0.1:%d --data %q"):format(server.bin, srv.admin_port, srv.data)
    local p = io.popen(cmd .. " 2>&1")
    local out = p:read("*a")
    local ok = p:close()
    assert.is_truthy(ok, out)
    assert.matches("^reloaded: generation 3 serves", out)
    assert.is_truthy(srv:wait_generation(3), srv:logs())
  end)
end)

describe("hot reload with --reload-check", function()
  it("keeps the old code when the check fails, and goes live when it passes", function()
    local app = copy_app()
    local flag = app .. "/check-passes"
    local check = ("test -e %q || { echo 'spec failed: version should be v1'; exit 3; }"):format(flag)
    local srv = server.start { app = app, workers = 2, args = { "--reload-check", check } }
    finally(function()
      srv:stop()
      os.execute(("rm -rf %q"):format(app))
    end)
    local version_file = app .. "/scripts/version.lua"
    write_file(version_file, read_file(version_file):gsub('"v1"', '"v6"'), "rename")
    local st = server.eventually(10, function()
      local s = srv:status()
      return s and str(s.reload.last_error) and s
    end)
    assert.is_truthy(st, srv:logs())
    assert.matches("exited with status 3", st.reload.last_error)
    assert.matches("spec failed: version should be v1", st.reload.last_error)
    assert.equals("v1", body_of(srv.port, "/version"))

    write_file(flag, "")
    write_file(version_file, read_file(version_file) .. "\n")
    assert.is_truthy(srv:wait_generation(2, 10), srv:logs())
    assert.equals("v6", body_of(srv.port, "/version"))
  end)
end)

describe("hot reload with --reload-check and the app's spec/", function()
  it("checks the serving code again when a spec changes", function()
    local app = copy_app()
    assert(os.execute(("mkdir %q/spec"):format(app)) == 0)
    local spec_file = app .. "/spec/version_spec.lua"
    write_file(spec_file, "-- passes\n")
    local check = "if grep -q FAILS spec/version_spec.lua; then echo 'spec failed: version_spec'; exit 3; fi"
    local srv = server.start { app = app, workers = 1, args = { "--reload-check", check } }
    finally(function()
      srv:stop()
      os.execute(("rm -rf %q"):format(app))
    end)
    -- only a spec changes: the check runs again, and its failure is the reload's
    write_file(spec_file, "-- FAILS\n", "rename")
    local st = server.eventually(10, function()
      local s = srv:status()
      return s and str(s.reload.last_error) and s
    end)
    assert.is_truthy(st, "a change under spec/ ran no check: " .. srv:logs())
    assert.matches("spec failed: version_spec", st.reload.last_error)
    assert.equals(1, st.generation)
    write_file(spec_file, "-- passes again\n")
    assert.is_truthy(srv:wait_generation(2, 10), srv:logs())
    assert.is_nil(str(srv:status().reload.last_error))
  end)
end)

describe("code snapshots", function()
  it("gives a worker replaced after a crash the published code, not an unchecked edit", function()
    local app = copy_app()
    local srv = server.start { app = app, workers = 2, args = { "--reload-check", "exit 1" } }
    finally(function()
      srv:stop()
      os.execute(("rm -rf %q"):format(app))
    end)
    local version_file = app .. "/scripts/version.lua"
    write_file(version_file, read_file(version_file):gsub('"v1"', '"unchecked"'), "rename")
    assert.is_truthy(server.eventually(10, function()
      local s = srv:status()
      return s and str(s.reload.last_error)
    end), srv:logs())
    local pids = assert(srv:worker_pids())
    assert.equals(0, sys.C.kill(pids[0], 9))
    assert.is_truthy(server.eventually(5, function()
      local now = srv:worker_pids()
      return now and now[0] and now[0] ~= 0 and now[0] ~= pids[0]
    end), srv:logs())
    for _ = 1, 40 do
      assert.equals("v1", body_of(srv.port, "/version"))
    end
  end)

  it("never puts live an edit made while the check of an earlier edit was running", function()
    local app = copy_app()
    -- The check reads the tree when it starts, then takes its time: an edit can land meanwhile.
    local check = "! grep -q bad-edit scripts/version.lua && sleep 1"
    local srv = server.start { app = app, workers = 2, args = { "--reload-check", check } }
    finally(function()
      srv:stop()
      os.execute(("rm -rf %q"):format(app))
    end)
    local version_file = app .. "/scripts/version.lua"
    local original = read_file(version_file)
    write_file(version_file, original:gsub('"v1"', '"good-edit"'), "rename")
    sys.sleep(0.3) -- the check of good-edit is running
    write_file(version_file, original:gsub('"v1"', '"bad-edit"'), "rename")
    local seen = {}
    local deadline = sys.now() + 4
    while sys.now() < deadline do
      seen[body_of(srv.port, "/version") or "?"] = true
      sys.sleep(0.02)
    end
    assert.is_nil(seen["bad-edit"], "code that failed its check went live")
    local st = srv:status()
    assert.matches("exited with status 1", str(st.reload.last_error) or "", 1, true)
    assert.equals("v1", body_of(srv.port, "/version"))
  end)
end)

describe("1,000 reloads in a row", function()
  it("leaves resident memory flat and every worker on the last generation", function()
    local app = copy_app()
    local srv = server.start { app = app, workers = 2, args = { "--no-watch" } }
    finally(function()
      srv:stop()
      os.execute(("rm -rf %q"):format(app))
    end)
    local function reload()
      local r = assert(srv:reload())
      assert.equals(200, r.status, r.body)
      body_of(srv.port, "/version")
    end
    for _ = 1, 50 do reload() end -- warm-up: allocator arenas, pools
    assert.is_truthy(srv:wait_generation(51))
    local before = srv:tree_rss_kb()
    for _ = 1, 1000 do reload() end
    local st = srv:wait_generation(1051, 10)
    assert.is_truthy(st, srv:logs())
    for _, w in ipairs(st.workers) do
      assert.equals(1051, w.generation)
      assert.equals(0, w.old_generations)
    end
    local after = srv:tree_rss_kb()
    print(("\n  resident memory of the server tree: %d kB before, %d kB after 1,000 reloads"):format(before, after))
    assert.is_true(after - before < 4096, ("resident memory grew by %d kB"):format(after - before))
    assert.equals("v1", body_of(srv.port, "/version"))
  end)
end)
