-- The text `triage status` and `triage reload` print (triage/report.lua), from admin documents made
-- here: workers behind the published generation, their reasons, a rejected reload's error.
local report = require "triage.report"
local cjson = require "cjson"

local NOW = 1795000000

local function doc(t)
  local d = {
    master_pid = 10, uptime = 5, generation = 4, generation_loaded_at = NOW - 30,
    reload = { reloads = 3, failures = 0, last_at = NOW - 30, last_error = cjson.null },
    paused_routes = {}, script_environment = { allowed = {}, load_time_globals = {} },
    workers = {
      { slot = 0, pid = 101, requests = 7, generation = 4, lua_memory = 1048576, last_error = cjson.null },
      { slot = 1, pid = 102, requests = 9, generation = 4, lua_memory = 2097152, last_error = cjson.null },
    },
  }
  for k, v in pairs(t or {}) do d[k] = v end
  return cjson.encode(d)
end

describe("the status summary", function()
  it("gives the generation, the reloads and each worker", function()
    local text = assert(report.status(doc(), NOW))
    assert.equals(table.concat({
      "generation 4, loaded " .. os.date("!%Y-%m-%d %H:%M:%S UTC", NOW - 30) .. " (30 s ago)",
      "reloads: 3, rejected: 0, last " .. os.date("!%Y-%m-%d %H:%M:%S UTC", NOW - 30) .. " (30 s ago)",
      "last reload: ok",
      "workers: 2",
      "  worker 0  pid 101  generation 4  requests 7  lua memory 1.0 MiB",
      "  worker 1  pid 102  generation 4  requests 9  lua memory 2.0 MiB",
      "workers behind: none",
    }, "\n"), text)
  end)

  it("names a rejected reload's file and line, and the workers behind with their own error", function()
    local text = assert(report.status(doc {
      reload = { reloads = 3, failures = 1, last_at = NOW - 5, last_error = "routes/api.lua:7: 'a.b': no function 'b'" },
      workers = {
        { slot = 0, pid = 101, requests = 7, generation = 4, lua_memory = 0, last_error = cjson.null },
        { slot = 1, pid = 102, requests = 9, generation = 3, lua_memory = 0,
          last_error = "loading generation 4: not enough memory" },
      },
    }, NOW))
    assert.matches("\nreloads: 3, rejected: 1, last ", text)
    assert.matches("\nlast reload REJECTED (generation 4 still serves):\n    routes/api.lua:7: 'a.b': no function 'b'\n",
      text, 1, true)
    local tail = "\nworkers behind generation 4: 1\n  worker 1 (pid 102) on generation 3: loading generation 4: "
      .. "not enough memory"
    assert.equals(tail, text:sub(-#tail))
  end)

  it("refuses what is not a status document", function()
    local text, err = report.status("<html>")
    assert.is_nil(text)
    assert.matches("^not a status document", err)
  end)
end)

describe("the reload summary", function()
  it("says which generation serves, and the workers behind it", function()
    assert.equals("reloaded: generation 5 serves", report.reload('{"ok":true,"generation":5}'))
    assert.equals("reloaded: generation 5 serves\nworkers behind it: 1\n  worker 1 (pid 9) on generation 4: loading it",
      report.reload('{"ok":true,"generation":5,"workers_behind":[{"worker":1,"pid":9,"generation":4,"why":"loading it"}]}'))
  end)

  it("says a rejected reload changed nothing, with its error indented", function()
    assert.equals("reload REJECTED: the running generation still serves\n    scripts/x.lua:3: boom\n    stack",
      report.reload('{"ok":false,"error":"scripts/x.lua:3: boom\\nstack"}'))
  end)
end)
