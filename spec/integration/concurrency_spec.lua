-- 1,000 concurrent requests to the 50 ms sleep handlers (fixture /sleep and the
-- sample app's /api/v1/sleep), each on its own connection, all at once.
local spec_root = debug.getinfo(1, "S").source:match("^@(.*)/integration/[^/]+$")
if spec_root then package.path = spec_root .. "/?.lua;" .. package.path end
local S = require "support.server"
local http = S.http
local loadgen = S.loadgen

describe("1,000 concurrent requests", function()
  teardown(function()
    S.stop_all()
  end)

  local function burst(server, path)
    local stats = loadgen.run{
      port = server.port, concurrency = 1000, total = 1000, timeout = 10, deadline = 30,
      request = http.build("GET", path, { headers = { Connection = "close" } }),
    }
    print(("\n    1000 concurrent GET %s: %s"):format(path, loadgen.summary(stats)))
    assert.are.equal(1000, stats.started)
    assert.are.equal(1000, stats.ok, loadgen.summary(stats))
    assert.are.equal(0, stats.failed, loadgen.summary(stats))
    assert.is_true(stats.elapsed < 10, ("took %.2f s"):format(stats.elapsed))
    return stats
  end

  -- after the burst every connection is closed: the pools must be whole again
  local function pools_drain(server)
    local st, err = S.eventually(5, function()
      local st, err = server:status()
      if not st then return nil, err end
      for _, w in ipairs(st.workers) do
        if w.connections ~= 0 then return nil, st end
        local p = w.pools or {}
        for _, name in ipairs{ "connections", "requests" } do
          local pool = p[name]
          if not pool or pool.free ~= pool.total then return nil, st end
        end
      end
      return st
    end, 0.1)
    assert(st, "connections or pool entries not released 5 s after the burst: " ..
      (type(err) == "table" and S.json.encode(err) or tostring(err)))
  end

  describe("on the fixture app", function()
    local srv
    setup(function()
      srv = S.start{ app = S.fixture_app }
    end)

    it("all complete with 200", function()
      local st0 = assert(srv:status())
      burst(srv, "/sleep")
      local st1 = assert(srv:status())
      local before, after = 0, 0
      for _, w in ipairs(st0.workers) do before = before + (w.requests or 0) end
      for _, w in ipairs(st1.workers) do after = after + (w.requests or 0) end
      assert.is_true(after - before >= 1000, ("status counted %d requests"):format(after - before))
    end)

    it("release every connection and request context afterwards", function()
      pools_drain(srv)
    end)

    it("can do it again on keep-alive connections, 3 requests each", function()
      local stats = loadgen.run{
        port = srv.port, concurrency = 1000, total = 3000, keepalive = true, timeout = 10, deadline = 30,
        request = http.build("GET", "/sleep"),
      }
      print(("\n    1000 keep-alive connections x 3: %s"):format(loadgen.summary(stats)))
      assert.are.equal(3000, stats.ok, loadgen.summary(stats))
      assert.is_true(stats.elapsed < 10)
    end)
  end)

  describe("on the sample app", function()
    local srv
    setup(function()
      srv = S.start{ app = S.root }
    end)

    it("all complete with 200 on /api/v1/sleep", function()
      burst(srv, "/api/v1/sleep")
    end)
  end)
end)
