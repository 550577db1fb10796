-- New-country alert rules (docs/alerting.md): the countries each actor has
-- been seen from, per rule, as alert_known_ips holds a new-IP rule's addresses.
CREATE TABLE alert_known_countries (
    tenant_id     text        NOT NULL,
    rule_id       uuid        NOT NULL,
    actor_id      text        NOT NULL,
    country       text        NOT NULL CHECK (country ~ '^[A-Z]{2}$'),
    first_seen_at timestamptz NOT NULL,
    PRIMARY KEY (tenant_id, rule_id, actor_id, country),
    FOREIGN KEY (tenant_id, rule_id) REFERENCES alert_rules (tenant_id, id) ON DELETE CASCADE
);

-- The evaluator learns them; an update of the rule's condition forgets them.
GRANT SELECT, INSERT ON alert_known_countries TO sealtrail_system;
GRANT SELECT, DELETE ON alert_known_countries TO sealtrail_service;
SELECT sealtrail_isolate_by_tenant('alert_known_countries');
