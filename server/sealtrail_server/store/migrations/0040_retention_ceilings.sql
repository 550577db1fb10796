-- A tenant's retention ceiling, its plan's (ADR 0071, docs/retention.md): the
-- most days the operator lets its policy keep events, set with
-- `sealtrail-server tenant retention-limit`; NULL: none. A column of the
-- tenant's policy row rather than a table of its own: each purge batch reads
-- the policy under that row's lock, so it reads the ceiling with it, and a
-- change of the ceiling waits for a batch under way as a legal hold does.
ALTER TABLE retention_policies
    ADD COLUMN max_days integer CHECK (max_days BETWEEN 1 AND 36500);

-- The operator's command reaches the database as the service does.
GRANT UPDATE (max_days) ON retention_policies TO sealtrail_service;
