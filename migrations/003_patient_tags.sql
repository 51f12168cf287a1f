-- Patient tags: one row per (patient, tag).
CREATE TABLE patient_tags (
  patient_id TEXT NOT NULL,
  tag        TEXT NOT NULL,
  added_at   TEXT NOT NULL,
  PRIMARY KEY (patient_id, tag)
);
