-- Deployment-wide sinks (ADR 0070, docs/forwarding.md "Deployment-wide
-- sinks"): a destination the operator keeps (`sealtrail-server sink`), which
-- the servers materialise as one managed sink in every tenant with a log. The
-- definition is global (a Citus reference table, like deployment_jobs); each
-- tenant's instance is an ordinary row of `sinks`, keyed by its tenant, so
-- cursors, dead letters, replays, erasure and row-level security are the
-- tenant's as for any sink.
--
-- `destination` holds the kind's settings, each secret sealed (ADR 0020,
-- bound to the definition, its kind, field and URL). Only the system role
-- reads or writes it: no tenant connection sees a definition.
CREATE TABLE deployment_sinks (
    id          uuid        PRIMARY KEY,
    name        text        NOT NULL UNIQUE CHECK (length(name) BETWEEN 1 AND 128),
    kind        text        NOT NULL
        CHECK (kind IN ('webhook', 'splunk_hec', 'datadog_logs', 'elasticsearch', 'chat')),
    format      text        NOT NULL CHECK (format IN ('sealtrail_json', 'ocsf')),
    filter      jsonb       NOT NULL,
    destination jsonb       NOT NULL,
    paused      boolean     NOT NULL DEFAULT false,
    -- Where the instances of the tenants that had a log at the definition's
    -- creation start: their first event (true) or their size then (false).
    -- A tenant's log begun later starts at its first event either way.
    from_start  boolean     NOT NULL,
    -- Moves with every change of the definition; each instance carries the
    -- revision it was last written from, so that a change interrupted midway
    -- is carried to the instances it did not reach.
    revision    bigint      NOT NULL DEFAULT 1 CHECK (revision >= 1),
    -- Who made the last change (the actor of the instances' change events).
    changed_by  text        NOT NULL,
    created_at  timestamptz NOT NULL,
    updated_at  timestamptz NOT NULL,
    -- Set by a deletion: the instances go, then the row.
    deleted_at  timestamptz,
    -- One process reconciles a definition at a time (leased_work.py); the
    -- command that creates, changes or deletes it holds the lease meanwhile.
    lease_owner text,
    lease_until timestamptz
);
GRANT SELECT, INSERT, UPDATE, DELETE ON deployment_sinks TO sealtrail_system;

-- A tenant's instance of a deployment sink: at most one per definition and
-- tenant, however many processes materialise it at once.
ALTER TABLE sinks ADD COLUMN deployment_sink_id uuid;
ALTER TABLE sinks ADD COLUMN deployment_revision bigint;
CREATE UNIQUE INDEX sinks_deployment_sink ON sinks (tenant_id, deployment_sink_id)
    WHERE deployment_sink_id IS NOT NULL;
GRANT UPDATE (deployment_revision) ON sinks TO sealtrail_service;
