"""One workload run: wrk against a peer, with the server tree's CPU time and peak RSS around it."""
import time

from .sampling import Sampler, children_cpu, machine_busy, tree, tree_usage
from .wrk import run_wrk


def measure(peer, wl, conns, duration, scripts, timeout_s):
    root = peer.proc.pid
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
    wall = time.monotonic() - t0
    cpu1, _ = tree_usage(tree(root))
    busy1, wrk1 = machine_busy(), children_cpu()
    if peer.proc.poll() is not None:
        raise RuntimeError("%s died during the run:\n%s" % (peer.name, peer.log_tail()))
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
    return res
