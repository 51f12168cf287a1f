"""The report: one table per workload, the targets, machine and versions, the chart, and the copy in
the top-level README.md."""
import datetime
import os
import platform
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time

from .config import BURST, BURST_PG, BUSY_CORES, CPUS, DURABLE_LABELS, KNOWN_ID, LABELS, ROOT, SLOW, WORKLOADS, log
from .toolchain import sh

README_BEGIN = "<!-- bench:begin -->"
README_END = "<!-- bench:end -->"
README_PG_BEGIN = "<!-- bench-postgres:begin -->"
README_PG_END = "<!-- bench-postgres:end -->"


def fmt_num(v, digits=0):
    if v is None:
        return "—"
    if digits == 0:
        return "{:,.0f}".format(v)
    return "{:,.{d}f}".format(v, d=digits)


def fmt_ratio(a, b):
    if a is None or b is None or b == 0:
        return "—"
    return "%.2f×" % (a / b)


def ratio(a, b):
    if a is None or b is None or b == 0:
        return None
    return a / b


def fmt_mb(v):
    return fmt_num(v / 1048576.0 if v is not None else None, 1)


PG_TITLE = "triage on PostgreSQL against Gin + PostgreSQL"


def table(wl, results, peers, subject="triage", title=None):
    """One workload's table; the ratio columns divide subject's figures by each other row's."""
    rows = [r for r in peers if (r, wl["key"]) in results]
    if not rows:
        return ""
    durable = wl.get("durable")
    labels = dict(LABELS, **DURABLE_LABELS) if durable else LABELS
    # memory: the peak RSS sum; for the durable workloads the PSS at the end of the run (PostgreSQL's
    # backends share their buffers: an RSS sum would count them once per backend)
    memkey = "pss" if durable else "mem"
    t = results.get((subject, wl["key"]))
    out = ["### %s" % (title or wl["title"]), ""]
    head = ["peer", "req/s", "p50 ms", "p99 ms", "non-2xx", "socket errors", "CPU µs/req",
            "PSS MB" if durable else "peak RSS MB"]
    if t and len(rows) > 1:
        head += ["%s %s ×" % (subject, f) for f in ("req/s", "CPU/req", "p99", "PSS" if durable else "RSS")]
    out.append("| " + " | ".join(head) + " |")
    out.append("|" + "|".join(["---"] + ["---:"] * (len(head) - 1)) + "|")
    for name in rows:
        r = results[(name, wl["key"])]
        if "error" in r:
            out.append("| %s | failed: %s |" % (labels[name], r["error"].splitlines()[0][:120])
                       + " |" * (len(head) - 2))
            continue
        e = r["errs"]
        sock = "%d" % r["sock_err"]
        if r["sock_err"]:
            sock += " (c %d, r %d, w %d, t %d)" % (e["connect"], e["read"], e["write"], e["timeout"])
        cells = [labels[name], fmt_num(r["rps"]), fmt_num(r["p50_ms"], 2), fmt_num(r["p99_ms"], 2),
                 fmt_num(r["non2xx"]), sock, fmt_num(r["cpu_us"], 1),
                 fmt_mb(r.get(memkey))]
        if t and len(rows) > 1:
            if name == subject or "error" in t:
                cells += [""] * 4
            else:
                cells += [fmt_ratio(t["rps"], r["rps"]), fmt_ratio(t["cpu_us"], r["cpu_us"]),
                          fmt_ratio(t["p99_ms"], r["p99_ms"]), fmt_ratio(t.get(memkey), r.get(memkey))]
        out.append("| " + " | ".join(cells) + " |")
    busy = ["%s %.2f" % (LABELS[n], results[(n, wl["key"])]["other_cores"]) for n in rows
            if results[(n, wl["key"])].get("other_cores") is not None
            and results[(n, wl["key"])]["other_cores"] > BUSY_CORES]
    if busy:
        out.append("")
        out.append("Other processes used CPU during these runs (cores, beyond the server and wrk): %s. "
                   "Their figures are disturbed." % ", ".join(busy))
    if durable and subject == "triagepg":
        rss = ["%s %s MB" % (labels[n], fmt_mb(results[(n, wl["key"])].get("mem"))) for n in rows
               if "error" not in results[(n, wl["key"])]]
        out.append("")
        out.append("Every request a new submission (its own patientId and Idempotency-Key), both peers on the "
                   "same throwaway PostgreSQL server, each in a fresh database, one after the other. triagepg ×: "
                   "triage on PostgreSQL's figure divided by Gin + PostgreSQL's. CPU and memory include every "
                   "PostgreSQL process (postmaster, backends, WAL writer, checkpointer...) for both. PSS: the "
                   "proportional set size of the process trees at the end of the run (a page shared by n "
                   "processes counts 1/n in each); the peak RSS sums were %s." % "; ".join(rss))
    elif durable:
        rss = ["%s %s MB" % (labels[n], fmt_mb(results[(n, wl["key"])].get("mem"))) for n in rows
               if "error" not in results[(n, wl["key"])]]
        out.append("")
        out.append("Every request a new submission (its own patientId and Idempotency-Key). triage ×: "
                   "the durable route's figure divided by that row's; against the in-memory row it is the "
                   "cost of durability. Gin + PostgreSQL's CPU and memory include every PostgreSQL process. "
                   "PSS: the proportional set size of the process trees at the end of the run (a page shared "
                   "by n processes counts 1/n in each), since an RSS sum counts PostgreSQL's shared buffers "
                   "once per backend; the peak RSS sums were %s." % "; ".join(rss))
    out.append("")
    return "\n".join(out)


