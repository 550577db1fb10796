-- The caller's part of each event as the API shows it (a sealtrail.v1.Event
-- without id, seq, tenant_id, received_at and leaf_hash), serialized once when
-- it is appended, so that Query merges it onto those columns in C instead of
-- parsing and converting every record it returns (ADR 0022). Derived from the
-- record like the indexed columns, never part of what is hashed: VerifyLog,
-- exports and proofs read the record (VerifyLog compares the two when asked).
-- NULL for events appended before this column existed, and for the alerts the
-- evaluator records: they are shown from their records.
ALTER TABLE events ADD COLUMN caller_view bytea;
