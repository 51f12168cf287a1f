-- Middleware that ships with triage. Use them by name in route files, e.g.
--   use "triage.middleware.request_id"
local M = {}

-- Gives every response an X-Request-Id: the client's own (if it is a sane token) or one made by
-- the worker. ctx:request_id() returns the same value, for logs and error bodies.
function M.request_id(ctx, nxt)
  local incoming = ctx:header("x-request-id")
  if incoming and #incoming <= 128 and incoming:find("^[%w%-_%.:]+$") then
    ctx._id = incoming
  end
  ctx:set_header("X-Request-Id", ctx:request_id())
  return nxt()
end

return M
