-- VerifyLog counts the removals a purge has made and not yet recorded (their
-- `retention.purged` event follows within moments): every removed leaf must be
-- accounted for by retention's records, or by this row until it is recorded.
GRANT SELECT ON retention_pending_purges TO sealtrail_service;
