-- UpdateAlertRule (docs/alerting.md): admins change a rule in place, as the
-- service role; a rule enabled again watches from the next event (start_seq),
-- and a new-IP rule whose condition changes forgets what it learned.
GRANT UPDATE (name, condition, severity, sink_ids, disabled, start_seq) ON alert_rules
    TO sealtrail_service;
GRANT SELECT, DELETE ON alert_known_ips TO sealtrail_service;
