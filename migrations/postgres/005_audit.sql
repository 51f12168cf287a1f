-- The PostgreSQL text of migrations/005_audit.sql. Entries are appended by triage_audit_append
-- (core/pg_schema.h), which also says how the chain stays one chain across nodes.
CREATE TABLE audit_trail (
  seq          bigint PRIMARY KEY,  -- 1, 2, 3, ... with no gap
  at           text NOT NULL,       -- server time of the commit (UTC, RFC 3339, milliseconds)
  who          text NOT NULL,       -- the authenticated subject, or 'anonymous'
  action       text NOT NULL,       -- 'create', 'correct', 'acknowledge', ...
  record_table text,                -- the table written
  record_id    text,                -- the record's key in it
  route        text,                -- 'POST /api/epro/submit': the route that served the request
  request_id   text,                -- the request's id (X-Request-Id)
  before       text,                -- the record before the change, as JSON (NULL for a new record)
  after        text,                -- the record after it, as JSON
  reason       text,                -- why (required for a correction)
  prev_hash    text NOT NULL,       -- the hash of entry seq - 1 (64 zeros for the first)
  hash         text NOT NULL        -- SHA-256 of this entry's fields and prev_hash (core/audit.h)
);

CREATE TRIGGER audit_trail_no_update BEFORE UPDATE ON audit_trail
  FOR EACH ROW EXECUTE FUNCTION triage_refuse('audit_trail is append-only');
CREATE TRIGGER audit_trail_no_delete BEFORE DELETE ON audit_trail
  FOR EACH ROW EXECUTE FUNCTION triage_refuse('audit_trail is append-only');
CREATE TRIGGER audit_trail_no_truncate BEFORE TRUNCATE ON audit_trail
  FOR EACH STATEMENT EXECUTE FUNCTION triage_refuse('audit_trail is append-only');
