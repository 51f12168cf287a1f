"""The servers compared: how each is built, started, stopped and described."""
import itertools
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time

from . import auth, postgres, processes
from .config import BENCH_APP, BUILD, CPUS, FIXTURE, HOST, KNOWN_ID, LABELS, PEERS_DIR, ROOT, log
from .correctness import http_request
from .sampling import tree
from .toolchain import build_c, build_go, dpkg_version, go_version, sh


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def lua_cpath():
    multiarch = ""
    try:
        multiarch = subprocess.run(["gcc", "-print-multiarch"], stdout=subprocess.PIPE,
                                   text=True).stdout.strip()
    except OSError:
        pass
    paths = []
    if multiarch:
        paths.append("/usr/lib/%s/lua/5.1/?.so" % multiarch)
    paths += ["/usr/lib/lua/5.1/?.so", "/usr/local/lib/lua/5.1/?.so"]
    return ";".join(paths)


def nginx_modules():
    """load_module lines for Debian's http-lua module (and the NDK it needs)."""
    wanted = []
    for conf in ("mod-http-ndk.conf", "mod-http-lua.conf"):
        path = os.path.join("/usr/share/nginx/modules-available", conf)
        if os.path.exists(path):
            with open(path) as f:
                for m in re.findall(r"load_module\s+([^;\s]+)\s*;", f.read()):
                    wanted.append(os.path.basename(m))
    if not wanted:
        wanted = ["ndk_http_module.so", "ngx_http_lua_module.so"]
    lines = []
    for so in wanted:
        for d in ("/usr/share/nginx/modules", "/usr/lib/nginx/modules"):
            p = os.path.join(d, so)
            if os.path.exists(p):
                lines.append("load_module %s;" % p)
                break
        else:
            raise RuntimeError("nginx module %s not found (bench/deps.sh installs libnginx-mod-http-lua)" % so)
    return "\n".join(lines)


class Peer:
    def __init__(self, name, workdir):
        self.name = name
        self.label = LABELS[name]
        self.workdir = os.path.join(workdir, name)
        os.makedirs(self.workdir, exist_ok=True)
        self.proc = None
        self.port = None
        self.logfile = os.path.join(self.workdir, "server.log")
        self.error = None

    durable = False    # answers POST /api/epro/submit only once the submission is on disk

    def roots(self):
        """The pids whose process trees are this peer's (CPU time, memory)."""
        return [self.proc.pid]

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def ready(self):
        """True once the server answers as it should; raises OSError while it cannot be reached."""
        st, _, _ = http_request(self.port, "GET", "/api/v1/protocols/" + KNOWN_ID, timeout=2)
        return st == 200, "status %s" % st

    def store_counters(self):
        """{"commits", "writes"[, "fsyncs"]} of the peer's durable store, or None when it has none."""
        return None

    def loaded(self):
        """Called after load was sent (warm-up, a run): store counters read earlier are stale."""

    # -- override
    def build(self):
        pass

    def command(self, port):
        raise NotImplementedError

    def env(self):
        return dict(os.environ, PROTOCOLS=FIXTURE)

    # --
    def start(self, extra_env=None):
        self.port = free_port()
        cmd = self.command(self.port)
        env = self.env()
        env["PORT"] = str(self.port)
        if extra_env:
            env.update(extra_env)
        out = open(self.logfile, "ab")
        self.proc = subprocess.Popen(cmd, stdout=out, stderr=out, stdin=subprocess.DEVNULL,
                                     env=env, cwd=self.workdir, start_new_session=True)
        out.close()
        processes.started.append(self.proc)
        deadline = time.time() + 30
        last = None
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("%s exited with %s at start:\n%s"
                                   % (self.name, self.proc.returncode, self.log_tail()))
            try:
                ok, last = self.ready()
                if ok:
                    return
            except OSError as e:
                last = str(e)
            time.sleep(0.1)
        raise RuntimeError("%s did not answer within 30 s (%s):\n%s" % (self.name, last, self.log_tail()))

    def stop(self):
        if self.proc:
            processes.kill_tree(self.proc)
            if self.proc in processes.started:
                processes.started.remove(self.proc)
            self.proc = None

    def destroy(self):
        """Stops the server and whatever was started for it (GinPG: its PostgreSQL)."""
        self.stop()

    def log_tail(self, n=30):
        try:
            with open(self.logfile, errors="replace") as f:
                return "".join(f.readlines()[-n:])
        except OSError:
            return ""

    def version(self):
        return ""


