"""Alerting: alert rules evaluated against each tenant's new events (docs/alerting.md)."""
