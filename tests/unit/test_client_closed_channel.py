"""A channel the caller gave and then closed, while a client waited to retry:
both clients raise the failure they were retrying, never grpc's complaint
about a closed channel. Against real channels to a port nothing listens on."""

from __future__ import annotations

import asyncio
import socket

import grpc
import pytest

from sealtrail import AsyncAuditClient, AuditClient, UnavailableError


@pytest.fixture
def refusing() -> str:
    """host:port of a port just closed: every connection is refused at once."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"127.0.0.1:{port}"


def test_the_sync_client_raises_the_failure_it_was_retrying(refusing: str) -> None:
    for use in ("record", "stream"):
        channel = grpc.insecure_channel(refusing)
        waits: list[float] = []

        def close_while_waiting(
            seconds: float, channel: grpc.Channel = channel, waits: list[float] = waits
        ) -> None:
            waits.append(seconds)
            channel.close()

        client = AuditClient("unused", token="t", channel=channel, sleep=close_while_waiting)
        with pytest.raises(UnavailableError):
            if use == "record":
                client.record(action="doc.edit", actor_id="u")
            else:
                next(iter(client.stream()))
        assert len(waits) == 1  # it waited to retry once, and the retry met the closed channel


def test_the_async_client_raises_the_failure_it_was_retrying(refusing: str) -> None:
    waits: list[float] = []

    async def attempt(use: str) -> None:
        channel = grpc.aio.insecure_channel(refusing)

        async def close(seconds: float) -> None:
            waits.append(seconds)
            await channel.close()

        client = AsyncAuditClient("unused", token="t", channel=channel, sleep=close)
        if use == "record":
            await client.record(action="doc.edit", actor_id="u")
        else:
            async for _ in client.stream():
                break

    for use in ("record", "stream"):
        waits.clear()
        with pytest.raises(UnavailableError):
            asyncio.run(attempt(use))
        assert len(waits) == 1  # it waited to retry once, and the retry met the closed channel
