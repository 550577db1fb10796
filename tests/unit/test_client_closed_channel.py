"""The clients' channels over their lives. A channel the caller gave and then
closed, while a client waited to retry: both clients raise the failure they
were retrying, never grpc's complaint about a closed channel. An async client
closed with calls in flight fails them as the sync one does, and one made
outside an event loop calls from the loop that runs. Against real channels to
a port nothing listens on, or one that never answers."""

from __future__ import annotations

import asyncio
import socket
import threading
import time

import grpc
import pytest

import sealtrail
from sealtrail import (
    AsyncAuditClient,
    AuditClient,
    ClientClosedError,
    RpcFailedError,
    UnavailableError,
)


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


def test_a_sync_stream_whose_client_closes_while_it_waits_raises_the_failure(
    refusing: str,
) -> None:
    """On the client's own channel, which carries the correlation interceptor
    (as the README tells callers to wrap theirs), grpc starts a call only when
    it is read: the closed channel's ValueError came out of the reading, which
    nothing caught (helper-137)."""
    waits: list[float] = []
    client = AuditClient(
        refusing, token="t", sleep=lambda seconds: (waits.append(seconds), client.close())
    )
    with pytest.raises(UnavailableError):
        next(iter(client.stream()))
    assert len(waits) == 1


@pytest.mark.parametrize("channel", ["own", "given, with the correlation interceptors"])
def test_an_async_stream_whose_channel_closes_while_it_waits_raises_the_failure(
    refusing: str, channel: str
) -> None:
    """The same with the async client: grpc.aio's UsageError "Channel is
    closed." came out of the reading."""
    waits: list[float] = []

    async def attempt() -> None:
        given = (
            None
            if channel == "own"
            else grpc.aio.insecure_channel(
                refusing, interceptors=sealtrail.aio_correlation_interceptors()
            )
        )

        async def close(seconds: float) -> None:
            waits.append(seconds)
            await (client.close() if given is None else given.close())

        client = AsyncAuditClient(refusing, token="t", channel=given, sleep=close)
        async for _ in client.stream():
            break

    with pytest.raises(UnavailableError):
        asyncio.run(attempt())
    assert len(waits) == 1


async def _in_flight(client: AsyncAuditClient, use: str) -> None:
    if use == "record":
        await client.record(action="doc.edit", actor_id="u")
    elif use == "stream":
        async for _ in client.stream():
            pass
    else:
        async for _ in client.export_stream():
            pass


@pytest.mark.parametrize("use", ["record", "stream", "export"])
async def test_closing_the_async_client_fails_its_calls_in_flight_as_the_sync_one_does(
    silent: str, use: str
) -> None:
    """grpc.aio cancels them, and with them their callers' tasks, which no one
    cancelled: a TaskGroup took each for a task its caller had stopped, and
    the event a Record was sending was lost unseen. They raise RpcFailedError
    CANCELLED, as the sync client's do."""
    client = AsyncAuditClient(silent, token="t")
    with pytest.raises(ExceptionGroup) as failed:
        async with asyncio.TaskGroup() as group:
            group.create_task(_in_flight(client, use))
            await asyncio.sleep(0.2)  # in flight
            await client.close()
    [error] = failed.value.exceptions
    assert isinstance(error, RpcFailedError) and error.code == grpc.StatusCode.CANCELLED
    assert str(error) == "CANCELLED: the client was closed during the call"


@pytest.mark.parametrize("use", ["record", "stream", "export"])
def test_closing_the_sync_client_fails_its_calls_in_flight_in_the_async_ones_words(
    silent: str, use: str
) -> None:
    """A call another thread's close() cut said grpc's "Channel closed!";
    the async client's, that the client was closed during the call."""
    client = AuditClient(silent, token="t")
    failed: list[BaseException] = []

    def call() -> None:
        try:
            if use == "record":
                client.record(action="doc.edit", actor_id="u")
            elif use == "stream":
                next(iter(client.stream()))
            else:
                list(client.export_stream())
        except BaseException as error:
            failed.append(error)

    caller = threading.Thread(target=call)
    caller.start()
    time.sleep(0.2)  # in flight
    client.close()
    caller.join(10)
    [error] = failed
    assert isinstance(error, RpcFailedError) and error.code == grpc.StatusCode.CANCELLED
    assert str(error) == "CANCELLED: the client was closed during the call"


async def test_a_call_its_caller_cancels_is_cancelled_even_if_the_client_is_closed(
    silent: str,
) -> None:
    client = AsyncAuditClient(silent, token="t")
    call = asyncio.create_task(_in_flight(client, "record"))
    await asyncio.sleep(0.2)
    call.cancel()
    await client.close()
    with pytest.raises(asyncio.CancelledError):
        await call


def test_an_async_client_made_outside_an_event_loop_calls_from_the_one_running(
    refusing: str,
) -> None:
    """Made at a module's import, say: its channel was bound to no running
    loop, and every call in `asyncio.run`'s failed with a RuntimeError."""
    client = AsyncAuditClient(refusing, token="t", max_attempts=1)

    async def call() -> None:
        try:
            await client.record(action="doc.edit", actor_id="u")
        finally:
            await client.close()

    with pytest.raises(UnavailableError):  # what the port answers, not a RuntimeError
        asyncio.run(call())


@pytest.mark.parametrize("use", ["record", "stream", "export"])
async def test_a_call_on_a_closed_async_client_opens_no_channel(refusing: str, use: str) -> None:
    """The stub, and with it a channel, was made before the call saw the
    client closed: a channel nothing would close (helper-137)."""
    client = AsyncAuditClient(refusing, token="t")
    await client.close()
    with pytest.raises(ClientClosedError):
        await _in_flight(client, use)
    assert client._channel is None


# The calls that hand back an iterator, each made on a closed client.
_ITERATORS = {
    "stream": lambda client: client.stream(),
    "stream(after_seq=)": lambda client: client.stream(after_seq=3),
    "export_stream": lambda client: client.export_stream(),
    "query": lambda client: client.query(),
    "list_purged_leaves": lambda client: client.list_purged_leaves(),
}


@pytest.mark.parametrize("call", list(_ITERATORS))
def test_a_closed_clients_iterators_are_refused_at_the_call(refusing: str, call: str) -> None:
    """Every other call on a closed client raised ClientClosedError as it was
    made; stream(), export_stream(), query() and list_purged_leaves() handed
    back an iterator that raised it only as its first item was asked for: a
    caller that made one up front, to read later or elsewhere, learned of the
    close far from where it was made. Both clients refuse them at the call
    now, as the others, in the same words."""
    make = _ITERATORS[call]
    client = AuditClient(refusing, token="t")
    client.close()
    with pytest.raises(ClientClosedError, match=r"^the client is closed$"):
        make(client)

    async def closed_async() -> None:
        client = AsyncAuditClient(refusing, token="t")
        await client.close()
        with pytest.raises(ClientClosedError, match=r"^the client is closed$"):
            make(client)
        assert client._channel is None  # none made for it

    asyncio.run(closed_async())