def group_commit_table(run):
    """fsyncs per second and submissions per fsync in the durable runs and the burst."""
    rows = []
    for wl in [w for w in WORKLOADS if w.get("durable")] + [dict(key="burst", short="burst")]:
        for peer in ("triage", "ginpg", "triagepg"):
            r = run.burst.get(peer) if wl["key"] == "burst" else run.results.get((peer, wl["key"]))
            if not r or "error" in r:
                continue
            st = r.get("store")
            label = DURABLE_LABELS[peer] if wl["key"] != "burst" else burst_label(peer, r)
            if not st:
                rows.append("| %s | %s | n/a | n/a | n/a | n/a | n/a |" % (wl["short"], label))
                continue
            rows.append("| %s | %s | %s | %s | %s | %s | %s |" % (
                wl["short"], label, fmt_num(st["acknowledged"]), fmt_num(st.get("writes")),
                fmt_num(st.get("fsyncs")), fmt_num(st.get("fsyncs_per_s")), fmt_num(st.get("writes_per_fsync"), 1)))
    if not rows:
        return ""
    out = ["### Group commit: fsyncs during the durable runs", "",
           "| run | peer | acknowledged | rows written | fsyncs | fsyncs/s | submissions per fsync |",
           "|---|---|---:|---:|---:|---:|---:|"] + rows
    out += ["", "triage: the workers' `store_commits` (one commit, one fsync of SQLite's WAL) and `store_writes` "
            "from `/_triage/status`, before and after the run. Gin + PostgreSQL: `pg_stat_wal.wal_sync` "
            "(fsyncs of the WAL, by backends and the WAL writer) and the table's row count, before and after, "
            "each read once the server has been idle for 11 s (an idle backend publishes its last second of "
            "statistics only after 10 s); triage on PostgreSQL: the same readings of its own database "
            "(the WAL fsyncs are the server's: only one peer runs at a time). n/a: the binary reports no "
            "store counters.%s"
            % (" Smoke run: PostgreSQL's counts were read after 1.1 s, so part of them was not published "
               "yet: approximate." if run.smoke else ""), ""]
    return "\n".join(out)


def burst_label(peer, r):
    if peer == "triagepg":
        return "triage on PostgreSQL, %s nodes" % (r or {}).get("nodes", BURST_PG["nodes"])
    return DURABLE_LABELS[peer]