def traversable(path):
    """Started as root, triage's workers run as nobody: the temporary directories above a --data
    directory (made 0700 by mkdtemp) must let them through."""
    top = tempfile.gettempdir()
    d = os.path.abspath(path)
    while d.startswith(top + os.sep):
        st = os.stat(d)
        if st.st_uid == os.geteuid():
            os.chmod(d, st.st_mode | 0o711)
        d = os.path.dirname(d)


def nobody_can_read(path):
    """Whether the user nobody can read path (the workers' user when triage starts as root)."""
    try:
        return subprocess.run(["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", "test", "-r", path],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).returncode == 0
    except OSError:
        return False


class Triage(Peer):
    binary = os.environ.get("TRIAGE_BIN", os.path.join(ROOT, "build", "triage"))
    app = ROOT
    _help = {}  # binary -> its --help text

    def __init__(self, name, workdir):
        super().__init__(name, workdir)
        self.data_dir = None
        self.keep_data = False

    def build(self):
        if not os.access(self.binary, os.X_OK):
            raise RuntimeError("%s not found: build triage first (make)" % os.path.relpath(self.binary, ROOT))

    @classmethod
    def has_store(cls):
        """Whether this binary has the durable store: it takes --data DIR."""
        return cls.takes("--data")

    @classmethod
    def has_tokens(cls):
        """Whether this binary verifies bearer tokens: it takes --token-keys FILE."""
        return cls.takes("--token-keys")

    @classmethod
    def takes(cls, flag):
        """Whether this binary's --help names flag (asked once per binary)."""
        if cls.binary not in cls._help:
            try:
                r = subprocess.run([cls.binary, "--help"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                   text=True, timeout=20)
                cls._help[cls.binary] = r.stdout
            except (OSError, subprocess.SubprocessError):
                cls._help[cls.binary] = ""
        return flag in cls._help[cls.binary]

    @property
    def durable(self):
        return self.app == ROOT and self.has_store()

    def db_path(self):
        return os.path.join(self.data_dir, "triage.db") if self.data_dir else None

    def start(self, extra_env=None, keep_data=False):
        """keep_data: start again on the last start's --data dir (a restart); otherwise a fresh one."""
        if not (keep_data and self.data_dir):
            self.data_dir = tempfile.mkdtemp(prefix="data-", dir=self.workdir)
            traversable(self.data_dir)
        super().start(extra_env)

    def command(self, port):
        self.admin_port = free_port()
        cmd = [self.binary, "--app", self.app, "--listen", "%s:%d" % (HOST, port),
               "--admin", "%s:%d" % (HOST, self.admin_port), "--workers", str(CPUS),
               "--shutdown-timeout", "2"]
        if self.has_store():
            cmd += ["--data", self.data_dir]
        if self.has_tokens():
            cmd += ["--token-keys", auth.keys_file()]
        if os.geteuid() == 0 and not nobody_can_read(os.path.join(self.app, "routes")):
            cmd += ["--user", "root"]  # a checkout the workers' default user cannot reach
        return cmd

    def status(self):
        st, _, data = http_request(self.admin_port, "GET", "/_triage/status", timeout=5)
        if st != 200:
            raise RuntimeError("/_triage/status answered %s" % st)
        return json.loads(data)

    def store_counters(self):
        """Summed over the workers: store_commits (one fsync of SQLite's WAL each) and store_writes (the
        writes they committed). None when /_triage/status has no such keys (a binary without the store)."""
        try:
            workers = self.status().get("workers") or []
        except (OSError, ValueError, RuntimeError):
            return None
        if not workers or any("store_commits" not in w or "store_writes" not in w for w in workers):
            return None
        commits = sum(int(w["store_commits"]) for w in workers)
        return {"commits": commits, "fsyncs": commits, "writes": sum(int(w["store_writes"]) for w in workers)}

    def kill_hard(self):
        """SIGKILL to the whole server at once (master and workers), as a crash would stop it."""
        if not self.proc:
            return
        pids = tree(self.proc.pid)
        for p in pids:
            try:
                os.kill(p, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        self.stop()

    def version(self):
        rev = sh(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"]) or "no commit yet"
        dirty = sh(["git", "-C", ROOT, "status", "--porcelain", "--untracked-files=no"])
        return "git %s%s, %d workers" % (rev, " + working tree" if dirty else "", CPUS)


class TriageMem(Triage):
    """triage on bench/app: the same ePRO validation and answer, kept in memory. The in-memory figure
    the durable route is measured against, now that the sample app's route is durable."""
    app = BENCH_APP

    def ready(self):
        st, _, _ = http_request(self.port, "POST", "/api/epro/submit",
                                body=json.dumps({"patientId": "P-ready", "reportData": {"q1": 1}}), timeout=2)
        return st == 200, "status %s" % st

    def version(self):
        return "the triage binary above, --app bench/app, %d workers" % CPUS


class Gin(Peer):
    def build(self):
        self.bin = build_go("gin")

    def command(self, port):
        return [self.bin, "-listen", "%s:%d" % (HOST, port), "-protocols", FIXTURE]

    def version(self):
        return "gin %s, %s, GOMAXPROCS=%d" % (dpkg_version("golang-github-gin-gonic-gin-dev"),
                                              go_version(), CPUS)


class PostgresCounters:
    """The store counters of a peer whose submissions go to the benchmark's PostgreSQL server, in its
    database self.db: WAL fsyncs, commits, rows and distinct idempotency keys (Postgres.counters)."""
    # PostgreSQL's backends publish their statistics at most once a second while busy, and the last
    # second's only after 10 s idle (PGSTAT_IDLE_INTERVAL): a reading after a run waits that long.
    # bench/run --smoke sets 1.1 s (its PostgreSQL fsync counts are then approximate).
    settle = 11.0
    counts_rows = True       # the counters' writes are rows of the table: every acknowledged one is there
    _settled = None          # the last reading, while no load has run since (no statistics pending)

    def loaded(self):
        self._settled = None

    def store_counters(self):
        if self._settled is None:
            time.sleep(self.settle)
        try:
            self._settled = self.pg.counters(db=self.db)
        except (RuntimeError, OSError, subprocess.SubprocessError, ValueError, IndexError):
            self._settled = None
        return self._settled

    def count_rows(self, key_prefix=None):
        """(rows, distinct idempotency keys) in the submissions table; with key_prefix, of the rows whose
        key starts with it (one burst's)."""
        where = " WHERE idempotency_key LIKE '%s%%'" % key_prefix if key_prefix else ""
        rows = self.pg.psql("SELECT count(*), count(DISTINCT idempotency_key) FROM epro_submissions" + where,
                            db=self.db)
        return int(rows[0][0]), int(rows[0][1])


class GinPG(PostgresCounters, Peer):
    """Gin inserting every submission into PostgreSQL (bench/peers/ginpg), in the database "bench" of
    the run's PostgreSQL server (postgres.shared()); the server's processes count as the peer's."""
    durable = True
    db = "bench"

    def __init__(self, name, workdir):
        super().__init__(name, workdir)
        self.pg = None

    def build(self):
        self.bin = build_go("ginpg")
        if self.pg is None:
            self.pg = postgres.shared()
            self.pg.create_db(self.db)
            self.pg.checkpoint()

    def command(self, port):
        return [self.bin, "-listen", "%s:%d" % (HOST, port), "-protocols", FIXTURE, "-dsn", self.pg.dsn(self.db),
                "-pool", "100"]

    def roots(self):
        return [self.proc.pid] + ([self.pg.proc.pid] if self.pg and self.pg.proc else [])

    def alive(self):
        return super().alive() and self.pg is not None and self.pg.alive()

    def log_tail(self, n=30):
        out = super().log_tail(n)
        if self.pg:
            out += "--- postgres.log\n" + self.pg.log_tail(n)
        return out

    def truncate(self):
        quiet = self._settled is not None
        self.pg.psql("TRUNCATE epro_submissions", db=self.db)
        if quiet:
            time.sleep(0.3)      # psql's backend publishes its statistics as it exits

    def destroy(self):
        """Stops the Gin server and drops its database (the PostgreSQL server stays for the next peer)."""
        self.stop()
        if self.pg:
            try:
                if self.pg.alive():
                    self.pg.drop_db(self.db)
            except RuntimeError as e:
                log("ginpg: %s" % e)
            self.pg = None

    def version(self):
        return "gin %s, lib/pq %s, %s (%s), pool of 100 connections (database/sql), %s, GOMAXPROCS=%d" % (
            dpkg_version("golang-github-gin-gonic-gin-dev"), dpkg_version("golang-github-lib-pq-dev"),
            self.pg.version(), self.pg.settings(), go_version(), CPUS)


class TriagePG(PostgresCounters, Triage):
    """triage on the sample app with --store: the run's PostgreSQL server (postgres.shared()), a fresh
    database per start (dropped at the next start and by destroy()); --data still holds the admin token
    and the pid file. database: a node of a cluster, on the database its first node made."""
    _numbers = itertools.count(1)

    def __init__(self, name, workdir, database=None):
        super().__init__(name, workdir)
        self.pg = None
        self.db = database
        self.own_db = database is None

    @classmethod
    def has_pg_store(cls):
        """Whether this binary has the PostgreSQL backend: it takes --store URL."""
        return cls.takes("--store")

    @property
    def durable(self):
        return True

    def build(self):
        super().build()
        if not self.has_pg_store():
            raise RuntimeError("%s has no --store (no PostgreSQL backend)" % os.path.relpath(self.binary, ROOT))
        if self.pg is None:
            self.pg = postgres.shared()

    def start(self, extra_env=None, keep_data=False):
        if self.own_db and not (keep_data and self.db):
            if self.db:
                self.pg.drop_db(self.db)
            self.db = "triage_%d" % next(self._numbers)
            self.pg.create_db(self.db)
            self.pg.checkpoint()
        super().start(extra_env, keep_data)

    extra_args = ()          # more options for the command line (bench/balancer-check: --public-health)

    def command(self, port):
        return super().command(port) + ["--store", self.pg.url(self.db)] + list(self.extra_args)

    def roots(self):
        return [self.proc.pid] + ([self.pg.proc.pid] if self.pg and self.pg.proc else [])

    def alive(self):
        return super().alive() and self.pg is not None and self.pg.alive()

    def log_tail(self, n=30):
        out = super().log_tail(n)
        if self.pg:
            out += "--- postgres.log\n" + self.pg.log_tail(n)
        return out

    def destroy(self):
        """Stops the server and drops the database it made."""
        self.stop()
        if self.pg and self.own_db and self.db:
            try:
                if self.pg.alive():
                    self.pg.drop_db(self.db)
            except RuntimeError as e:
                log("triagepg: %s" % e)
        self.db = None if self.own_db else self.db

    def version(self):
        return "%s, --store on %s (%s), --store-connections default" % (
            super().version(), self.pg.version(), self.pg.settings())


class Cluster:
    """Several triage nodes on one PostgreSQL database, seen as one peer by the burst (bench/burst.c
    spreads its phones over the ports): port is "P1,P2", the roots are every master and the
    postmaster, the counters are the shared database's."""
    durable = True

    def __init__(self, nodes):
        self.nodes = nodes
        self.name = "triagepg"
        self.port = ",".join(str(n.port) for n in nodes)

    def roots(self):
        pg = self.nodes[0].pg
        return [n.proc.pid for n in self.nodes] + ([pg.proc.pid] if pg and pg.proc else [])

    def alive(self):
        return all(n.alive() for n in self.nodes)

    def loaded(self):
        self.nodes[0].loaded()

    def store_counters(self):
        return self.nodes[0].store_counters()

    def log_tail(self, n=30):
        return "\n".join("--- node %d\n%s" % (i + 1, node.log_tail(n)) for i, node in enumerate(self.nodes))


class FastHTTP(Peer):
    def build(self):
        self.bin = build_go("fasthttp")

    def command(self, port):
        return [self.bin, "-listen", "%s:%d" % (HOST, port), "-protocols", FIXTURE]

    def version(self):
        return "fasthttp %s, %s, GOMAXPROCS=%d" % (dpkg_version("golang-github-valyala-fasthttp-dev"),
                                                   go_version(), CPUS)


class Flask(Peer):
    workers = 2 * CPUS + 1

    def build(self):
        self.gunicorn = shutil.which("gunicorn") or "/usr/bin/gunicorn"
        if not os.path.exists(self.gunicorn):
            raise RuntimeError("gunicorn not found (bench/deps.sh installs it)")

    def command(self, port):
        return [self.gunicorn, "--workers", str(self.workers), "--worker-class", "sync",
                "--bind", "%s:%d" % (HOST, port), "--chdir", os.path.join(PEERS_DIR, "flask"),
                "--log-level", "warning", "app:app"]

    def version(self):
        py = "python3"
        try:
            with open(self.gunicorn) as f:
                first = f.readline()
            if first.startswith("#!"):
                py = first[2:].strip().split()[0]
        except OSError:
            pass
        fv = sh([py, "-c", "import importlib.metadata as m; print(m.version('flask'))"])
        pv = sh([py, "-c", "import platform; print(platform.python_version())"])
        return "Flask %s, gunicorn %s (%d sync workers), Python %s" % (
            fv, dpkg_version("gunicorn"), self.workers, pv)


class Nginx(Peer):
    def build(self):
        self.nginx = shutil.which("nginx") or "/usr/sbin/nginx"
        if not os.path.exists(self.nginx):
            raise RuntimeError("nginx not found (bench/deps.sh installs nginx-light)")
        self.modules = nginx_modules()

    def command(self, port):
        with open(os.path.join(PEERS_DIR, "nginx", "nginx.conf.in")) as f:
            conf = f.read()
        subst = {
            "@PREFIX@": self.workdir,
            "@USER@": "user root;" if os.geteuid() == 0 else "",
            "@LOAD_MODULES@": self.modules,
            "@APPDIR@": os.path.join(PEERS_DIR, "nginx"),
            "@PROTOCOLS@": FIXTURE,
            "@PORT@": str(port),
            "@LUA_CPATH@": lua_cpath(),
        }
        for k, v in subst.items():
            conf = conf.replace(k, v)
        os.makedirs(os.path.join(self.workdir, "logs"), exist_ok=True)
        path = os.path.join(self.workdir, "nginx.conf")
        with open(path, "w") as f:
            f.write(conf)
        return [self.nginx, "-p", self.workdir, "-c", path, "-e", os.path.join(self.workdir, "error.log")]

    def log_tail(self, n=30):
        out = super().log_tail(n)
        try:
            with open(os.path.join(self.workdir, "error.log"), errors="replace") as f:
                out += "".join(f.readlines()[-n:])
        except OSError:
            pass
        return out

    def version(self):
        v = sh([self.nginx, "-v"]).replace("nginx version: ", "")
        lj = dpkg_version("libluajit2-5.1-2") or dpkg_version("libluajit-5.1-2")
        return "%s, lua-nginx-module %s, lua-resty-core %s, LuaJIT %s, lua-cjson %s, %d workers" % (
            v, dpkg_version("libnginx-mod-http-lua"), dpkg_version("lua-resty-core"), lj,
            dpkg_version("lua-cjson"), CPUS)


class Ceiling(Peer):
    def build(self):
        self.bin = os.path.join(BUILD, "ceiling")
        build_c(os.path.join(PEERS_DIR, "ceiling.c"), self.bin)

    def command(self, port):
        return [self.bin, str(port), str(CPUS)]

    def version(self):
        return "bench/peers/ceiling.c, gcc %s -O2, %d processes" % (sh(["gcc", "-dumpfullversion"]), CPUS)


PEER_CLASSES = {"triage": Triage, "gin": Gin, "fasthttp": FastHTTP, "flask": Flask,
                "nginx": Nginx, "ceiling": Ceiling, "ginpg": GinPG, "triage_mem": TriageMem, "triagepg": TriagePG}
