"""The servers compared: how each is built, started, stopped and described."""
import os
import re
import shutil
import socket
import subprocess
import time

from . import processes
from .config import BUILD, CPUS, FIXTURE, HOST, KNOWN_ID, LABELS, PEERS_DIR, ROOT
from .correctness import http_request
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
                st, _, _ = http_request(self.port, "GET", "/api/v1/protocols/" + KNOWN_ID, timeout=2)
                if st == 200:
                    return
                last = "status %s" % st
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

    def log_tail(self, n=30):
        try:
            with open(self.logfile, errors="replace") as f:
                return "".join(f.readlines()[-n:])
        except OSError:
            return ""

    def version(self):
        return ""


class Triage(Peer):
    binary = os.environ.get("TRIAGE_BIN", os.path.join(ROOT, "build", "triage"))

    def build(self):
        if not os.access(self.binary, os.X_OK):
            raise RuntimeError("%s not found: build triage first (make)" % os.path.relpath(self.binary, ROOT))

    def command(self, port):
        self.admin_port = free_port()
        return [self.binary, "--app", ROOT, "--listen", "%s:%d" % (HOST, port),
                "--admin", "%s:%d" % (HOST, self.admin_port), "--workers", str(CPUS),
                "--shutdown-timeout", "2"]

    def version(self):
        rev = sh(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"]) or "no commit yet"
        dirty = sh(["git", "-C", ROOT, "status", "--porcelain", "--untracked-files=no"])
        return "git %s%s, %d workers" % (rev, " + working tree" if dirty else "", CPUS)


class Gin(Peer):
    def build(self):
        self.bin = build_go("gin")

    def command(self, port):
        return [self.bin, "-listen", "%s:%d" % (HOST, port), "-protocols", FIXTURE]

    def version(self):
        return "gin %s, %s, GOMAXPROCS=%d" % (dpkg_version("golang-github-gin-gonic-gin-dev"),
                                              go_version(), CPUS)


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
                "nginx": Nginx, "ceiling": Ceiling}