def burst_table(run):
    rows = []
    for peer in ("triage", "ginpg", "triagepg"):
        r = run.burst.get(peer)
        if not r:
            continue
        label = burst_label(peer, r)
        if "phones" not in r:
            rows.append("| %s | failed: %s |" % (label, r.get("error", "")[:120]) + " |" * 8)
            continue
        errs = r["errors_total"]
        detail = ", ".join("%s %d" % (k, v) for k, v in r["errors"].items() if v)
        if r.get("errno"):
            detail += " (%s)" % ", ".join("%s %d" % kv for kv in r["errno"].items())
        stored = r.get("stored")
        if "error" in r:
            kept = "failed: %s" % r["error"][:100]
        elif stored is None:
            kept = "n/a (no store)"
        else:
            kept = "%s rows, %s keys: %s" % (fmt_num(stored[0]), fmt_num(stored[1]),
                                             "exactly once" if r.get("exactly_once") else "**not** exactly once")
        rows.append("| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |" % (
            label, fmt_num(r["phones"]), fmt_num(r["acknowledged"]),
            "%.2f" % r["all_acknowledged_s"] if r.get("all_acknowledged_s") is not None
            else "not all (%.2f s)" % r["elapsed_s"],
            fmt_num(r["p50_ms"], 1), fmt_num(r["p99_ms"], 1),
            "%d%s" % (errs, " (%s)" % detail if detail else ""), fmt_num(r.get("cpu_us"), 1),
            fmt_mb(r.get("pss")), kept))
    if not rows:
        return ""
    phones, conc = (BURST["smoke_phones"], BURST["smoke_concurrency"]) if run.smoke else \
        (BURST["phones"], BURST["concurrency"])
    out = ["### The 8:00 burst: %s phones, one new connection and one POST /api/epro/submit each, %s in flight"
           % (fmt_num(phones), fmt_num(conc)), "",
           "| peer | phones | acknowledged (2xx) | all acknowledged after s | p50 ms | p99 ms | errors | "
           "CPU µs/submission | PSS MB | stored after a restart |",
           "|---|---:|---:|---:|---:|---:|---|---:|---:|---|"] + rows
    out += ["", "bench/burst.c opens the connections as fast as it can, at most %s at once, each sending one "
            "unique submission (its own patientId and Idempotency-Key) with `Connection: close`; no phone "
            "retries. Latency: from connect() to the response's last byte. PSS: the process trees' "
            "proportional set size at the end of the burst (as in the durable tables). Then the server is "
            "stopped hard "
            "(triage: SIGKILL to every process; PostgreSQL: immediate shutdown, no checkpoint, its WAL "
            "replayed at the next start) and started again on the same data, and the rows are counted "
            "(sqlite3; psql). triage ran on a fresh --data dir; Gin + PostgreSQL's table was emptied "
            "first." % fmt_num(conc)]
    if "triagepg" in run.burst:
        out[-1] += (" triage on PostgreSQL, %d nodes: two triage servers (each its own --data dir and %d "
                    "workers) on one fresh database of the same PostgreSQL server, phone i sent to node i mod 2 "
                    "(no balancer); a submission made on one node and retried with its key on the other got "
                    "the same receipt first; after the burst SIGKILL to every process of both nodes and an "
                    "immediate shutdown of PostgreSQL, then psql counts the burst's rows. CPU and PSS: both "
                    "nodes' trees and PostgreSQL's." % (BURST_PG["nodes"], CPUS))
    out.append("")
    return "\n".join(out)


def slow_table(run):
    """Normal clients' figures with and without slowhttptest's attack, per peer."""
    rows = []
    first = None
    for peer in SLOW["peers"]:
        r = run.slow.get(peer)
        if not r:
            continue
        label = LABELS[peer]
        if "error" in r:
            rows.append("| %s | failed: %s |" % (label, r["error"][:120]) + " |" * 8)
            continue
        first = first or r
        hdr, body, _ = r["timeouts"]
        for cond, name in (("baseline", "no attack (baseline)"), ("attack", "under attack")):
            m = r[cond]
            e = m["errs"]
            sock = "%d" % m["sock_err"]
            if m["sock_err"]:
                sock += " (c %d, r %d, w %d, t %d)" % (e["connect"], e["read"], e["write"], e["timeout"])
            held = ""
            if cond == "attack":
                held = "%s → %s" % (fmt_num(r.get("open_before")), fmt_num(r.get("open_after")))
            rows.append("| %s | %s | %s | %s | %s | %s | %s | %s | %s |" % (
                label, name, fmt_num(m["rps"]), fmt_num(m["p50_ms"], 2), fmt_num(m["p99_ms"], 2),
                fmt_num(m["non2xx"]), sock, held, "%s / %s" % (hdr, body)))
    if not rows:
        return ""
    conns, rate, ramp = (first["attack_conns"], first["rate"], first["ramp"]) if first else ("?", "?", "?")
    out = ["### Slow clients: %s slowloris + %s slow-body connections (slowhttptest) while 100 normal "
           "clients GET /api/v1/protocols/%s" % (fmt_num(conns) if first else "?", fmt_num(conns) if first else "?",
                                                 KNOWN_ID), "",
           "| peer | normal clients | req/s | p50 ms | p99 ms | non-2xx | socket errors | "
           "attack connections open (start → end) | header / body timeout |",
           "|---|---|---:|---:|---:|---:|---|---:|---|"] + rows
    if first:
        out += ["", "Per peer: wrk (%d connections, %d s, as in GET 100) alone first (the baseline), then "
                "two slowhttptest processes started together, `-H` (slowloris: a GET whose head never "
                "ends, one more header line every %d s, to %s) and `-B` (slow body: a POST to %s with "
                "`Content-Length: %d`, a few body bytes every %d s), %s connections each, opened at %s "
                "a second each; after %d s of ramp-up wrk runs again for %d s while both go on, then "
                "both are stopped. Attack connections open: ESTABLISHED client connections to the "
                "server's port (`/proc/net/tcp`) beyond those open before the attack, when wrk starts "
                "and when it ends. Timeouts: %s."
                % (first["normal_conns"], run.duration, first["interval"], SLOW["header_path"],
                   SLOW["body_path"], SLOW["body_len"], first["interval"], fmt_num(conns), fmt_num(rate),
                   ramp, run.duration,
                   "; ".join("%s: %s" % (LABELS[p], run.slow[p]["timeouts"][2]) for p in SLOW["peers"]
                             if p in run.slow and "error" not in run.slow[p]))]
        cmds = next((run.slow[p].get("commands") for p in SLOW["peers"] if run.slow.get(p, {}).get("commands")),
                    None)
        if cmds:
            out += ["", "The attack (PORT: the peer's):", ""] + ["    " + c for c in cmds]
    out.append("")
    return "\n".join(out)


