"""Counts of events (CountEvents): what they may be grouped by, how many groups
an answer holds, and how each group's key is written.

Every key is a string, whatever the grouping, so that an answer is one table
of (key, count) for any of them: an action, an actor id, an enum value as the
canonical record writes it (`failure`), a resource type, a resource (its type
and id as a canonical JSON array, `["repository","acme/web"]`: a pair any of
whose characters a separator could take for its own, written by the database
that grouped it, store/counts.py), a credential (its kind, id and hint as
a canonical JSON array, `["api_key","key_8f3a2c","a1b2"]`, for the same
reason: an id may hold any character), or a time bucket's
start in RFC 3339, UTC, to the second (`2026-12-05T14:00:00Z`), which sorts as
text as it does in time (ADR 0063). Counted in a time zone, a bucket is a day
or an hour of its clocks, and its key carries the zone's offset at its start
(`2026-03-29T00:00:00+01:00`), written by the database that grouped it
(store/counts.py, ADR 0103).

A count may measure each group beside counting it: a figure of its events'
`context.duration_ms` (the mean, the 50th, 95th or 99th percentile, the
longest), of those that have one, and how many had one (`measured`); a
group none of whose events has a duration measures 0 of 0.

A count by actor labels each group it answers with who the actor is, as its
latest matching event records them (`actor_label`): an id (`u_3`, a token's
UUID) names no one to a reader asking who accessed what.

A count may be grouped by the value of one top-level key of the events'
details (`model`), keyed as `details_equals` compares it, and measured by
the numbers under another (`tokens`): their sum, mean or greatest, of the
events that have a number there (ADR 0161)."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Final, Literal

from .event import SEVERITIES
from .filters import MAX_DETAIL_KEY, page_size

GroupBy = Literal[
    "action",
    "actor",
    "category",
    "outcome",
    "severity",
    "resource_type",
    "day",
    "hour",
    "recorded_by",
    "ip",
    "country",
    "resource",
    "actor_type",
    "http_route",
    "http_status",
    "credential",
    "detail",
]

# What a count may measure of each group's durations: their mean, a
# percentile (interpolated, PostgreSQL's percentile_cont) or the longest;
# or of the numbers under one key of their details: the sum, the mean, the
# greatest (ADR 0161).
Measure = Literal[
    "duration_avg",
    "duration_p50",
    "duration_p95",
    "duration_p99",
    "duration_max",
    "detail_sum",
    "detail_avg",
    "detail_max",
]
DETAIL_MEASURES: Final[frozenset[Measure]] = frozenset({"detail_sum", "detail_avg", "detail_max"})
# A group by a detail is keyed by the value's first characters, this many at
# most: an answer of 1,000 groups stays small whatever the records hold.
MAX_DETAIL_GROUP_KEY: Final = 256


@dataclass(frozen=True, slots=True)
class Group:
    """One group of a count: its `key`, how many events share it (`count`),
    and with a measure, the measure's `value` (milliseconds) over the
    `measured` of them that have a duration (0 and 0 without); by actor,
    who the actor is (`actor_label`), "" otherwise."""

    key: str
    count: int
    value: float = 0.0
    measured: int = 0
    label: str = ""


@dataclass(frozen=True, slots=True)
class Counts:
    """What a count found: the `total` of matching events, the first `groups`
    in the answer's order, and how many groups there are in all."""

    total: int
    groups: list[Group]
    total_groups: int

    @property
    def truncated(self) -> bool:
        """Whether the limit left groups out."""
        return self.total_groups > len(self.groups)


def group_limit(requested: int) -> int:
    """Groups an answer holds, as pages are sized (AIP-158): 0 means 50, more
    than 1,000 is lowered to 1,000, negative is INVALID_ARGUMENT on `limit`."""
    return page_size(requested, field="limit")


def detail_key_refusal(key: str) -> str | None:
    """Why `key` is no top-level key of details a count may name (as
    `details_equals` bounds one: 1 to MAX_DETAIL_KEY characters, no NUL),
    None if it is one."""
    if not key:
        return "give the top-level key of details (model, tokens)"
    if len(key) > MAX_DETAIL_KEY:
        return f"has {len(key)} characters; the limit is {MAX_DETAIL_KEY}"
    if "\x00" in key:
        return "must not contain NUL characters"
    return None


def group_key(group_by: GroupBy, value: object) -> str:
    """A group's key as the answer writes it, from the value the database
    grouped on (a severity's rank, a bucket's start; "" for none; a zoned
    bucket's key as the database wrote it)."""
    if group_by == "severity" and isinstance(value, int):
        return SEVERITIES[value]
    if isinstance(value, datetime):
        return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return "" if value is None else str(value)


# A display name a reader would take for an address, or trim: an angle
# bracket, a quote or bracket, a space at an edge. Quoted (as the CLI's rows
# quote it, clients/python/src/sealtrail/_cli.py `_who_words`).
_NAME_READ_OTHERWISE: Final = re.compile(r'[<>"()]|^\s|\s$')


def actor_label(email: str, display_name: str) -> str:
    """An actor as people read it, by name and email as an address is
    written: `Alice Martin <alice@example.com>`, the name quoted as a JSON
    string where it would read otherwise (`"Eve <ceo@x.io>" <eve@x.io>`);
    with one of them, it alone (an api_key actor's display name is its
    token's name); "" with neither."""
    if not (email and display_name):
        return email or display_name
    if _NAME_READ_OTHERWISE.search(display_name) is not None:
        display_name = json.dumps(display_name, ensure_ascii=False)
    return f"{display_name} <{email}>"
