"""Retention: the purge job, and tenant erasure (docs/retention.md)."""