def targets(results, malloc, burst=None, store=True, slow=None):
    """[(description, state, detail)] with state held/missed/not measured."""
    out = []
    burst = burst or {}
    slow = slow or {}

    def get(peer, key, field):
        r = results.get((peer, key))
        if not r or "error" in r:
            return None
        return r.get(field)

    def check(desc, value, limit, op, unit="×"):
        if value is None:
            out.append((desc, "not measured", ""))
            return
        ok = value <= limit if op == "<=" else value >= limit
        shown = "%.2f" % value
        if float(shown) == limit and value != limit:
            shown = "%.3f" % value        # 0.948 is not 0.95: show the digit that decides
        out.append((desc, "held" if ok else "missed",
                    "%s%s (target %s %.2f%s)" % (shown, unit, "≤" if op == "<=" else "≥", limit, unit)))

    tc = get("triage", "get100", "cpu_us")
    check("GET 100: triage CPU/request ≤ 0.8× nginx + Lua's", ratio(tc, get("nginx", "get100", "cpu_us")), 0.8, "<=")
    check("GET 100: triage CPU/request ≤ 1.3× ceiling's", ratio(tc, get("ceiling", "get100", "cpu_us")), 1.3, "<=")
    tr = get("triage", "get100", "rps")
    check("GET 100: triage req/s ≥ 1.2× nginx + Lua's", ratio(tr, get("nginx", "get100", "rps")), 1.2, ">=")
    check("GET 100: triage req/s ≥ 2× Gin's", ratio(tr, get("gin", "get100", "rps")), 2.0, ">=")
    check("POST 100: triage CPU/request ≤ 0.8× nginx + Lua's",
          ratio(get("triage", "post100", "cpu_us"), get("nginx", "post100", "cpu_us")), 0.8, "<=")
    for key, name in (("get5000", "GET 5000"), ("post5000", "POST 5000")):
        se = get("triage", key, "sock_err")
        if se is None:
            out.append(("%s: triage has no socket errors" % name, "not measured", ""))
        else:
            out.append(("%s: triage has no socket errors" % name, "held" if se == 0 else "missed",
                        "%d socket errors" % se))
        check("%s: triage p99 ≤ nginx + Lua's" % name,
              ratio(get("triage", key, "p99_ms"), get("nginx", key, "p99_ms")), 1.0, "<=")
        check("%s: triage peak memory ≤ 0.5× nginx + Lua's" % name,
              ratio(get("triage", key, "mem"), get("nginx", key, "mem")), 0.5, "<=")
        check("%s: triage peak memory ≤ 0.2× Gin's" % name,
              ratio(get("triage", key, "mem"), get("gin", key, "mem")), 0.2, "<=")
    sr = get("triage", "sleep1000", "rps")
    check("sleep 1000: triage req/s ≥ 95% of the ideal 20,000", ratio(sr, 20000.0), 0.95, ">=")
    durable = [
        ("ePRO unique 100: durable triage req/s ≥ 0.8× triage in-memory's",
         ratio(get("triage", "epro100", "rps"), get("triage_mem", "epro100", "rps")), 0.8, ">="),
        ("ePRO unique 5000: durable triage req/s ≥ 0.8× triage in-memory's",
         ratio(get("triage", "epro5000", "rps"), get("triage_mem", "epro5000", "rps")), 0.8, ">="),
        ("ePRO unique 100: durable triage req/s ≥ 5× Gin + PostgreSQL's",
         ratio(get("triage", "epro100", "rps"), get("ginpg", "epro100", "rps")), 5.0, ">="),
        ("ePRO unique 100: durable triage CPU/request ≤ 0.2× Gin + PostgreSQL's",
         ratio(get("triage", "epro100", "cpu_us"), get("ginpg", "epro100", "cpu_us")), 0.2, "<="),
    ]
    for desc, value, limit, op in durable:
        if not store:
            out.append((desc, "not measured", "this triage binary has no durable store"))
        else:
            check(desc, value, limit, op)
    desc = "burst: triage acknowledges every phone, each stored exactly once after a restart"
    b = burst.get("triage")
    if not store:
        out.append((desc, "not measured", "this triage binary has no durable store"))
    elif not b or "error" in b or b.get("stored") is None:
        out.append((desc, "not measured", (b or {}).get("error", "")))
    else:
        out.append((desc, "held" if b["exactly_once"] else "missed",
                    "%d of %d acknowledged%s; after a restart %d rows, %d distinct keys"
                    % (b["acknowledged"], b["phones"],
                       " in %.2f s" % b["all_acknowledged_s"] if b.get("all_acknowledged_s") is not None else "",
                       b["stored"][0], b["stored"][1])))
    def slow_p99(peer):
        r = slow.get(peer)
        if not r or "error" in r:
            return None
        return r["attack"].get("p99_ms")
    check("slow clients: triage's normal-client p99 under attack ≤ nginx + Lua's",
          ratio(slow_p99("triage"), slow_p99("nginx")), 1.0, "<=")
    if malloc is None or "error" in malloc:
        out.append(("GET: zero malloc calls per request in triage's process tree", "not measured",
                    (malloc or {}).get("error", "")))
    else:
        held = malloc["per_request"] < 0.001 and malloc["ok"] == malloc["requests"]
        out.append(("GET: zero malloc calls per request in triage's process tree",
                    "held" if held else "missed",
                    "%.4f allocation calls per request (%d over %d requests, %d processes)"
                    % (malloc["per_request"], malloc["allocs"], malloc["requests"], malloc["processes"])))
    return out


