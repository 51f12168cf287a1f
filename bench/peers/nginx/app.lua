-- The sample clinical app on nginx + lua-nginx-module (the OpenResty model).
-- init() runs once in the master (init_by_lua); the handlers run in the workers,
-- each worker keeping its own in-memory state.
local cjson = require "cjson.safe"

local ngx = ngx
local type, next = type, next

local _M = {}

local protocols = {}
local reports = {}        -- latest reportData per patientId (per worker)
local tags = {}
local counts = { reports = 0, tags = 0 }

function _M.init(path)
    local f = assert(io.open(path, "rb"))
    local raw = f:read("*a")
    f:close()
    local list = assert(cjson.decode(raw))
    for _, p in ipairs(list) do
        protocols[p.id] = p
    end
end

local function reply(status, tbl)
    ngx.status = status
    local body = cjson.encode(tbl)
    ngx.header["Content-Type"] = "application/json"
    ngx.header["Content-Length"] = #body
    ngx.print(body)
end

local function nonempty_string(v)
    return type(v) == "string" and v ~= ""
end

local function nonempty_object(v)
    -- cjson decodes arrays to tables too: an object has no [1]
    return type(v) == "table" and next(v) ~= nil and v[1] == nil
end

-- The request body as a decoded object; nil, sent when a 400 was answered.
local function json_body()
    ngx.req.read_body()
    local raw = ngx.req.get_body_data()
    if not raw then
        local file = ngx.req.get_body_file()
        if file then
            local f = io.open(file, "rb")
            raw = f and f:read("*a")
            if f then f:close() end
        end
    end
    local obj, err = cjson.decode(raw or "")
    if err then
        reply(400, { success = false, error = "invalid JSON: " .. err })
        return nil, true
    end
    if type(obj) ~= "table" or (obj[1] ~= nil) then
        obj = {}
    end
    return obj
end

function _M.protocol(id)
    local p = protocols[id]
    if not p then
        return reply(404, { error = "protocol not found", id = id })
    end
    return reply(200, p)
end

function _M.submit()
    local obj, sent = json_body()
    if sent then return end
    local fields = {}
    if not nonempty_string(obj.patientId) then fields[#fields + 1] = "patientId" end
    if not nonempty_object(obj.reportData) then fields[#fields + 1] = "reportData" end
    if #fields > 0 then
        return reply(400, { success = false, error = "invalid request", fields = fields })
    end
    reports[obj.patientId] = obj.reportData
    counts.reports = counts.reports + 1
    return reply(200, { success = true, message = "report accepted" })
end

function _M.add_tag()
    local obj, sent = json_body()
    if sent then return end
    local fields = {}
    if not nonempty_string(obj.patientId) then fields[#fields + 1] = "patientId" end
    if not nonempty_string(obj.tagName) then fields[#fields + 1] = "tagName" end
    if #fields > 0 then
        return reply(400, { success = false, error = "invalid request", fields = fields })
    end
    local set = tags[obj.patientId]
    if not set then
        set = {}
        tags[obj.patientId] = set
    end
    set[obj.tagName] = true
    counts.tags = counts.tags + 1
    return reply(200, { success = true })
end

function _M.sleep()
    ngx.sleep(0.05)
    return reply(200, { ok = true })
end

function _M.not_found()
    return reply(404, { error = "not found" })
end

return _M
