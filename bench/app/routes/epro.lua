-- bench/app: triage's ePRO intake kept in memory, for bench/run's in-memory figure beside the sample
-- app's durable route (same middleware, same validation, same answer; nothing written to disk).
--   build/triage --app bench/app --listen 127.0.0.1:8080
use "triage.middleware.request_id"

post("/api/epro/submit", "epro_memory.submit")