def pg_targets(results, burst, pg_store=True):
    """The targets of triage on PostgreSQL against Gin + PostgreSQL (issue 12), as targets() gives them."""
    out = []

    def get(peer, key, field):
        r = results.get((peer, key))
        if not r or "error" in r:
            return None
        return r.get(field)

    for key, name in (("epro100", "ePRO unique 100"), ("epro5000", "ePRO unique 5000")):
        for desc, value, limit, op in (
                ("%s: triage on PostgreSQL req/s ≥ 3× Gin + PostgreSQL's" % name,
                 ratio(get("triagepg", key, "rps"), get("ginpg", key, "rps")), 3.0, ">="),
                ("%s: triage on PostgreSQL CPU/request ≤ 0.3× Gin + PostgreSQL's" % name,
                 ratio(get("triagepg", key, "cpu_us"), get("ginpg", key, "cpu_us")), 0.3, "<=")):
            if not pg_store:
                out.append((desc, "not measured", "this triage binary has no PostgreSQL backend"))
            elif value is None:
                out.append((desc, "not measured", ""))
            else:
                ok = value <= limit if op == "<=" else value >= limit
                out.append((desc, "held" if ok else "missed", "%.2f× (target %s %.2f×)"
                            % (value, "≤" if op == "<=" else "≥", limit)))
    desc = "%s: triage acknowledges every phone, each stored exactly once after a crash" % BURST_PG["short"]
    b = burst.get("triagepg")
    if not pg_store:
        out.append((desc, "not measured", "this triage binary has no PostgreSQL backend"))
    elif not b or "error" in b or b.get("stored") is None:
        out.append((desc, "not measured", (b or {}).get("error", "")))
    else:
        out.append((desc, "held" if b["exactly_once"] else "missed",
                    "%d of %d acknowledged%s; after the crash %d rows, %d distinct keys"
                    % (b["acknowledged"], b["phones"],
                       " in %.2f s" % b["all_acknowledged_s"] if b.get("all_acknowledged_s") is not None else "",
                       b["stored"][0], b["stored"][1])))
    return out


def run_targets(run):
    """The targets a run is checked against: none for a smoke run or one without triage."""
    # a smoke run's 1 s figures say nothing about speed: no targets then
    if run.smoke or not ("triage" in run.peers or "triagepg" in run.peers):
        return []
    tg = []
    if "triage" in run.peers:
        tg += targets(run.results, run.malloc, run.burst, run.store is not False, run.slow)
    if "triagepg" in run.peers and "ginpg" in run.peers:
        tg += pg_targets(run.results, run.burst, run.pg_store is not False)
    # only the targets of the workloads this run was asked for (--workloads)
    return [t for t in tg if TARGET_WORKLOAD.get(t[0].split(":")[0], "") in run.workloads]


