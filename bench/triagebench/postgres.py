"""A throwaway PostgreSQL server for the peers that store in PostgreSQL (Gin + PostgreSQL, triage on
PostgreSQL): initdb in a temp dir, the postmaster run as the unprivileged `postgres` user, listening only
on a unix socket in that dir; one server per bench run (shared()), each peer in a fresh database of its
own; stopped and removed at the end, and on any exit (processes.stoppers)."""
import glob
import grp
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time

from . import processes
from .config import log

PORT = 5432   # only names the socket file: the socket lives in the server's own temp dir

# Settings given on the command line (everything else is initdb's default, durability included:
# fsync=on, full_page_writes=on, wal_sync_method=fdatasync on Linux, commit_delay=0).
SETTINGS = {
    "listen_addresses": "",            # no TCP: the unix socket only
    "max_connections": "120",          # Gin's pool of 100 (triage: 4 per worker and node), psql, room to spare
    "synchronous_commit": "on",        # a commit returns once its WAL is flushed to disk
    "fsync": "on",
    # after the burst's crash-like restart (immediate stop), one syncfs() of the file system before the
    # WAL replay instead of an fsync of every file of the cluster (seconds here); as durable
    "recovery_init_sync_method": "syncfs",
    "logging_collector": "off",
    "log_min_messages": "warning",
}


def bindir():
    """The newest /usr/lib/postgresql/<major>/bin holding a postgres binary (Debian's layout)."""
    found = []
    for p in glob.glob("/usr/lib/postgresql/*/bin/postgres"):
        try:
            found.append((int(p.split("/")[4]), os.path.dirname(p)))
        except ValueError:
            pass
    if not found:
        raise RuntimeError("PostgreSQL not found in /usr/lib/postgresql (bench/deps.sh installs postgresql)")
    return max(found)[1]


