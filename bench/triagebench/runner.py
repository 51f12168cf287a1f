"""A run: every peer through its checks, warm-up and workloads, then triage's malloc count."""
import http.client
import json
import os
import subprocess
import time

from .config import (ALL_WORKLOADS, BURST, BURST_PG, BUSY_CORES, DURABLE_ONLY, LABELS, SLOW, WORKLOADS, log,
                     runs_on)
from .correctness import check_peer, cross_node_checks
from .malloc_count import malloc_test
from .measure import measure
from .peers import PEER_CLASSES, Cluster, Triage, TriageMem, TriagePG
from .report import fmt_num
from .wrk import run_wrk


class Run:
    """A run's settings and everything it found; the report is made from it."""

    def __init__(self, peers, smoke, duration, warmup, timeout, repeat, workloads=None):
        self.peers, self.smoke = peers, smoke
        self.duration, self.warmup, self.timeout, self.repeat = duration, warmup, timeout, repeat
        self.workloads = list(workloads or ALL_WORKLOADS)
        self.started_at = time.time()
        self.results = {}     # (peer, workload key): the figures, or {"error": ...}
        self.failures = []    # wrong answers, failed servers and runs: the exit status is 1
        self.notes = []       # said under the tables
        self.checks = {}      # peer: [(check, ok, detail)]
        self.versions = {}    # peer: what was run
        self.malloc = None    # malloc_test's figures, or {"error": ...}
        self.burst = {}       # peer: the burst's figures and what was stored after the restart, or {"error"}
        self.store = None     # whether the triage binary has the durable store (--data)
        self.pg_store = None  # whether it has the PostgreSQL backend (--store URL)
        self.slow = {}        # peer: the slow-clients figures (baseline and under attack), or {"error"}

    def selected(self, key):
        return key in self.workloads

    def rows(self):
        """The peers in table order: triage's in-memory run on bench/app right after triage."""
        out = []
        for p in self.peers:
            out.append(p)
            if p == "triage":
                out.append("triage_mem")
        return out


def run_peer(run, name, workdir, scripts):
    """Builds and starts one peer, checks its answers, warms it up and runs its workloads. triage also
    runs on bench/app (the in-memory ePRO figure) and, for the burst, on a fresh --data dir."""
    wls = [wl for wl in WORKLOADS if run.selected(wl["key"]) and runs_on(wl, name)]
    if name == "triage":
        run.store = Triage.has_store()
        if not run.store:
            run.notes.append("This triage binary has no durable store (it takes no --data): its \"durable\" "
                             "ePRO figures are in memory, and the store's counts and fsyncs are n/a.")
        if wls or run.selected("malloc") or run.selected("slow"):
            serve(run, Triage(name, workdir), wls, scripts)
        mem = [wl for wl in WORKLOADS if run.selected(wl["key"]) and runs_on(wl, "triage_mem")]
        if mem:
            serve(run, TriageMem("triage_mem", workdir), mem, scripts)
        if run.selected("burst"):
            burst_triage(run, workdir, scripts)
        return
    if name == "triagepg":
        run.pg_store = TriagePG.has_pg_store()
        if not run.pg_store:
            run.notes.append("This triage binary has no PostgreSQL backend (it takes no --store): triage on "
                             "PostgreSQL was not measured.")
            log("== %s: not run (this triage binary takes no --store)" % LABELS[name])
            return
        if wls:
            peer = TriagePG(name, workdir)
            if run.smoke:
                peer.settle = 1.1
            try:
                serve(run, peer, wls, scripts)
            finally:
                peer.destroy()
        if run.selected(BURST_PG["key"]):
            burst_cluster(run, workdir, scripts)
        return
    # Gin + PostgreSQL's burst is the figure both bursts are set against
    burst = name in BURST["peers"] and (run.selected("burst") or (name == "ginpg" and run.selected(BURST_PG["key"])))
    if not wls and not burst and not (run.selected("slow") and name in SLOW["peers"]):
        return
    peer = PEER_CLASSES[name](name, workdir)
    if run.smoke and hasattr(peer, "settle"):
        peer.settle = 1.1
    try:
        if serve(run, peer, wls, scripts, keep=burst) and burst:
            burst_ginpg(run, peer)
    finally:
        peer.destroy()


