-- Each event's whole API view (a sealtrail.v1.Event, serialized: its caller view
-- followed by what the server assigned, id, seq, tenant_id, received_at and
-- leaf_hash), written when it is appended, so that Query reads one column and
-- hands it to the response as it is (ADR 0025). Derived like caller_view (ADR
-- 0022), which it replaces for new events; never part of what is hashed.
-- NULL for events appended before this column existed (shown from caller_view,
-- or their record) and for the alerts the evaluator records.
ALTER TABLE events ADD COLUMN event_view bytea;
