-- Loaded by busted before the specs (.busted: helper).
--
-- Under make test-asan, busted's luajit runs the handler specs with the sanitizer runtimes and
-- libtriage_test.so preloaded (spec/tests.cmake). The commands started from it (triage.testing's ls
-- and mktemp, the specs' psql and mkdir) must not inherit that: libtriage_test.so brings libpq and,
-- through it, p11-kit, whose destructor deadlocks in freelocale at the exit of a program that set its
-- locale (ls, mkdir hang there for good). This process keeps what it loaded.
local sys = require "support.sys"
local preload = os.getenv("LD_PRELOAD")
if preload and preload:find("libtriage_test", 1, true) then sys.unsetenv("LD_PRELOAD") end

-- On PostgreSQL (TRIAGE_TEST_BACKEND=postgres): start the process's PostgreSQL server and point the
-- in-process library (triage.testing) at it through TRIAGE_TEST_STORE, so that the handler specs run
-- on PostgreSQL as they are; a server that cannot start fails the run here, with the reason. Nothing
-- on SQLite.
require("support.backend").in_process()
