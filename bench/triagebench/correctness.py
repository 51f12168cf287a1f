"""A one-request HTTP client, and the checks every peer's answers must pass before any load."""
import http.client
import json
import re
import time
import uuid

from . import auth
from .config import FIXTURE, HOST, KNOWN_ID


def http_request(port, method, path, body=None, headers=None, timeout=5):
    c = http.client.HTTPConnection(HOST, port, timeout=timeout)
    try:
        # A body is patient data: it goes with the bearer token, to every peer alike (auth.py).
        h = {"Content-Type": "application/json", "Authorization": auth.header()} if body is not None else {}
        h.update(headers or {})
        c.request(method, path, body=body, headers=h)
        r = c.getresponse()
        data = r.read()
        return r.status, r.getheader("Content-Type") or "", data
    finally:
        c.close()


def check_peer(peer):
    """Returns a list of (check, ok, detail)."""
    port = peer.port
    results = []

    def expect(name, method, path, status, body=None, headers=None, want=None, pred=None):
        try:
            t0 = time.monotonic()
            st, ctype, data = http_request(port, method, path, body, headers)
            elapsed = time.monotonic() - t0
        except OSError as e:
            results.append((name, False, "no answer: %s" % e))
            return
        problems = []
        if st != status:
            problems.append("status %s, want %s" % (st, status))
        if not ctype.startswith("application/json"):
            problems.append("Content-Type %r" % ctype)
        try:
            obj = json.loads(data)
        except ValueError:
            obj = None
            problems.append("body is not JSON: %r" % data[:200])
        if obj is not None:
            for k, v in (want or {}).items():
                if not isinstance(obj, dict) or obj.get(k) != v:
                    problems.append("%s=%r, want %r" % (k, obj.get(k) if isinstance(obj, dict) else None, v))
            if pred:
                msg = pred(obj, elapsed)
                if msg:
                    problems.append(msg)
        results.append((name, not problems, "; ".join(problems) or "ok"))

    with open(FIXTURE) as f:
        known = {p["id"]: p for p in json.load(f)}[KNOWN_ID]

    if peer.name == "ceiling":
        # parses nothing: it answers everything with the one fixed response
        expect("GET known id (fixed response)", "GET", "/api/v1/protocols/" + KNOWN_ID, 200, want=known)
        expect("POST answered (fixed response)", "POST", "/api/epro/submit", 200,
               body=json.dumps({"patientId": "P-0001", "reportData": {"q1": 3}}))
        return results

    epro_only = peer.name == "triage_mem"     # bench/app serves nothing else
    if not epro_only:
        expect("GET known id", "GET", "/api/v1/protocols/" + KNOWN_ID, 200, want=known)
        expect("GET unknown id", "GET", "/api/v1/protocols/NCT00000000", 404,
               want={"error": "protocol not found", "id": "NCT00000000"})
    expect("POST ePRO valid", "POST", "/api/epro/submit", 200,
           body=json.dumps({"patientId": "P-0001", "reportData": {"q1": 3, "fatigue": "mild"}}),
           want={"success": True, "message": "report accepted"})

    def fields_are(*names):
        def pred(obj, _):
            f = obj.get("fields") if isinstance(obj, dict) else None
            if not isinstance(f, list) or sorted(f) != sorted(names):
                return "fields=%r, want %r" % (f, list(names))
        return pred

    expect("POST ePRO invalid fields", "POST", "/api/epro/submit", 400,
           body=json.dumps({"patientId": "", "reportData": []}),
           want={"success": False, "error": "invalid request"}, pred=fields_are("patientId", "reportData"))
    expect("POST ePRO empty reportData", "POST", "/api/epro/submit", 400,
           body=json.dumps({"patientId": "P-0002", "reportData": {}}),
           want={"success": False, "error": "invalid request"}, pred=fields_are("reportData"))
    expect("POST ePRO not JSON", "POST", "/api/epro/submit", 400, body='{"patientId": "P-0',
           want={"success": False},
           pred=lambda o, _: None if str(o.get("error", "")).startswith("invalid JSON")
           else "error=%r, want 'invalid JSON: ...'" % o.get("error"))
    if peer.durable:
        durable_checks(port, results)
    if epro_only:
        return results
    expect("POST tag valid", "POST", "/api/v1/tags/add", 200,
           body=json.dumps({"patientId": "P-0001", "tagName": "high-risk"}), want={"success": True})
    expect("POST tag invalid", "POST", "/api/v1/tags/add", 400,
           body=json.dumps({"patientId": "P-0001"}),
           want={"success": False, "error": "invalid request"}, pred=fields_are("tagName"))
    expect("GET sleep", "GET", "/api/v1/sleep", 200, want={"ok": True},
           pred=lambda o, el: None if el >= 0.045 else "answered after %.1f ms, want >= 50 ms" % (el * 1000))
    if peer.name in ("triage", "triagepg"):
        expect("GET secure with token", "GET", "/api/v1/secure/protocols/" + KNOWN_ID, 200,
               headers={"Authorization": auth.header()}, want={"id": KNOWN_ID})
        try:
            st, _, _ = http_request(port, "GET", "/api/v1/secure/protocols/" + KNOWN_ID)
            results.append(("GET secure without token", st == 401, "status %s, want 401" % st))
        except OSError as e:
            results.append(("GET secure without token", False, str(e)))
    return results