# a target's description starts with its workload's short name
TARGET_WORKLOAD = dict([(w["short"], w["key"]) for w in WORKLOADS] + [("burst", "burst"), ("GET", "malloc"),
                                                                      (SLOW["short"], SLOW["key"]),
                                                                      (BURST_PG["short"], BURST_PG["key"])])


def machine_info():
    model = "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    mem = ""
    try:
        with open("/proc/meminfo") as f:
            kb = int(f.readline().split()[1])
            mem = "%.1f GiB" % (kb / 1048576.0)
    except (OSError, ValueError, IndexError):
        pass
    debian = ""
    try:
        with open("/etc/debian_version") as f:
            debian = "Debian " + f.read().strip()
    except OSError:
        pass

    def sysctl(name):
        try:
            with open("/proc/sys/" + name.replace(".", "/")) as f:
                return f.read().strip().replace("\t", " ")
        except OSError:
            return "?"
    return [
        ("CPU", model),
        ("cores", str(CPUS)),
        ("memory", mem),
        ("kernel", platform.release()),
        ("system", debian),
        ("net.core.somaxconn", sysctl("net.core.somaxconn")),
        ("temp dir (the databases)", "%s: %s" % (tempfile.gettempdir(), filesystem(tempfile.gettempdir()))),
        ("open files limit", str(resource.getrlimit(resource.RLIMIT_NOFILE)[0])),
    ]


def filesystem(path):
    """"ext4 on /dev/vda": where the durable peers' fsyncs go (a tmpfs would make them free)."""
    out = sh(["findmnt", "-n", "-o", "FSTYPE,SOURCE", "-T", path])
    parts = out.split()
    return "%s on %s" % (parts[0], parts[1]) if len(parts) == 2 else (out or "?")


