-- Middleware that ships with triage. Use them by name in route files, e.g.
--   use "triage.middleware.request_id"
local M = {}

-- Gives every response an X-Request-Id: the client's own (if it is a sane token) or one made by
-- the worker. ctx:request_id() returns the same value, for logs and error bodies. The core writes
-- the header itself when the response goes out.
function M.request_id(ctx, nxt)
  ctx:send_request_id()
  return nxt()
end

return M
