"""A connection dropped without a word (a NAT's or a load balancer's state
lost, a partition: no FIN, no RST) under a live stream: the clients' keepalive
pings go unanswered, the connection is taken for lost, and the stream resumes
from its cursor on a new one, missing and repeating nothing. It waited on the
dead connection forever (helper-118). The clients' keepalive is shortened here
from its 30 s to 1 s."""

from __future__ import annotations

import asyncio
import queue
import threading
from collections.abc import Iterator
from contextlib import closing

import grpc
import pytest

from sealtrail import AsyncAuditClient, AuditClient, build_filter
from sealtrail._convert import channel_options
from tests.conftest import ServerThread
from tests.silent_proxy import SilentProxy

# Pinged after 1 s without a frame, lost after 1 s more without an answer.
_QUICK = channel_options(keepalive=1.0, keepalive_timeout=1.0)
# Far longer than noticing and resuming take (about 2 s), far shorter than forever.
_RESUMED_WITHIN = 20.0


@pytest.fixture
def quick(migrated_database_url: str) -> Iterator[ServerThread]:
    # Heartbeats more often than the clients' pings: a healthy stream is never pinged.
    running = ServerThread(migrated_database_url, stream_heartbeat_seconds=0.2)
    try:
        yield running
    finally:
        running.close()


def test_a_stream_on_a_connection_dropped_without_a_word_resumes_on_a_new_one(
    quick: ServerThread, tenant: str
) -> None:
    received: queue.Queue[int] = queue.Queue()
    ended: list[BaseException] = []
    with (
        closing(SilentProxy(("127.0.0.1", quick.port))) as proxy,
        AuditClient(quick.target, token=quick.token(tenant, "recorder")) as writer,
    ):
        channel = grpc.insecure_channel(proxy.target, options=_QUICK)
        tailing = AuditClient(proxy.target, token=quick.token(tenant, "reader"), channel=channel)

        def tail() -> None:
            try:
                for event in tailing.stream(build_filter(actions="doc.edit"), after_seq=0):
                    received.put(event.seq)
            except Exception as error:  # the channel closed at the end
                ended.append(error)

        thread = threading.Thread(target=tail, daemon=True)
        thread.start()
        try:
            first = writer.record(action="doc.edit", actor_id="u").event.seq
            assert received.get(timeout=10) == first
            proxy.silence()
            second = writer.record(action="doc.edit", actor_id="u").event.seq
            third = writer.record(action="doc.edit", actor_id="u").event.seq
            assert received.get(timeout=_RESUMED_WITHIN) == second
            assert received.get(timeout=10) == third
            assert received.empty() and proxy.connections == 2
        finally:
            channel.close()
            thread.join(10)
    assert not thread.is_alive()


async def test_an_async_stream_on_a_connection_dropped_without_a_word_resumes(
    quick: ServerThread, tenant: str
) -> None:
    with closing(SilentProxy(("127.0.0.1", quick.port))) as proxy:
        async with (
            AsyncAuditClient(quick.target, token=quick.token(tenant, "recorder")) as writer,
            grpc.aio.insecure_channel(proxy.target, options=_QUICK) as channel,
        ):
            tailing = AsyncAuditClient(
                proxy.target, token=quick.token(tenant, "reader"), channel=channel
            )
            stream = tailing.stream(build_filter(actions="doc.edit"), after_seq=0)
            first = (await writer.record(action="doc.edit", actor_id="u")).event.seq
            async with asyncio.timeout(10):
                assert (await anext(stream)).seq == first
            proxy.silence()
            second = (await writer.record(action="doc.edit", actor_id="u")).event.seq
            async with asyncio.timeout(_RESUMED_WITHIN):
                assert (await anext(stream)).seq == second
            assert proxy.connections == 2
            await stream.aclose()
