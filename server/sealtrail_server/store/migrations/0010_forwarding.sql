-- Forwarding to SIEMs and webhooks (ADR 0016, docs/forwarding.md).

-- A tenant's sinks: the definition (written by admins as the service role) and
-- the delivery state (written by the forwarder as the system role).
-- `destination` holds the kind's settings, secrets included: they must be
-- readable to sign and authenticate requests, and no answer ever returns them.
CREATE TABLE sinks (
    tenant_id            text        NOT NULL,
    id                   uuid        NOT NULL,
    name                 text        NOT NULL CHECK (length(name) BETWEEN 1 AND 128),
    kind                 text        NOT NULL
        CHECK (kind IN ('webhook', 'splunk_hec', 'datadog_logs', 'elasticsearch')),
    format               text        NOT NULL CHECK (format IN ('sealtrail_json', 'ocsf')),
    filter               jsonb       NOT NULL,
    destination          jsonb       NOT NULL,
    paused               boolean     NOT NULL DEFAULT false,
    created_at           timestamptz NOT NULL,
    updated_at           timestamptz NOT NULL,
    -- Every event up to cursor_seq is delivered, filtered out or parked.
    cursor_seq           bigint      NOT NULL CHECK (cursor_seq >= 0),
    delivered_events     bigint      NOT NULL DEFAULT 0,
    last_delivery_at     timestamptz,
    last_error           text        NOT NULL DEFAULT '',
    last_error_at        timestamptz,
    consecutive_failures integer     NOT NULL DEFAULT 0,
    next_attempt_at      timestamptz,
    -- One process delivers a sink at a time: the one holding an unexpired lease.
    lease_owner          text,
    lease_until          timestamptz,
    PRIMARY KEY (tenant_id, id)
);
-- The forwarder's scan for sinks it may take.
CREATE INDEX sinks_lease ON sinks (lease_until);

-- Batches a destination refused for good, kept until replayed or the sink goes.
CREATE TABLE sink_dead_letters (
    tenant_id   text        NOT NULL,
    sink_id     uuid        NOT NULL,
    id          uuid        NOT NULL,
    first_seq   bigint      NOT NULL,
    last_seq    bigint      NOT NULL CHECK (last_seq >= first_seq),
    event_count integer     NOT NULL,
    http_status integer     NOT NULL,
    error       text        NOT NULL,
    created_at  timestamptz NOT NULL,
    PRIMARY KEY (tenant_id, sink_id, id),
    FOREIGN KEY (tenant_id, sink_id) REFERENCES sinks (tenant_id, id) ON DELETE CASCADE
);

-- Re-sends asked for: a seq range (from a window or a dead letter), with its
-- own cursor, delivered beside the sink's live cursor.
CREATE TABLE sink_replays (
    tenant_id       text        NOT NULL,
    sink_id         uuid        NOT NULL,
    id              uuid        NOT NULL,
    first_seq       bigint      NOT NULL CHECK (first_seq >= 1),
    last_seq        bigint      NOT NULL CHECK (last_seq >= first_seq - 1),
    occurred_after  timestamptz,
    occurred_before timestamptz,
    dead_letter_id  uuid,
    -- Deliver whatever the sink's filter says (an alert sent to the rule's sinks).
    bypass_filter   boolean     NOT NULL DEFAULT false,
    cursor_seq      bigint      NOT NULL,
    created_at      timestamptz NOT NULL,
    PRIMARY KEY (tenant_id, sink_id, id),
    FOREIGN KEY (tenant_id, sink_id) REFERENCES sinks (tenant_id, id) ON DELETE CASCADE
);

GRANT SELECT, INSERT, DELETE ON sinks, sink_replays TO sealtrail_service;
GRANT UPDATE (name, kind, format, filter, destination, paused, updated_at, consecutive_failures,
    next_attempt_at) ON sinks TO sealtrail_service;
GRANT SELECT, DELETE ON sink_dead_letters TO sealtrail_service;
GRANT SELECT ON sinks, sink_replays, sink_dead_letters TO sealtrail_system;
GRANT UPDATE (cursor_seq, delivered_events, last_delivery_at, last_error, last_error_at,
    consecutive_failures, next_attempt_at, lease_owner, lease_until) ON sinks TO sealtrail_system;
GRANT INSERT, DELETE ON sink_dead_letters TO sealtrail_system;
GRANT UPDATE (cursor_seq) ON sink_replays TO sealtrail_system;
GRANT INSERT, DELETE ON sink_replays TO sealtrail_system;

SELECT sealtrail_isolate_by_tenant('sinks');
SELECT sealtrail_isolate_by_tenant('sink_dead_letters');
SELECT sealtrail_isolate_by_tenant('sink_replays');
