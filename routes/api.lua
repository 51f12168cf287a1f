-- The sample clinical app's routes. See README.md, "Routes", for the syntax.
use "triage.middleware.request_id"

get("/api/v1/protocols/:id", "protocols.show")
post("/api/epro/submit", "epro.submit")
post("/api/v1/tags/add", "tags.add")
get("/api/v1/patients/:id/tags", "tags.list")
get("/api/v1/sleep", "demo.sleep")

-- The same protocol lookup behind authentication, permission and audit middleware.
group("/api/v1/secure", { "auth.authenticate", "auth.require('protocol:read')", "audit.record" }, function()
  get("/protocols/:id", "protocols.show")
end)
