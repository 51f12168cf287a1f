"""The sample clinical app on Flask, served by gunicorn sync workers.

    PROTOCOLS=data/protocols.json gunicorn -w 5 -b 127.0.0.1:8083 app:app

Each worker process loads the fixture once and keeps its own in-memory state.
"""
import json
import os
import threading
import time

from flask import Flask, jsonify, request

app = Flask(__name__)

with open(os.environ.get("PROTOCOLS", "data/protocols.json"), encoding="utf-8") as f:
    PROTOCOLS = {p["id"]: p for p in json.load(f)}

_lock = threading.Lock()
REPORTS = {}  # latest reportData per patientId
TAGS = {}
COUNTS = {"reports": 0, "tags": 0}


def _json_object():
    """(obj, error_response): obj is None when the body is JSON but not an object."""
    try:
        data = json.loads(request.get_data())
    except ValueError as e:
        return None, (jsonify(success=False, error="invalid JSON: %s" % e), 400)
    return (data if isinstance(data, dict) else None), None


def _nonempty_str(v):
    return isinstance(v, str) and v != ""


def _invalid(fields):
    return jsonify(success=False, error="invalid request", fields=fields), 400


@app.get("/api/v1/protocols/<pid>")
def get_protocol(pid):
    p = PROTOCOLS.get(pid)
    if p is None:
        return jsonify(error="protocol not found", id=pid), 404
    return jsonify(p)


@app.post("/api/epro/submit")
def submit():
    obj, err = _json_object()
    if err:
        return err
    obj = obj or {}
    fields = []
    if not _nonempty_str(obj.get("patientId")):
        fields.append("patientId")
    rd = obj.get("reportData")
    if not (isinstance(rd, dict) and rd):
        fields.append("reportData")
    if fields:
        return _invalid(fields)
    with _lock:
        REPORTS[obj["patientId"]] = rd
        COUNTS["reports"] += 1
    return jsonify(success=True, message="report accepted")


@app.post("/api/v1/tags/add")
def add_tag():
    obj, err = _json_object()
    if err:
        return err
    obj = obj or {}
    fields = []
    if not _nonempty_str(obj.get("patientId")):
        fields.append("patientId")
    if not _nonempty_str(obj.get("tagName")):
        fields.append("tagName")
    if fields:
        return _invalid(fields)
    with _lock:
        TAGS.setdefault(obj["patientId"], set()).add(obj["tagName"])
        COUNTS["tags"] += 1
    return jsonify(success=True)


@app.get("/api/v1/sleep")
def sleep():
    time.sleep(0.05)
    return jsonify(ok=True)


@app.errorhandler(404)
def not_found(_e):
    return jsonify(error="not found"), 404


@app.errorhandler(405)
def not_allowed(_e):
    return jsonify(error="method not allowed"), 405
