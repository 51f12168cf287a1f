-- The PostgreSQL text of migrations/002_protocols.sql. Each protocol's JSON is stored minified, as
-- SQLite's json_each gives it: whitespace outside strings removed.
CREATE TABLE protocols (
  id   text PRIMARY KEY,
  doc  text NOT NULL -- the protocol as JSON
);

INSERT INTO protocols (id, doc)
SELECT value ->> 'id', regexp_replace(value::text, '("(?:[^"\\]|\\.)*")|\s+', '\1', 'g')
FROM json_array_elements(triage_app_file('data/protocols.json')::json) AS value;
