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
CPUS = os.cpu_count() or 1

BENCH_APP = os.path.join(BENCH, "app")   # triage's in-memory ePRO intake, for the in-memory figure

BUSY_CORES = 0.3   # other load above this during a run is reported
ALL_PEERS = ["triage", "gin", "fasthttp", "flask", "nginx", "ceiling", "ginpg", "triagepg"]
LABELS = {
    "triage": "triage",
    "gin": "Gin",
    "fasthttp": "fasthttp",
    "flask": "Flask (gunicorn)",
    "nginx": "nginx + Lua",
    "ceiling": "ceiling (epoll)",
    "ginpg": "Gin + PostgreSQL",
    "triagepg": "triage on PostgreSQL",
    # not a --peers name: run with triage, on bench/app, for the durable workloads' in-memory figure
    "triage_mem": "triage in-memory (bench/app)",
}
# the peers that run only the durable workloads (their own routes, the burst); the others run only the
# in-memory ones
DURABLE_ONLY = ("ginpg", "triage_mem", "triagepg")
DURABLE_PEERS = ("triage", "triage_mem", "ginpg", "triagepg")
# the peers whose submissions go to the benchmark's throwaway PostgreSQL server, each in a fresh database
POSTGRES_PEERS = ("ginpg", "triagepg")

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
    # every request's body and Idempotency-Key unique (patientId and submissionId from the wrk
    # thread and a counter): triage on the sample app (its durable route, SQLite), triage on bench/app
    # (in memory), Gin + PostgreSQL and triage on PostgreSQL (the sample app with --store)
    dict(key="epro100", short="ePRO unique 100",
         title="POST /api/epro/submit, every submission unique (durable), 100 connections",
         script="epro_unique", path="/api/epro/submit", conns=100, smoke_conns=8,
         only=DURABLE_PEERS, durable=True),
    dict(key="epro5000", short="ePRO unique 5000",
         title="POST /api/epro/submit, every submission unique (durable), 5,000 connections",
         script="epro_unique", path="/api/epro/submit", conns=5000, smoke_conns=64,
         only=DURABLE_PEERS, durable=True),
]
DURABLE_LABELS = {
    "triage": "triage, durable (sample app, SQLite)",
    "triage_mem": "triage, in memory (bench/app)",
    "ginpg": "Gin + PostgreSQL",
    "triagepg": "triage on PostgreSQL (sample app, --store)",
}

# The 8:00 burst: phones each opening a new connection for one POST; bench/burst.c
BURST = dict(key="burst", phones=20000, smoke_phones=500, concurrency=1000, smoke_concurrency=100,
             timeout=30, path="/api/epro/submit", peers=("triage", "ginpg"))
# The same burst on two triage nodes (two masters, each its own --data) sharing one PostgreSQL database,
# the phones spread over both nodes' ports (bench/burst.c takes a list of ports)
BURST_PG = dict(key="burstpg", short="burst, 2 nodes on PostgreSQL", nodes=2)

# Slow clients: slowhttptest's slowloris (-H) and slow-body (-B) attacks, 1,000 connections each, held
# open against a peer while wrk's 100 normal clients GET a protocol (as in get100); the same wrk run
# without the attack, just before, is the baseline. bench/triagebench/slow.py
SLOW = dict(key="slow", short="slow clients", attack_conns=1000, smoke_attack_conns=50,
            rate=500, smoke_rate=50,          # new attack connections per second, per mode
            ramp=5, smoke_ramp=2,             # seconds between starting the attack and measuring
            interval=5,                       # seconds between an attacker's follow-up bytes (-i)
            header_path="/api/v1/protocols/" + KNOWN_ID,     # slowloris: GET, the head never ends
            body_path="/api/epro/submit",                     # slow body: POST, Content-Length 4096
            body_len=4096, peers=("triage", "nginx"))

# what --workloads selects from: the workloads' keys, the burst, the slow clients and the malloc count
ALL_WORKLOADS = [w["key"] for w in WORKLOADS] + ["burst", "burstpg", "slow", "malloc"]
WORKLOAD_GROUPS = {
    "durable": ["epro100", "epro5000", "burst", "burstpg"],
    # bench/run --postgres: triage on PostgreSQL against Gin + PostgreSQL
    "postgres": ["epro100", "epro5000", "burstpg"],
    "classic": [w["key"] for w in WORKLOADS if not w.get("durable")] + ["slow", "malloc"],
}


def runs_on(wl, peer):
    """Whether a peer runs a workload."""
    if "only" in wl:
        return peer in wl["only"]
    return peer not in DURABLE_ONLY and peer not in wl.get("skip", ())


def log(msg):
    print(msg, file=sys.stderr, flush=True)
