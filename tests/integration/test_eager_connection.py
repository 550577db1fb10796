"""The service's pooled connections read eagerly (store/eager.py, ADR 0028): a
result already in the socket is read without a turn of the event loop, and a
result far larger than a socket's buffer and the eager budget arrives whole
and in order, reads that go on at once and reads that wait on the loop
alternating through it."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import socket
import time
from typing import Any

import psycopg
import pytest
from psycopg.generators import fetch_many

from sealtrail_server.store import eager
from sealtrail_server.store.eager import EagerConnection

_ROWS = 3000  # of 1 KB: 3 MB, several socket buffers, well past the budget
# About 100 KB: within a socket's buffer (so all of it can be there before the
# read), and six times libpq's 16 KB input buffer (so a read takes several).
_IN_THE_SOCKET = "SELECT repeat('x', 1000) FROM generate_series(1, 100)"
_READY_FOR_QUERY = b"Z\x00\x00\x00\x05I"  # the protocol's last message of a result, idle


def test_the_pool_reads_through_read_eagerly(server: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    # psycopg runs its generators through `wait`, which is not in its
    # documented API: this fails if an upgrade stops calling it.
    driven: list[int] = []
    read_eagerly = eager.read_eagerly

    def counted(gen: Any, fileno: int, **kwargs: Any) -> Any:
        driven.append(fileno)
        return read_eagerly(gen, fileno, **kwargs)

    monkeypatch.setattr(eager, "read_eagerly", counted)

    async def read() -> tuple[int, list[tuple[Any, ...]]]:
        async with server.database.system_connection() as conn:
            assert isinstance(conn, EagerConnection)
            cursor = await conn.execute(
                "SELECT i, repeat(md5(i::text), 32) FROM generate_series(1, %s) AS i", [_ROWS]
            )
            return conn.pgconn.socket, await cursor.fetchall()

    socket, rows = server.run(read())
    assert socket in driven  # this connection's reads went through read_eagerly
    assert [i for i, _ in rows] == list(range(1, _ROWS + 1))
    assert all(text == hashlib.md5(str(i).encode()).hexdigest() * 32 for i, text in rows)


@pytest.mark.parametrize(
    ("connection_class", "eagerly"), [(EagerConnection, True), (psycopg.AsyncConnection, False)]
)
def test_a_result_already_in_the_socket_is_read_without_the_loop(
    migrated_database_url: str,
    monkeypatch: pytest.MonkeyPatch,
    connection_class: type[psycopg.AsyncConnection[Any]],
    eagerly: bool,
) -> None:
    """The comparison shows the measure can tell: psycopg's own connection
    turns the loop for each 16 KB of the same result."""

    async def loop_waits() -> int:
        conn = await connection_class.connect(migrated_database_url, autocommit=True)
        async with conn:
            conn.pgconn.send_query(_IN_THE_SOCKET.encode())
            _wait_until_sent(conn.pgconn.socket)
            loop = asyncio.get_running_loop()
            waits = 0
            add_reader = loop.add_reader

            def counted(*args: Any) -> None:
                nonlocal waits
                waits += 1
                add_reader(*args)

            with monkeypatch.context() as patch:
                patch.setattr(loop, "add_reader", counted)
                [result] = await conn.wait(fetch_many(conn.pgconn))
            assert result.ntuples == 100
            return waits

    waits = asyncio.run(loop_waits())
    assert waits == 0 if eagerly else waits >= 3


def _wait_until_sent(fileno: int, *, timeout: float = 10.0) -> None:
    """Until PostgreSQL has put the whole result in the socket: what waits
    there ends with its ReadyForQuery. (A size that stopped growing for 50 ms
    was once a result cut short by a busy machine.)"""
    deadline = time.monotonic() + timeout
    held = b""
    with socket.socket(fileno=os.dup(fileno)) as peer:
        while time.monotonic() < deadline:
            with contextlib.suppress(BlockingIOError):
                held = peer.recv(1 << 20, socket.MSG_PEEK | socket.MSG_DONTWAIT)
            if held.endswith(_READY_FOR_QUERY):
                return
            time.sleep(0.01)
    raise AssertionError(f"only {len(held)} bytes of the result arrived in {timeout} s")
