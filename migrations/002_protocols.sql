-- Trial protocols, seeded from the application's fixture (data/protocols.json) on first start.
CREATE TABLE protocols (
  id   TEXT PRIMARY KEY,
  doc  TEXT NOT NULL -- the protocol as JSON
);

INSERT INTO protocols (id, doc)
SELECT json_extract(value, '$.id'), value
FROM json_each(triage_app_file('data/protocols.json'));
