"""Alerting: alert rules evaluated against each tenant's new events (docs/alerting.md)."""

from typing import Final

# Who the evaluator's records name as their actor (a `system` one); here, not
# in evaluator.py, for the command line, which refuses it as an operator's
# name and must not import the evaluator (gRPC, psycopg) to know it.
ACTOR_ID: Final = "sealtrail-server:alerts"
