"""The service's pooled connections read eagerly (store/eager.py, ADR 0028),
and a result far larger than a socket's buffer and the eager budget arrives
whole and in order: reads that go on at once and reads that wait on the event
loop alternate through it."""

from __future__ import annotations

import hashlib
from typing import Any

import pytest

from sealtrail_server.store import eager
from sealtrail_server.store.eager import EagerConnection

_ROWS = 3000  # of 1 KB: 3 MB, several socket buffers, well past the budget


def test_a_large_result_reads_whole_and_in_order(
    server: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # psycopg runs its generators through `wait`, which is not in its
    # documented API: this fails if an upgrade stops calling it.
    driven = []

    def counted(gen: Any, fileno: int, **kwargs: Any) -> Any:
        driven.append(gen)
        return read_eagerly(gen, fileno, **kwargs)

    read_eagerly = eager.read_eagerly
    monkeypatch.setattr(eager, "read_eagerly", counted)

    async def read() -> list[tuple[Any, ...]]:
        async with server.database.system_connection() as conn:
            assert isinstance(conn, EagerConnection)
            cursor = await conn.execute(
                "SELECT i, repeat(md5(i::text), 32) FROM generate_series(1, %s) AS i", [_ROWS]
            )
            return await cursor.fetchall()

    rows = server.run(read())
    assert driven  # the query went through read_eagerly
    assert [i for i, _ in rows] == list(range(1, _ROWS + 1))
    assert all(text == hashlib.md5(str(i).encode()).hexdigest() * 32 for i, text in rows)
