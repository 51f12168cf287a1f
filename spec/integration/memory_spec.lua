-- Memory that comes back (the fixture app, one worker): large request bodies held by many connections
-- and large responses go back to the system once they are done, and a response over --max-response is
-- a 500. Resident memory is read from /proc (the master and its worker); the bounds are generous
-- (the Lua state and the allocator keep some), the loads are far larger than the bounds.
local spec_root = debug.getinfo(1, "S").source:match("^@(.*)/integration/[^/]+$")
if spec_root then package.path = spec_root .. "/?.lua;" .. package.path end
local S = require "support.server"
local http = S.http

local MiB = 1024 * 1024

describe("memory", function()
  local srv, idle_kb

  setup(function()
    srv = S.start { app = S.fixture_app, workers = 1, args = { "--max-body", "2m", "--max-response", "8m" } }
    for _ = 1, 50 do assert(http.get(srv.port, "/hello")) end -- warm
    S.sys.sleep(0.5)
    idle_kb = srv:tree_rss_kb()
  end)

  teardown(function()
    if srv then srv:stop() end
  end)

  -- Wait until the server tree's RSS is back within bound_kb of its idle figure (the worker trims
  -- its pools after 5 quiet seconds).
  local function back_near_idle(bound_kb)
    return S.eventually(20, function()
      return srv:tree_rss_kb() <= idle_kb + bound_kb
    end, 0.5)
  end

  it("gives back the buffers of 100 held 1 MiB bodies after their connections close", function()
    local conns = {}
    finally(function() for _, c in ipairs(conns) do c:close() end end)
    local body = ("x"):rep(MiB - 1)
    for i = 1, 100 do
      local c = assert(http.connect(srv.port))
      assert(c:send(("POST /echo-body HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n\r\n"):format(MiB)))
      assert(c:send(body)) -- one byte short: the request stays in its buffer
      conns[i] = c
    end
    local held = S.eventually(10, function()
      local kb = srv:tree_rss_kb()
      return kb > idle_kb + 80 * 1024 and kb
    end)
    assert.is_truthy(held, "the held bodies did not show in RSS: " .. srv:tree_rss_kb() .. " kB")
    for _, c in ipairs(conns) do c:close() end
    assert.is_truthy(back_near_idle(24 * 1024),
      ("RSS stayed at %d kB after the connections closed (idle %d kB, held %d kB)"):format(
        srv:tree_rss_kb(), idle_kb, held))
  end)

  it("gives back large responses once sent, and answers 500 to one over --max-response", function()
    for _ = 1, 8 do
      local r = assert(http.get(srv.port, "/big?mb=6", { timeout = 20 }))
      assert.equals(200, r.status)
      assert.equals(6 * MiB, #r.body)
    end
    local r = assert(http.get(srv.port, "/big?mb=12", { timeout = 20 }))
    assert.equals(500, r.status)
    assert.matches("over --max-response", srv:error_log(), 1, true)
    assert.is_truthy(back_near_idle(24 * 1024),
      ("RSS stayed at %d kB after the responses (idle %d kB)"):format(srv:tree_rss_kb(), idle_kb))
  end)
end)
