"""The deployment-sink pass (ADR 0070) on a server whose pool is as small as
its configuration allows. A database of its own: no other server's pass may
make the instance this one is to make."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from sealtrail import AuditClient, build_event, build_filter
from tests.conftest import (
    ServerThread,
    database_of_its_own,
    run_operator,
)


@pytest.fixture(scope="module")
def own_database(database_url: str) -> Iterator[str]:
    with database_of_its_own(database_url, "deployment_sinks_small_pool") as url:
        yield url


def test_a_pass_on_a_pool_of_two_gives_a_new_tenant_its_instance(
    own_database: str, tmp_path: Path
) -> None:
    """The pass held a pooled connection (the definition's lock) while it made
    each tenant's instance on another: with a pool of two, the appender never
    had one to record `sink.created`, and no new tenant ever got an instance
    (helper-189)."""
    secret = tmp_path / "secret.txt"
    secret.write_text("whsec_QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVo0NTY3ODk=\n")
    made = run_operator(
        own_database,
        "sink", "create", "soc", "--kind", "webhook", "--url", "http://127.0.0.1:9/x",
        "--secret", f"@{secret}",
    )  # fmt: skip
    assert made.exit_code == 0, made.output
    # No pass but the one a new tenant's first commit brings at once.
    server = ServerThread(
        own_database, deployment_sink_interval=3600, pool_max_size=2, pool_min_size=1
    )
    try:
        with AuditClient(server.target, token=server.token(f"t-{uuid.uuid4().hex[:12]}")) as admin:
            admin.record(build_event(action="doc.edit", actor_id="u-1"))
            deadline = time.monotonic() + 30
            while not [sink for sink in admin.list_sinks() if sink.managed]:
                assert time.monotonic() < deadline, "the new tenant got no instance"
                time.sleep(0.1)
            [created] = admin.query(build_filter(actions="sink.created"))
            assert created.details["managed"] is True
    finally:
        server.close()
