-- The deployment's redaction key, by a fingerprint: an HMAC of a fixed label
-- under it (redaction_setup.py), from which neither the key nor a tenant's key
-- derived from it can be found. A process whose data dir's key has another
-- refuses to start: it would store HMACs of secrets unlike its peers', which
-- HashSecret's searches and idempotent retries then miss (helper-203). Kept
-- in the row 'redaction_key'; the other markers have none.
ALTER TABLE deployment_markers ADD COLUMN fingerprint bytea;
