-- An alert rule's etag (AIP-154, ADR 0035) covers when its definition last
-- changed, as a sink's and the retention policy's do. Existing rules start as
-- changed when they were created, which is as much as is known. The default
-- serves a process of the previous version, which inserts without the column
-- during a rolling deploy (and updates without moving it: the etag still
-- changes, its definition being part of it).
ALTER TABLE alert_rules ADD COLUMN updated_at timestamptz;
UPDATE alert_rules SET updated_at = created_at;
ALTER TABLE alert_rules ALTER COLUMN updated_at SET NOT NULL,
    ALTER COLUMN updated_at SET DEFAULT now();
GRANT UPDATE (updated_at) ON alert_rules TO sealtrail_service;
