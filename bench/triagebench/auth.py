"""The bearer token of the benchmark's requests (README.md, "Authentication and permissions").

The sample app's patient-data routes ask for a token, so every peer is sent the same one, in the same
header, on the requests that carry patient data (POST /api/epro/submit, the secure GET): the bytes on
the wire are the same for every peer. triage verifies it (HS256 in C, a JSON decode of the claims, the
role and patient checks); the other peers do not, and bench/NOTES.md says what that costs triage.
"""
import os
import secrets
import subprocess

from .config import BUILD, ROOT

KEYS = os.path.join(BUILD, "token.keys")
_token = {}


def keys_file():
    """The --token-keys file of the triage peers: made once, mode 0600."""
    if not os.path.exists(KEYS):
        os.makedirs(BUILD, exist_ok=True)
        fd = os.open(KEYS, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write("bench %s\n" % secrets.token_hex(32))
    return KEYS


def binary():
    """The triage binary the peers run (peers.Triage.binary)."""
    return os.environ.get("TRIAGE_BIN", os.path.join(ROOT, "build", "triage"))


def token(binary):
    """An investigator's token (may submit for any patient), valid for a day, made by `triage token`."""
    if binary not in _token:
        r = subprocess.run([binary, "token", "--sub", "bench-site", "--role", "investigator", "--trial", "T1",
                            "--ttl", "86400", "--keys", keys_file()],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=30)
        if r.returncode != 0:
            raise RuntimeError("triage token failed: %s" % r.stderr.strip())
        _token[binary] = r.stdout.strip()
    return _token[binary]


def header():
    """The Authorization header's value sent to every peer."""
    return "Bearer " + token(binary())
