-- Scores of questionnaire submissions, and the safety events they raise: written in the same
-- transaction as the submission they belong to (scripts/epro.lua), so neither exists without it.
CREATE TABLE epro_scores (
  receipt_id    TEXT PRIMARY KEY REFERENCES epro_submissions(receipt_id),
  questionnaire TEXT NOT NULL,              -- its name in the app: phq9, gad7
  panel_code    TEXT NOT NULL,              -- LOINC of the panel (PHQ-9: 44249-1)
  total_code    TEXT NOT NULL,              -- LOINC of the total score (PHQ-9: 44261-6)
  total         INTEGER NOT NULL,           -- prorated when items are unanswered
  band          TEXT NOT NULL,              -- severity: minimal, mild, moderate, ...
  answered      INTEGER NOT NULL,           -- items answered
  prorated      INTEGER NOT NULL CHECK (prorated IN (0, 1)),
  flags         TEXT NOT NULL DEFAULT '[]', -- JSON array: ["phq9_item9_positive"]
  scored_at     TEXT NOT NULL               -- UTC, RFC 3339: the submission's received_at
);

CREATE TRIGGER epro_scores_no_update BEFORE UPDATE ON epro_scores
BEGIN
  SELECT RAISE(ABORT, 'epro_scores is append-only: a correction is a new submission');
END;

CREATE TRIGGER epro_scores_no_delete BEFORE DELETE ON epro_scores
BEGIN
  SELECT RAISE(ABORT, 'epro_scores is append-only: a correction is a new submission');
END;

-- A safety event: an answer that needs a clinician whatever the total (PHQ-9 item 9 above 0).
-- Open until acknowledged (acknowledged_by, acknowledged_at); never deleted.
CREATE TABLE safety_events (
  id              INTEGER PRIMARY KEY,
  receipt_id      TEXT NOT NULL REFERENCES epro_submissions(receipt_id),
  patient_id      TEXT NOT NULL,
  questionnaire   TEXT NOT NULL,
  flag            TEXT NOT NULL,            -- phq9_item9_positive
  item_code       TEXT NOT NULL,            -- LOINC of the item (PHQ-9 item 9: 44260-8)
  answer          INTEGER NOT NULL,
  raised_at       TEXT NOT NULL,            -- UTC, RFC 3339: the submission's received_at
  acknowledged_by TEXT,
  acknowledged_at TEXT
);

CREATE INDEX safety_events_open ON safety_events(raised_at) WHERE acknowledged_at IS NULL;
CREATE INDEX safety_events_patient ON safety_events(patient_id, raised_at);

CREATE TRIGGER safety_events_no_delete BEFORE DELETE ON safety_events
BEGIN
  SELECT RAISE(ABORT, 'safety events are never deleted: acknowledge them');
END;
