-- Each summary of a purge not yet recorded carries the service's MAC of it
-- (domain/purge_summaries.py): one written behind the service's back (a
-- superuser hiding an event as removed) counts for nothing in VerifyLog and is
-- never recorded as a purge. A summary an earlier release left (a crash
-- between a batch and its record, just before the upgrade) has none and is
-- treated the same way (docs/retention.md).
ALTER TABLE retention_pending_purges ADD COLUMN mac bytea;
