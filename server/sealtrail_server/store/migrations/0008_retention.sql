-- Retention, legal hold and tenant erasure (ADR 0014, docs/retention.md).

-- A tenant's retention policy and legal hold. A tenant without a row keeps
-- everything forever and has no hold. `rules` is a JSON array of
-- {"category": "<name>" | "action_prefix": "<prefix>.", "days": n}, n = 0 forever.
CREATE TABLE retention_policies (
    tenant_id            text        PRIMARY KEY,
    default_days         integer     NOT NULL DEFAULT 0 CHECK (default_days >= 0),
    rules                jsonb       NOT NULL DEFAULT '[]' CHECK (jsonb_typeof(rules) = 'array'),
    policy_updated_at    timestamptz,
    legal_hold           boolean     NOT NULL DEFAULT false,
    legal_hold_reason    text        NOT NULL DEFAULT '',
    legal_hold_updated_at timestamptz
);

-- What is left of an erased tenant; its id cannot be used again.
CREATE TABLE tenant_erasures (
    tenant_id        text        PRIMARY KEY,
    erased_at        timestamptz NOT NULL,
    erased_by        text        NOT NULL,
    final_tree_size  bigint      NOT NULL CHECK (final_tree_size >= 0),
    final_root_hash  bytea       NOT NULL CHECK (length(final_root_hash) = 32),
    final_checkpoint text        NOT NULL,
    removed_rows     jsonb       NOT NULL
);

-- Tombstones: when retention removes an event, its leaf hash stays in
-- tree_nodes at level 0, index seq - 1, so every proof and VerifyLog still
-- reach the same roots.
ALTER TABLE tree_nodes DROP CONSTRAINT tree_nodes_level_check;
ALTER TABLE tree_nodes ADD CONSTRAINT tree_nodes_level_check CHECK (level BETWEEN 0 AND 63);

-- The append-only triggers let exactly two removals through, each declared by
-- its transaction with `SET LOCAL sealtrail.removal`: retention deleting
-- events (from events or, once it is partitioned (0009), one of its months
-- events_YYYY_MM), and erasure deleting a tenant's rows of any table. Only the owner
-- holds DELETE at all (0007); TRUNCATE and UPDATE stay refused for everyone.
CREATE OR REPLACE FUNCTION events_reject_change() RETURNS trigger LANGUAGE plpgsql AS $$
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
    END IF;
    RAISE EXCEPTION 'sealtrail: % is append-only; % is not allowed', TG_TABLE_NAME, TG_OP
        USING ERRCODE = 'insufficient_privilege';
END;
$$;

GRANT SELECT, INSERT ON retention_policies TO sealtrail_service;
GRANT UPDATE (default_days, rules, policy_updated_at, legal_hold, legal_hold_reason,
    legal_hold_updated_at) ON retention_policies TO sealtrail_service;
GRANT SELECT ON retention_policies, tenant_erasures TO sealtrail_service, sealtrail_system;

SELECT sealtrail_isolate_by_tenant('retention_policies');
SELECT sealtrail_isolate_by_tenant('tenant_erasures');
