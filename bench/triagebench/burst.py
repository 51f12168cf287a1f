"""The 8:00 burst: bench/burst.c against a durable peer, with the server tree's CPU and store counters
around it, and the count of what is stored after a crash-like restart."""
import json
import os
import subprocess

from . import auth, processes
from .config import BENCH, BUILD, HOST
from .measure import store_delta
from .sampling import Sampler, tree, tree_pss, tree_usage
from .toolchain import build_c
from .wrk import next_run_id

BINARY = os.path.join(BUILD, "burst")


def build():
    build_c(os.path.join(BENCH, "burst.c"), BINARY)
    return BINARY


def run_burst(peer, path, phones, concurrency, timeout_s):
    """Runs the burst against a started peer. Returns burst.c's figures plus cpu_s, cpu_us (per
    acknowledged submission), mem (peak RSS of the tree), store (counters before/after) and run_id."""
    run_id = next_run_id("b")
    roots = peer.roots()
    before = peer.store_counters()
    cpu0, _ = tree_usage(tree(roots))
    sampler = Sampler(roots)
    sampler.start()
    cmd = [BINARY, HOST, str(peer.port), path, str(phones), str(concurrency), "%g" % timeout_s, run_id,
           auth.header()]
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL)
    processes.clients.append(p)
    try:
        out, err = p.communicate(timeout=timeout_s + phones / 50.0 + 60)
    except subprocess.TimeoutExpired:
        p.kill()
        p.communicate()
        raise RuntimeError("burst did not finish in time")
    finally:
        sampler.stop()
        peer.loaded()
        if p in processes.clients:
            processes.clients.remove(p)
    pids = tree(roots)
    cpu1, _ = tree_usage(pids)
    pss = tree_pss(pids)
    if p.returncode != 0:
        raise RuntimeError("burst failed (%s): %s" % (p.returncode, (err or out)[-1000:]))
    try:
        r = json.loads(out.strip().splitlines()[-1])
    except (ValueError, IndexError):
        raise RuntimeError("burst printed no figures: %r" % out[-500:])
    if not peer.alive():
        raise RuntimeError("%s died during the burst:\n%s" % (peer.name, peer.log_tail()))
    after = peer.store_counters()
    r["run_id"] = run_id
    r["cpu_s"] = cpu1 - cpu0
    r["cpu_us"] = r["cpu_s"] / r["acknowledged"] * 1e6 if r["acknowledged"] else None
    r["mem"] = sampler.peak if sampler.samples else None
    r["pss"] = pss
    r["store"] = store_delta(before, after, r["elapsed_s"], r["acknowledged"])
    r["errors_total"] = sum(r["errors"].values())
    return r


def count_sqlite(db_path):
    """(rows, distinct idempotency keys) in epro_submissions, read with the sqlite3 CLI."""
    r = subprocess.run(["sqlite3", "-batch", "-bail", "-cmd", ".timeout 10000", db_path,
                        "SELECT count(*), count(DISTINCT idempotency_key) FROM epro_submissions;"],
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=120)
    if r.returncode != 0:
        raise RuntimeError("sqlite3 %s: %s" % (db_path, r.stdout.strip()[-500:]))
    rows, keys = r.stdout.strip().splitlines()[-1].split("|")
    return int(rows), int(keys)
