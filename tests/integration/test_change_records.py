"""A change's record is appended in the change's own transaction (ADR 0075):
what is routed there, and what must not be; and the appender around it."""

from __future__ import annotations

import base64
import contextlib
import secrets
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from sealtrail import (
    AuditClient,
    PermissionDeniedError,
    build_alert_rule,
    build_event,
    build_filter,
    build_sink,
)
from sealtrail.v1 import forwarding_pb2
from tests.conftest import ServerThread
from tests.http_endpoint import Endpoint, endpoint


@pytest.fixture
def receiver() -> Iterator[Endpoint]:
    with endpoint() as running:
        yield running


def _secret() -> str:
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()


def test_a_refusal_inside_a_change_is_recorded_though_the_change_rolls_back(
    server: ServerThread,
    client: AuditClient,
    sql: psycopg.Connection[Any],
    tenant: str,
    receiver: Endpoint,
) -> None:
    """A tenant admin's change of a managed sink is refused inside the change
    (under its lock), and the refusal recorded (ADR 0060) by a task the
    refusal starts. That task inherited the change's routing: the refusal's
    record was appended in the change's transaction and rolled back with it,
    and for the rest of its window no refusal of that token was recorded."""
    client.record(build_event(action="doc.edit", actor_id="u-1"))
    sink = client.create_sink(build_sink("kept", "webhook", url=receiver.url, secrets=[_secret()]))
    # As a deployment-wide sink's instance in this tenant (ADR 0070).
    sql.execute(
        "UPDATE sinks SET deployment_sink_id = gen_random_uuid(), deployment_revision = 1"
        " WHERE tenant_id = %s AND id = %s",
        [tenant, sink.sink.id],
    )
    try:
        with pytest.raises(PermissionDeniedError) as refused:
            client.update_sink(forwarding_pb2.Sink(id=sink.sink.id, paused=True), fields=["paused"])
        assert refused.value.reason == "SINK_MANAGED_BY_OPERATOR"
        rule = build_alert_rule("to it", "match", filter=build_filter(actions="doc.*"))
        rule.sink_ids.append(sink.sink.id)
        with pytest.raises(PermissionDeniedError) as refused:
            client.create_alert_rule(rule)
        assert refused.value.reason == "SINK_MANAGED_BY_OPERATOR"
        denied = list(client.query(build_filter(actions="audit_log.access_denied")))
        assert sorted(e.details["rpc"] for e in denied) == ["CreateAlertRule", "UpdateSink"]
        assert client.verify_log().ok
    finally:
        sql.execute("DELETE FROM sinks WHERE tenant_id = %s", [tenant])
        with contextlib.suppress(Exception):
            client.close()
