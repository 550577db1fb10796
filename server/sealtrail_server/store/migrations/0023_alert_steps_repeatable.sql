-- An evaluator step that fails after part of its work (an append refused
-- while the tenant is being erased, a pool timeout, a crash) runs again from
-- the same cursor. So that its second run does what the first would have:
-- an origin keeps the seq of the event that first showed it, so that event
-- is still the origin's first sighting when it is evaluated again (and its
-- alert, if the first run did not record it, fires then); a rule keeps the
-- seq of the last alert it counted, so an alert is counted (and queued for
-- the rule's sinks) once however often its step runs. Origins learned before
-- keep NULL: their events were evaluated. Rules start at their latest alert,
-- so an alert a previous version recorded, counted and queued is not counted
-- and queued again by a step it left to run again.
ALTER TABLE alert_known_ips ADD COLUMN first_seq bigint;
ALTER TABLE alert_known_countries ADD COLUMN first_seq bigint;
ALTER TABLE alert_rules ADD COLUMN counted_alert_seq bigint;
UPDATE alert_rules AS r SET counted_alert_seq = (
    SELECT max(e.seq) FROM events AS e
    WHERE e.tenant_id = r.tenant_id AND e.action = 'security.alert'
    AND e.resource_type = 'alert_rule' AND e.resource_id = r.id::text);
GRANT UPDATE (counted_alert_seq) ON alert_rules TO sealtrail_system;
