"""Running external tools: building the C and Go peers, and the version strings for the report."""
import os
import shutil
import subprocess
import tempfile

from .config import BENCH, BUILD, PEERS_DIR


def run_quiet(cmd, **kw):
    r = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **kw)
    if r.returncode != 0:
        raise RuntimeError("%s failed:\n%s" % (" ".join(cmd), r.stdout))
    return r.stdout


def stale(target, *sources):
    if not os.path.exists(target):
        return True
    t = os.path.getmtime(target)
    return any(os.path.getmtime(s) > t for s in sources)


def build_c(src, out, shared=False):
    if not stale(out, src):
        return
    cmd = ["gcc", "-O2", "-Wall", "-o", out, src]
    if shared:
        cmd[1:1] = ["-fPIC", "-shared"]
    run_quiet(cmd)


def build_go(name):
    out = os.path.join(BUILD, name + "-peer")
    src = os.path.join(PEERS_DIR, name, "main.go")
    if not stale(out, src):
        return out
    gopath = tempfile.mkdtemp(prefix="bench-gopath-")
    try:
        env = dict(os.environ, GO111MODULE="off", GOPATH=gopath + ":/usr/share/gocode",
                   GOCACHE=os.path.join(BUILD, "go-cache"), GOFLAGS="")
        run_quiet(["go", "build", "-o", out, "./peers/" + name + "/"], cwd=BENCH, env=env)
    finally:
        shutil.rmtree(gopath, ignore_errors=True)
    return out


def sh(cmd, any_status=False):
    """The first line a command prints ("" when it fails)."""
    try:
        r = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=20)
        ok = r.returncode == 0 or any_status
        return r.stdout.strip().splitlines()[0] if ok and r.stdout.strip() else ""
    except (OSError, subprocess.SubprocessError):
        return ""


def dpkg_version(pkg):
    return sh(["dpkg-query", "-W", "-f=${Version}", pkg])


def go_version():
    return sh(["go", "version"]).replace("go version ", "").split(" ")[0]
