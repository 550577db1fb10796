-- An event's credential (the record's `actor.credential`, ADR 0142) as three
-- columns derived from the record at append like the other filtered columns,
-- so that CountEvents by credential and the `credential_id` filter read
-- columns, not each row's record parsed as JSON: a count by credential took
-- 33 times a count by actor of the same 200,000 events, and the latest page
-- of a credential used 20 times took 410 times the page of an actor used 20
-- times (bench/credentials.py), where the filter read every record.
--
-- Written from now on as: credential_kind the kind, '' for an event without
-- a credential (a credential's kind is never empty), so NULL marks exactly
-- the rows appended before this migration; credential_id and credential_hint
-- the id and hint, NULL where there is none. Rows appended before are not
-- updated here (a backfill would rewrite every row while holding this
-- migration's lock on events): migration 0059's background job writes them
-- later in small batches (ADR 0143); until it has, the count and the filter
-- read those from the record, as before, and only those (ADR 0142). Adding
-- columns without a default rewrites nothing; IF NOT EXISTS, so that an
-- operator may add them and build the indexes beforehand (docs/database.md).
--
-- events_credential_id serves the filter in seq order, as events_actor_id
-- serves `actor`; partial, so built over an existing log it scans every
-- partition and takes no entry (appends wait for it, ADR 0050, as for 0034).
-- events_credential_unread finds the rows appended before, which the filter
-- reads from the record: built over an existing log it takes an entry for
-- each (as one of 0054's did; docs/database.md says how to build it
-- beforehand), and a row appended from now on takes none. Its entries go
-- with their months as retention drops them.
ALTER TABLE events
    ADD COLUMN IF NOT EXISTS credential_kind text,
    ADD COLUMN IF NOT EXISTS credential_id text,
    ADD COLUMN IF NOT EXISTS credential_hint text;
CREATE INDEX IF NOT EXISTS events_credential_id ON events (tenant_id, credential_id, seq)
    WHERE credential_id IS NOT NULL;
CREATE INDEX IF NOT EXISTS events_credential_unread ON events (tenant_id, seq)
    WHERE credential_kind IS NULL;
