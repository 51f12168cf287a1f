"""Every server and wrk process the harness starts, and stopping them all on any exit."""
import os
import signal
import sys
import threading
import time

from .config import log
from .sampling import read_stat, start_time, tree

started = []           # Popen objects of every server started
clients = []           # wrk processes running
stoppers = []          # callables that stop what is not a plain server (the throwaway PostgreSQL) and
                       # remove its files; called after every server is stopped
_cleanup_lock = threading.Lock()


def kill_tree(proc, grace=5.0):
    """SIGTERM the server's process group (and stray descendants), then SIGKILL."""
    if proc.poll() is not None and not _alive_group(proc.pid):
        return
    # (pid, start time): a pid is signalled only while it is still the same process
    pids = [(p, start_time(p)) for p in tree(proc.pid)]
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            pass
        for p, started_at in pids:
            if started_at is None or start_time(p) != started_at:
                continue
            try:
                os.kill(p, sig)
            except (ProcessLookupError, PermissionError):
                pass
        deadline = time.time() + (grace if sig == signal.SIGTERM else 2)
        while time.time() < deadline:
            proc.poll()
            if proc.returncode is not None and not _alive_group(proc.pid) \
                    and not any(_alive(p) and start_time(p) == st for p, st in pids):
                return
            time.sleep(0.05)


def _alive(pid):
    st = read_stat(pid)
    if not st:
        return False
    try:
        with open("/proc/%d/stat" % pid, "rb") as f:
            s = f.read()
        return s[s.rfind(b")") + 2:s.rfind(b")") + 3] != b"Z"
    except OSError:
        return False


def _alive_group(pgid):
    try:
        os.killpg(pgid, 0)
        return True
    except (ProcessLookupError, PermissionError):
        return False


def cleanup(*_):
    with _cleanup_lock:
        for p in list(clients):
            try:
                p.kill()
            except OSError:
                pass
        while started:
            p = started.pop()
            try:
                kill_tree(p, grace=3)
            except Exception as e:  # keep going: every server must go
                log("cleanup: %s" % e)
        while stoppers:
            f = stoppers.pop()
            try:
                f()
            except Exception as e:
                log("cleanup: %s" % e)


def on_signal(signum, _frame):
    cleanup()
    sys.exit(128 + signum)
