"""The seqs an export's range holds outside every range retention recorded:
where a tombstone is one no purge accounts for (store/removals_accounted)."""

from __future__ import annotations

import pytest

from sealtrail_server.store.removals_accounted import _gaps


@pytest.mark.parametrize(
    ("after", "upto", "ranges", "gaps"),
    [
        (0, 10, [], [(0, 10)]),
        (0, 10, [(1, 10)], []),
        (0, 10, [(3, 4)], [(0, 2), (4, 10)]),
        # Overlapping, touching, out of order, or beyond the range.
        (0, 10, [(6, 8), (2, 4), (3, 5)], [(0, 1), (8, 10)]),
        (0, 10, [(2, 4), (5, 6)], [(0, 1), (6, 10)]),
        (4, 8, [(1, 5), (8, 20)], [(5, 7)]),
        # A record or summary naming no seq, or seqs backwards, accounts for none.
        (0, 3, [(0, -1), (3, 1)], [(0, 3)]),
    ],
)
def test_the_gaps_are_the_seqs_no_range_covers(
    after: int, upto: int, ranges: list[tuple[int, int]], gaps: list[tuple[int, int]]
) -> None:
    assert _gaps(after, upto, ranges) == gaps
