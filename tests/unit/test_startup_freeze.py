"""`serve` keeps what startup built out of the garbage collector's full
collections (ADR 0029), having first freed startup's own garbage: a reference
cycle left over from startup is collected, not frozen for the process's life."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest

from sealtrail_server.cli import _freeze_startup_objects


class _Node:
    """An object the collector tracks (it has a __dict__ that can form a cycle)."""

    def __init__(self) -> None:
        self.other: _Node | None = None


@pytest.fixture
def unfrozen_afterwards() -> Iterator[None]:
    yield
    gc.unfreeze()  # the test process goes on collecting as before


def test_startup_garbage_is_freed_and_the_rest_frozen(unfrozen_afterwards: None) -> None:
    garbage = _Node()
    garbage.other = garbage  # a cycle: only the collector frees it
    freed = weakref.ref(garbage)
    del garbage
    kept = _Node()

    _freeze_startup_objects()

    assert freed() is None
    assert gc.get_freeze_count() > 0
    assert not any(o is kept for o in gc.get_objects())  # in no generation: frozen
