-- `triage reload` and `triage status` print a summary for a person by default: the generation
-- served, each worker's generation, the workers behind, and a rejected reload's error with its file
-- and line; `--json` prints the admin listener's document as it came.
local server = require "support.server"
local sys = require "support.sys"
local cjson = require "cjson"

local FIXTURE = server.fixtures .. "/reload_app"

local function run(cmd)
  local p = assert(io.popen(cmd .. " 2>&1; echo \"__rc=$?\""))
  local out = p:read("*a")
  p:close()
  return (out:gsub("__rc=%d+%s*$", "")), tonumber(out:match("__rc=(%d+)%s*$"))
end

local function write_file(path, text)
  local f = assert(io.open(path, "wb"))
  f:write(text)
  f:close()
end

describe("triage reload and triage status", function()
  local srv, app

  setup(function()
    app = sys.mkdtemp("/tmp/triage-admin-text-")
    assert(os.execute(("cp -r %q/routes %q/scripts %q/"):format(FIXTURE, FIXTURE, app)) == 0)
    srv = server.start { app = app, workers = 2, args = { "--no-watch" } }
  end)

  teardown(function()
    if srv then srv:stop() end
    os.execute(("rm -rf %q"):format(app))
  end)

  local function command(name, extra)
    return run(("%q %s --admin 127.0.0.1:%d --data %q %s"):format(server.bin, name, srv.admin_port, srv.data,
      extra or ""))
  end

  it("summarize a good reload and the status", function()
    local out, code = command("reload")
    assert.equals(0, code, out)
    assert.equals("reloaded: generation 2 serves\n", out)
    assert.is_truthy(srv:wait_generation(2), srv:logs())
    out, code = command("status")
    assert.equals(0, code, out)
    assert.matches("^generation 2, loaded %d%d%d%d%-%d%d%-%d%d %d%d:%d%d:%d%d UTC", out)
    assert.matches("\nreloads: 1, rejected: 0, last ", out)
    assert.matches("\nlast reload: ok\n", out, 1, true)
    assert.matches("\nworkers: 2\n  worker 0  pid %d+  generation 2  requests %d+  lua memory [%d.]+ MiB\n"
      .. "  worker 1  pid %d+  generation 2 ", out)
    assert.matches("\nworkers behind: none", out, 1, true)
  end)

  it("show a rejected reload with its file and line, and the generation still serving", function()
    write_file(app .. "/routes/main.lua", 'get("/version", "version.show")\nget("/nope", "version.nosuch")\n')
    local out, code = command("reload")
    assert.equals(1, code, out)
    assert.matches("^reload REJECTED: the running generation still serves\n    routes/main%.lua:2: "
      .. "'version%.nosuch': module 'version' has no function 'nosuch'", out)
    out, code = command("status")
    assert.equals(0, code, out)
    assert.matches("\nreloads: %d+, rejected: 1, ", out)
    assert.matches("\nlast reload REJECTED %(generation 2 still serves%):\n    routes/main%.lua:2: 'version%.nosuch'", out)
    -- --json: the document as the admin listener sent it
    out, code = command("status", "--json")
    assert.equals(0, code, out)
    local doc = cjson.decode(out)
    assert.equals(srv.pid, doc.master_pid)
    assert.matches("^routes/main%.lua:2:", doc.reload.last_error)
    out, code = command("reload", "--json")
    assert.equals(1, code, out)
    assert.is_false(cjson.decode(out).ok)
  end)
end)
