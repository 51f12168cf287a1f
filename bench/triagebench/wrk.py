"""Load generation: wrk's Lua scripts, running wrk and parsing the counters its done() reports."""
import json
import os
import re
import subprocess
import time

from . import processes
from . import auth
from .config import HOST

DONE_LUA = r'''
function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRKJSON {"requests":%d,"duration_us":%d,"bytes":%d,"connect":%d,"read":%d,"write":%d,' ..
    '"status":%d,"timeout":%d,"p50":%d,"p90":%d,"p99":%d,"max":%d,"mean":%.1f}\n',
    summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write,
    e.status, e.timeout, latency:percentile(50), latency:percentile(90),
    latency:percentile(99), latency.max, latency.mean))
end
'''

POST_LUA = r'''
local reqs = {}
local n = 0
function init(args)
  for i = 1, 300 do
    local body = string.format(
      '{"patientId":"P-%04d","reportData":{"q1":%d,"q2":"mild","fatigue":%d,"sleepHours":%d.5}}',
      i, i % 5, i % 10, 4 + i % 5)
    reqs[i] = wrk.format("POST", "/api/epro/submit",
      {["Content-Type"] = "application/json", ["Authorization"] = wrk.headers["Authorization"]}, body)
  end
  n = math.random(1, 300)
end
function request()
  n = n % 300 + 1
  return reqs[n]
end
'''


# Every request unique: wrk's setup() numbers the threads; each thread counts its requests, and the
# run id (wrk's first script argument, new for every wrk run) keeps runs against the same server apart.
# patientId "P-<thread>-<n>", submissionId and Idempotency-Key "<run>-<thread>-<n>".
EPRO_UNIQUE_LUA = r'''
local threads = 0
function setup(thread)
  threads = threads + 1
  thread:set("tid", threads)
end
local run = "run"
local n = 0
local headers = {["Content-Type"] = "application/json"}
function init(args)
  run = args[1] or run
  headers["Authorization"] = wrk.headers["Authorization"]
end
function request()
  n = n + 1
  local key = string.format("%s-%d-%d", run, tid, n)
  headers["Idempotency-Key"] = key
  local body = string.format(
    '{"patientId":"P-%d-%d","submissionId":"%s","capturedAt":"2026-11-27T08:%02d:%02d.000Z",' ..
    '"reportData":{"q1":%d,"q2":"mild","fatigue":%d,"sleepHours":%d.5}}',
    tid, n, key, n % 60, (n * 7) % 60, n % 5, n % 10, 4 + n % 5)
  return wrk.format("POST", "/api/epro/submit", headers, body)
end
'''

_run_ids = [0]
_RUN_PREFIX = "%x" % (int(time.time() * 1000) % 0xffffffff)


def next_run_id(tag="w"):
    """An id no other load run of this harness run (nor of an earlier one) uses: keys stay unique."""
    _run_ids[0] += 1
    return "%s%s-%d" % (tag, _RUN_PREFIX, _run_ids[0])


def write_scripts(workdir):
    paths = {}
    for name, body in (("get", DONE_LUA), ("secure", DONE_LUA), ("post", POST_LUA + DONE_LUA),
                       ("epro_unique", EPRO_UNIQUE_LUA + DONE_LUA)):
        p = os.path.join(workdir, "wrk-%s.lua" % name)
        with open(p, "w") as f:
            f.write(body)
        paths[name] = p
    return paths


def run_wrk(port, wl, conns, duration, scripts, timeout_s):
    cmd = ["wrk", "-t", "2", "-c", str(conns), "-d", "%ds" % duration, "--latency",
           "--timeout", "%ds" % max(1, int(round(timeout_s))), "-s", scripts[wl["script"]]]
    if wl["script"] in ("secure", "post", "epro_unique"):
        # The same token to every peer (auth.py): wrk's scripts copy it into the requests they build.
        cmd += ["-H", "Authorization: " + auth.header()]
    cmd.append("http://%s:%d%s" % (HOST, port, wl["path"]))
    if wl["script"] == "epro_unique":
        cmd += ["--", next_run_id()]
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                         stdin=subprocess.DEVNULL)
    processes.clients.append(p)
    try:
        out, _ = p.communicate(timeout=duration + timeout_s + 60)
    except subprocess.TimeoutExpired:
        p.kill()
        p.communicate()
        raise RuntimeError("wrk did not finish in time")
    finally:
        if p in processes.clients:
            processes.clients.remove(p)
    m = re.search(r"^WRKJSON (\{.*\})$", out, re.M)
    if p.returncode != 0 or not m:
        raise RuntimeError("wrk failed (%s):\n%s" % (p.returncode, out[-2000:]))
    return json.loads(m.group(1)), out
