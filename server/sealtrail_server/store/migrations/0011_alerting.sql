-- Alert rules and their evaluation (ADR 0017, docs/alerting.md).

-- A tenant's rules. `condition` is {"kind": "match" | "threshold" | "new_ip" |
-- "off_hours", "filter": <EventFilter JSON>, ...the kind's settings}. A rule
-- watches the events after start_seq, the log's head when it was created.
CREATE TABLE alert_rules (
    tenant_id     text        NOT NULL,
    id            uuid        NOT NULL,
    name          text        NOT NULL CHECK (length(name) BETWEEN 1 AND 128),
    condition     jsonb       NOT NULL,
    severity      text        NOT NULL,
    sink_ids      jsonb       NOT NULL DEFAULT '[]',
    disabled      boolean     NOT NULL DEFAULT false,
    start_seq     bigint      NOT NULL,
    created_at    timestamptz NOT NULL,
    fired         bigint      NOT NULL DEFAULT 0,
    last_fired_at timestamptz,
    PRIMARY KEY (tenant_id, id)
);

-- Where each tenant's evaluation stands: every event up to cursor_seq has been
-- checked against the rules. One process evaluates a tenant at a time (lease).
CREATE TABLE alert_cursors (
    tenant_id   text        PRIMARY KEY,
    cursor_seq  bigint      NOT NULL CHECK (cursor_seq >= 0),
    lease_owner text,
    lease_until timestamptz
);

-- The addresses each actor has been seen from, for the new-IP detector.
CREATE TABLE alert_known_ips (
    tenant_id     text        NOT NULL,
    rule_id       uuid        NOT NULL,
    actor_id      text        NOT NULL,
    ip            text        NOT NULL,
    first_seen_at timestamptz NOT NULL,
    PRIMARY KEY (tenant_id, rule_id, actor_id, ip),
    FOREIGN KEY (tenant_id, rule_id) REFERENCES alert_rules (tenant_id, id) ON DELETE CASCADE
);

GRANT SELECT, INSERT, DELETE ON alert_rules TO sealtrail_service;
GRANT SELECT, INSERT ON alert_cursors TO sealtrail_service;
GRANT SELECT ON alert_rules, alert_cursors, alert_known_ips TO sealtrail_system;
GRANT UPDATE (fired, last_fired_at) ON alert_rules TO sealtrail_system;
GRANT UPDATE (cursor_seq, lease_owner, lease_until) ON alert_cursors TO sealtrail_system;
GRANT INSERT ON alert_known_ips TO sealtrail_system;

SELECT sealtrail_isolate_by_tenant('alert_rules');
SELECT sealtrail_isolate_by_tenant('alert_cursors');
SELECT sealtrail_isolate_by_tenant('alert_known_ips');
