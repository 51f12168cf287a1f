-- Loaded by busted before the specs (.busted: helper). On PostgreSQL (TRIAGE_TEST_BACKEND=postgres)
-- it starts the process's PostgreSQL server and points the in-process library (triage.testing) at it
-- through TRIAGE_TEST_STORE, so that the handler specs run on PostgreSQL as they are; a server that
-- cannot start fails the run here, with the reason. Nothing on SQLite.
require("support.backend").in_process()
