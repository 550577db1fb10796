-- Email sinks (docs/forwarding.md, ADR 0133): a sink's kind, and a
-- deployment-wide sink's, may be `email`, a message per event over SMTP. Both
-- tables are small (at most 50 sinks a tenant, a few definitions), so each
-- check is added and validated at once.
ALTER TABLE sinks DROP CONSTRAINT sinks_kind_check;
ALTER TABLE sinks ADD CONSTRAINT sinks_kind_check
    CHECK (kind IN ('webhook', 'splunk_hec', 'datadog_logs', 'elasticsearch', 'chat',
                    'pagerduty', 'email'));
ALTER TABLE deployment_sinks DROP CONSTRAINT deployment_sinks_kind_check;
ALTER TABLE deployment_sinks ADD CONSTRAINT deployment_sinks_kind_check
    CHECK (kind IN ('webhook', 'splunk_hec', 'datadog_logs', 'elasticsearch', 'chat',
                    'pagerduty', 'email'));
