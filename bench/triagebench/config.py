"""Paths, the peers' names and labels, and the workloads."""
import os
import sys

BENCH = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ROOT = os.path.dirname(BENCH)
BUILD = os.path.join(BENCH, ".build")
PEERS_DIR = os.path.join(BENCH, "peers")
FIXTURE = os.path.join(ROOT, "data", "protocols.json")
KNOWN_ID = "NCT04356798"
HOST = "127.0.0.1"
TOKEN = "demo-token"
CPUS = os.cpu_count() or 1

BUSY_CORES = 0.3   # other load above this during a run is reported
ALL_PEERS = ["triage", "gin", "fasthttp", "flask", "nginx", "ceiling"]
LABELS = {
    "triage": "triage",
    "gin": "Gin",
    "fasthttp": "fasthttp",
    "flask": "Flask (gunicorn)",
    "nginx": "nginx + Lua",
    "ceiling": "ceiling (epoll)",
}

# key, title, method/script, path, connections (full, smoke), who runs it
WORKLOADS = [
    dict(key="get100", short="GET 100", title="GET /api/v1/protocols/NCT04356798, 100 connections",
         script="get", path="/api/v1/protocols/" + KNOWN_ID, conns=100, smoke_conns=8),
    dict(key="post100", short="POST 100", title="POST /api/epro/submit, 100 connections",
         script="post", path="/api/epro/submit", conns=100, smoke_conns=8),
    dict(key="get5000", short="GET 5000", title="GET /api/v1/protocols/NCT04356798, 5,000 connections",
         script="get", path="/api/v1/protocols/" + KNOWN_ID, conns=5000, smoke_conns=64),
    dict(key="post5000", short="POST 5000", title="POST /api/epro/submit, 5,000 connections",
         script="post", path="/api/epro/submit", conns=5000, smoke_conns=64),
    dict(key="sleep1000", short="sleep 1000", title="GET /api/v1/sleep (50 ms), 1,000 connections",
         script="get", path="/api/v1/sleep", conns=1000, smoke_conns=16, skip=("ceiling",)),
    dict(key="secure100", short="secure 100",
         title="GET /api/v1/secure/protocols/NCT04356798 (3 middleware layers), 100 connections",
         script="secure", path="/api/v1/secure/protocols/" + KNOWN_ID, conns=100, smoke_conns=8,
         only=("triage",)),
]


def log(msg):
    print(msg, file=sys.stderr, flush=True)
