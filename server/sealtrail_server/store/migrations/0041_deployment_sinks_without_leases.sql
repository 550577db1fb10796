-- Migration 0039 gave each deployment sink a lease, for one process to
-- reconcile it at a time. None was ever taken: a pass and a command share the
-- definition's advisory lock instead, a pass one tenant's step at a time
-- (ADR 0070 and its addenda). Columns nothing writes only mislead whoever
-- reads the table.
ALTER TABLE deployment_sinks DROP COLUMN lease_owner, DROP COLUMN lease_until;
