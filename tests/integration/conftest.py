"""Fixtures of the integration tests beyond tests/conftest.py's: the sinks a
test creates, found by pytest for every module here (importing a fixture into
a test module would shadow it where a test takes it by name, ruff F811)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

import pytest

from sealtrail import AuditClient, NotFoundError
from sealtrail.v1 import forwarding_pb2


@pytest.fixture
def sinks(client: AuditClient) -> Iterator[Callable[..., forwarding_pb2.Sink]]:
    """Creates sinks in the test's tenant (from the next event, or the whole
    log with `from_beginning`); deletes them afterwards, so no forwarder keeps
    retrying an endpoint that is gone."""
    created: list[str] = []

    def create(sink: forwarding_pb2.Sink, *, from_beginning: bool = False) -> forwarding_pb2.Sink:
        made = client.create_sink(sink, from_beginning=from_beginning).sink
        created.append(made.id)
        return made

    yield create
    for sink_id in created:
        with contextlib.suppress(NotFoundError):
            client.delete_sink(sink_id)