def serve(run, peer, wls, scripts, keep=False):
    """Starts a peer, checks its answers, warms it up and runs wls. Stops it unless keep (it is left
    running only when it answered right). True when it answered right and stayed up."""
    name = peer.name
    log("== %s" % peer.label)
    try:
        peer.build()
        run.versions[name] = peer.version()
        peer.start()
    except (RuntimeError, OSError, subprocess.SubprocessError) as e:
        run.failures.append("%s: %s" % (name, e))
        log("   FAILED: %s" % e)
        peer.stop()
        return False
    ok = False
    try:
        cr = check_peer(peer)
        run.checks[name] = cr
        bad = [c for c in cr if not c[1]]
        for c in cr:
            log("   %-32s %s" % (c[0], "ok" if c[1] else "WRONG: " + c[2]))
        if bad:
            run.failures.append("%s answers wrong: %s" % (name, "; ".join("%s (%s)" % (c[0], c[2]) for c in bad)))
            return False
        slow = run.selected("slow") and name in SLOW["peers"]
        if run.warmup > 0 and (wls or slow):
            try:
                warm_up(run, peer, scripts)
            except (RuntimeError, subprocess.SubprocessError) as e:
                run.failures.append("%s warm-up: %s" % (name, str(e).splitlines()[0]))
                log("   warm-up FAILED: %s" % e)
                return False
        for wl in wls:
            if not run_workload(run, peer, wl, scripts):
                break
        if slow and peer.alive():
            slow_clients(run, peer, scripts)
        ok = peer.alive()
        return ok
    finally:
        if not (keep and ok):
            peer.stop()


