-- What a retention pass removed of a tenant and has not yet recorded: written in
-- the transaction of each batch it removes, deleted once the `retention.purged`
-- event is in the tenant's log. A crash in between leaves the row, and the next
-- pass records it; `purge_id` is that event's idempotency key, so it is recorded
-- once however often that is tried. The purge job (the tables' owner) alone
-- reads and writes it.
CREATE TABLE retention_pending_purges (
    tenant_id  text        PRIMARY KEY,
    purge_id   uuid        NOT NULL,
    summary    jsonb       NOT NULL,
    updated_at timestamptz NOT NULL
);
SELECT sealtrail_isolate_by_tenant('retention_pending_purges');
