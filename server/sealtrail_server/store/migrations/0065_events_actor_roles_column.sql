-- The record's `actor.roles` as a column written at append (ADR 0152, which
-- amends ADR 0150), so that "what did admins do this week" reads a column of
-- the week's rows, not each record parsed: read off the records, a week's
-- count by role took 8.5 to 13.7 times the week's plain count (bench/roles.py).
-- NULL where the event has no roles, as the record omits them. Adding a
-- column without a default rewrites nothing; IF NOT EXISTS, so that an
-- operator may add it beforehand.
ALTER TABLE events ADD COLUMN IF NOT EXISTS actor_roles text[];
-- The UPDATEs events admit (ADR 0143, 0149, 0152): 0064's, as they were, and
-- one of a row whose actor_roles is NULL setting it to the roles its own
-- record lists, in their order, with no other column changed. Anything else is
-- refused as before; DELETE is unchanged.
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
        IF OLD.actor_roles IS NULL AND NEW.actor_roles IS NOT NULL
            AND json_typeof((OLD.record::json -> 'actor') -> 'roles') = 'array'
            -- Strings alone, as the filter read them off the record (`?|`).
            AND NOT EXISTS (
                SELECT FROM json_array_elements((OLD.record::json -> 'actor') -> 'roles') AS r
                WHERE json_typeof(r) <> 'string')
            AND NEW.actor_roles = ARRAY(
                SELECT json_array_elements_text((OLD.record::json -> 'actor') -> 'roles'))
            AND (to_jsonb(NEW) - 'actor_roles' - 'search_doc')
                = (to_jsonb(OLD) - 'actor_roles' - 'search_doc')
        THEN
            RETURN NEW;
        END IF;
        RAISE EXCEPTION 'sealtrail: % is append-only; the only UPDATE allowed sets the'
            ' credential columns, duration_ms or actor_roles of a row appended before them to'
            ' what its record says', TG_TABLE_NAME
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    RAISE EXCEPTION 'sealtrail: % is append-only; % is not allowed', TG_TABLE_NAME, TG_OP
        USING ERRCODE = 'insufficient_privilege';
END;
$$;
-- The rows appended before by an unreleased build (the roles were never in a
-- release before this migration) are filled here, once, so that the column
-- alone answers the filter: no index of unread rows, no backfill, no branch
-- over the records. Such a build applied migration 0064 first (the roles came
-- after it), so only rows received since then, less a day for a clock's
-- skew, can hold roles: a database a release wrote reads its last day's
-- partitions, not every record, while the migration holds its lock on events.
-- The bound is a literal, so that the partitions before it are pruned when
-- the UPDATE is planned; `strpos` first, so that only a record naming "roles"
-- somewhere is parsed. Roles not all strings (a row written straight into the
-- database: Record refuses them) are left NULL, as the filter found none there.
DO $$
DECLARE
    since timestamptz := (SELECT applied_at - interval '1 day' FROM schema_migrations
                          WHERE version = 64);
BEGIN
    EXECUTE format(
        'UPDATE events SET actor_roles = ARRAY(SELECT json_array_elements_text('
        '(record::json -> ''actor'') -> ''roles''))'
        ' WHERE received_at >= %L AND actor_roles IS NULL AND strpos(record, ''"roles"'') > 0'
        ' AND json_typeof((record::json -> ''actor'') -> ''roles'') = ''array'''
        ' AND NOT EXISTS (SELECT FROM json_array_elements((record::json -> ''actor'') -> ''roles'')'
        ' AS r WHERE json_typeof(r) <> ''string'')',
        coalesce(since, '-infinity'));
END;
$$;
-- No index: under row-level security only leakproof operators are index
-- conditions (ADR 0013), and neither `&&` nor GIN's other array operators
-- are, so the service's statements could not use one (measured: its plans
-- read the tenant's index with or without it). The column is a condition of
-- the rows the tenant's index yields, read without parsing the record.
