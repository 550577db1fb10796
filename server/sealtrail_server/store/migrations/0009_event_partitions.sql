-- The events table, partitioned by month of received_at (ADR 0015): queries
-- over recent times prune older months, and retention drops a month once it
-- is empty. received_at, not occurred_at: the service sets it, and an event's
-- occurred_at is at most 5 minutes after it, so a lower bound on occurred_at
-- is one on received_at too.
--
-- Every unique index of a partitioned table must hold the partition key, so
-- the primary key becomes (tenant_id, seq, received_at) and the id index
-- (tenant_id, id, received_at). Seqs and ids stay unique by construction (the
-- head row lock, UUIDv7); lookups by them probe each partition's index once.

-- Monthly partitions covering [from_time, to_time], each created unless it
-- exists; returns how many were created. The server calls it (as the owner)
-- at start and on every retention pass, three months ahead. A month whose
-- rows already sit in the default partition is skipped with a warning.
CREATE FUNCTION sealtrail_create_event_partitions(from_time timestamptz, to_time timestamptz)
    RETURNS integer LANGUAGE plpgsql AS $$
DECLARE
    month timestamp := date_trunc('month', from_time AT TIME ZONE 'UTC');
    name text;
    created integer := 0;
BEGIN
    WHILE month <= to_time AT TIME ZONE 'UTC' LOOP
        name := 'events_' || to_char(month, 'YYYY_MM');
        IF to_regclass(name) IS NULL THEN
            BEGIN
                EXECUTE format(
                    'CREATE TABLE %I PARTITION OF events FOR VALUES FROM (%L) TO (%L)',
                    name, month AT TIME ZONE 'UTC', (month + interval '1 month') AT TIME ZONE 'UTC');
                -- Statement triggers are not inherited: a partition refuses TRUNCATE itself.
                EXECUTE format(
                    'CREATE TRIGGER events_no_truncate BEFORE TRUNCATE ON %I'
                    ' FOR EACH STATEMENT EXECUTE FUNCTION events_reject_change()', name);
                created := created + 1;
            EXCEPTION WHEN check_violation THEN
                RAISE WARNING 'sealtrail: partition % not created: its rows are in events_default', name;
            END;
        END IF;
        month := month + interval '1 month';
    END LOOP;
    RETURN created;
END
$$;
REVOKE EXECUTE ON FUNCTION sealtrail_create_event_partitions(timestamptz, timestamptz) FROM PUBLIC;

ALTER TABLE events RENAME TO events_unpartitioned;
ALTER TABLE events_unpartitioned RENAME CONSTRAINT events_pkey TO events_unpartitioned_pkey;
DROP INDEX events_id, events_idempotency_key, events_action, events_occurred_at, events_actor_id,
    events_actor_email, events_resource, events_request_id, events_trace_id, events_search,
    events_received_at;

-- The same columns, checks and generated search_doc as before.
CREATE TABLE events (
    LIKE events_unpartitioned INCLUDING DEFAULTS INCLUDING CONSTRAINTS INCLUDING GENERATED,
    PRIMARY KEY (tenant_id, seq, received_at)
) PARTITION BY RANGE (received_at);
-- Rows of a month with no partition yet land here rather than being refused.
CREATE TABLE events_default PARTITION OF events DEFAULT;

CREATE UNIQUE INDEX events_id ON events (tenant_id, id, received_at);
CREATE INDEX events_idempotency_key ON events (tenant_id, idempotency_key)
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
CREATE INDEX events_received_at ON events (tenant_id, received_at);

CREATE TRIGGER events_no_update_delete BEFORE UPDATE OR DELETE ON events
    FOR EACH ROW EXECUTE FUNCTION events_reject_change();
CREATE TRIGGER events_no_truncate BEFORE TRUNCATE ON events
    FOR EACH STATEMENT EXECUTE FUNCTION events_reject_change();
CREATE TRIGGER events_no_truncate BEFORE TRUNCATE ON events_default
    FOR EACH STATEMENT EXECUTE FUNCTION events_reject_change();

SELECT sealtrail_create_event_partitions(
    coalesce((SELECT min(received_at) FROM events_unpartitioned), now()),
    now() + interval '3 months');
INSERT INTO events (tenant_id, seq, id, occurred_at, received_at, action, category, severity,
    outcome, actor_id, actor_email, resource_type, resource_id, request_id, trace_id,
    idempotency_key, leaf_hash, record)
SELECT tenant_id, seq, id, occurred_at, received_at, action, category, severity, outcome,
    actor_id, actor_email, resource_type, resource_id, request_id, trace_id, idempotency_key,
    leaf_hash, record
FROM events_unpartitioned;
DROP TABLE events_unpartitioned;

GRANT SELECT ON events TO sealtrail_service, sealtrail_system;
GRANT INSERT ON events TO sealtrail_system;
SELECT sealtrail_isolate_by_tenant('events');
ANALYZE events;
