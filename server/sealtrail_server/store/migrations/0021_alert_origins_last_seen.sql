-- What a new-address or new-country alert rule learned (an actor seen from an
-- IP address or a country) is personal data derived from events: retention
-- forgets an origin once it has not been seen for the tenant's default
-- retention (docs/retention.md). Its last sighting is kept for that, moved
-- at most once a day so that a busy actor costs no write per event.
ALTER TABLE alert_known_ips ADD COLUMN last_seen_at timestamptz;
UPDATE alert_known_ips SET last_seen_at = first_seen_at;
ALTER TABLE alert_known_ips ALTER COLUMN last_seen_at SET NOT NULL;
ALTER TABLE alert_known_countries ADD COLUMN last_seen_at timestamptz;
UPDATE alert_known_countries SET last_seen_at = first_seen_at;
ALTER TABLE alert_known_countries ALTER COLUMN last_seen_at SET NOT NULL;
GRANT UPDATE (last_seen_at) ON alert_known_ips, alert_known_countries TO sealtrail_system;