def _user():
    """(uid, gid) to run the server as: the package's `postgres` user when we are root (the server
    refuses to run as root); ourselves otherwise."""
    if os.geteuid() != 0:
        return None
    try:
        pw = pwd.getpwnam("postgres")
    except KeyError:
        # the postgresql package creates it; a system without it gets the same kind of account
        subprocess.run(["useradd", "--system", "--user-group", "--no-create-home", "--home-dir",
                        "/var/lib/postgresql", "--shell", "/usr/sbin/nologin", "postgres"],
                       check=True, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        pw = pwd.getpwnam("postgres")
    return pw.pw_uid, pw.pw_gid


def _nogroup():
    try:
        return grp.getgrnam("nogroup").gr_gid
    except KeyError:
        return pwd.getpwnam("nobody").pw_gid


_shared = []


def shared():
    """The bench run's PostgreSQL server, made and started on first use; stopped and removed with the
    run (processes.stoppers). A crash-like restart (stop("immediate"), start()) keeps it shared."""
    if _shared and _shared[0].dir is not None:
        if not _shared[0].alive():
            _shared[0].start()
        return _shared[0]
    del _shared[:]
    pg = Postgres()
    _shared.append(pg)
    pg.init()
    pg.start()
    return pg


class Postgres:
    def __init__(self):
        self.bin = bindir()
        self.ids = _user()
        self.dir = tempfile.mkdtemp(prefix="triage-bench-pg-")
        processes.stoppers.append(self.destroy)
        self.data = os.path.join(self.dir, "data")
        self.logfile = os.path.join(self.dir, "postgres.log")
        self.proc = None
        if self.ids:
            # triage's workers run as nobody when triage starts as root: the socket's directory lets
            # the group nogroup through, and no one else
            os.chown(self.dir, self.ids[0], _nogroup())
            os.chmod(self.dir, 0o710)
        else:
            os.chmod(self.dir, 0o700)

    def _as_user(self, cmd):
        if not self.ids:
            return cmd
        uid, gid = self.ids
        # setpriv execs (no fork): the Popen's pid is the postmaster's
        return ["setpriv", "--reuid=%d" % uid, "--regid=%d" % gid, "--clear-groups", "--"] + cmd

    def _env(self):
        return dict(os.environ, LC_ALL="C", LANG="C", PGTZ="UTC", TZ="UTC")

    def init(self):
        """initdb (trust authentication: the socket dir is private to the postgres user and root).
        --no-sync only skips initdb's own fsync of the new cluster's files, a one-off (a crash
        restart syncs the file system before its replay anyway); every commit after start is flushed
        as in production."""
        r = subprocess.run(self._as_user([os.path.join(self.bin, "initdb"), "-D", self.data, "-U", "postgres",
                                          "--auth=trust", "--encoding=UTF8", "--locale=C", "--no-sync"]),
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=self.dir,
                           env=self._env())
        if r.returncode != 0:
            raise RuntimeError("initdb failed:\n%s" % r.stdout[-2000:])

    def start(self):
        cmd = [os.path.join(self.bin, "postgres"), "-D", self.data, "-p", str(PORT),
               "-c", "unix_socket_directories=%s" % self.dir]
        for k, v in SETTINGS.items():
            cmd += ["-c", "%s=%s" % (k, v)]
        out = open(self.logfile, "ab")
        self.proc = subprocess.Popen(self._as_user(cmd), stdout=out, stderr=out, stdin=subprocess.DEVNULL,
                                     cwd=self.dir, env=self._env(), start_new_session=True)
        out.close()
        deadline = time.time() + 60
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("postgres exited with %s at start:\n%s" % (self.proc.returncode, self.log_tail()))
            r = subprocess.run([os.path.join(self.bin, "pg_isready"), "-q", "-h", self.dir, "-p", str(PORT)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            if r.returncode == 0:
                return
            time.sleep(0.1)
        raise RuntimeError("postgres did not accept connections within 60 s:\n%s" % self.log_tail())

    def dsn(self, db="bench"):
        return "host=%s port=%d user=postgres dbname=%s sslmode=disable" % (self.dir, PORT, db)

    def url(self, db):
        """The database as a libpq URI (triage's --store): the unix socket of this server."""
        return "postgresql:///%s?host=%s&port=%d&user=postgres&sslmode=disable" % (db, self.dir, PORT)

    def psql(self, sql, db="bench"):
        """The rows psql prints (-At: unaligned, no headers), as a list of lists of strings."""
        r = subprocess.run([os.path.join(self.bin, "psql"), "-X", "-h", self.dir, "-p", str(PORT), "-U", "postgres",
                            "-d", db, "-At", "-v", "ON_ERROR_STOP=1", "-c", sql],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=120,
                           env=self._env())
        if r.returncode != 0:
            raise RuntimeError("psql %r failed: %s" % (sql, r.stdout.strip()[-500:]))
        return [line.split("|") for line in r.stdout.splitlines() if line]

    def create_db(self, name="bench"):
        """A fresh database: dropped first if it exists."""
        self.psql("DROP DATABASE IF EXISTS %s WITH (FORCE)" % name, db="postgres")
        self.psql("CREATE DATABASE %s" % name, db="postgres")

    def drop_db(self, name):
        """Drops a database no longer measured, so that the autovacuum of its rows does not run (and
        count) in the next peer's runs."""
        self.psql("DROP DATABASE IF EXISTS %s WITH (FORCE)" % name, db="postgres")

    def checkpoint(self):
        """A checkpoint before a peer's runs, so that none starts with the previous peer's dirty
        buffers to write."""
        self.psql("CHECKPOINT", db="postgres")

    def stop(self, mode="fast"):
        """fast: SIGINT (clients disconnected, a checkpoint, a clean exit); immediate: SIGQUIT (no
        checkpoint: the next start replays the WAL, as after a crash). SIGKILL to the group after 30 s."""
        p = self.proc
        if p is None:
            return
        self.proc = None
        if p.poll() is None:
            try:
                p.send_signal(signal.SIGINT if mode == "fast" else signal.SIGQUIT)
            except ProcessLookupError:
                pass
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                log("postgres did not stop within 30 s: SIGKILL")
        # the postmaster is gone; its children leave with it (the group goes in any case)
        try:
            os.killpg(p.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        try:
            p.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass

    def destroy(self):
        self.stop("fast")
        if self.dir and os.path.isdir(self.dir):
            shutil.rmtree(self.dir, ignore_errors=True)
        self.dir = None
        if self.destroy in processes.stoppers:
            processes.stoppers.remove(self.destroy)

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def log_tail(self, n=30):
        try:
            with open(self.logfile, errors="replace") as f:
                return "".join(f.readlines()[-n:])
        except OSError:
            return ""

    def version(self):
        r = subprocess.run([os.path.join(self.bin, "postgres"), "--version"], stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, text=True)
        return r.stdout.strip().replace("postgres (PostgreSQL) ", "PostgreSQL ")

    def settings(self, names=("synchronous_commit", "fsync", "wal_sync_method", "shared_buffers",
                              "max_connections", "commit_delay")):
        try:
            rows = self.psql("SELECT name, setting, coalesce(unit, '') FROM pg_settings WHERE name IN (%s) "
                             "ORDER BY name" % ",".join("'%s'" % n for n in names), db="postgres")
        except RuntimeError:
            return ""
        shown = []
        for name, setting, unit in rows:
            if name == "shared_buffers" and unit == "8kB":
                setting, unit = "%dMB" % (int(setting) * 8 // 1024), ""
            shown.append("%s=%s%s" % (name, setting, unit))
        return ", ".join(shown)

    def counters(self, table="epro_submissions", db="bench"):
        """WAL fsyncs (pg_stat_wal.wal_sync, the whole server's), commits in the database (xact_commit),
        and rows and distinct idempotency keys in the table, for the before/after of a run."""
        rows = self.psql("SELECT (SELECT wal_sync FROM pg_stat_wal), "
                         "(SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()), "
                         "(SELECT count(*) FROM %s), (SELECT count(DISTINCT idempotency_key) FROM %s)"
                         % (table, table), db=db)
        fsyncs, commits, writes, keys = (int(x) for x in rows[0])
        return {"fsyncs": fsyncs, "commits": commits, "writes": writes, "keys": keys}
