-- The one UPDATE events admit (ADR 0143): a row appended before migration
-- 0056 (its three credential columns NULL) given the columns its own record
-- says, as the appender writes them (ADR 0142): credential_kind the record's
-- `actor.credential.kind`, '' for an event without a credential;
-- credential_id and credential_hint its id and hint, NULL for none. The
-- trigger derives them from the stored record itself and refuses anything
-- else: a value not the record's, a row whose kind is set already (a second
-- update), any other column changed (the record, its leaf hash, an actor,
-- a time). The Merkle tree hashes the record alone (leaf_hash), which no
-- update can change, so what VerifyLog and an offline verifier check is the
-- same before and after. The background backfill
-- (backfill/credentials.py) runs it, as the owner: sealtrail_service and
-- sealtrail_system hold no UPDATE on events and get none, so the owner (as
-- for retention's and erasure's deletes) is the only role that may, and a
-- superuser could always disable the trigger anyway.
--
-- A row trigger of the partitioned table fires on the partition a row is in
-- (TG_RELID a month, events_default, or events itself before 0009), so the
-- UPDATE branch applies to events and its partitions alone: tree_nodes and
-- checkpoints share this function and stay refused every UPDATE. The
-- row's stored generated column (search_doc) is left out of the comparison:
-- a BEFORE trigger's NEW holds no computed value of it yet, and it follows
-- from the columns compared. DELETE is unchanged (0008).
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
        RAISE EXCEPTION 'sealtrail: % is append-only; the only UPDATE allowed sets the'
            ' credential columns of a row appended before migration 0056 to what its record'
            ' says', TG_TABLE_NAME
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    RAISE EXCEPTION 'sealtrail: % is append-only; % is not allowed', TG_TABLE_NAME, TG_OP
        USING ERRCODE = 'insufficient_privilege';
END;
$$;
