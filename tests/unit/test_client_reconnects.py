"""How often the clients try a server that is down again: within their own
`max_backoff`, not gRPC's reconnection backoff, which grows to 2 minutes and
is shared by every channel of the process to the same address."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time
from collections.abc import Iterator

import pytest

from sealtrail import AsyncAuditClient, AuditClient, UnavailableError

# How long the server stays down, and the clients' max_backoff.
DOWN_SECONDS = 6.0
MAX_BACKOFF = 0.5
# gRPC's own backoff (1 s, then 1.6 times longer each time, 20% jitter either
# way) tries a server at most 4 times in 6 s (at 0, 0.8, 2.08 and 4.1 s at the
# earliest, the next at 9.3 s); every 0.5 s (and 20%), about 12 times: 7 leaves
# room for a loaded machine's late timers.
AT_LEAST = 7


class DownServer:
    """A server that is down: every connection is closed as it comes, before
    gRPC's handshake (a server process stopped, a port that a restarting one
    does not serve yet). Counts the connections the clients tried."""

    def __init__(self) -> None:
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.target = f"127.0.0.1:{self._listener.getsockname()[1]}"
        self.tries = 0
        threading.Thread(target=self._refuse, name="down-server", daemon=True).start()

    def _refuse(self) -> None:
        while True:
            try:
                connection, _ = self._listener.accept()
            except OSError:  # closed
                return
            self.tries += 1
            connection.close()

    def close(self) -> None:
        self._listener.close()


@pytest.fixture
def down() -> Iterator[DownServer]:
    with contextlib.closing(DownServer()) as server:
        yield server


def test_a_server_that_is_down_is_tried_again_within_max_backoff(down: DownServer) -> None:
    """A client whose calls fail because the server is down (each retried as
    the policy says) tries to connect again at least every max_backoff: with
    gRPC's reconnection backoff, a server back after a minute's outage went
    unseen by every client of the process for up to 2 minutes more, each
    call failing at once (UNAVAILABLE) without a connection tried, and a
    stream that had outlasted the restart did not resume (helper-217)."""
    with AuditClient(down.target, token="stk_x", max_attempts=1, max_backoff=MAX_BACKOFF) as client:
        ends = time.monotonic() + DOWN_SECONDS
        while time.monotonic() < ends:
            with pytest.raises(UnavailableError):
                client.get_event("00000000-0000-0000-0000-000000000000")
            time.sleep(0.05)
    assert down.tries >= AT_LEAST


async def test_the_async_client_tries_a_server_that_is_down_within_max_backoff(
    down: DownServer,
) -> None:
    async with AsyncAuditClient(
        down.target, token="stk_x", max_attempts=1, max_backoff=MAX_BACKOFF
    ) as client:
        ends = time.monotonic() + DOWN_SECONDS
        while time.monotonic() < ends:
            with pytest.raises(UnavailableError):
                await client.get_event("00000000-0000-0000-0000-000000000000")
            await asyncio.sleep(0.05)
    assert down.tries >= AT_LEAST
