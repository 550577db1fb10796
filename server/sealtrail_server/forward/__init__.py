"""Forwarding: delivery of each sink's events to SIEMs and webhooks (docs/forwarding.md)."""
