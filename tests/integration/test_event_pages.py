"""`stream_events` (Export, a stream's catch-up, forwarding, alerts) reads in
keyset pages sized by the bytes of the records: whatever the pages' sizes,
every event comes once, in order."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from google.protobuf import json_format

from sealtrail import AuditClient, build_event, build_filter
from sealtrail_server.api import servicer
from sealtrail_server.domain.event import MAX_RECORD_BYTES
from sealtrail_server.domain.filters import EventFilter
from sealtrail_server.store.events import ShownEvent, page_rows, stream_events
from tests.conftest import ServerThread


async def _seqs(server: ServerThread, tenant: str, page_bytes: int | None) -> list[int]:
    events = stream_events(
        server.database,
        tenant_id=tenant,
        event_filter=EventFilter(actions=("doc.write",)),
        after_seq=0,
        upto_seq=10**9,
        fetch_rows=7,  # with page_bytes None (the forwarder's): pages of exactly that
        page_bytes=page_bytes,
    )
    return [event.seq async for event in events]


@pytest.mark.parametrize("page_bytes", [1, 40_000, 8 * 1024 * 1024, None])
def test_every_event_comes_once_in_order_whatever_the_page_size(
    server: ServerThread,
    client_for: Callable[..., AuditClient],
    tenant: str,
    page_bytes: int | None,
) -> None:
    client = client_for(tenant)
    # Records from under 1 KiB to about 30 KiB, and others the filter leaves out.
    client.record_batch(
        [
            build_event(
                action="doc.write" if n % 3 else "doc.read",
                actor_id="u",
                details={"text": "x" * (n * 997 % 30_000)},
            )
            for n in range(60)
        ]
    )
    expected = [n + 1 for n in range(60) if n % 3]
    assert server.run(_seqs(server, tenant, page_bytes)) == expected


def test_a_page_holds_about_its_bytes_of_records() -> None:
    assert page_rows(2000, 8 << 20, rows=1, size=MAX_RECORD_BYTES) == 128  # the first page
    assert page_rows(2000, 8 << 20, rows=128, size=128 * 1024) == 2000  # small ones: at most
    assert page_rows(2000, 8 << 20, rows=2000, size=2000 * 32 * 1024) == 256
    assert page_rows(2000, 1, rows=10, size=10_000) == 1  # never none
    assert page_rows(2000, 8 << 20, rows=10, size=0) == 2000


def test_a_query_page_of_large_events_ends_at_its_bytes(
    client_for: Callable[..., AuditClient], tenant: str
) -> None:
    """A page was counted in events alone: 300 events of 64 KiB records
    passed even the server's own message limit after the query was recorded,
    and 50 the 4 MiB a gRPC client takes by default (helper-135). A page ends
    at about 1 MiB of events, its token leading on to the rest."""
    client = client_for(tenant)
    numbers = [1] * 9000  # about 100 KB as a view: a Value message a number
    for start in range(0, 40, 10):
        client.record_batch(
            [build_event(action="doc.big", actor_id="u", details={"n": i, "xs": numbers})
             for i in range(start, start + 10)]
        )  # fmt: skip
    pages, token = [], ""
    while True:
        page = client.query_page(
            build_filter(actions="doc.big"), page_size=40, page_token=token, order="oldest"
        )
        pages.append([json_format.MessageToDict(e.details)["n"] for e in page.events])
        token = page.next_page_token
        if not token:
            break
    sizes = [len(page) for page in pages]
    assert len(pages) > 1 and max(sizes) < 40, sizes
    assert [n for page in pages for n in page] == list(range(40))  # each once, in order


@pytest.mark.parametrize("order", ["newest", "oldest"])
def test_a_query_page_reads_about_the_events_it_answers_whatever_its_size(
    client_for: Callable[..., AuditClient],
    tenant: str,
    monkeypatch: pytest.MonkeyPatch,
    order: str,
) -> None:
    """A page read page_size (+2) rows from PostgreSQL, then answered the
    first 1 MiB of them: a page_size of 1,000 over events of 60 KB read 60 MB
    to send 17 (helper-153). It reads what it answers, and one row more that
    says another page exists; pages, their order and their tokens are as they
    were."""
    client = client_for(tenant)
    numbers = [1] * 9000  # about 100 KB as a view
    for start in range(0, 40, 10):
        client.record_batch(
            [build_event(action="doc.big", actor_id="u", details={"n": i, "xs": numbers})
             for i in range(start, start + 10)]
        )  # fmt: skip
    read: list[int] = []
    real = servicer.query_page

    async def counted(*args: Any, **kwargs: Any) -> list[ShownEvent]:
        rows = await real(*args, **kwargs)
        read.append(len(rows))
        return rows

    real_first = servicer.query_first_page

    async def counted_first(*args: Any, **kwargs: Any) -> tuple[list[ShownEvent], int]:
        rows, size = await real_first(*args, **kwargs)
        read.append(len(rows))
        return rows, size

    monkeypatch.setattr(servicer, "query_page", counted)
    monkeypatch.setattr(servicer, "query_first_page", counted_first)

    def pages(size: int) -> list[list[int]]:
        found, token = [], ""
        while True:
            page = client.query_page(
                build_filter(actions="doc.big"), page_size=size, page_token=token, order=order
            )
            found.append([int(json_format.MessageToDict(e.details)["n"]) for e in page.events])
            token = page.next_page_token
            if not token:
                return found

    large = pages(1000)
    answered = [len(page) for page in large]
    assert len(large) > 1 and max(answered) < 40, answered
    assert all(rows <= n + 1 for rows, n in zip(read, answered, strict=True)), (read, answered)
    # The same events, in the same order, as pages of a few events read them.
    read.clear()
    few = [n for page in pages(3) for n in page]
    assert [n for page in large for n in page] == few
    assert sorted(few) == list(range(40))
