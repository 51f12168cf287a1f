-- The trial of each submission and safety event, and the acknowledgement of a safety event
-- (scripts/safety.lua; README.md, "Validation and questionnaires").
--
-- trial_id is the trial of the bearer token the submission came with (its "trial" claim, or the
-- body's trialId when the token names several): investigators and monitors of that trial see its
-- safety events. Rows stored before this migration have none (NULL): no trial lists them.
ALTER TABLE epro_submissions ADD COLUMN trial_id TEXT;
ALTER TABLE safety_events ADD COLUMN trial_id TEXT;
-- What the investigator wrote when acknowledging (optional).
ALTER TABLE safety_events ADD COLUMN acknowledged_note TEXT;

CREATE INDEX safety_events_trial ON safety_events(trial_id, raised_at);

-- A safety event is append-only but for its acknowledgement: the one UPDATE allowed sets
-- acknowledged_by and acknowledged_at (and the optional note) of an open event, once, and changes
-- nothing else. The acknowledgement stays on the event row (one place to read whether it is open)
-- rather than in a table of its own; its audit entry (same transaction) keeps the before and after.
CREATE TRIGGER safety_events_ack_once BEFORE UPDATE ON safety_events
WHEN OLD.acknowledged_at IS NOT NULL OR OLD.acknowledged_by IS NOT NULL OR OLD.acknowledged_note IS NOT NULL
BEGIN
  SELECT RAISE(ABORT, 'safety event already acknowledged: an acknowledgement is set once');
END;

CREATE TRIGGER safety_events_ack_only BEFORE UPDATE ON safety_events
WHEN NEW.acknowledged_by IS NULL OR NEW.acknowledged_by = '' OR NEW.acknowledged_at IS NULL
  OR NEW.id IS NOT OLD.id OR NEW.receipt_id IS NOT OLD.receipt_id OR NEW.patient_id IS NOT OLD.patient_id
  OR NEW.questionnaire IS NOT OLD.questionnaire OR NEW.flag IS NOT OLD.flag
  OR NEW.item_code IS NOT OLD.item_code OR NEW.answer IS NOT OLD.answer OR NEW.raised_at IS NOT OLD.raised_at
  OR NEW.trial_id IS NOT OLD.trial_id
BEGIN
  SELECT RAISE(ABORT, 'safety_events is append-only: only acknowledged_by, acknowledged_at and acknowledged_note may be set, once, on an open event');
END;
