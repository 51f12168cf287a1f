-- A small HTTP/1.1 client for the integration specs, on non-blocking sockets
-- through the LuaJIT FFI. Every read and write has a deadline, so a hung
-- server fails a spec instead of hanging it. Methods return nil, err on failure
-- (wrap them in assert); err says what was received so far.
local sys = require "support.sys"
local ffi, C = sys.ffi, sys.C

local M = {}
M.DEFAULT_TIMEOUT = 5

local function quote(s, max)
  max = max or 300
  if #s > max then s = s:sub(1, max) .. ("...(%d bytes)"):format(#s) end
  return ("%q"):format(s):gsub("\\\n", "\\n")
end
M.quote = quote

local Conn = {}
Conn.__index = Conn

local function closer(p)
  if p[0] >= 0 then C.close(p[0]); p[0] = -1 end
end

-- Open a connection to 127.0.0.1:port. opts: host, timeout (seconds).
function M.connect(port, opts)
  opts = opts or {}
  local timeout = opts.timeout or M.DEFAULT_TIMEOUT
  local fd, how = sys.connect_start(port, opts.host)
  if not fd then return nil, how end
  local holder = ffi.gc(ffi.new("int[1]", fd), closer)
  if how == "inprogress" then
    local rev, perr = sys.poll1(fd, sys.POLLOUT, timeout)
    if not rev then closer(holder); return nil, "connect poll: " .. perr end
    if rev == 0 then closer(holder); return nil, "connect: timeout" end
    local e = sys.socket_error(fd)
    if e ~= 0 then closer(holder); return nil, "connect: " .. sys.strerror(e) end
  end
  return setmetatable({ holder = holder, fd = fd, buf = "", timeout = timeout, port = port, eof = false }, Conn)
end

function Conn:close()
  closer(self.holder)
  self.fd = -1
end

function Conn:is_open()
  return self.holder[0] >= 0
end

-- Send all bytes. opts.timeout.
function Conn:send(data, timeout)
  if not self:is_open() then return nil, "send on a closed connection" end
  local deadline = sys.now() + (timeout or self.timeout)
  local pos, n = 0, #data
  local p = ffi.cast("const char *", data)
  while pos < n do
    local w = C.send(self.fd, p + pos, n - pos, sys.MSG_NOSIGNAL)
    if w > 0 then
      pos = pos + tonumber(w)
    else
      local e = ffi.errno()
      if w < 0 and (e == sys.EAGAIN or e == sys.EINTR) then
        local left = deadline - sys.now()
        if left <= 0 then return nil, ("send: timeout after %d of %d bytes"):format(pos, n) end
        sys.poll1(self.fd, sys.POLLOUT, left)
      else
        return nil, ("send: %s after %d of %d bytes"):format(sys.strerror(e), pos, n)
      end
    end
  end
  return true
end

local rbuf = ffi.new("char[65536]")

-- Read whatever arrives before the deadline into self.buf.
-- Returns true on data, nil + "closed"/"reset"/"timeout"/err.
function Conn:fill(deadline)
  if self.eof then return nil, self.eof end
  if not self:is_open() then return nil, "closed locally" end
  while true do
    local r = C.read(self.fd, rbuf, 65536)
    if r > 0 then
      self.buf = self.buf .. ffi.string(rbuf, r)
      return true
    elseif r == 0 then
      self.eof = "closed"
      return nil, "closed"
    else
      local e = ffi.errno()
      if e == sys.EAGAIN or e == sys.EINTR then
        local left = deadline - sys.now()
        if left <= 0 then return nil, "timeout" end
        local rev, perr = sys.poll1(self.fd, sys.POLLIN, left)
        if not rev then return nil, perr end
      elseif e == sys.ECONNRESET then
        self.eof = "reset"
        return nil, "reset"
      else
        return nil, sys.strerror(e)
      end
    end
  end
end

function Conn:read_line(deadline)
  while true do
    local i = self.buf:find("\n", 1, true)
    if i then
      local line = self.buf:sub(1, i)
      self.buf = self.buf:sub(i + 1)
      if line:sub(-2) ~= "\r\n" then return nil, "line not terminated by CRLF: " .. quote(line) end
      return line:sub(1, -3)
    end
    local ok, err = self:fill(deadline)
    if not ok then return nil, err end
  end
end

