"""What a newer release stored that this one does not understand (docs/operations.md,
"Rolling upgrades"): while an upgrade replaces processes one at a time, this
release's processes share the database with the newer release's, which may
store a sink of a kind, a filter with a key, or an alert rule with a condition
this release does not know. Such an object is left to a process that knows
it: never sent to, fired, changed, or applied in part (a filter with a key
left out matches more than it means to), and no lease of it is held."""

from __future__ import annotations

import logging
from typing import Any, Final

from google.protobuf import json_format

from sealtrail.v1 import event_pb2

from .domain.alerts import GROUPINGS, NEW_ORIGIN_KINDS, SPIKE_GROUP_BY
from .domain.sinks import KINDS

# The words every sign of such an object carries, in the log and in answers.
NEWER: Final = "made by a newer Sealtrail"

_FILTER_KEYS: Final = frozenset(
    name
    for field in event_pb2.EventFilter.DESCRIPTOR.fields
    for name in (field.name, field.json_name)
)
_CONDITION_KINDS: Final = frozenset(
    ("match", "threshold", "spike", "absence", *NEW_ORIGIN_KINDS, "off_hours")
)
# A stored condition's keys (alerts/evaluator.condition_of reads each).
_CONDITION_KEYS: Final = frozenset(
    (
        "kind", "filter", "count", "window_seconds", "group_by", "exact_actor_ids", "time_zone",
        "start_hour", "end_hour", "working_days", "baseline_windows", "factor", "min_count",
        SPIKE_GROUP_BY,
    )
)  # fmt: skip


def _cut(text: str) -> str:
    line = text.splitlines()[0] if text else ""
    return line if len(line) <= 120 else line[:119] + "\u2026"


def filter_not_understood(stored: Any) -> str | None:
    """What of a stored filter (EventFilter JSON) this release does not know, or None."""
    if not isinstance(stored, dict):
        return "a filter that is not an object"
    unknown = sorted(key for key in stored if key not in _FILTER_KEYS)
    if unknown:
        return "filter key " + ", ".join(repr(key) for key in unknown)
    try:
        json_format.ParseDict(stored, event_pb2.EventFilter())
    except json_format.ParseError as error:  # a value it does not know (an enum's)
        return f"filter value ({_cut(str(error))})"
    return None


def sink_not_understood(kind: str, stored_filter: Any) -> str | None:
    """What of a stored sink this release does not know, or None."""
    if kind not in KINDS:
        return f"kind {kind!r}"
    return filter_not_understood(stored_filter)


def condition_not_understood(condition: Any) -> str | None:
    """What of a stored alert rule's condition this release does not know, or None."""
    if not isinstance(condition, dict):
        return "a condition that is not an object"
    kind = condition.get("kind")
    if kind not in _CONDITION_KINDS:
        return f"condition kind {kind!r}"
    unknown = sorted(key for key in condition if key not in _CONDITION_KEYS)
    if unknown:
        return "condition key " + ", ".join(repr(key) for key in unknown)
    # A grouping it does not know, counted as none, would fire for all at once.
    for key in ("group_by", SPIKE_GROUP_BY):
        group_by = condition.get(key, "none")
        if group_by != "none" and group_by not in GROUPINGS:
            return f"condition {key} {group_by!r}"
    return filter_not_understood(condition.get("filter", {}))


def sign(what: str) -> str:
    """The words a read shows of an object this release does not understand."""
    return f"{NEWER} release: {what} not known to this one; left to a process that knows it"


def left_sealed(log: logging.Logger, kind: str, what: str, *args: object) -> bool:
    """Whether a sink (or deployment sink) of `kind`, being resealed at start
    (store/sinks.reseal_secrets, store/deployment_sinks.reseal_definitions), is
    a newer release's: which of its fields are secrets is unknown here, so it is
    left sealed as it is (a newer process reseals it), said in `log` as the
    `what % args` that was left, and why."""
    if kind in KINDS:
        return False
    log.warning(
        what + " was %s release (kind %r not known to this one); left sealed as it is",
        *args, NEWER, kind,
        stacklevel=2,  # said where the resealing is, as before
    )  # fmt: skip
    return True


def say_left_sealed(log: logging.Logger, noun: str, count: int) -> None:
    """Says, where there were any, how many `noun`s ("sink", "deployment sink")
    one resealing left sealed as they are (`left_sealed`)."""
    if count:
        log.warning(
            "%s secrets: %d %ss a newer release made were left sealed as they are",
            noun, count, noun,
            stacklevel=2,
        )  # fmt: skip
