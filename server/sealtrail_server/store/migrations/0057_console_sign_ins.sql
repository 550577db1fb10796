-- What a console sign-in through the identity provider keeps between its
-- requests (ADR 0140, 2026-12-07), so that any server process takes each of
-- them, not only the one that began it: a row per sign-in begun at
-- GET /auth/login (`begun`) and per one-time code the callback handed the
-- page (`handed`), each keyed by the SHA-256 of its state or code (neither
-- kept in clear) in the tenant the console signs people into, taken once by
-- a DELETE ... RETURNING and gone after `expires_at` (the database's clock).
--
-- No row holds what would complete a sign-in or take its token: a begun row
-- holds the digest of the browser's cookie (`binding`), and the PKCE
-- verifier and nonce are derived from that cookie and the state, kept here
-- by neither; a handed row holds the token sealed (AES-GCM) under a key
-- derived from the one-time code, which only the browser has.
CREATE TABLE console_sign_ins (
    tenant_id        text        NOT NULL,
    digest           bytea       NOT NULL CHECK (length(digest) = 32),
    stage            text        NOT NULL CHECK (stage IN ('begun', 'handed')),
    expires_at       timestamptz NOT NULL,
    binding          bytea       CHECK (length(binding) = 32),
    token_id         uuid,
    token_role       text,
    token_name       text,
    token_expires_at timestamptz,
    sealed_token     bytea,
    PRIMARY KEY (tenant_id, digest),
    CHECK ((stage = 'begun') = (binding IS NOT NULL)),
    CHECK (
        (stage = 'handed') = (token_id IS NOT NULL AND token_role IS NOT NULL
            AND token_name IS NOT NULL AND token_expires_at IS NOT NULL
            AND sealed_token IS NOT NULL)
    )
);
-- The sweep at each new row: a tenant's expired rows, and its oldest of a stage.
CREATE INDEX console_sign_ins_expiry ON console_sign_ins (tenant_id, stage, expires_at);
SELECT sealtrail_isolate_by_tenant('console_sign_ins');
GRANT SELECT, INSERT, DELETE ON console_sign_ins TO sealtrail_service;
