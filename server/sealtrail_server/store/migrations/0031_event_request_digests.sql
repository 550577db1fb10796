-- An event that redaction changed and that has an idempotency key keeps the
-- keyed digest of the request as it was sent (HMAC-SHA256 under a key derived
-- from the deployment's redaction secret, never the secret itself): a retry
-- across a change of the redaction rules or of the tenant's mode is recognised
-- by it (ADR 0011). NULL for every other event, whose stored body is what was
-- sent. Not part of the record, its hash or any view.
-- Adding a nullable column rewrites nothing, but takes a lock on events and
-- its partitions: as in 0028, give up after 30 s rather than queue every
-- statement of the running processes behind a long reader.
SET LOCAL lock_timeout = '30s';
ALTER TABLE events ADD COLUMN request_digest bytea;
