"""Slow clients: slowhttptest's slowloris (-H) and slow-body (-B) attacks held open against a peer while
wrk's normal clients GET a protocol; the same wrk run without the attack, just before, is the baseline."""
import os
import re
import shutil
import subprocess
import time

from . import processes
from .config import HOST, PEERS_DIR, SLOW, WORKLOADS, log
from .measure import measure

GET100 = WORKLOADS[0]       # GET /api/v1/protocols/NCT04356798; 100 connections (smoke: 8)


def settings(run):
    """(attack connections per mode, new connections per second per mode, ramp-up seconds)."""
    if run.smoke:
        return SLOW["smoke_attack_conns"], SLOW["smoke_rate"], SLOW["smoke_ramp"]
    return SLOW["attack_conns"], SLOW["rate"], SLOW["ramp"]


def established(port):
    """Client-side TCP connections to 127.0.0.1:port in state ESTABLISHED (every client's: the
    attackers' and, while it runs, wrk's), from /proc/net/tcp."""
    n = 0
    want = ":%04X" % port
    try:
        with open("/proc/net/tcp") as f:
            next(f)
            for line in f:
                parts = line.split()
                if len(parts) > 3 and parts[2].endswith(want) and parts[3] == "01":
                    n += 1
    except OSError:
        return None
    return n


def timeouts(peer):
    """What the peer closes a slow head and a paused body after: (header, body, where it comes from)."""
    if peer.name == "triage":
        try:
            out = subprocess.run([peer.binary, "--help"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                 text=True, timeout=20).stdout
        except (OSError, subprocess.SubprocessError):
            out = ""
        found = {}
        for opt in ("header-timeout", "body-timeout"):
            m = re.search(r"--%s\b[^\n]*?default (\d+(?:\.\d+)?)" % opt, out)
            found[opt] = ("%s s" % m.group(1)) if m else "none (the binary has no --%s)" % opt
        return (found["header-timeout"], found["body-timeout"],
                "triage's defaults (no timeout option given), as `triage --help` states them")
    if peer.name == "nginx":
        try:
            with open(os.path.join(PEERS_DIR, "nginx", "nginx.conf.in")) as f:
                conf = f.read()
        except OSError:
            conf = ""
        found = {}
        for d in ("client_header_timeout", "client_body_timeout"):
            m = re.search(r"^\s*%s\s+([^;]+);" % d, conf, re.M)
            found[d] = (m.group(1).strip() + " (nginx.conf.in)") if m else "60 s"
        set_any = any("nginx.conf.in" in v for v in found.values())
        return (found["client_header_timeout"], found["client_body_timeout"],
                "bench/peers/nginx/nginx.conf.in" + ("" if set_any else
                                                     " sets neither: nginx's defaults"))
    return ("?", "?", "")


def start_attack(peer, mode, conns, rate, length, logdir):
    """slowhttptest in mode "H" (slowloris) or "B" (slow body) against the peer; registered like a
    server, so it is stopped on any exit."""
    path = SLOW["header_path"] if mode == "H" else SLOW["body_path"]
    cmd = ["slowhttptest", "-" + mode, "-c", str(conns), "-r", str(rate), "-i", str(SLOW["interval"]),
           "-l", str(length), "-u", "http://%s:%d%s" % (HOST, peer.port, path), "-p", "3"]
    if mode == "B":
        cmd += ["-s", str(SLOW["body_len"]), "-f", "application/json"]
    logf = os.path.join(logdir, "slowhttptest-%s.log" % mode)
    out = open(logf, "ab")
    p = subprocess.Popen(cmd, stdout=out, stderr=out, stdin=subprocess.DEVNULL, cwd=logdir,
                         start_new_session=True)
    out.close()
    processes.started.append(p)
    return p, cmd, logf


def stop_attack(p):
    processes.kill_tree(p, grace=2)
    if p in processes.started:
        processes.started.remove(p)


def run_slow(run, peer, scripts):
    """The baseline (wrk alone), then both attacks started together, a ramp-up, and wrk again while
    they go on. Returns the figures, or {"error": ...}."""
    if not shutil.which("slowhttptest"):
        return {"error": "slowhttptest not found: run bench/deps.sh"}
    conns, rate, ramp = settings(run)
    normal = GET100["smoke_conns"] if run.smoke else GET100["conns"]
    res = {"attack_conns": conns, "rate": rate, "ramp": ramp, "normal_conns": normal,
           "interval": SLOW["interval"], "timeouts": timeouts(peer)}
    log("   slow: baseline, wrk %d connections for %d s" % (normal, run.duration))
    res["baseline"] = measure(peer, GET100, normal, run.duration, scripts, run.timeout)
    time.sleep(0.5)
    idle = established(peer.port)
    length = ramp + run.duration + int(run.timeout) + 30
    attacks = []
    try:
        for mode in ("H", "B"):
            attacks.append(start_attack(peer, mode, conns, rate, length, peer.workdir))
        res["commands"] = [" ".join(a[1]).replace("%s:%d" % (HOST, peer.port), "%s:PORT" % HOST)
                           for a in attacks]
        time.sleep(ramp)
        before = established(peer.port)
        for p, cmd, logf in attacks:
            if p.poll() is not None:
                raise RuntimeError("slowhttptest -%s exited with %s:\n%s"
                                   % (cmd[1][-1], p.returncode, tail(logf)))
        log("   slow: %s attack connections open after %d s; wrk %d connections for %d s"
            % (before - idle if before is not None and idle is not None else "?", ramp, normal, run.duration))
        res["attack"] = measure(peer, GET100, normal, run.duration, scripts, run.timeout)
        after = established(peer.port)
        if None not in (idle, before, after):
            res["open_before"], res["open_after"] = before - idle, after - idle
        res["attack_alive"] = all(p.poll() is None for p, _, _ in attacks)
    finally:
        for p, _, _ in attacks:
            stop_attack(p)
    if not peer.alive():
        raise RuntimeError("%s died under the slow clients:\n%s" % (peer.name, peer.log_tail()))
    return res


def tail(path, n=10):
    try:
        with open(path, errors="replace") as f:
            return "".join(f.readlines()[-n:])
    except OSError:
        return ""
