"""A run: every peer through its checks, warm-up and workloads, then triage's malloc count."""
import http.client
import subprocess
import time

from .config import BUSY_CORES, LABELS, WORKLOADS, log
from .correctness import check_peer
from .malloc_count import malloc_test
from .measure import measure
from .peers import PEER_CLASSES
from .report import fmt_num
from .wrk import run_wrk


class Run:
    """A run's settings and everything it found; the report is made from it."""

    def __init__(self, peers, smoke, duration, warmup, timeout, repeat):
        self.peers, self.smoke = peers, smoke
        self.duration, self.warmup, self.timeout, self.repeat = duration, warmup, timeout, repeat
        self.started_at = time.time()
        self.results = {}     # (peer, workload key): the figures, or {"error": ...}
        self.failures = []    # wrong answers, failed servers and runs: the exit status is 1
        self.notes = []       # said under the tables
        self.checks = {}      # peer: [(check, ok, detail)]
        self.versions = {}    # peer: what was run
        self.malloc = None    # malloc_test's figures, or {"error": ...}


def run_peer(run, name, workdir, scripts):
    """Builds and starts one peer, checks its answers, warms it up and runs its workloads."""
    peer = PEER_CLASSES[name](name, workdir)
    log("== %s" % peer.label)
    try:
        peer.build()
        run.versions[name] = peer.version()
        peer.start()
    except (RuntimeError, OSError, subprocess.SubprocessError) as e:
        run.failures.append("%s: %s" % (name, e))
        log("   FAILED: %s" % e)
        peer.stop()
        return
    try:
        cr = check_peer(peer)
        run.checks[name] = cr
        bad = [c for c in cr if not c[1]]
        for c in cr:
            log("   %-32s %s" % (c[0], "ok" if c[1] else "WRONG: " + c[2]))
        if bad:
            run.failures.append("%s answers wrong: %s" % (name, "; ".join("%s (%s)" % (c[0], c[2]) for c in bad)))
            return
        if run.warmup > 0:
            try:
                run_wrk(peer.port, WORKLOADS[0], 50 if not run.smoke else 8, run.warmup, scripts, run.timeout)
                if name != "ceiling":
                    run_wrk(peer.port, WORKLOADS[1], 50 if not run.smoke else 8,
                            max(1, run.warmup // 2), scripts, run.timeout)
            except (RuntimeError, subprocess.SubprocessError) as e:
                run.failures.append("%s warm-up: %s" % (name, str(e).splitlines()[0]))
                log("   warm-up FAILED: %s" % e)
                return
        for wl in WORKLOADS:
            if name in wl.get("skip", ()) or ("only" in wl and name not in wl["only"]):
                continue
            if not run_workload(run, peer, wl, scripts):
                break
    finally:
        peer.stop()


def run_workload(run, peer, wl, scripts):
    """Runs one workload --repeat times and records the median run. False when the peer is gone."""
    name = peer.name
    conns = wl["smoke_conns"] if run.smoke else wl["conns"]
    runs, errors = [], []
    for _ in range(run.repeat):
        time.sleep(0.5 if run.smoke else 1.5)   # let the last run's sockets drain
        try:
            runs.append(measure(peer, wl, conns, run.duration, scripts, run.timeout))
        except (RuntimeError, subprocess.SubprocessError) as e:
            errors.append(str(e).splitlines()[0])
            log("   %-12s run %d FAILED: %s" % (wl["key"], len(runs) + len(errors), e))
            if peer.proc is None or peer.proc.poll() is not None:
                break
            continue
        if run.repeat > 1:
            log("   %-12s run %d: %s req/s" % (wl["key"], len(runs) + len(errors),
                                              fmt_num(runs[-1]["rps"])))
    if not runs:
        r = {"error": errors[0]}
        run.results[(name, wl["key"])] = r
        if run.smoke or name == "triage":
            run.failures.append("%s %s: %s" % (name, wl["key"], errors[0]))
        else:
            # a peer swamped by the load (Flask's sync workers at 5,000 connections):
            # a result to report, not a fault of the harness
            run.notes.append("%s could not complete %s: %s." % (LABELS[name], wl["title"], errors[0]))
        return not (peer.proc is None or peer.proc.poll() is not None)
    # the run with the median req/s stands for the workload
    runs.sort(key=lambda x: x["rps"] or 0)
    r = runs[(len(runs) - 1) // 2]
    r["all_rps"] = [x["rps"] for x in runs]
    run.results[(name, wl["key"])] = r
    missing = [k for k in ("rps", "p50_ms", "p99_ms", "cpu_us", "mem") if r.get(k) is None]
    if r["requests"] == 0 and not run.smoke:
        # a peer swamped by the load: a result, though one without latencies
        run.notes.append("%s completed no request in %s (%d socket errors): no latency or "
                         "CPU per request to show." % (LABELS[name], wl["title"], r["sock_err"]))
    elif missing:
        run.failures.append("%s %s: not measured: %s" % (name, wl["key"], ", ".join(missing)))
    log("   %-12s %8s req/s  p50 %7s ms  p99 %8s ms  non-2xx %s  sock err %s  CPU %s µs/req  RSS %s MB%s"
        % (wl["key"], fmt_num(r["rps"]), fmt_num(r["p50_ms"], 2), fmt_num(r["p99_ms"], 2),
           r["non2xx"], r["sock_err"], fmt_num(r["cpu_us"], 1),
           fmt_num(r["mem"] / 1048576.0 if r["mem"] else None, 1),
           "  (other load: %.2f cores)" % r["other_cores"]
           if (r.get("other_cores") or 0) > BUSY_CORES else ""))
    return True


def count_mallocs(run, workdir, scripts):
    """triage's allocation calls per request, when triage answered every check."""
    if not ("triage" in run.peers and "triage" in run.checks and all(c[1] for c in run.checks["triage"])):
        return
    log("== triage malloc count (LD_PRELOAD bench/.build/malloc_count.so)")
    try:
        run.malloc = malloc_test(workdir, run.smoke, scripts)
    except (RuntimeError, OSError, subprocess.SubprocessError, http.client.HTTPException) as e:
        run.malloc = {"error": str(e).splitlines()[0]}
    if "error" in run.malloc:
        run.failures.append("malloc count: %s" % run.malloc["error"])
        log("   FAILED: %s" % run.malloc["error"])
    else:
        log("   %d allocation calls over %d GET requests: %.4f per request (%d processes)"
            % (run.malloc["allocs"], run.malloc["requests"], run.malloc["per_request"],
               run.malloc["processes"]))
