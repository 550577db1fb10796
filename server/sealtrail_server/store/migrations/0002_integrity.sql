-- Interior Merkle nodes, signed checkpoints and the keys that signed them.

-- Root hash of every complete perfect subtree of level >= 1 of each tenant's
-- tree: (level, idx) covers leaves [idx << level, (idx + 1) << level). Level 0
-- is events.leaf_hash. Written with the events that complete them, so any
-- proof needs O(log n) reads.
CREATE TABLE tree_nodes (
    tenant_id text     NOT NULL,
    level     smallint NOT NULL CHECK (level BETWEEN 1 AND 63),
    idx       bigint   NOT NULL CHECK (idx >= 0),
    hash      bytea    NOT NULL CHECK (length(hash) = 32),
    PRIMARY KEY (tenant_id, level, idx)
);

-- Public keys that have signed checkpoints, so old checkpoints stay verifiable
-- after the signing key is rotated.
CREATE TABLE signing_keys (
    key_name      text        NOT NULL,
    key_id        bytea       NOT NULL CHECK (length(key_id) = 4),
    verifier      text        NOT NULL,
    first_used_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (key_name, key_id)
);

-- Signed checkpoints (C2SP signed notes). One per tenant and size: a second
-- checkpoint at a size must carry the same root, which the issuer checks.
CREATE TABLE checkpoints (
    tenant_id text        NOT NULL,
    tree_size bigint      NOT NULL CHECK (tree_size >= 0),
    root_hash bytea       NOT NULL CHECK (length(root_hash) = 32),
    note      text        NOT NULL,
    key_name  text        NOT NULL,
    key_id    bytea       NOT NULL,
    issued_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, tree_size),
    FOREIGN KEY (key_name, key_id) REFERENCES signing_keys
);

-- Like events, nodes and checkpoints are append-only; the message names the table.
CREATE OR REPLACE FUNCTION events_reject_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'sealtrail: % is append-only; % is not allowed', TG_TABLE_NAME, TG_OP
        USING ERRCODE = 'insufficient_privilege';
END;
$$;
CREATE TRIGGER tree_nodes_no_update_delete BEFORE UPDATE OR DELETE ON tree_nodes
    FOR EACH ROW EXECUTE FUNCTION events_reject_change();
CREATE TRIGGER tree_nodes_no_truncate BEFORE TRUNCATE ON tree_nodes
    FOR EACH STATEMENT EXECUTE FUNCTION events_reject_change();
CREATE TRIGGER checkpoints_no_update_delete BEFORE UPDATE OR DELETE ON checkpoints
    FOR EACH ROW EXECUTE FUNCTION events_reject_change();
CREATE TRIGGER checkpoints_no_truncate BEFORE TRUNCATE ON checkpoints
    FOR EACH STATEMENT EXECUTE FUNCTION events_reject_change();
