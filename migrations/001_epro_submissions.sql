-- ePRO submissions: append-only. A correction is a new record that names the one it corrects.
CREATE TABLE epro_submissions (
  id              INTEGER PRIMARY KEY,
  receipt_id      TEXT NOT NULL UNIQUE,      -- the server's id, returned to the device
  patient_id      TEXT NOT NULL,
  idempotency_key TEXT,                      -- Idempotency-Key header, else the body's submissionId
  fingerprint     TEXT NOT NULL,             -- SHA-256 of the request body
  captured_at     TEXT,                      -- when the patient answered (the device's clock)
  received_at     TEXT NOT NULL,             -- when the server received it (UTC, RFC 3339)
  report_json     TEXT NOT NULL,
  corrects        TEXT REFERENCES epro_submissions(receipt_id),
  UNIQUE (patient_id, idempotency_key)
);

CREATE INDEX epro_submissions_patient ON epro_submissions(patient_id, received_at);

CREATE TRIGGER epro_submissions_no_update BEFORE UPDATE ON epro_submissions
BEGIN
  SELECT RAISE(ABORT, 'epro_submissions is append-only: store a correction instead');
END;

CREATE TRIGGER epro_submissions_no_delete BEFORE DELETE ON epro_submissions
BEGIN
  SELECT RAISE(ABORT, 'epro_submissions is append-only: store a correction instead');
END;
