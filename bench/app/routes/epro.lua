-- bench/app: triage's ePRO intake kept in memory, for bench/run's in-memory figure beside the sample
-- app's durable route (same middleware, same validation, same answer; nothing written to disk).
--   build/triage --app bench/app --listen 127.0.0.1:8080 --token-keys FILE
use "triage.middleware.request_id"

-- The sample app's token check (routes/api.lua), so that the two figures differ by the store only.
group("/api/epro", {
  "triage.auth.require{ roles = { 'patient', 'investigator' }, patient_field = 'patientId' }",
}, function()
  post("/submit", "epro_memory.submit")
end)
