-- An event's duration (the record's `context.duration_ms`, milliseconds) as a
-- column written at append, as 0056's credential columns are (ADR 0149), so
-- that a count with a measure (CountEvents' `measure`) reads the column, not
-- each row's record parsed as JSON: a measured count by action took 20.9
-- times the plain count (bench/measures.py). NULL where the event has no
-- duration. Adding a column without a default rewrites nothing; IF NOT
-- EXISTS, so that an operator may add it beforehand (docs/database.md).
--
-- The rows appended before (and by an older release's process during a
-- rolling upgrade) hold NULL whatever their record says: those whose record
-- has a duration are the rows events_duration_unread holds, read off their
-- records by a measured count until the duration backfill (backfill/, as
-- 0059's for the credentials) writes them, in batches, by the UPDATE the
-- trigger below admits. A row appended from now on takes no entry: its
-- column is set when its record has a duration. Its predicate parses the
-- record only of a row whose column is NULL (an event without a duration),
-- and takes a duration that is a JSON number alone: a `null` or a text there
-- (no API call writes one; a row written straight into the database could)
-- would fail the backfill's cast, and its batch, every run (ADR 0149).
-- Built over an existing log it takes an entry for each row with a
-- duration, while appends wait (ADR 0050); docs/database.md says how to
-- build it beforehand. One found invalid (indisvalid false, of its own or a
-- partition's: a build beforehand that failed, or whose partitions are not
-- all attached) is refused, before anything is changed, as 0060 and 0061
-- refuse theirs: taken as made, the planner could use it for no partition,
-- and each measured count's probe for rows to read off their records, and
-- each batch of the backfill, would read the whole table instead.
DO $$
BEGIN
    IF EXISTS (SELECT FROM pg_index AS x
                WHERE x.indexrelid = to_regclass('events_duration_unread') AND NOT x.indisvalid
               UNION ALL
               SELECT FROM pg_inherits AS i JOIN pg_index AS x ON x.indexrelid = i.inhrelid
                WHERE i.inhparent = to_regclass('events_duration_unread') AND NOT x.indisvalid) THEN
        RAISE EXCEPTION 'sealtrail: index events_duration_unread is invalid (a build beforehand failed or was not finished): drop it or finish it as docs/database.md says';
    END IF;
END
$$;
ALTER TABLE events ADD COLUMN IF NOT EXISTS duration_ms float8;
CREATE INDEX IF NOT EXISTS events_duration_unread ON events (tenant_id, seq)
    WHERE duration_ms IS NULL AND json_typeof((record::json -> 'context') -> 'duration_ms') = 'number';
-- The UPDATEs events admit (ADR 0143, ADR 0149): 0059's of the credential
-- columns, as it was (the duration left as it is), and one of a row whose
-- duration_ms is NULL setting it to what its own record says, with no other
-- column changed. Anything else is refused as before; DELETE is unchanged.
CREATE OR REPLACE FUNCTION events_reject_change() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    credential json;
    derived constant text[] := ARRAY['credential_kind', 'credential_id', 'credential_hint',
        'search_doc'];
BEGIN
    IF TG_OP = 'DELETE' THEN
        CASE current_setting('sealtrail.removal', true)
            WHEN 'erasure' THEN RETURN OLD;
            WHEN 'retention' THEN
                IF TG_TABLE_NAME = 'events' OR starts_with(TG_TABLE_NAME, 'events_') THEN
                    RETURN OLD;
                END IF;
            ELSE NULL;
        END CASE;
    ELSIF TG_OP = 'UPDATE' AND TG_LEVEL = 'ROW'
        AND (TG_RELID = 'events'::regclass OR EXISTS (
            SELECT FROM pg_inherits WHERE inhrelid = TG_RELID AND inhparent = 'events'::regclass))
    THEN
        credential := (OLD.record::json -> 'actor') -> 'credential';
        IF OLD.credential_kind IS NULL AND OLD.credential_id IS NULL
            AND OLD.credential_hint IS NULL
            AND NEW.credential_kind IS NOT DISTINCT FROM coalesce(credential ->> 'kind', '')
            AND NEW.credential_id IS NOT DISTINCT FROM credential ->> 'id'
            AND NEW.credential_hint IS NOT DISTINCT FROM credential ->> 'hint'
            AND (to_jsonb(NEW) - derived) = (to_jsonb(OLD) - derived)
        THEN
            RETURN NEW;
        END IF;
        IF OLD.duration_ms IS NULL AND NEW.duration_ms IS NOT NULL
            AND NEW.duration_ms = ((OLD.record::json -> 'context') ->> 'duration_ms')::float8
            AND (to_jsonb(NEW) - 'duration_ms' - 'search_doc')
                = (to_jsonb(OLD) - 'duration_ms' - 'search_doc')
        THEN
            RETURN NEW;
        END IF;
        RAISE EXCEPTION 'sealtrail: % is append-only; the only UPDATE allowed sets the'
            ' credential columns, or duration_ms, of a row appended before them to what its'
            ' record says', TG_TABLE_NAME
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    RAISE EXCEPTION 'sealtrail: % is append-only; % is not allowed', TG_TABLE_NAME, TG_OP
        USING ERRCODE = 'insufficient_privilege';
END;
$$;
