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

-- The same deadlock can end this process too (seen on PostgreSQL, and on SQLite in error_paths_spec):
-- p11-kit's destructor never returns. Under make test-asan the run
-- therefore ends, once busted is done, with _exit and busted's outcome, without the libraries'
-- destructors. LeakSanitizer cannot run then (its check would come before the Lua state is closed and
-- count what live Lua objects own), so these runs check memory errors only: spec/tests.cmake turns
-- detect_leaks off for them. Leaks are checked in the servers of the integration specs and in c_*.
if preload and preload:find("libasan", 1, true) then
  local busted = require "busted"
  local failed = 0
  local function count()
    failed = failed + 1
    return nil, true
  end
  busted.subscribe({ "failure" }, count)
  busted.subscribe({ "error" }, count)
  local function leave(code)
    io.stdout:flush()
    io.stderr:flush()
    sys.C._exit(code)
  end
  busted.subscribe({ "exit" }, function() leave(failed > 0 and 1 or 0) end)
  os.exit = function(code) leave(code == true and 0 or code == false and 1 or tonumber(code) or 0) end
end
