"""What a process remembers of when console sessions are next due
(console/recheck.py DueTimes): asked for when unknown or due, bounded in
size, the least recently used forgotten first."""

from __future__ import annotations

from sealtrail_server.console.recheck import DueTimes


def test_unknown_or_due_tokens_are_asked_for_and_others_not() -> None:
    due = DueTimes()
    assert due.due("t", b"a", now=100.0)
    due.remember("t", b"a", 160.0)
    assert not due.due("t", b"a", now=159.9)
    assert due.due("t", b"a", now=160.0)
    assert due.due("other", b"a", now=120.0)  # another tenant's token
    due.forget("t", b"a")
    assert due.due("t", b"a", now=120.0)


def test_it_is_bounded_forgetting_the_least_recently_used() -> None:
    due = DueTimes(most=2)
    due.remember("t", b"a", 200.0)
    due.remember("t", b"b", 200.0)
    assert not due.due("t", b"a", now=100.0)  # a used: b is now the oldest
    due.remember("t", b"c", 200.0)
    assert len(due) == 2
    assert due.due("t", b"b", now=100.0)
    assert not due.due("t", b"a", now=100.0)
    assert not due.due("t", b"c", now=100.0)
