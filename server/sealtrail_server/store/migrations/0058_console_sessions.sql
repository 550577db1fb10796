-- The console's sessions that a sign-in through the identity provider began,
-- checked again with the provider every SEALTRAIL_OIDC_RECHECK_SECONDS (ADR
-- 0140, addendum 2026-12-07): a row per minted console token whose provider
-- gave a refresh token, keyed by the SHA-256 of the token's secret (what the
-- browser presents; api_tokens keeps the same digest) in the console's tenant.
--
-- `sealed` is the provider's refresh token (and the sign-in's nonce) sealed
-- with AES-GCM under a key derived from the console token's secret, which
-- only the browser holds: a reader of the table cannot use the refresh token,
-- and the server can only while the browser calls it. `next_check_at` and
-- `confirmed_at` run by the database's clock: the next call after the first
-- rechecks, and a session the provider has not confirmed for three intervals
-- (it is unreachable) ends at the next failed recheck.
CREATE TABLE console_sessions (
    tenant_id        text        NOT NULL,
    digest           bytea       NOT NULL CHECK (length(digest) = 32),
    token_id         uuid        NOT NULL,
    token_role       text        NOT NULL,
    subject          text        NOT NULL,
    token_expires_at timestamptz NOT NULL,
    confirmed_at     timestamptz NOT NULL,
    next_check_at    timestamptz NOT NULL,
    failures         integer     NOT NULL DEFAULT 0,
    sealed           bytea       NOT NULL,
    PRIMARY KEY (tenant_id, digest)
);
-- The sweep at each new row: a tenant's sessions whose token expired.
CREATE INDEX console_sessions_expiry ON console_sessions (tenant_id, token_expires_at);
SELECT sealtrail_isolate_by_tenant('console_sessions');
GRANT SELECT, INSERT, DELETE, UPDATE (confirmed_at, next_check_at, failures, sealed)
    ON console_sessions TO sealtrail_service;