def markdown(run, tg, date):
    """The whole Markdown report of a run, with the targets tg."""
    versions = dict(run.versions)
    versions["wrk"] = sh(["wrk", "-v"], any_status=True).split(" Copyright")[0]
    lines = ["# triage benchmarks, %s" % date, ""]
    lines.append("%s run: %g s per workload%s after %g s of warm-up per peer; wrk -t2, keep-alive, "
                 "per-request timeout %g s; servers and wrk share the machine's %d cores. "
                 "Took %.0f s." % ("Smoke" if run.smoke else "Full", run.duration,
                                   "" if run.repeat == 1 else
                                   " (%d runs each; the run with the median req/s is shown)" % run.repeat,
                                   run.warmup, run.timeout, CPUS, time.time() - run.started_at))
    lines.append("")
    lines.append("Command: `%s`" % " ".join(["bench/run"] + sys.argv[1:]))
    lines.append("")
    lines.append("## Machine")
    lines.append("")
    for k, v in machine_info():
        lines.append("- %s: %s" % (k, v))
    lines.append("")
    lines.append("## Versions")
    lines.append("")
    for p in run.rows() + ["wrk"]:
        if p in versions:
            lines.append("- %s: %s" % (LABELS.get(p, p), versions[p]))
    lines.append("")
    lines.append("## Results")
    lines.append("")
    lines.append("CPU µs/req: user + system CPU time of the server's whole process tree during the run, "
                 "divided by the requests completed. Peak RSS: the largest sum of RSS over the tree, "
                 "sampled every 100 ms. triage ×: triage's figure divided by that peer's "
                 "(req/s: above 1 is better for triage; CPU, p99 and RSS: below 1 is better).")
    lines.append("")
    for wl in WORKLOADS:
        t = table(wl, run.results, [p for p in run.rows() if p != "triagepg"])
        if wl.get("durable") and ("triagepg", wl["key"]) in run.results:
            if not any((p, wl["key"]) in run.results for p in ("triage", "triage_mem")):
                t = ""     # Gin + PostgreSQL alone: its row is in the table below
            pg = table(wl, run.results, ["triagepg", "ginpg"], subject="triagepg",
                       title="%s: POST /api/epro/submit, every submission unique, %s connections"
                       % (PG_TITLE, fmt_num(wl["smoke_conns"] if run.smoke else wl["conns"])))
            t = (t + "\n" if t else "") + pg
        if t and wl["script"] == "post" and run.store and ("triage", wl["key"]) in run.results:
            t += ("\ntriage's row is the sample app's POST /api/epro/submit, now durable: every request is a "
                  "new submission committed to SQLite before its 200 (these bodies carry no idempotency key). "
                  "The other peers keep the report in memory. triage's in-memory figure is in the durable "
                  "tables below.\n")
        if t:
            lines.append(t)
    for t in (group_commit_table(run), burst_table(run), slow_table(run)):
        if t:
            lines.append(t)
    malloc = run.malloc
    if malloc is not None:
        lines.append("### Allocation calls per GET request in triage (malloc_count.so)")
        lines.append("")
        if "error" in malloc:
            lines.append("Not measured: %s" % malloc["error"])
        else:
            lines.append("%d GET /api/v1/protocols/%s requests after warm-up (%d answered 200): "
                         "%d malloc/calloc/realloc/aligned calls, %d free calls, across %d processes: "
                         "**%.4f allocation calls per request**."
                         % (malloc["requests"], KNOWN_ID, malloc["ok"], malloc["allocs"], malloc["frees"],
                            malloc["processes"], malloc["per_request"]))
        lines.append("")
    if tg:
        lines.append("## Targets")
        lines.append("")
        lines.append("| target | result | measured |")
        lines.append("|---|---|---|")
        for desc, state, detail in tg:
            lines.append("| %s | %s | %s |" % (desc, state, detail))
        lines.append("")
    for n in run.notes:
        lines.append(n)
        lines.append("")
    if run.failures:
        lines.append("## Problems")
        lines.append("")
        for f in run.failures:
            lines.append("- " + f.replace("\n", " ")[:400])
        lines.append("")
    if "flask" in run.peers:
        lines.append("Flask runs under gunicorn's sync workers (2 × CPUs + 1): one request at a time per "
                     "worker, no keep-alive, so the sleep route and thousands of connections overwhelm it; "
                     "that is the expected result, not a harness fault.")
        lines.append("")
    if "ginpg" in run.peers:
        lines.append("Gin + PostgreSQL (bench/peers/ginpg) runs only the durable workloads: each new submission is "
                     "one transaction through database/sql and lib/pq (prepared statements, a pool of 100 "
                     "connections) into a throwaway PostgreSQL server on a unix socket, synchronous_commit=on, "
                     "so its 200 comes once the commit's WAL is on disk: the submission's INSERT and an audit "
                     "entry chained by SHA-256 to the previous one (the chain's head row read with SELECT ... "
                     "FOR UPDATE, held until the commit, so submissions take turns at it), as triage writes "
                     "one per submission. Per submission, triage verifies the bearer token, validates the "
                     "body and commits the submission with its audit entry (group commit); ginpg checks no "
                     "token and commits the submission with its audit entry (bench/NOTES.md).")
        lines.append("")
    if "triagepg" in run.peers:
        lines.append("triage on PostgreSQL (`triagepg`) is triage on the sample app with `--store` pointing at a "
                     "fresh database of the same throwaway PostgreSQL server and settings as Gin + PostgreSQL "
                     "(unix socket, synchronous_commit=on), `--store-connections` at its default, %d workers; "
                     "the server's processes count in its CPU and memory as in Gin + PostgreSQL's. Every "
                     "durable run on either is followed by a count of the rows and distinct keys the table "
                     "gained: at least one row per 2xx and no key twice, or the run fails." % CPUS)
        lines.append("")
    if "ceiling" in run.peers:
        lines.append("The ceiling parses nothing and answers every request with the same fixed 200 response "
                     "(the JSON of one protocol); it is not run on the sleep route.")
        lines.append("")
    return "\n".join(lines)


def gnuplot_png(path, results, peers, workloads):
    if not shutil.which("gnuplot"):
        return "gnuplot not found"
    peers = [p for p in peers if any((p, w["key"]) in results for w in workloads)]
    if not peers:
        return "nothing to chart"
    d = tempfile.mkdtemp(prefix="bench-plot-")
    try:
        wls = [w for w in workloads if any((p, w["key"]) in results for p in peers)]
        for field, fname in (("rps", "rps.dat"), ("cpu_us", "cpu.dat")):
            with open(os.path.join(d, fname), "w") as f:
                f.write("workload " + " ".join('"%s"' % LABELS[p] for p in peers) + "\n")
                for w in wls:
                    vals = []
                    for p in peers:
                        r = results.get((p, w["key"]))
                        v = r.get(field) if r and "error" not in r else None
                        vals.append("%.3f" % v if v else "-")
                    f.write('"%s" %s\n' % (w["short"], " ".join(vals)))
        n = len(peers)
        script = """
set terminal pngcairo size 1400,1000 font "sans,11"
set output "{out}"
set datafile missing "-"
set style data histograms
set style histogram clustered gap 1
set style fill solid 0.85 border -1
set boxwidth 0.9
set key outside right top vertical
set grid ytics
set logscale y
set format y "%.0s%c"
set multiplot layout 2,1 title "triage and its peers: {title}"
set title "requests per second (log scale, higher is better)"
plot for [i=2:{last}] "{d}/rps.dat" using i:xtic(1) title columnheader(i)
set title "server CPU time per request, µs (log scale, lower is better)"
set format y "%g"
set yrange [1:*]
plot for [i=2:{last}] "{d}/cpu.dat" using i:xtic(1) title columnheader(i)
unset multiplot
""".format(out=path, d=d, last=n + 1, title=datetime.date.today().isoformat())
        with open(os.path.join(d, "plot.gp"), "w") as f:
            f.write(script)
        r = subprocess.run(["gnuplot", os.path.join(d, "plot.gp")], stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, text=True, timeout=60)
        if r.returncode != 0:
            return "gnuplot failed: " + r.stdout[-500:]
        return None
    finally:
        shutil.rmtree(d, ignore_errors=True)