def warm_up(run, peer, scripts):
    """wrk on GET (peers that serve it) and POST: connections, pools, JIT traces, the database pool."""
    conns = 50 if not run.smoke else 8
    post = WORKLOADS[1]                       # the 300 repeating bodies
    if peer.name in DURABLE_ONLY:
        post = next(wl for wl in WORKLOADS if wl["key"] == "epro100")   # every body unique
    if peer.name != "triage_mem":
        run_wrk(peer.port, WORKLOADS[0], conns, run.warmup, scripts, run.timeout)
    if peer.name != "ceiling":
        run_wrk(peer.port, post, conns, max(1, run.warmup // 2), scripts, run.timeout)
    peer.loaded()


def slow_clients(run, peer, scripts):
    """The slow-clients workload on a started peer: wrk alone, then wrk under slowhttptest."""
    from .slow import run_slow
    try:
        r = run_slow(run, peer, scripts)
    except (RuntimeError, OSError, subprocess.SubprocessError) as e:
        r = {"error": str(e).splitlines()[0]}
    run.slow[peer.name] = r
    if "error" in r:
        run.failures.append("%s slow: %s" % (peer.name, r["error"]))
        log("   slow FAILED: %s" % r["error"])
        return
    for cond in ("baseline", "attack"):
        m = r[cond]
        log("   slow %-8s %8s req/s  p50 %7s ms  p99 %8s ms  non-2xx %s  sock err %s"
            % (cond, fmt_num(m["rps"]), fmt_num(m["p50_ms"], 2), fmt_num(m["p99_ms"], 2),
               m["non2xx"], m["sock_err"]))
    log("   slow: attack connections open %s at the start of the measurement, %s at its end%s"
        % (r.get("open_before", "?"), r.get("open_after", "?"),
           "" if r.get("attack_alive") else " (a slowhttptest had exited)"))


def burst_settings(run):
    if run.smoke:
        return BURST["smoke_phones"], BURST["smoke_concurrency"]
    return BURST["phones"], BURST["concurrency"]


def log_burst(r):
    log("   %-12s %d phones: %d acknowledged%s, p50 %s ms, p99 %s ms, errors %d %s, CPU %s µs/submission%s"
        % ("burst", r["phones"], r["acknowledged"],
           " in %.2f s" % r["all_acknowledged_s"] if r.get("all_acknowledged_s") is not None else "",
           fmt_num(r["p50_ms"], 1), fmt_num(r["p99_ms"], 1), r["errors_total"],
           json.dumps({k: v for k, v in r["errors"].items() if v}), fmt_num(r["cpu_us"], 1),
           ", %d fsyncs (%s submissions each)" % (r["store"]["fsyncs"], fmt_num(r["store"]["writes_per_fsync"], 1))
           if r.get("store") and r["store"].get("fsyncs") is not None else ""))


def judge_stored(run, name, r):
    """After the restart: every acknowledged submission stored, none twice. A duplicate or a lost
    acknowledged submission is a wrong answer (a failure of the run); phones that got no 2xx are the
    burst's result, a target."""
    rows, keys = r["stored"]
    r["exactly_once"] = rows == keys == r["phones"] and r["acknowledged"] == r["phones"]
    log("   after a restart: %d rows, %d distinct idempotency keys (%d phones, %d acknowledged): %s"
        % (rows, keys, r["phones"], r["acknowledged"],
           "all stored exactly once" if r["exactly_once"] else "NOT all stored exactly once"))
    if rows != keys:
        run.failures.append("%s burst: %d rows for %d idempotency keys: stored twice" % (name, rows, keys))
    elif rows < r["acknowledged"]:
        run.failures.append("%s burst: %d acknowledged, %d stored after the restart: acknowledged "
                            "submissions lost" % (name, r["acknowledged"], rows))


def burst_triage(run, workdir, scripts):
    """The burst against triage on a fresh --data dir (warmed up with GETs only, so the store holds
    nothing but the burst), then SIGKILL to every process, a start on the same dir, and the sqlite3 count."""
    from .burst import count_sqlite, run_burst
    phones, conc = burst_settings(run)
    peer = Triage("triage", os.path.join(workdir, "burst"))
    log("== triage, the 8:00 burst (%d phones, %d in flight)" % (phones, conc))
    r = None
    try:
        peer.build()
        peer.start()
        if run.warmup > 0:
            run_wrk(peer.port, WORKLOADS[0], 50 if not run.smoke else 8, run.warmup, scripts, run.timeout)
            time.sleep(0.5 if run.smoke else 1.5)
        r = run_burst(peer, BURST["path"], phones, conc, BURST["timeout"])
        log_burst(r)
        peer.kill_hard()
        peer.start(keep_data=True)
        if peer.durable:
            r["stored"] = count_sqlite(peer.db_path())
            judge_stored(run, "triage", r)
        else:
            r["stored"] = None
            log("   after a restart: n/a (no durable store in this binary)")
    except (RuntimeError, OSError, subprocess.SubprocessError, ValueError) as e:
        r = dict(r or {}, error=str(e).splitlines()[0])
        run.failures.append("triage burst: %s" % r["error"])
        log("   FAILED: %s" % e)
    finally:
        peer.stop()
    run.burst["triage"] = r


def burst_ginpg(run, peer):
    """The burst against Gin + PostgreSQL (its table emptied first), then the Gin server stopped,
    PostgreSQL stopped in immediate mode (no checkpoint: the restart replays the WAL, as after a crash)
    and started again, and the psql count."""
    from .burst import run_burst
    phones, conc = burst_settings(run)
    log("== %s, the 8:00 burst (%d phones, %d in flight)" % (peer.label, phones, conc))
    r = None
    try:
        peer.truncate()
        time.sleep(0.5 if run.smoke else 1.5)
        r = run_burst(peer, BURST["path"], phones, conc, BURST["timeout"])
        log_burst(r)
        peer.stop()
        peer.pg.stop("immediate")
        peer.pg.start()
        r["stored"] = peer.count_rows()
        judge_stored(run, peer.name, r)
    except (RuntimeError, OSError, subprocess.SubprocessError, ValueError) as e:
        r = dict(r or {}, error=str(e).splitlines()[0])
        if run.smoke:
            run.failures.append("%s burst: %s" % (peer.name, r["error"]))
        else:
            run.notes.append("%s could not complete the burst: %s." % (peer.label, r["error"]))
        log("   FAILED: %s" % e)
    run.burst[peer.name] = r


def burst_cluster(run, workdir, scripts):
    """The burst on two triage nodes (each its own --data) sharing one fresh PostgreSQL database, the
    phones spread over both ports; first a retry across the nodes (same key, other node: the same
    receipt). Then SIGKILL to every process of both nodes, PostgreSQL stopped in immediate mode (no
    checkpoint: the restart replays the WAL, as after a crash) and started again, and the psql count of
    the burst's rows (keys starting with its run id)."""
    from .burst import run_burst
    phones, conc = burst_settings(run)
    n = BURST_PG["nodes"]
    log("== %s, %d nodes, the 8:00 burst (%d phones, %d in flight, spread over the nodes)"
        % (LABELS["triagepg"], n, phones, conc))
    nodes, r = [], None
    try:
        for i in range(n):
            node = TriagePG("triagepg", os.path.join(workdir, "burstpg-node%d" % (i + 1)),
                            database=nodes[0].db if nodes else None)
            if run.smoke:
                node.settle = 1.1
            nodes.append(node)
            node.build()
            node.start()
        checks = cross_node_checks([node.port for node in nodes])
        run.checks["triagepg cluster"] = checks
        for c in checks:
            log("   %-32s %s" % (c[0], "ok" if c[1] else "WRONG: " + c[2]))
        bad = [c for c in checks if not c[1]]
        if bad:
            raise RuntimeError("answers wrong across the nodes: %s"
                               % "; ".join("%s (%s)" % (c[0], c[2]) for c in bad))
        if run.warmup > 0:
            for node in nodes:
                run_wrk(node.port, WORKLOADS[0], 50 if not run.smoke else 8, run.warmup, scripts, run.timeout)
            time.sleep(0.5 if run.smoke else 1.5)
        cluster = Cluster(nodes)
        r = run_burst(cluster, BURST["path"], phones, conc, BURST["timeout"])
        r["nodes"] = n
        log_burst(r)
        log("   acknowledged by node (port): %s" % json.dumps(r.get("acknowledged_by_port")))
        for node in nodes:
            node.kill_hard()
        pg = nodes[0].pg
        pg.stop("immediate")
        pg.start()
        r["stored"] = nodes[0].count_rows(key_prefix=r["run_id"] + "-")
        judge_stored(run, "triagepg", r)
    except (RuntimeError, OSError, subprocess.SubprocessError, ValueError) as e:
        r = dict(r or {}, error=str(e).splitlines()[0])
        run.failures.append("triagepg burst on %d nodes: %s" % (n, r["error"]))
        log("   FAILED: %s" % e)
    finally:
        for node in reversed(nodes):
            node.destroy()
    run.burst["triagepg"] = r


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
            if not peer.alive():
                break
            continue
        if run.repeat > 1:
            log("   %-12s run %d: %s req/s" % (wl["key"], len(runs) + len(errors),
                                              fmt_num(runs[-1]["rps"])))
    if not runs:
        r = {"error": errors[0]}
        run.results[(name, wl["key"])] = r
        if run.smoke or name.startswith("triage"):
            run.failures.append("%s %s: %s" % (name, wl["key"], errors[0]))
        else:
            # a peer swamped by the load (Flask's sync workers at 5,000 connections):
            # a result to report, not a fault of the harness
            run.notes.append("%s could not complete %s: %s." % (LABELS[name], wl["title"], errors[0]))
        return peer.alive()
    # the run with the median req/s stands for the workload
    runs.sort(key=lambda x: x["rps"] or 0)
    r = runs[(len(runs) - 1) // 2]
    r["all_rps"] = [x["rps"] for x in runs]
    run.results[(name, wl["key"])] = r
    missing = [k for k in ("rps", "p50_ms", "p99_ms", "cpu_us", "mem") + (("pss",) if wl.get("durable") else ())
               if r.get(k) is None]
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
    if wl.get("durable") and getattr(peer, "counts_rows", False):
        judge_rows(run, name, wl, r)
    if wl.get("durable") and peer.durable:
        st = r.get("store")
        log("   %-12s %s" % ("", "store: n/a (no counters)" if not st else
                             "store: %s fsyncs (%s/s), %s commits, %s writes, %s submissions per fsync"
                             % (fmt_num(st.get("fsyncs")), fmt_num(st.get("fsyncs_per_s")),
                                fmt_num(st.get("commits")), fmt_num(st.get("writes")),
                                fmt_num(st.get("writes_per_fsync"), 1))))
    return True


def judge_rows(run, name, wl, r):
    """A run on a peer that stores in PostgreSQL: every acknowledged submission is a new row (the rows
    the table gained are at least the 2xx answers; a request cut off as wrk stopped may be stored
    unanswered), and no key is stored twice (the rows gained = the distinct keys gained)."""
    st = r.get("store")
    if not st or st.get("writes") is None or st.get("keys") is None:
        run.failures.append("%s %s: the stored rows could not be counted" % (name, wl["key"]))
        return
    rows, keys, acked = st["writes"], st["keys"], st["acknowledged"]
    r["stored_ok"] = rows >= acked and rows == keys
    log("   %-12s stored: %d new rows, %d new keys, %d acknowledged: %s"
        % ("", rows, keys, acked, "every acknowledged submission stored once" if r["stored_ok"] else "WRONG"))
    if rows != keys:
        run.failures.append("%s %s: %d rows for %d idempotency keys: stored twice" % (name, wl["key"], rows, keys))
    elif rows < acked:
        run.failures.append("%s %s: %d acknowledged, %d stored: acknowledged submissions lost"
                            % (name, wl["key"], acked, rows))


def count_mallocs(run, workdir, scripts):
    """triage's allocation calls per request, when triage answered every check."""
    if not (run.selected("malloc") and "triage" in run.peers and "triage" in run.checks
            and all(c[1] for c in run.checks["triage"])):
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
