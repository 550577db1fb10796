-- The API token that recorded each event (Event.recorded_by, ADR 0061): the
-- record holds it, hashed with the rest; this column, derived from it at
-- append like the other filtered columns, serves the `recorded_by` filter
-- ("everything this token wrote", after a revocation). NULL on Sealtrail's
-- own records and on events appended before this migration.
--
-- Adding a column without a default rewrites nothing. The index is partial:
-- built over an existing log, it scans every partition and takes no entry,
-- while appends wait for it (ADR 0050: the migration waits for its lock a
-- moment at a time).
ALTER TABLE events ADD COLUMN recorded_by uuid;
CREATE INDEX events_recorded_by ON events (tenant_id, recorded_by, seq)
    WHERE recorded_by IS NOT NULL;
