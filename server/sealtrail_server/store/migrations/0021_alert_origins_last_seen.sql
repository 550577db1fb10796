-- What a new-address or new-country alert rule learned (an actor seen from an
-- IP address or a country) is personal data derived from events: retention
-- forgets an origin once it has not been seen for the tenant's default
-- retention (docs/retention.md). Its last sighting (the receive time of the
-- latest event that showed it) is kept for that, moved at most once a day.
-- Known origins start as seen now: when each was last seen is unknown, and
-- forgetting one still in use would make its next sighting alert as new.
-- The default also serves a process of the previous version, which inserts
-- without the column during a rolling deploy.
ALTER TABLE alert_known_ips ADD COLUMN last_seen_at timestamptz NOT NULL DEFAULT now();
ALTER TABLE alert_known_countries ADD COLUMN last_seen_at timestamptz NOT NULL DEFAULT now();
GRANT UPDATE (last_seen_at) ON alert_known_ips, alert_known_countries TO sealtrail_system;
