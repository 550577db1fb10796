-- Sealtrail schema, version 1. Every table is keyed by tenant_id first, so the
-- schema can be distributed by tenant (Citus) without reshaping.

-- API tokens. Only the SHA-256 of a token is kept.
CREATE TABLE api_tokens (
    tenant_id     text        NOT NULL,
    token_id      uuid        NOT NULL,
    secret_sha256 bytea       NOT NULL,
    role          text        NOT NULL CHECK (role IN ('recorder', 'reader', 'admin')),
    name          text        NOT NULL DEFAULT '',
    created_at    timestamptz NOT NULL DEFAULT now(),
    revoked_at    timestamptz,
    PRIMARY KEY (tenant_id, token_id)
);
CREATE UNIQUE INDEX api_tokens_secret ON api_tokens (secret_sha256);

-- One row per tenant: its log's size and the RFC 6962 tree state. Appenders
-- lock it FOR UPDATE, which serialises every writer of a tenant, in any process.
CREATE TABLE chain_heads (
    tenant_id  text        PRIMARY KEY,
    tree_size  bigint      NOT NULL CHECK (tree_size >= 0),
    root_hash  bytea       NOT NULL,
    -- Roots of the perfect subtrees of the tree, largest first (one per set bit of
    -- tree_size), as their 32-byte hashes concatenated.
    frontier   bytea       NOT NULL CHECK (length(frontier) % 32 = 0),
    updated_at timestamptz NOT NULL DEFAULT now()
);

-- The log. `record` is the canonical RFC 8785 JSON exactly as hashed into
-- leaf_hash; every other column is derived from it at insert, for filtering.
CREATE TABLE events (
    tenant_id       text        NOT NULL,
    seq             bigint      NOT NULL CHECK (seq >= 1),
    id              uuid        NOT NULL,
    occurred_at     timestamptz NOT NULL,
    received_at     timestamptz NOT NULL,
    action          text        NOT NULL,
    category        text,
    severity        smallint    NOT NULL,
    outcome         text        NOT NULL,
    actor_id        text        NOT NULL,
    actor_email     text,
    resource_type   text,
    resource_id     text,
    request_id      uuid,
    trace_id        text,
    idempotency_key text,
    leaf_hash       bytea       NOT NULL,
    record          text        NOT NULL,
    search_doc      tsvector    GENERATED ALWAYS AS (
        to_tsvector('simple'::regconfig, coalesce((record::jsonb) ->> 'description', ''))
        || jsonb_to_tsvector('simple'::regconfig, coalesce((record::jsonb) -> 'details', '{}'::jsonb), '["string", "numeric"]')
    ) STORED,
    PRIMARY KEY (tenant_id, seq)
);
CREATE UNIQUE INDEX events_id ON events (tenant_id, id);
CREATE UNIQUE INDEX events_idempotency_key ON events (tenant_id, idempotency_key)
    WHERE idempotency_key IS NOT NULL;
CREATE INDEX events_action ON events (tenant_id, action text_pattern_ops, seq);
CREATE INDEX events_occurred_at ON events (tenant_id, occurred_at);
CREATE INDEX events_actor_id ON events (tenant_id, actor_id, seq);
CREATE INDEX events_actor_email ON events (tenant_id, actor_email, seq) WHERE actor_email IS NOT NULL;
CREATE INDEX events_resource ON events (tenant_id, resource_type, resource_id, seq)
    WHERE resource_type IS NOT NULL OR resource_id IS NOT NULL;
CREATE INDEX events_request_id ON events (tenant_id, request_id) WHERE request_id IS NOT NULL;
CREATE INDEX events_trace_id ON events (tenant_id, trace_id) WHERE trace_id IS NOT NULL;
CREATE INDEX events_search ON events USING gin (search_doc);

-- The log is append-only: no statement may change or remove an event.
CREATE FUNCTION events_reject_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'sealtrail: events are append-only; % is not allowed', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END;
$$;
CREATE TRIGGER events_no_update_delete BEFORE UPDATE OR DELETE ON events
    FOR EACH ROW EXECUTE FUNCTION events_reject_change();
CREATE TRIGGER events_no_truncate BEFORE TRUNCATE ON events
    FOR EACH STATEMENT EXECUTE FUNCTION events_reject_change();