function Conn:read_exact(n, deadline)
  while #self.buf < n do
    local ok, err = self:fill(deadline)
    if not ok then return nil, err end
  end
  local s = self.buf:sub(1, n)
  self.buf = self.buf:sub(n + 1)
  return s
end

local function parse_head(head)
  local lines = {}
  for line in (head .. "\r\n"):gmatch("(.-)\r\n") do lines[#lines + 1] = line end
  local status_line = lines[1]
  local major, minor, code, reason = status_line:match("^HTTP/(%d)%.(%d) (%d%d%d) ?(.*)$")
  if not major then return nil, "bad status line: " .. quote(status_line) end
  local resp = {
    status_line = status_line, version = major .. "." .. minor, status = tonumber(code), reason = reason,
    headers = {}, header_list = {}, raw_head = head,
  }
  for i = 2, #lines do
    local line = lines[i]
    if line ~= "" then
      local name, value = line:match("^([^:%s]+):[ \t]*(.-)[ \t]*$")
      if not name then return nil, "bad header line: " .. quote(line) end
      local lname = name:lower()
      resp.header_list[#resp.header_list + 1] = { name, value }
      if resp.headers[lname] then
        resp.headers[lname] = resp.headers[lname] .. ", " .. value
      else
        resp.headers[lname] = value
      end
    end
  end
  return resp
end
M.parse_head = parse_head

-- all values of one header (case-insensitive)
function M.header_values(resp, name)
  local out = {}
  name = name:lower()
  for _, h in ipairs(resp.header_list) do
    if h[1]:lower() == name then out[#out + 1] = h[2] end
  end
  return out
end

-- Read one response. opts: head (a response to HEAD: no body), timeout.
-- A 1xx response is returned as is (read again for the final one).
function Conn:read_response(opts)
  opts = opts or {}
  local deadline = sys.now() + (opts.timeout or self.timeout)
  local head_end
  while true do
    head_end = self.buf:find("\r\n\r\n", 1, true)
    if head_end then break end
    if #self.buf > 1024 * 1024 then return nil, "response head over 1 MiB: " .. quote(self.buf) end
    local ok, err = self:fill(deadline)
    if not ok then
      return nil, ("%s before a complete response head (received %s)"):format(err, quote(self.buf))
    end
  end
  local head = self.buf:sub(1, head_end - 1)
  self.buf = self.buf:sub(head_end + 4)
  local resp, perr = parse_head(head)
  if not resp then return nil, perr end
  local h = resp.headers
  local status = resp.status
  if opts.head or (status >= 100 and status < 200) or status == 204 or status == 304 then
    resp.body = ""
    return resp
  end
  local te = h["transfer-encoding"]
  if te and te:lower():find("chunked", 1, true) then
    resp.chunked = true
    local parts = {}
    while true do
      local line, err = self:read_line(deadline)
      if not line then return nil, err .. " in chunked response body" end
      local size = tonumber(line:match("^(%x+)"), 16)
      if not size then return nil, "bad chunk size line " .. quote(line) end
      if size == 0 then
        repeat
          local t, terr = self:read_line(deadline)
          if not t then return nil, terr .. " in chunked trailer" end
        until t == ""
        break
      end
      local data, derr = self:read_exact(size, deadline)
      if not data then return nil, derr .. " in a chunk" end
      parts[#parts + 1] = data
      local crlf, cerr = self:read_exact(2, deadline)
      if crlf ~= "\r\n" then return nil, "chunk not followed by CRLF: " .. tostring(crlf or cerr) end
    end
    resp.body = table.concat(parts)
    return resp
  end
  local cl = h["content-length"]
  if cl then
    local n = tonumber(cl)
    if not n or not cl:match("^%d+$") then return nil, "bad Content-Length " .. quote(cl) end
    local body, err = self:read_exact(n, deadline)
    if not body then
      return nil, ("%s reading a %d-byte body (have %d bytes: %s)"):format(err, n, #self.buf, quote(self.buf))
    end
    resp.body = body
    return resp
  end
  -- no length: the body runs to the end of the connection
  while true do
    local ok, err = self:fill(deadline)
    if not ok then
      if err == "closed" or err == "reset" then break end
      return nil, err .. " reading a body delimited by connection close"
    end
  end
  resp.body = self.buf
  resp.until_close = true
  self.buf = ""
  return resp
end

-- Read n responses (pipelining). heads: optional set of indexes that answer HEAD.
function Conn:read_responses(n, heads, timeout)
  local out = {}
  for i = 1, n do
    local r, err = self:read_response({ head = heads and heads[i], timeout = timeout })
    if not r then return nil, ("response %d of %d: %s"):format(i, n, err), out end
    out[i] = r
  end
  return out
end

-- Wait up to `timeout` seconds for the server to close the connection.
-- Returns true, "closed"|"reset" if it did; false, "open" on timeout;
-- false, "data" if bytes arrived instead (they are kept in self.buf).
function Conn:wait_closed(timeout)
  if self.eof then return true, self.eof end
  local deadline = sys.now() + (timeout or self.timeout)
  local before = #self.buf
  local ok, err = self:fill(deadline)
  if ok then return false, "data" end
  if err == "closed" or err == "reset" then
    if #self.buf > before then return false, "data" end
    return true, err
  end
  if err == "timeout" then return false, "open" end
  return false, err
end

-- Build raw request bytes. opts: headers (list of {name, value} or map),
-- body (string; Content-Length added unless a Transfer-Encoding or
-- Content-Length header is given), version ("1.1"), host (true: add Host).
function M.build(method, target, opts)
  opts = opts or {}
  local lines = { ("%s %s HTTP/%s"):format(method, target, opts.version or "1.1") }
  local have = {}
  local hdrs = {}
  if opts.headers then
    if opts.headers[1] then
      for _, h in ipairs(opts.headers) do hdrs[#hdrs + 1] = { h[1], h[2] } end
    else
      local names = {}
      for k in pairs(opts.headers) do names[#names + 1] = k end
      table.sort(names)
      for _, k in ipairs(names) do hdrs[#hdrs + 1] = { k, opts.headers[k] } end
    end
  end
  for _, h in ipairs(hdrs) do have[h[1]:lower()] = true end
  if not have.host and opts.host ~= false then lines[#lines + 1] = "Host: 127.0.0.1" end
  for _, h in ipairs(hdrs) do lines[#lines + 1] = h[1] .. ": " .. h[2] end
  local body = opts.body
  if body and not have["content-length"] and not have["transfer-encoding"] then
    lines[#lines + 1] = "Content-Length: " .. #body
  end
  return table.concat(lines, "\r\n") .. "\r\n\r\n" .. (body or "")
end

-- Send one request on this connection and read its response.
function Conn:request(method, target, opts)
  opts = opts or {}
  local ok, err = self:send(M.build(method, target, opts))
  if not ok then return nil, err end
  local r
  r, err = self:read_response({ head = method == "HEAD", timeout = opts.timeout })
  if not r then return nil, ("%s %s: %s"):format(method, target, err) end
  return r
end

-- One request on a fresh connection (closed afterwards). Returns resp, elapsed.
function M.request(port, method, target, opts)
  local t0 = sys.now()
  local c, err = M.connect(port, opts)
  if not c then return nil, err end
  local r
  r, err = c:request(method, target, opts)
  c:close()
  if not r then return nil, err end
  return r, sys.now() - t0
end

function M.get(port, target, opts)
  return M.request(port, "GET", target, opts)
end

function M.post(port, target, body, opts)
  opts = opts or {}
  opts.body = body
  return M.request(port, "POST", target, opts)
end

-- Decode a JSON body. Returns the table, or nil, err.
function M.json(resp)
  local cjson = require "cjson"
  if not resp or not resp.body then return nil, "no response" end
  local ok, v = pcall(cjson.decode, resp.body)
  if not ok then return nil, "body is not JSON: " .. tostring(v) .. " body=" .. quote(resp.body) end
  return v
end

-- Checks that hold for every final response: a Date header in IMF-fixdate
-- form and a Content-Length that matches the body (for HEAD: a number).
-- Returns true or nil, message.
function M.check_common(resp, is_head)
  local date = resp.headers.date
  if not date then return nil, "no Date header in " .. quote(resp.raw_head) end
  if not date:match("^%a%a%a, %d%d %a%a%a %d%d%d%d %d%d:%d%d:%d%d GMT$") then
    return nil, "Date is not an IMF-fixdate: " .. quote(date)
  end
  local cl = resp.headers["content-length"]
  if not cl then return nil, "no Content-Length header in " .. quote(resp.raw_head) end
  if not cl:match("^%d+$") then return nil, "bad Content-Length " .. quote(cl) end
  if not is_head and tonumber(cl) ~= #resp.body then
    return nil, ("Content-Length %s but body has %d bytes"):format(cl, #resp.body)
  end
  return true
end

return M
