-- What is left of a deleted alert rule for a while: the seq of the last of
-- its alerts that was counted (and so routed to its sinks), by it or by its
-- deletion. The deletion routes the rule's alerts it finds recorded and not
-- counted; one recorded by a step that had read the rule before, and
-- committed after the deletion read, is counted here by that step instead
-- (its count finds no rule), and routed, where it was routed by neither
-- (ADR 0017). Deleting a rule removes the tenant's tombstones a day old: a
-- step holds a rule for a moment, not a day.
CREATE TABLE alert_rule_tombstones (
    tenant_id         text        NOT NULL,
    rule_id           uuid        NOT NULL,
    counted_alert_seq bigint      NOT NULL,
    deleted_at        timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, rule_id)
);
SELECT sealtrail_isolate_by_tenant('alert_rule_tombstones');
GRANT SELECT, INSERT, DELETE ON alert_rule_tombstones TO sealtrail_service;
GRANT SELECT, UPDATE (counted_alert_seq) ON alert_rule_tombstones TO sealtrail_system;
