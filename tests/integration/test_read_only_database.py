"""PostgreSQL that takes no writes (a standby after a failover that went the
wrong way, a provider's guard against a full disk, default_transaction_read_only),
on a cluster of the test's own: calls answer UNAVAILABLE with a retry delay,
never INTERNAL (which clients do not retry), and succeed again once it is
writable (helper-202)."""

from __future__ import annotations

import contextlib
import logging
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest

from sealtrail import AuditClient, UnavailableError, build_sink
from tests.conftest import ServerThread
from tests.integration.test_database_outage import (
    NOT_SERVING,
    SECRET,
    SERVING,
    Cluster,
    migrated_cluster,
    wait_for_health,
)


@pytest.fixture
def cluster() -> Iterator[Cluster]:
    with migrated_cluster() as made:
        yield made


@pytest.fixture
def read_only_server(cluster: Cluster) -> Iterator[ServerThread]:
    # No checkpoint of its own: a fresh one is the call's to make. And no
    # probe in the test's time: each call meets the read-only database itself.
    running = ServerThread(cluster.url, database_probe_interval=600, checkpoint_interval=0)
    try:
        yield running
    finally:
        running.close()


def set_read_only(cluster: Cluster, on: bool) -> None:
    """Every session of the cluster, those open already too, made read-only
    (or writable again): as they read the configuration again on reload."""
    with psycopg.connect(cluster.url, autocommit=True) as admin:
        admin.execute("SET default_transaction_read_only = off")  # this session may write
        if on:
            admin.execute("ALTER SYSTEM SET default_transaction_read_only = on")
        else:
            admin.execute("ALTER SYSTEM RESET default_transaction_read_only")
        admin.execute("SELECT pg_reload_conf()")
    with psycopg.connect(cluster.url, autocommit=True) as fresh:
        [shown] = fresh.execute("SHOW default_transaction_read_only").fetchone() or [None]
    assert shown == ("on" if on else "off")


@contextlib.contextmanager
def read_only(cluster: Cluster) -> Iterator[None]:
    set_read_only(cluster, True)
    try:
        # Sessions open already read the configuration again before their
        # next statement, once the postmaster has signalled them.
        time.sleep(0.5)
        yield
    finally:
        set_read_only(cluster, False)


def answers_unavailable(call: Callable[[], Any]) -> UnavailableError:
    with pytest.raises(UnavailableError) as refused:
        call()
    assert refused.value.retry_after is not None and refused.value.retry_after > 0
    return refused.value


def test_a_read_only_database_answers_unavailable_never_internal(
    cluster: Cluster, read_only_server: ServerThread
) -> None:
    server = read_only_server
    tenant = f"t-{uuid.uuid4().hex[:8]}"
    token = server.token(tenant)
    with AuditClient(server.target, token=token, max_attempts=1) as client:
        client.record(action="doc.edit", actor_id="u")  # grown since its last checkpoint
        with read_only(cluster):
            answers_unavailable(lambda: client.get_checkpoint(fresh=True))
            answers_unavailable(lambda: client.set_legal_hold(True, reason="litigation"))
            answers_unavailable(lambda: client.set_retention_policy(365))
            answers_unavailable(lambda: client.record(action="doc.edit", actor_id="u"))
        client.record(action="doc.edit", actor_id="u")
        assert client.get_checkpoint(fresh=True).tree_size >= 2
        client.set_legal_hold(True, reason="litigation")
        client.set_retention_policy(365)


def test_a_read_only_database_is_not_serving_and_its_loops_log_no_tracebacks(
    cluster: Cluster, caplog: pytest.LogCaptureFixture
) -> None:
    """Every call writes (an access record at least), so a database that
    takes no writes can serve none: health said SERVING all the same, load
    balancers kept sending calls, and the checkpointer, forwarder and alert
    claims each logged a traceback every second (helper-202)."""
    server = ServerThread(cluster.url, database_probe_interval=0.2, checkpoint_interval=0.2)
    try:
        tenant = f"t-{uuid.uuid4().hex[:8]}"
        with AuditClient(server.target, token=server.token(tenant), max_attempts=1) as client:
            sink = build_sink("audit", "webhook", url="http://127.0.0.1:9/hook", secrets=[SECRET])
            client.create_sink(sink)
            client.record(action="doc.edit", actor_id="u")
            wait_for_health(server.target, SERVING)
            with caplog.at_level(logging.WARNING), read_only(cluster):
                wait_for_health(server.target, NOT_SERVING)
                answers_unavailable(lambda: client.record(action="doc.edit", actor_id="u"))
                time.sleep(1.5)  # rounds of each background loop
            wait_for_health(server.target, SERVING)
            client.record(action="doc.edit", actor_id="u")
    finally:
        server.close()
    tracebacks = [r.getMessage() for r in caplog.records if r.exc_info]
    assert not tracebacks, tracebacks
    # Two probes in a row found it so (ProbeVerdicts), and more after: said once.
    assert caplog.text.count("database: it answers, but takes no writes") == 1, caplog.text
    refused = "not serving (health NOT_SERVING): the database takes no writes (read-only)"
    assert refused in caplog.text, caplog.text
