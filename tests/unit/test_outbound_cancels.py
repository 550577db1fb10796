"""The forwarder's outbound connections come back to their pool however the
requests on them are cancelled (a delivery's deadline, a lease fenced off, a
stop that cancels again each second). httpcore's pool kept, for good, a
connection whose request was cancelled after the connection was assigned and
before its request went out on it (encode/httpcore#1093): neither idle nor
closed, it held its slot, and once every slot was held so, every delivery of
every tenant failed with PoolTimeout until the process restarted."""

from __future__ import annotations

import asyncio

from sealtrail_server.forward.egress import EgressPolicy, OutboundClient
from tests.cancels import cancelled_twice

_ROUNDS = 300
_SLOTS = 3


async def _answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """200 to each request on the connection, a little late, until it closes."""
    try:
        while True:
            await reader.readuntil(b"\r\n\r\n")
            await asyncio.sleep(0.005)
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
            await writer.drain()
    except (ConnectionError, asyncio.IncompleteReadError):
        pass
    finally:
        writer.close()


def test_requests_cancelled_at_any_moment_give_their_connections_back() -> None:
    async def run() -> None:
        server = await asyncio.start_server(_answer, "127.0.0.1", 0)
        url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/"
        policy = EgressPolicy.parse(allow_http=True, allowed="127.0.0.0/8", denied="")
        client = OutboundClient(policy, timeout=1.0, max_connections=_SLOTS)
        try:
            # Cancelled anywhere: waiting for a slot, connecting, sending,
            # reading, and again while each cleans up.
            await cancelled_twice(
                lambda: client.post(url, headers=[], body=b"{}"),
                calls=2 * _SLOTS,
                rounds=_ROUNDS,
                within=0.02,
                seed=5,
            )
            # Every slot serves again: as many requests at once as there are slots.
            async with asyncio.timeout(10):
                answers = await asyncio.gather(
                    *(client.post(url, headers=[], body=b"{}") for _ in range(_SLOTS))
                )
            assert [answer.status for answer in answers] == [200] * _SLOTS
        finally:
            await client.close()
            server.close()
            await server.wait_closed()

    asyncio.run(run())
