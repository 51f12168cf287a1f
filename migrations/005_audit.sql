-- The audit trail (core/audit.h; README.md, "Audit trail"): one entry per write, in the transaction of
-- the write (tx:audit), each carrying the hash of the one before. Append-only.
CREATE TABLE audit_trail (
  seq          INTEGER PRIMARY KEY,  -- 1, 2, 3, ... with no gap
  at           TEXT NOT NULL,        -- server time of the commit (UTC, RFC 3339, milliseconds)
  who          TEXT NOT NULL,        -- the authenticated subject, or 'anonymous'
  action       TEXT NOT NULL,        -- 'create', 'correct', 'acknowledge', ...
  record_table TEXT,                 -- the table written
  record_id    TEXT,                 -- the record's key in it
  route        TEXT,                 -- 'POST /api/epro/submit': the route that served the request
  request_id   TEXT,                 -- the request's id (X-Request-Id)
  before       TEXT,                 -- the record before the change, as JSON (NULL for a new record)
  after        TEXT,                 -- the record after it, as JSON
  reason       TEXT,                 -- why (required for a correction)
  prev_hash    TEXT NOT NULL,        -- the hash of entry seq - 1 (64 zeros for the first)
  hash         TEXT NOT NULL         -- SHA-256 of this entry's fields and prev_hash (core/audit.h)
);

CREATE TRIGGER audit_trail_no_update BEFORE UPDATE ON audit_trail
BEGIN
  SELECT RAISE(ABORT, 'audit_trail is append-only');
END;

CREATE TRIGGER audit_trail_no_delete BEFORE DELETE ON audit_trail
BEGIN
  SELECT RAISE(ABORT, 'audit_trail is append-only');
END;
