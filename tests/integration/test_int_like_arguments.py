"""An int-like that is no int (numpy's int64, any object with __index__) is
taken where an int goes, as Python takes it (operator.index), and given on
as the int it stands for: the argument checks refused it ("page_size: must
be an int, not int64"), though protobuf and range() take it. A bool, which
has __index__ too, stays refused. Against a real server."""

from __future__ import annotations

from typing import Any

import pytest

from sealtrail import AsyncAuditClient, AuditClient, build_alert_rule, build_event, build_filter
from tests.conftest import ServerThread


class Index:
    """numpy's int64 as far as the client can tell: __index__, no int."""

    def __init__(self, value: int) -> None:
        self.value = value

    def __index__(self) -> int:
        return self.value

    def __repr__(self) -> str:
        return f"Index({self.value})"


def test_an_int_like_is_taken_where_an_int_goes(client: AuditClient) -> None:
    for n in range(5):
        client.record(action="doc.edit", actor_id=f"u{n}")
    taken = client.query(order="oldest", page_size=Index(2), limit=Index(3))
    assert [event.seq for event in taken] == [1, 2, 3]
    edits = build_filter(actions="doc.edit")
    counts = client.count_events(edits, group_by="actor", limit=Index(2))
    assert (counts.total_groups, len(counts.groups)) == (5, 2)
    proof = client.get_inclusion_proof(seq=Index(2), tree_size=Index(5))
    assert (proof.seq, proof.tree_size) == (2, 5)
    assert list(client.list_purged_leaves(after_seq=Index(0))) == []
    *_, last = client.export_stream(first_seq=Index(4), last_seq=Index(4))
    assert (last.manifest.row_count, last.manifest.first_seq, last.manifest.last_seq) == (1, 4, 4)
    changed = client.set_retention_policy(Index(90), categories={"authentication": Index(30)})
    assert changed.policy.default_days == 90
    assert [rule.days for rule in changed.policy.rules] == [30]
    rule = build_alert_rule(
        "edits", "threshold", filter=edits, count=Index(5),
        window_seconds=Index(60),
    )  # fmt: skip
    assert (rule.threshold.count, rule.threshold.window_seconds) == (5, 60)
    hours = build_alert_rule(
        "late", "off_hours", filter=edits, start_hour=Index(8),
        end_hour=Index(18), working_days=[Index(1), Index(2)],
    )  # fmt: skip
    assert list(hours.off_hours.working_days) == [1, 2]
    one_day = build_alert_rule("late", "off_hours", filter=edits, working_days={Index(3)})
    assert list(one_day.off_hours.working_days) == [3]
    assert client.create_alert_rule(rule).rule.threshold.count == 5


async def test_an_int_like_is_taken_by_the_async_client(server: ServerThread, tenant: str) -> None:
    async with AsyncAuditClient(server.target, token=server.token(tenant)) as audit:
        for n in range(3):
            await audit.record(build_event(action="doc.edit", actor_id=f"u{n}"))
        taken = audit.query(order="oldest", page_size=Index(1), limit=Index(2))
        assert [event.seq async for event in taken] == [1, 2]
        assert (await audit.get_inclusion_proof(seq=Index(3))).seq == 3


@pytest.mark.parametrize(
    ("call", "named"),
    [
        (lambda client: list(client.query(page_size=True)), "page_size"),
        (lambda client: list(client.query(limit=False)), "limit"),
        (lambda client: client.get_inclusion_proof(seq=True), "seq"),
        (lambda client: build_alert_rule("r", "threshold", count=True), "count"),
        (lambda client: client.query(page_size=Index), "page_size"),  # the class, no int
    ],
)
def test_a_bool_stays_refused_where_an_int_goes(client: AuditClient, call: Any, named: str) -> None:
    with pytest.raises(TypeError, match=f"^{named}: must be an int"):
        call(client)
