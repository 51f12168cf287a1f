-- The answers of a running server's admin listener as `triage status` and `triage reload` print them
-- for a person: the generation served, the workers behind it and the last rejected reload with its
-- file and line, rather than the JSON document (which `--json` prints as it came).
local cjson = require("cjson.safe").new()
cjson.decode_max_depth(64)

local M = {}

local null = cjson.null

local function value(v)
  if v == nil or v == null then
    return nil
  end
  return v
end

local function when(t, now)
  t = tonumber(value(t))
  if not t or t <= 0 then
    return "never"
  end
  local ago = now and now - t
  local text = os.date("!%Y-%m-%d %H:%M:%S UTC", math.floor(t))
  if ago and ago >= 0 then
    if ago < 120 then
      text = text .. (" (%d s ago)"):format(math.floor(ago))
    elseif ago < 7200 then
      text = text .. (" (%d min ago)"):format(math.floor(ago / 60))
    else
      text = text .. (" (%.1f h ago)"):format(ago / 3600)
    end
  end
  return text
end

local function mib(bytes)
  return ("%.1f MiB"):format((tonumber(value(bytes)) or 0) / 1048576)
end

-- An error message over several lines (a traceback), indented under its heading.
local function indent(text)
  return (tostring(text):gsub("\n", "\n    "))
end

-- The text of GET /_triage/status's document (a JSON string), or nil and a message when it is not one.
function M.status(body, now)
  local doc, err = cjson.decode(body)
  if type(doc) ~= "table" then
    return nil, "not a status document: " .. tostring(err or body)
  end
  now = now or os.time()
  local out = {}
  local function say(fmt, ...)
    out[#out + 1] = fmt:format(...)
  end
  local generation = tonumber(value(doc.generation)) or 0
  say("generation %d, loaded %s", generation, when(doc.generation_loaded_at, now))
  local reload = type(doc.reload) == "table" and doc.reload or {}
  say("reloads: %d, rejected: %d, last %s", tonumber(value(reload.reloads)) or 0,
    tonumber(value(reload.failures)) or 0, when(reload.last_at, now))
  local last_error = value(reload.last_error)
  if last_error then
    say("last reload REJECTED (generation %d still serves):\n    %s", generation, indent(last_error))
  else
    say("last reload: ok")
  end
  local workers = type(doc.workers) == "table" and doc.workers or {}
  local behind = {}
  say("workers: %d", #workers)
  for _, w in ipairs(workers) do
    local g = tonumber(value(w.generation)) or 0
    say("  worker %d  pid %d  generation %d  requests %d  lua memory %s", tonumber(value(w.slot)) or 0,
      tonumber(value(w.pid)) or 0, g, tonumber(value(w.requests)) or 0, mib(w.lua_memory))
    if g ~= generation then
      behind[#behind + 1] = ("worker %d (pid %d) on generation %d"):format(tonumber(value(w.slot)) or 0,
        tonumber(value(w.pid)) or 0, g)
      local e = value(w.last_error)
      if e and e ~= last_error then
        behind[#behind] = behind[#behind] .. ": " .. indent(e)
      end
    end
  end
  if #behind == 0 then
    say("workers behind: none")
  else
    say("workers behind generation %d: %d", generation, #behind)
    for _, b in ipairs(behind) do
      say("  %s", b)
    end
  end
  local paused = type(doc.paused_routes) == "table" and doc.paused_routes or {}
  for _, p in ipairs(paused) do
    say("paused route: %s (%.0f s left)", tostring(value(p.route)), tonumber(value(p.seconds_left)) or 0)
  end
  local env = type(doc.script_environment) == "table" and doc.script_environment or {}
  if type(env.allowed) == "table" and #env.allowed > 0 then
    say("scripts allowed: %s", table.concat(env.allowed, ", "))
  end
  return table.concat(out, "\n")
end

-- The text of POST /_triage/reload's answer (a JSON string), or nil and a message when it is not one.
function M.reload(body)
  local doc, err = cjson.decode(body)
  if type(doc) ~= "table" then
    return nil, "not a reload answer: " .. tostring(err or body)
  end
  if doc.ok == true then
    local text = ("reloaded: generation %d serves"):format(tonumber(value(doc.generation)) or 0)
    local behind = value(doc.workers_behind)
    if type(behind) == "table" and #behind > 0 then
      local list = {}
      for i, b in ipairs(behind) do
        list[i] = type(b) == "table" and ("worker %d (pid %d) on generation %d: %s"):format(
          tonumber(value(b.worker)) or 0, tonumber(value(b.pid)) or 0, tonumber(value(b.generation)) or 0,
          indent(value(b.why) or "?")) or tostring(b)
      end
      text = text .. ("\nworkers behind it: %d\n  %s"):format(#behind, table.concat(list, "\n  "))
    end
    return text
  end
  return ("reload REJECTED: the running generation still serves\n    %s"):format(indent(value(doc.error) or "?"))
end

return M
