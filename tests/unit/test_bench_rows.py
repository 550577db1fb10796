"""The bench COPYs events as the appender does (`_COPY_EVENTS`): its rows must
keep the appender's columns, or `make bench` fails where no test looks."""

from __future__ import annotations

from bench.events import RowFactory
from sealtrail_server.store.appender import _EVENT_COLUMNS


def test_the_bench_rows_have_the_appenders_columns() -> None:
    rows = list(RowFactory("t1", "bench-rows").batch(3))
    assert {len(row) for row in rows} == {len(_EVENT_COLUMNS)}
    names = [name for name, _ in _EVENT_COLUMNS]
    row = dict(zip(names, rows[0], strict=True))
    assert row["tenant_id"] == "t1" and row["seq"] == 1
    assert isinstance(row["leaf_hash"], bytes) and len(row["leaf_hash"]) == 32
    assert isinstance(row["event_view"], bytes)
