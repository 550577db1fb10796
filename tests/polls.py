"""Waiting on what a server does in the background (a lease taken, a sink
failing), as a query of the test's own sees it in the database."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

import psycopg


def until_true(
    sql: psycopg.Connection[Any],
    query: str,
    params: Sequence[Any] | Mapping[str, Any],
    why: str,
    *,
    every: float = 0.05,
    timeout: float = 30,
) -> None:
    """Returns once `query` answers a row of one true, asking every `every`
    seconds; fails saying `why` once `timeout` seconds have passed."""
    deadline = time.monotonic() + timeout
    while sql.execute(query, params).fetchone() != (True,):
        assert time.monotonic() < deadline, why
        time.sleep(every)
