"""One workload run: wrk against a peer, with the server tree's CPU time and peak RSS around it."""
import time

from .sampling import Sampler, children_cpu, machine_busy, tree, tree_pss, tree_usage
from .wrk import run_wrk


def measure(peer, wl, conns, duration, scripts, timeout_s):
    """wrk against a started peer, with its process trees' CPU time and peak RSS (every root in
    peer.roots(): Gin + PostgreSQL's include the database server). A durable workload also reads the
    peer's store counters before and after, and the trees' PSS at the end."""
    root = peer.roots()
    durable = wl.get("durable")
    counting = durable and peer.durable
    before = peer.store_counters() if counting else None
    pids = tree(root)
    busy0, wrk0 = machine_busy(), children_cpu()
    cpu0, _ = tree_usage(pids)
    sampler = Sampler(root)
    sampler.start()
    t0 = time.monotonic()
    try:
        w, raw = run_wrk(peer.port, wl, conns, duration, scripts, timeout_s)
    finally:
        sampler.stop()
        peer.loaded()
    wall = time.monotonic() - t0
    pids = tree(root)
    cpu1, _ = tree_usage(pids)
    busy1, wrk1 = machine_busy(), children_cpu()
    if not peer.alive():
        raise RuntimeError("%s died during the run:\n%s" % (peer.name, peer.log_tail()))
    pss = tree_pss(pids) if durable else None
    reqs = w["requests"]
    secs = w["duration_us"] / 1e6 if w["duration_us"] else wall
    res = {
        "requests": reqs,
        "rps": reqs / secs if secs > 0 else None,
        "p50_ms": w["p50"] / 1000.0 if reqs else None,
        "p99_ms": w["p99"] / 1000.0 if reqs else None,
        "non2xx": w["status"],
        "sock_err": w["connect"] + w["read"] + w["write"] + w["timeout"],
        "errs": {k: w[k] for k in ("connect", "read", "write", "timeout")},
        "cpu_s": cpu1 - cpu0,
        "cpu_us": (cpu1 - cpu0) / reqs * 1e6 if reqs else None,
        "mem": sampler.peak if sampler.samples else None,
        "conns": conns,
        "duration": secs,
        "wrk_cpu_s": wrk1 - wrk0,
        # CPU used meanwhile by everything but the server and wrk (this harness included)
        "other_cores": max(0.0, (busy1 - busy0) - (cpu1 - cpu0) - (wrk1 - wrk0)) / wall if wall > 0 else None,
    }
    if durable:
        res["pss"] = pss
        res["store"] = store_delta(before, peer.store_counters(), secs, reqs - w["status"]) if counting else None
    return res


def store_delta(before, after, seconds, acknowledged):
    """fsyncs, commits, writes (and distinct keys, when counted) during a run, fsyncs per second and
    submissions per fsync; None when the peer has no counters (a triage binary without the store)."""
    if not before or not after:
        return None
    d = {k: after[k] - before[k] for k in ("fsyncs", "commits", "writes", "keys") if k in before and k in after}
    d["seconds"] = seconds
    d["acknowledged"] = acknowledged
    f = d.get("fsyncs")
    d["fsyncs_per_s"] = f / seconds if f is not None and seconds else None
    d["writes_per_fsync"] = d["writes"] / f if f else None
    return d
