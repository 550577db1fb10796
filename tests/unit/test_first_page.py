"""A query's first page is read while its own access record is written
(ADR 0023): what the read saw of that record, and of what committed after it,
is left out, and the next page starts where the log before it continues."""

from __future__ import annotations

import pytest

from sealtrail_server.api.servicer import _FIRST_PAGE_EXTRA, QUERY_PAGE_BYTES, _page_before
from sealtrail_server.store.events import Order, ShownEvent

LIMIT = 3


def _rows(*seqs: int) -> list[ShownEvent]:
    return [ShownEvent(seq, b"", None, None, None, None, None) for seq in seqs]


@pytest.mark.parametrize(
    ("order", "read", "own", "page", "after"),
    [
        # The record committed after the read: nothing to leave out.
        ("newest", (10, 9, 8, 7, 6), 11, [10, 9, 8], 8),
        ("newest", (4, 3, 2, 1), 5, [4, 3, 2], 2),
        ("newest", (2, 1), 3, [2, 1], None),
        # The read saw it (first): left out, the page is unchanged.
        ("newest", (11, 10, 9, 8, 7), 11, [10, 9, 8], 8),
        ("newest", (4, 3, 2, 1), 4, [3, 2, 1], None),
        # ... and events committed after it: left out too, and the page, short
        # of them, still leads on to the older events the read did not reach.
        ("newest", (13, 12, 11, 10, 9), 11, [10, 9], 9),
        ("newest", (15, 14, 13, 12, 11), 11, [], 11),
        ("newest", (13, 12, 11, 10), 11, [10], None),
        ("oldest", (1, 2, 3, 4, 5), 9, [1, 2, 3], 3),
        ("oldest", (1, 2, 3, 4, 5), 4, [1, 2, 3], None),
        ("oldest", (1, 2, 3, 4, 5), 5, [1, 2, 3], 3),
        ("oldest", (1, 2), 3, [1, 2], None),
        ("oldest", (), 1, [], None),
        ("oldest", (1, 2, 3), 1, [], None),  # nothing before the record
        ("newest", (), 1, [], None),
        ("newest", (13, 12, 10, 9, 8), 11, [10, 9, 8], 8),  # full, exactly a page left
    ],
)
def test_a_first_page_is_the_log_before_its_own_record(
    order: Order, read: tuple[int, ...], own: int, page: list[int], after: int | None
) -> None:
    shown, next_after = _page_before(_rows(*read), own, limit=LIMIT, order=order)
    assert ([row.seq for row in shown], next_after) == (page, after)


@pytest.mark.parametrize("limit", [1, 2, 3])
def test_newest_pages_are_the_log_before_the_record_however_the_race_went(limit: int) -> None:
    """Followed page after page, whenever the read's snapshot was taken (before
    the record, or after it and any number of events after it), the pages show
    every event before the record once, newest first, and nothing else."""
    for before in range(7):
        own = before + 1
        for later in range(4):  # events committed after the record
            log = range(1, own + later + 1)
            for seen in range(own - 1, own + later + 1):  # the snapshot's newest seq
                read = sorted((seq for seq in log if seq <= seen), reverse=True)[
                    : limit + _FIRST_PAGE_EXTRA
                ]
                page, after = _page_before(_rows(*read), own, limit=limit, order="newest")
                shown = [row.seq for row in page]
                while after is not None:  # later pages: seq < after, in the log as it is now
                    rest = [seq for seq in reversed(log) if seq < after][: limit + 1]
                    shown += rest[:limit]
                    after = rest[limit - 1] if len(rest) > limit else None
                assert shown == list(range(own - 1, 0, -1)), (before, later, seen)


def test_a_read_stopped_at_its_bytes_by_newer_events_leads_on_to_the_older_ones() -> None:
    """`query_page` stops after the row that passes a page's bytes: a read
    that saw large events committed after the record may end before its
    limit, and older events still remain below it (helper-153)."""
    half = QUERY_PAGE_BYTES // 2 + 1
    big = [ShownEvent(seq, b"x" * half, None, None, None, None, None) for seq in (13, 12)]
    assert _page_before(big, 11, limit=LIMIT, order="newest") == ([], 11)
    assert _page_before([*big, *_rows(10)], 11, limit=LIMIT, order="newest")[1] == 10
