"""Two server processes on one database, a client of each for one new tenant,
and a thread to call the first from while the test holds a lock the call
waits for: how the tests race one process's call against another's."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from sealtrail import AuditClient
from tests.conftest import ServerThread


@dataclass(frozen=True)
class TwoProcesses:
    tenant: str
    first_server: ServerThread
    second_server: ServerThread
    first: AuditClient  # through first_server
    second: AuditClient  # through second_server
    pool: ThreadPoolExecutor  # one thread


@contextmanager
def two_processes(
    database_url: str,
    role: str = "admin",
    *,
    second_token: bool = False,
    second_timeout: float = 60,
    **settings: Any,
) -> Iterator[TwoProcesses]:
    """Both servers started with `settings`; the tenant's token (of `role`)
    made through the first, and used by both clients, unless `second_token`:
    then the second client's is another, made through the second. Neither
    client retries; the first's timeout is 60 s, the second's
    `second_timeout`. The servers are closed after (the second first)."""
    tenant = f"t-{uuid.uuid4().hex[:12]}"
    first_server = ServerThread(database_url, **settings)
    second_server = ServerThread(database_url, **settings)
    token = first_server.token(tenant, role)
    other_token = second_server.token(tenant, role) if second_token else token
    try:
        with (
            AuditClient(first_server.target, token=token, timeout=60, max_attempts=1) as first,
            AuditClient(
                second_server.target, token=other_token, timeout=second_timeout, max_attempts=1
            ) as second,
            ThreadPoolExecutor(1) as pool,
        ):
            yield TwoProcesses(tenant, first_server, second_server, first, second, pool)
    finally:
        second_server.close()
        first_server.close()
