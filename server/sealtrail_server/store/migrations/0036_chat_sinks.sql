-- Chat sinks (docs/forwarding.md, ADR 0062): a sink's kind may be `chat`, a
-- chat service's incoming webhook. The sinks table is small (at most 50 rows a
-- tenant), so the check is added and validated at once.
ALTER TABLE sinks DROP CONSTRAINT sinks_kind_check;
ALTER TABLE sinks ADD CONSTRAINT sinks_kind_check
    CHECK (kind IN ('webhook', 'splunk_hec', 'datadog_logs', 'elasticsearch', 'chat'));