RFC3339_UTC = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$")


def durable_checks(port, results):
    """A durable peer's receipts and idempotency: a receipt {id, receivedAt (RFC 3339, UTC)} with every
    2xx; a retry with the same Idempotency-Key gets the same receipt; the same key with another body is
    422."""
    key = "check-" + uuid.uuid4().hex
    body = json.dumps({"patientId": "P-check", "reportData": {"q1": 2}})
    hdr = {"Idempotency-Key": key}

    def post(b):
        st, _, data = http_request(port, "POST", "/api/epro/submit", b, hdr)
        try:
            return st, json.loads(data)
        except ValueError:
            return st, None

    try:
        st1, first = post(body)
        st2, again = post(body)
        st3, other = post(json.dumps({"patientId": "P-check", "reportData": {"q1": 3}}))
    except OSError as e:
        results.append(("POST ePRO receipt and retry", False, "no answer: %s" % e))
        return
    receipt = first.get("receipt") if isinstance(first, dict) else None
    problems = []
    if st1 != 200:
        problems.append("status %s, want 200" % st1)
    elif not (isinstance(receipt, dict) and isinstance(receipt.get("id"), str) and receipt["id"]
              and RFC3339_UTC.match(str(receipt.get("receivedAt")))):
        problems.append("receipt=%r, want {id, receivedAt: RFC 3339 UTC}" % (receipt,))
    results.append(("POST ePRO receipt", not problems, "; ".join(problems) or "ok"))
    again_receipt = again.get("receipt") if isinstance(again, dict) else None
    ok = st2 == 200 and again_receipt == receipt
    results.append(("POST ePRO retry: same receipt", ok,
                    "ok" if ok else "status %s, receipt %r, want 200 and %r" % (st2, again_receipt, receipt)))
    results.append(("POST ePRO key reused: 422", st3 == 422, "ok" if st3 == 422 else "status %s, want 422" % st3))


def cross_node_checks(ports):
    """Several nodes on one database: a submission acknowledged by the first node, retried with the
    same Idempotency-Key on each other node, gets the same receipt; the same key with another body is
    422 there too."""
    results = []
    key = "cross-" + uuid.uuid4().hex
    body = json.dumps({"patientId": "P-cross", "reportData": {"q1": 2}})
    hdr = {"Idempotency-Key": key}

    def post(port, b):
        st, _, data = http_request(port, "POST", "/api/epro/submit", b, hdr)
        try:
            return st, json.loads(data)
        except ValueError:
            return st, None

    try:
        st, first = post(ports[0], body)
        receipt = first.get("receipt") if isinstance(first, dict) else None
        ok = st == 200 and isinstance(receipt, dict) and bool(receipt.get("id"))
        results.append(("POST ePRO on node 1: receipt", ok, "ok" if ok else "status %s, body %r" % (st, first)))
        for i, port in enumerate(ports[1:], 2):
            st, again = post(port, body)
            got = again.get("receipt") if isinstance(again, dict) else None
            ok = st == 200 and got == receipt
            results.append(("retry on node %d: same receipt" % i, ok,
                            "ok" if ok else "status %s, receipt %r, want 200 and %r" % (st, got, receipt)))
            st, _ = post(port, json.dumps({"patientId": "P-cross", "reportData": {"q1": 3}}))
            results.append(("key reused on node %d: 422" % i, st == 422,
                            "ok" if st == 422 else "status %s, want 422" % st))
    except OSError as e:
        results.append(("POST ePRO across the nodes", False, "no answer: %s" % e))
    return results
