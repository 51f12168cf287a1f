-- The PostgreSQL text of migrations/006_trials.sql: the two acknowledgement triggers are one trigger
-- function, checking in the order SQLite fires them (the one created last first).
ALTER TABLE epro_submissions ADD COLUMN trial_id text;
ALTER TABLE safety_events ADD COLUMN trial_id text;
ALTER TABLE safety_events ADD COLUMN acknowledged_note text;

CREATE INDEX safety_events_trial ON safety_events(trial_id, raised_at);

CREATE FUNCTION safety_events_acknowledge_once() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
  IF NEW.acknowledged_by IS NULL OR NEW.acknowledged_by = '' OR NEW.acknowledged_at IS NULL
     OR NEW.id IS DISTINCT FROM OLD.id OR NEW.receipt_id IS DISTINCT FROM OLD.receipt_id
     OR NEW.patient_id IS DISTINCT FROM OLD.patient_id OR NEW.questionnaire IS DISTINCT FROM OLD.questionnaire
     OR NEW.flag IS DISTINCT FROM OLD.flag OR NEW.item_code IS DISTINCT FROM OLD.item_code
     OR NEW.answer IS DISTINCT FROM OLD.answer OR NEW.raised_at IS DISTINCT FROM OLD.raised_at
     OR NEW.trial_id IS DISTINCT FROM OLD.trial_id THEN
    RAISE EXCEPTION 'safety_events is append-only: only acknowledged_by, acknowledged_at and acknowledged_note may be set, once, on an open event'
      USING ERRCODE = '23000';
  END IF;
  IF OLD.acknowledged_at IS NOT NULL OR OLD.acknowledged_by IS NOT NULL OR OLD.acknowledged_note IS NOT NULL THEN
    RAISE EXCEPTION 'safety event already acknowledged: an acknowledgement is set once' USING ERRCODE = '23000';
  END IF;
  RETURN NEW;
END
$$;

CREATE TRIGGER safety_events_acknowledge_once BEFORE UPDATE ON safety_events FOR EACH ROW
  EXECUTE FUNCTION safety_events_acknowledge_once();
