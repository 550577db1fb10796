"""What a process of the last release makes of an alert rule this release
stores (docs/operations.md, "Rolling upgrades"): during a rolling upgrade it
shares the database with this release's processes and must leave a rule it
does not fully understand. A grouped spike (ADR 0147) judged by it would be
judged ungrouped, one key's burst against the whole tenant's baseline: it
must leave it. An ungrouped spike it judges as it always did."""

from __future__ import annotations

import ast
import subprocess
from pathlib import Path
from typing import Any, Final

import pytest

from sealtrail import build_alert_rule, build_filter
from sealtrail_server.alerts.evaluator import condition_of
from sealtrail_server.api.alerting import stored_condition
from sealtrail_server.newer_objects import condition_not_understood

# The last released main. What its newer_objects.condition_not_understood
# knew of a stored condition, copied as it stood there (frozen: this
# release's own sets move on): its kinds, its keys, and the groupings a
# `group_by` may name (domain/alerts.GROUPINGS). Its spike evaluation read no
# `group_by` (alerts/evaluator._spike counted the tenant's events together).
RELEASED: Final = "7f202ce1"
RELEASED_KINDS: Final = frozenset(
    ("match", "threshold", "spike", "new_ip", "new_country", "off_hours")
)
RELEASED_KEYS: Final = frozenset(
    (
        "kind", "filter", "count", "window_seconds", "group_by", "exact_actor_ids", "time_zone",
        "start_hour", "end_hour", "working_days", "baseline_windows", "factor", "min_count",
    )
)  # fmt: skip
RELEASED_GROUPINGS: Final = ("actor", "ip", "credential")

API = build_filter(actions="api.request")


def released_not_understood(condition: dict[str, Any]) -> str | None:
    """7f202ce1's condition_not_understood, its filter check aside (the
    filters here are an action's, which it knew)."""
    kind = condition.get("kind")
    if kind not in RELEASED_KINDS:
        return f"condition kind {kind!r}"
    unknown = sorted(key for key in condition if key not in RELEASED_KEYS)
    if unknown:
        return "condition key " + ", ".join(repr(key) for key in unknown)
    group_by = condition.get("group_by", "none")
    if group_by != "none" and group_by not in RELEASED_GROUPINGS:
        return f"condition group_by {group_by!r}"
    return None


def _spike(**settings: Any) -> dict[str, Any]:
    """A spike rule's condition as this release stores it."""
    rule = build_alert_rule(
        "leaked key", "spike", filter=API, window_seconds=600, baseline_windows=24,
        factor=5.0, min_count=20, **settings,
    )  # fmt: skip
    return stored_condition(rule)


@pytest.mark.parametrize("group_by", ["actor", "ip", "credential"])
def test_the_released_process_leaves_a_grouped_spike_this_release_stores(group_by: str) -> None:
    stored = _spike(group_by=group_by)
    said = released_not_understood(stored)
    assert said is not None and said.startswith("condition key "), said
    # This release reads it grouped, and does not leave it.
    assert condition_not_understood(stored) is None
    assert condition_of(stored).group_by == group_by


def test_the_released_process_judges_an_ungrouped_spike_stored_as_before() -> None:
    stored = _spike()
    assert stored == {
        "kind": "spike", "filter": {"actions": ["api.request"]}, "window_seconds": 600,
        "baseline_windows": 24, "factor": 5.0, "min_count": 20,
    }  # fmt: skip
    assert released_not_understood(stored) is None
    assert condition_not_understood(stored) is None
    assert condition_of(stored).group_by == "none"


def test_a_grouped_threshold_stays_one_the_released_process_judges() -> None:
    rule = build_alert_rule(
        "many logins", "threshold", filter=API, count=5, window_seconds=60, group_by="ip"
    )
    stored = stored_condition(rule)
    assert stored["group_by"] == "ip"
    assert released_not_understood(stored) is None


def test_the_frozen_copy_is_what_the_released_commit_knew() -> None:
    """Where the repository's history is at hand (a shallow clone in CI may
    not hold the commit), the keys above are checked against it."""
    root = Path(__file__).resolve().parents[2]
    shown = subprocess.run(
        ["git", "-C", str(root), "show", f"{RELEASED}:server/sealtrail_server/newer_objects.py"],
        capture_output=True,
        text=True,
        check=False,
    )
    if shown.returncode != 0:
        pytest.skip(f"the history does not hold {RELEASED}")
    [keys] = [
        node.value
        for node in ast.walk(ast.parse(shown.stdout))
        if isinstance(node, ast.AnnAssign)
        and isinstance(node.target, ast.Name)
        and node.target.id == "_CONDITION_KEYS"
    ]
    assert isinstance(keys, ast.Call)
    assert frozenset(ast.literal_eval(keys.args[0])) == RELEASED_KEYS
