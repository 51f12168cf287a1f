"""Allocation calls per GET request in triage's process tree, counted by malloc_count.so (see
bench/malloc_count.c and bench/README.md)."""
import http.client
import os
import struct
import time

from .config import BENCH, BUILD, HOST, KNOWN_ID, WORKLOADS
from .peers import Triage
from .toolchain import build_c
from .wrk import run_wrk

MC_FMT = "<8Q"
MC_SIZE = struct.calcsize(MC_FMT)


def read_malloc_counts(d):
    tot = {"alloc": 0, "free": 0, "files": 0}
    for name in os.listdir(d):
        try:
            with open(os.path.join(d, name), "rb") as f:
                raw = f.read(MC_SIZE)
        except OSError:
            continue
        if len(raw) < MC_SIZE:
            continue
        magic, pid, m, c, r, fr, al, _bytes = struct.unpack(MC_FMT, raw)
        if magic != 0x31544e434c4c414d:
            continue
        tot["alloc"] += m + c + r + al
        tot["free"] += fr
        tot["files"] += 1
    return tot


def open_connections(port, n):
    return [http.client.HTTPConnection(HOST, port, timeout=10) for _ in range(n)]


def round_robin_gets(cs, path, n):
    """n GET requests round-robin over the keep-alive connections cs; returns how many answered 200."""
    ok = 0
    for i in range(n):
        c = cs[i % len(cs)]
        c.request("GET", path)
        r = c.getresponse()
        r.read()
        ok += r.status == 200
    return ok


def keepalive_gets(port, path, n, conns=8):
    """n GET requests over `conns` keep-alive connections; returns how many answered 200."""
    cs = open_connections(port, conns)
    try:
        return round_robin_gets(cs, path, n)
    finally:
        for c in cs:
            c.close()


def malloc_test(workdir, smoke, scripts):
    so = os.path.join(BUILD, "malloc_count.so")
    build_c(os.path.join(BENCH, "malloc_count.c"), so, shared=True)
    d = os.path.join(workdir, "malloc-count")
    os.makedirs(d, exist_ok=True)
    peer = Triage("triage", os.path.join(workdir, "malloc"))
    peer.build()
    path = "/api/v1/protocols/" + KNOWN_ID
    n = 2000 if smoke else 20000
    peer.start({"LD_PRELOAD": so, "MALLOC_COUNT_DIR": d})
    try:
        # warm-up: connections, pools, JIT traces
        run_wrk(peer.port, WORKLOADS[0], 16, 1 if smoke else 3, scripts, 5)
        keepalive_gets(peer.port, path, 64)
        time.sleep(0.3)
        cs = open_connections(peer.port, 8)
        try:
            round_robin_gets(cs, path, len(cs))     # open the connections before counting
            time.sleep(0.2)
            before = read_malloc_counts(d)
            ok = round_robin_gets(cs, path, n)
            after = read_malloc_counts(d)
        finally:
            for c in cs:
                c.close()
    finally:
        peer.stop()
    if before["files"] == 0 or before["alloc"] == 0:
        return {"error": "no counts: the preload did not take (static binary?)"}
    allocs = after["alloc"] - before["alloc"]
    return {"requests": n, "ok": ok, "allocs": allocs, "frees": after["free"] - before["free"],
            "per_request": allocs / n, "processes": after["files"]}
