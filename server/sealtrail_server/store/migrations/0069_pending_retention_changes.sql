-- A retention policy change that keeps anything less long waits
-- SEALTRAIL_RETENTION_SHORTENING_DELAY before it applies (ADR 0163,
-- docs/retention.md "Shortenings wait"): the change as set, and when it takes
-- effect. NULL all three: none pending. Columns of the tenant's policy row, as
-- the ceiling is (migration 0040): each purge batch reads them under that
-- row's lock, with the policy in force, and keeps each event as long as the
-- longer of the two says.
ALTER TABLE retention_policies
    ADD COLUMN pending_default_days integer CHECK (pending_default_days >= 0),
    ADD COLUMN pending_rules jsonb CHECK (jsonb_typeof(pending_rules) = 'array'),
    ADD COLUMN pending_effective_at timestamptz,
    ADD CONSTRAINT retention_policies_pending_whole CHECK (
        (pending_default_days IS NULL) = (pending_rules IS NULL)
        AND (pending_rules IS NULL) = (pending_effective_at IS NULL)
    );

GRANT UPDATE (pending_default_days, pending_rules, pending_effective_at)
    ON retention_policies TO sealtrail_service;
