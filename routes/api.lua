-- The sample clinical app's routes. See README.md, "Routes", for the syntax, and "Authentication and
-- permissions" for the bearer tokens the patient-data routes ask for.
use "triage.middleware.request_id"

-- Reference data and the demo: open to anyone.
get("/api/v1/protocols/:id", "protocols.show")
get("/api/v1/sleep", "demo.sleep")

-- A patient submits their own reports; an investigator enters them at the site.
group("/api/epro", {
  "triage.auth.require{ roles = { 'patient', 'investigator' }, patient_field = 'patientId' }",
}, function()
  post("/submit", "epro.submit")
end)

group("/api/v1/tags", { "triage.auth.require{ roles = { 'investigator' } }" }, function()
  post("/add", "tags.add")
end)

group("/api/v1/patients/:id", {
  "triage.auth.require{ roles = { 'patient', 'investigator', 'monitor' }, patient_param = 'id' }",
}, function()
  get("/tags", "tags.list")
end)

-- A trial's records: its investigators and monitors, and each of its patients for their own.
group("/api/v1/trials/:trialId", {
  "triage.auth.require{ roles = { 'patient', 'investigator', 'monitor' }, trial_param = 'trialId', "
    .. "patient_param = 'patientId' }",
}, function()
  get("/patients/:patientId/reports", "epro.list")
end)

-- A trial's safety events: its investigators and monitors list them, its investigators acknowledge
-- them (scripts/safety.lua). Another trial's token is 403, whether the event exists or not.
group("/api/v1/trials/:trialId", {
  "triage.auth.require{ roles = { 'investigator', 'monitor' }, trial_param = 'trialId' }",
}, function()
  get("/safety-events", "safety.list")
end)

group("/api/v1/trials/:trialId", {
  "triage.auth.require{ roles = { 'investigator' }, trial_param = 'trialId' }",
}, function()
  post("/safety-events/:eventId/ack", "safety.ack")
end)

-- The protocol lookup again, behind a token and the audit middleware.
group("/api/v1/secure", {
  "triage.auth.require{ roles = { 'investigator', 'monitor', 'admin' } }", "audit.record",
}, function()
  get("/protocols/:id", "protocols.show")
end)
