-- A token may expire, and each one says when it was last used (ADR 0064).
--
-- expires_at: set when the token is created, never changed (no role is
-- granted UPDATE on it); NULL, it never expires. The servers compare it with
-- their clock on every call, cached or not.
--
-- last_used_at: when the token last authenticated a call, written behind by
-- each server process at most once per token and interval
-- (SEALTRAIL_TOKEN_LAST_USE_INTERVAL), never on a call's path. Only the
-- cross-tenant role writes it (one statement for every token a process saw
-- used), and only forward (the statement's own condition).
--
-- Both columns are nullable without a default: adding them rewrites nothing.
ALTER TABLE api_tokens
    ADD COLUMN expires_at   timestamptz,
    ADD COLUMN last_used_at timestamptz;
GRANT UPDATE (last_used_at) ON api_tokens TO sealtrail_system;
