-- Checkpoint rows the signer set aside (ADR 0159): a row within its tenant's
-- log whose note no known key signs over what the row says (its log, size and
-- root) is a database superuser's. Left in `checkpoints`, rows at each coming
-- size held its slot (the signer never writes over a row) and more than 64
-- refused the tenant, the events recorded meanwhile unsigned (ADR 0156). Moved
-- here, each row whole, with when and why: its slot is free for the genuine
-- signature, it costs no check again, and VerifyLog reports it. Append-only as
-- `checkpoints` is; erasure removes a tenant's rows as it does every table's.
CREATE TABLE checkpoints_refused (
    tenant_id  text        NOT NULL,
    tree_size  bigint      NOT NULL,
    root_hash  bytea       NOT NULL,
    note       text        NOT NULL,
    key_name   text        NOT NULL,
    key_id     bytea       NOT NULL,
    issued_at  timestamptz NOT NULL,
    refused_at timestamptz NOT NULL DEFAULT now(),
    why        text        NOT NULL,
    -- No key: the row may name a key a superuser registered and removed since.
    PRIMARY KEY (tenant_id, tree_size, refused_at)
);
CREATE TRIGGER checkpoints_refused_no_update_delete BEFORE UPDATE OR DELETE
    ON checkpoints_refused FOR EACH ROW EXECUTE FUNCTION events_reject_change();
CREATE TRIGGER checkpoints_refused_no_truncate BEFORE TRUNCATE ON checkpoints_refused
    FOR EACH STATEMENT EXECUTE FUNCTION events_reject_change();
GRANT SELECT ON checkpoints_refused TO sealtrail_service, sealtrail_system;
SELECT sealtrail_isolate_by_tenant('checkpoints_refused');

-- The checkpoints' own trigger, apart from the function events and tree_nodes
-- share: one more DELETE let through, the move below's, which declares itself
-- with `sealtrail.removal` = 'refused_checkpoint'. Neither service role holds
-- DELETE on checkpoints, so only the move (and the owner) can use it.
CREATE FUNCTION checkpoints_reject_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE'
        AND current_setting('sealtrail.removal', true) IN ('erasure', 'refused_checkpoint')
    THEN
        RETURN OLD;
    END IF;
    RAISE EXCEPTION 'sealtrail: % is append-only; % is not allowed', TG_TABLE_NAME, TG_OP
        USING ERRCODE = 'insufficient_privilege';
END;
$$;
DROP TRIGGER checkpoints_no_update_delete ON checkpoints;
CREATE TRIGGER checkpoints_no_update_delete BEFORE UPDATE OR DELETE ON checkpoints
    FOR EACH ROW EXECUTE FUNCTION checkpoints_reject_change();

-- The move, as the owner: the tenant's row at `size`, if it still holds
-- `note` and `root`, out of `checkpoints` into `checkpoints_refused` with
-- `why`; whether it moved. PostgreSQL has no Ed25519, so it cannot check that
-- the row is forged: the signer checked. Whoever holds the system role can
-- move a genuine row so, never remove it: it stays here, and VerifyLog
-- reports every row here.
CREATE FUNCTION sealtrail_refuse_checkpoint(
    refused_tenant text, refused_size bigint, refused_root bytea, refused_note text, reason text
) RETURNS boolean LANGUAGE plpgsql SECURITY DEFINER AS $$
DECLARE
    removal constant text := current_setting('sealtrail.removal', true);
    moved integer;
BEGIN
    PERFORM set_config('sealtrail.removal', 'refused_checkpoint', true);
    WITH gone AS (
        DELETE FROM checkpoints
        WHERE tenant_id = refused_tenant AND tree_size = refused_size
            AND root_hash = refused_root AND note = refused_note
        RETURNING tenant_id, tree_size, root_hash, note, key_name, key_id, issued_at
    )
    INSERT INTO checkpoints_refused
        (tenant_id, tree_size, root_hash, note, key_name, key_id, issued_at, why)
    SELECT tenant_id, tree_size, root_hash, note, key_name, key_id, issued_at, reason FROM gone;
    GET DIAGNOSTICS moved = ROW_COUNT;
    PERFORM set_config('sealtrail.removal', coalesce(removal, ''), true);
    RETURN moved > 0;
END;
$$;
-- Its tables looked up in the migrations' schema only, and pg_temp last: left
-- out, the caller's temporary schema is searched first, and a temporary
-- `checkpoints` with a trigger of the caller's ran as the owner (helper-589).
DO $$
BEGIN
    EXECUTE format(
        'ALTER FUNCTION sealtrail_refuse_checkpoint(text, bigint, bytea, text, text)'
        ' SET search_path = %I, pg_catalog, pg_temp',
        current_schema()
    );
END;
$$;
REVOKE EXECUTE ON FUNCTION sealtrail_refuse_checkpoint(text, bigint, bytea, text, text)
    FROM PUBLIC;
GRANT EXECUTE ON FUNCTION sealtrail_refuse_checkpoint(text, bigint, bytea, text, text)
    TO sealtrail_system;