def write(report, out, run, readme):
    """Writes the report to out and the chart beside it; with readme ("full" or "postgres", see
    update_readme), copies both into README.md.
    A chart that could not be drawn is one of the run's failures."""
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    png = os.path.splitext(out)[0] + ".png"
    if not run.results:
        # only the burst, the slow clients or the malloc count: none of them is charted
        err = "nothing to chart"
        log("chart: none (no workload of this run is charted)")
    else:
        err = gnuplot_png(png, run.results, run.rows(), WORKLOADS)
    if err:
        if run.results:
            log("chart: " + err)
            run.failures.append("chart: " + err)
    else:
        report = report.replace("## Results\n", "## Results\n\n![requests/s and CPU per request](%s)\n"
                                % os.path.basename(png), 1)
    with open(out, "w") as f:
        f.write(report)
    log("wrote %s%s" % (out, "" if err else " and " + png))
    if readme:
        problem = update_readme(report, out, None if err else png, readme)
        log("README.md: " + (problem or "updated with this run"))


def update_readme(report, out, png, section="full"):
    """Put a run's chart, targets and tables into the top-level README, between its markers: a full run
    (section "full") between the bench markers, with its triage-on-PostgreSQL tables between the
    bench-postgres markers; a `bench/run --postgres` run (section "postgres") between the latter only.
    Returns None, or why it could not."""
    readme = os.path.join(ROOT, "README.md")
    with open(readme) as f:
        text = f.read()
    rel_out = os.path.relpath(out, ROOT)
    tables = re.findall(r"\n### ([^\n]*)\n(.*?)(?=\n### |\n## |\Z)", report, re.S)
    targets = re.search(r"\n## Targets\n(.*?)(?=\n## |\Z)", report, re.S)
    pg_tables = [t for t in tables if t[0].startswith(PG_TITLE)]
    chart = ["![requests/s and CPU per request](%s)" % os.path.relpath(png, ROOT), ""] if png else []
    if section == "full":
        parts = ["The latest full run of `make bench` ([%s](%s), which also lists the machine and every "
                 "version), on this 2-core machine shared with wrk:" % (rel_out, rel_out), ""] + chart
        for title, body in tables:
            if (title, body) not in pg_tables:
                parts += ["#### " + title, "", body.strip(), ""]
        if targets:
            parts += ["#### Targets", "", targets.group(1).strip(), ""]
        text, problem = replace_section(text, README_BEGIN, README_END, parts)
        if problem:
            return problem
        if not pg_tables:
            return write_readme(readme, text)
        parts = ["From the latest full run of `make bench` ([%s](%s)):" % (rel_out, rel_out), ""]
        for title, body in pg_tables:
            parts += ["#### " + title, "", body.strip(), ""]
    else:
        parts = ["The latest run of `bench/run --postgres` ([%s](%s), which also lists the machine and every "
                 "version), on this 2-core machine shared with wrk:" % (rel_out, rel_out), ""] + chart
        for title, body in tables:
            parts += ["#### " + title, "", body.strip(), ""]
        if targets:
            parts += ["#### Targets", "", targets.group(1).strip(), ""]
    text, problem = replace_section(text, README_PG_BEGIN, README_PG_END, parts)
    return problem or write_readme(readme, text)


def replace_section(text, begin, end, parts):
    """(text with parts between the markers begin and end, None), or (text, why not)."""
    if begin not in text or end not in text:
        return text, "README.md has no %s ... %s markers" % (begin, end)
    head = text[:text.index(begin)]
    tail = text[text.index(end) + len(end):]
    return head + "\n".join([begin] + parts + [end]) + tail, None


def write_readme(path, text):
    with open(path, "w") as f:
        f.write(text)
    return None
