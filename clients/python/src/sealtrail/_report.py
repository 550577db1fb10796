"""Activity reports: a summary of a tenant's activity over a period, read
from a fixed number of RPCs whatever the size of the log (docs/reports.md).

`ReportPlan` says which requests a report sends and builds the
`ActivityReport` from their answers; `AuditClient.activity_report` and
`AsyncAuditClient.activity_report` send them, each its own way:

    GetCheckpoint(fresh)            the state of the log the report describes
    CountEvents x 8                 by category, outcome, severity; top actors,
                                    actions, resource types, resources,
                                    credentials (each with the total)
    Query (1 page)                  the security alerts, the latest ALERTS_LISTED
    CountEvents (only if more)      how many alerts there were in all
    Query x 2 (1 event each)        the first and the last event

The period ends at the checkpoint's time (or --until, if earlier): the
report's own reads, each recorded as `audit_log.queried` after the
checkpoint was signed, are never counted in it.

A server older than a grouping (COUNT_GROUP_BY_CREDENTIAL, say) refuses its
count as INVALID_ARGUMENT naming `group_by`: that section alone is left out,
said as not available from the server (`ActivityReport.unavailable`), and
the rest reported."""

from __future__ import annotations

import base64
import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

from google.protobuf.timestamp_pb2 import Timestamp

from sealtrail._choices import MAX_TOP as MAX_TOP
from sealtrail._convert import (
    EventCount,
    actor_words,
    credential_of_key,
    credential_words,
    enum_label,
    resource_of_key,
)
from sealtrail._errors import InvalidArgumentError
from sealtrail._words import counted
from sealtrail.v1 import audit_service_pb2, event_pb2, integrity_pb2

# The action of the events alert rules record as they fire (docs/alerting.md).
ALERT_ACTION: Final = "security.alert"
# Alerts a report lists at most: the latest, in one page.
ALERTS_LISTED: Final = 50
# The key of the JSON form's version: changed only when a key changes meaning.
JSON_FORMAT: Final = "sealtrail.activity-report/1"
# The counts of a report: name -> (grouping, whether a top list, cut at `top`).
_COUNTS: Final = {
    "category": ("category", False),
    "outcome": ("outcome", False),
    "severity": ("severity", False),
    "actor": ("actor", True),
    "action": ("action", True),
    "resource_type": ("resource_type", True),
    "resource": ("resource", True),
    "credential": ("credential", True),
}
# The count every server knows, whose total is the report's: never left out.
_TOTAL: Final = "category"
# What a report says of a section whose grouping the server does not know.
UNAVAILABLE: Final = "not available from this server (upgrade it)"
# Groups of a grouping that is not a top list: every value an enum has, and none.
_ALL_GROUPS: Final = 50
# The characters Markdown would take for markup in a table's cell or mid-line
# (emphasis, code, links, HTML, a cell's end); a report's lines never start
# with a value, where `#`, `-` or `1.` would start a heading or a list.
_MARKDOWN: Final = re.compile(r"([\\`*_{}\[\]<>|~])")


@dataclass(frozen=True)
class ReportedCredential:
    """The credential an event's actor acted with (`Actor.credential`): its
    `kind` (`api_key`), `id` and `hint` (the secret's last characters; ""
    when not given)."""

    kind: str
    id: str
    hint: str

    @classmethod
    def of(cls, credential: event_pb2.ActorCredential) -> ReportedCredential | None:
        """None for an event recorded without one (every field empty)."""
        if not (credential.kind or credential.id or credential.hint):
            return None
        return cls(kind=credential.kind, id=credential.id, hint=credential.hint)

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "id": self.id, "hint": self.hint}

    def words(self) -> str:
        """As `sealtrail query` shows it: `api_key key_8f3a2c ...a1b2`."""
        return credential_words(self.kind, self.id, self.hint)


@dataclass(frozen=True)
class ReportedEvent:
    """An event as a report names it: an alert, or the first or last event of
    the period. `actor` is the actor's email, else its display name, else its
    id (`actor_words`); `credential` the credential it acted with (None: the
    event names none); `resource` its type and id (`document/d1`); `outcome`
    and `severity` lowercase names."""

    seq: int
    id: str
    occurred_at: datetime
    action: str
    actor: str
    credential: ReportedCredential | None
    resource: str
    outcome: str
    severity: str
    description: str

    @classmethod
    def of(cls, event: event_pb2.Event) -> ReportedEvent:
        return cls(
            seq=event.seq,
            id=event.id,
            occurred_at=_time(event.occurred_at),
            action=event.action,
            actor=actor_words(event.actor.email, event.actor.display_name, event.actor.id),
            credential=ReportedCredential.of(event.actor.credential),
            resource="/".join(part for part in (event.resource.type, event.resource.id) if part),
            outcome=enum_label(event_pb2.Outcome, event.outcome),
            severity=enum_label(event_pb2.Severity, event.severity),
            description=event.description,
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "seq": self.seq,
            "id": self.id,
            "occurred_at": _rfc3339(self.occurred_at),
            "action": self.action,
            "actor": self.actor,
            "credential": None if self.credential is None else self.credential.to_dict(),
            "resource": self.resource,
            "outcome": self.outcome,
            "severity": self.severity,
            "description": self.description,
        }


@dataclass(frozen=True)
class ReportedCheckpoint:
    """The signed checkpoint a report was read against: the log's `origin`,
    its `tree_size` (events of seq 1 to it), its Merkle `root_hash` (base64,
    as the note, export manifests and bundles say it, for an auditor to
    match by eye), when the server signed it (`issued_at`), and the signed
    `note` itself, which `AuditClient.check_checkpoint` later proves a
    prefix of the log."""

    origin: str
    tree_size: int
    root_hash: str
    issued_at: datetime
    note: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "origin": self.origin,
            "tree_size": self.tree_size,
            "root_hash": self.root_hash,
            "issued_at": _rfc3339(self.issued_at),
            "note": self.note,
        }


@dataclass(frozen=True)
class TopGroups:
    """The largest `groups` of a grouping (by count, then key), and how many
    `distinct` values the period had in all. Of actors, each group's `label`
    says who the actor is (`EventCount.label`)."""

    groups: tuple[EventCount, ...]
    distinct: int

    def to_dict(self) -> dict[str, Any]:
        return {"distinct": self.distinct, "groups": _groups(self.groups)}

    def actors_dict(self) -> dict[str, Any]:
        """The JSON of a top list of actors: each actor's id (`key`), who it
        is as its latest event records it (`name`, "" for none), its count."""
        groups = [
            {"key": group.key, "name": group.label, "count": group.count} for group in self.groups
        ]
        return {"distinct": self.distinct, "groups": groups}

    def resources_dict(self) -> dict[str, Any]:
        """The JSON of a top list of resources: each group's key as CountEvents
        gives it, and the resource's `type` and `id` read from it."""
        groups = []
        for group in self.groups:
            kind, id = resource_of_key(group.key)
            groups.append({"key": group.key, "type": kind, "id": id, "count": group.count})
        return {"distinct": self.distinct, "groups": groups}

    def credentials_dict(self) -> dict[str, Any]:
        """The JSON of a top list of credentials: each group's key as
        CountEvents gives it, and the credential's `kind`, `id` and `hint`
        read from it."""
        groups = []
        for group in self.groups:
            kind, id, hint = credential_of_key(group.key)
            groups.append(
                {"key": group.key, "kind": kind, "id": id, "hint": hint, "count": group.count}
            )
        return {"distinct": self.distinct, "groups": groups}


@dataclass(frozen=True)
class ActivityReport:
    """What `activity_report` found: the matching events that occurred from
    `since` (None: any time) to before `until` (the checkpoint's time, or
    the filter's end if earlier; None for an empty log) in the log as
    `checkpoint` signs it (None: the log is empty).

    `total` events; `by_category`, `by_outcome`, `by_severity` every group
    (key "" for events with none); `failures` and `denied`, the events of
    those outcomes; `top_actors`, `top_actions`, `top_resource_types`,
    `top_resources` (keys of a resource's type and id: `resource_of_key`),
    `top_credentials` (keys of a credential's kind, id and hint:
    `credential_of_key`) the largest groups; `alerts` the latest `security.alert` events of the
    period (at most ALERTS_LISTED, oldest first) of `alerts_total`;
    `first_event` and `last_event` the first and last recorded (by seq).
    `consistent` is False when events were recorded into the period while
    the report read it (its counts then differ by them): run it again, or
    end the period in the past. `unavailable` names the counts (`credential`)
    the server refused for want of their grouping (a server older than it):
    those sections are left out, said as UNAVAILABLE, their groups empty."""

    since: datetime | None
    until: datetime | None
    checkpoint: ReportedCheckpoint | None
    total: int
    failures: int
    denied: int
    by_category: tuple[EventCount, ...]
    by_outcome: tuple[EventCount, ...]
    by_severity: tuple[EventCount, ...]
    top_actors: TopGroups
    top_actions: TopGroups
    top_resource_types: TopGroups
    top_resources: TopGroups
    top_credentials: TopGroups
    alerts: tuple[ReportedEvent, ...]
    alerts_total: int
    first_event: ReportedEvent | None
    last_event: ReportedEvent | None
    consistent: bool
    unavailable: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """The report as JSON takes it, its keys as docs/reports.md lists them."""
        return {
            "format": JSON_FORMAT,
            "period": {
                "since": None if self.since is None else _rfc3339(self.since),
                "until": None if self.until is None else _rfc3339(self.until),
            },
            "checkpoint": None if self.checkpoint is None else self.checkpoint.to_dict(),
            "consistent": self.consistent,
            "total": self.total,
            "failures": self.failures,
            "denied": self.denied,
            "by_category": _groups(self.by_category),
            "by_outcome": _groups(self.by_outcome),
            "by_severity": _groups(self.by_severity),
            "top_actors": self.top_actors.actors_dict(),
            "top_actions": self.top_actions.to_dict(),
            "top_resource_types": self.top_resource_types.to_dict(),
            "top_resources": self.top_resources.resources_dict(),
            "top_credentials": None
            if "credential" in self.unavailable
            else self.top_credentials.credentials_dict(),
            "alerts": {
                "total": self.alerts_total,
                "listed": [alert.to_dict() for alert in self.alerts],
            },
            "first_event": None if self.first_event is None else self.first_event.to_dict(),
            "last_event": None if self.last_event is None else self.last_event.to_dict(),
            "unavailable": list(self.unavailable),
        }

    def lacks(self, header: str) -> bool:
        """Whether the section of `header` (`credential`, `resource type`: as
        `breakdowns` and `tops` name them) is one the server could not count."""
        return header.replace(" ", "_") in self.unavailable

    def to_markdown(self) -> str:
        """The report in Markdown (GitHub's tables), to paste in a ticket or a mail."""
        lines = ["# Sealtrail activity report", "", f"Period: {self.period()}", ""]
        lines += [f"Log: {_markdown(self.log_state())}", ""]
        if not self.consistent:
            lines += [f"**Warning:** {_markdown(INCONSISTENT)}", ""]
        if not self.total:  # not a table of nothing for each count
            return "\n".join([*lines, f"{NO_EVENTS.capitalize()}.", ""])
        lines += [
            f"**Total: {counted(self.total, 'event', grouped=True)}**",
            "",
            f"**Failures: {self.failures:,}** ({share(self.failures, self.total)}),"
            f" denied: {self.denied:,} ({share(self.denied, self.total)})",
        ]
        for title, groups in self.breakdowns():
            if self.lacks(title.lower()):
                lines += ["", f"## {title}", "", f"{UNAVAILABLE.capitalize()}."]
                continue
            lines += ["", f"## {title}", "", *_markdown_table(title.lower(), groups, self.total)]
        for title, header, top in self.tops():
            if self.lacks(header):
                lines += ["", f"## Top {title}", "", f"{UNAVAILABLE.capitalize()}."]
                continue
            heading = f"Top {len(top.groups)} {title} of {top.distinct:,}"
            lines += ["", f"## {heading}", "", *_markdown_table(header, top.groups, self.total)]
        lines += ["", f"## Security alerts: {self.alerts_total:,}", ""]
        if self.alerts:
            if len(self.alerts) < self.alerts_total:
                lines += [f"The latest {len(self.alerts)}:", ""]
            lines += ["| time (UTC) | seq | severity | alert |", "|---|--:|---|---|"]
            lines += [
                f"| {table_time(alert.occurred_at)} | {alert.seq} | {alert.severity}"
                f" | {_markdown(alert.description or alert.action)} |"
                for alert in self.alerts
            ]
        else:
            lines.append("None fired.")
        for title, event in (("First event", self.first_event), ("Last event", self.last_event)):
            if event is not None:
                lines += ["", f"{title}: {_markdown(event_line(event))}"]
        return "\n".join(lines) + "\n"

    def period(self) -> str:
        """The period in words: `2026-11-29 00:00:00 to 2026-12-06 10:00:00 UTC`."""
        start = "the first event" if self.since is None else table_time(self.since)
        end = "now" if self.until is None else table_time(self.until)
        return f"{start} to {end} UTC"

    def log_state(self) -> str:
        """The state of the log the report read, as said: size, root, origin."""
        if self.checkpoint is None:
            return "empty (no checkpoint)"
        cp = self.checkpoint
        return (
            f"{counted(cp.tree_size, 'event', grouped=True)}, root {cp.root_hash},"
            f" checkpoint of {cp.origin} signed {table_time(cp.issued_at)} UTC"
        )

    def breakdowns(self) -> tuple[tuple[str, tuple[EventCount, ...]], ...]:
        return (
            ("Category", self.by_category),
            ("Outcome", self.by_outcome),
            ("Severity", self.by_severity),
        )

    def tops(self) -> tuple[tuple[str, str, TopGroups], ...]:
        """The top lists: each one's title (plural), its column's header, its groups."""
        return (
            ("actors", "actor", self.top_actors),
            ("actions", "action", self.top_actions),
            ("resource types", "resource type", self.top_resource_types),
            ("resources", "resource", self.top_resources),
            ("credentials", "credential", self.top_credentials),
        )


# What a report of no event says, in text and Markdown, in place of its counts.
NO_EVENTS: Final = "no events in the period"
# What a report says when its counts differ (ActivityReport.consistent).
INCONSISTENT: Final = (
    "events were recorded into the period while the report read it, so its counts differ"
    " by them; run it again, or give an --until in the past"
)


class ReportPlan:
    """The requests of one report, in the order a client sends them, and
    the report built from their answers. `filter`: the events to report on,
    as Query takes it (its time bounds the period); `top`: the groups of
    each top list (1 to MAX_TOP)."""

    def __init__(self, filter: event_pb2.EventFilter | None, *, top: int) -> None:
        if not 1 <= top <= MAX_TOP:
            raise ValueError(f"top: must be 1 to {MAX_TOP}, not {top}")
        self._filter = event_pb2.EventFilter()
        if filter is not None:
            self._filter.CopyFrom(filter)
        self._top = top
        self._checkpoint: integrity_pb2.SignedCheckpoint | None = None

    @staticmethod
    def checkpoint_request() -> integrity_pb2.GetCheckpointRequest:
        """Signed now if the log has grown: it covers every committed event."""
        return integrity_pb2.GetCheckpointRequest(fresh=True)

    def read_against(self, checkpoint: integrity_pb2.SignedCheckpoint | None) -> bool:
        """Ends the period at `checkpoint`'s time (None: the log is empty);
        whether there is anything to read, then: a log with events, and a
        period that does not start at or after its end. A filter that ends
        before it starts of itself is sent, whatever the log holds (an empty
        log too): the server refuses it, naming `occurred_before`, as it
        refuses it to Query (helper-395)."""
        self._checkpoint = checkpoint
        ends = self._filter.occurred_before
        if (
            self._filter.HasField("occurred_after")
            and self._filter.HasField("occurred_before")
            and _key(self._filter.occurred_after) >= _key(ends)
        ):
            return True
        if checkpoint is None:
            return False
        signed = checkpoint.issued_at
        if not self._filter.HasField("occurred_before") or _key(signed) < _key(ends):
            self._filter.occurred_before.CopyFrom(signed)
        starts = self._filter.occurred_after
        return not self._filter.HasField("occurred_after") or _key(starts) < _key(
            self._filter.occurred_before
        )

    def count_requests(self) -> dict[str, audit_service_pb2.CountEventsRequest]:
        """The counts, by name (`_COUNTS`), of the period as `read_against` ended it."""
        group_by = audit_service_pb2.CountGroupBy
        return {
            name: audit_service_pb2.CountEventsRequest(
                filter=self._filter,
                group_by=group_by.Value(f"COUNT_GROUP_BY_{grouping.upper()}"),
                limit=self._top if top else _ALL_GROUPS,
            )
            for name, (grouping, top) in _COUNTS.items()
        }

    @staticmethod
    def may_leave_out(name: str, error: InvalidArgumentError) -> bool:
        """Whether the count `name` refused with `error` is a section the report
        leaves out: the server does not know its grouping (a violation of
        `group_by`, as a server older than it answers). Not the total's."""
        return name != _TOTAL and any(field == "group_by" for field, _ in error.field_violations)

    def alerts_filter(self) -> event_pb2.EventFilter | None:
        """The period's alerts: its events of action ALERT_ACTION, if the
        filter's actions take it (None: they do not, and there are none)."""
        actions = list(self._filter.actions)
        if actions and not any(_takes(action, ALERT_ACTION) for action in actions):
            return None
        alerts = event_pb2.EventFilter()
        alerts.CopyFrom(self._filter)
        alerts.ClearField("actions")
        alerts.actions.append(ALERT_ACTION)
        return alerts

    def alerts_request(self) -> audit_service_pb2.QueryRequest | None:
        alerts = self.alerts_filter()
        if alerts is None:
            return None
        return audit_service_pb2.QueryRequest(
            filter=alerts, page_size=ALERTS_LISTED, order=audit_service_pb2.ORDER_NEWEST_FIRST
        )

    def alerts_count_request(self) -> audit_service_pb2.CountEventsRequest:
        """How many alerts there were, when more than one page listed."""
        return audit_service_pb2.CountEventsRequest(filter=self.alerts_filter())

    def end_requests(self) -> tuple[audit_service_pb2.QueryRequest, ...]:
        """The first and the last event of the period, one page of one each."""
        pb = audit_service_pb2
        return tuple(
            pb.QueryRequest(filter=self._filter, page_size=1, order=order)
            for order in (
                audit_service_pb2.ORDER_OLDEST_FIRST,
                audit_service_pb2.ORDER_NEWEST_FIRST,
            )
        )

    def report(
        self,
        counts: Mapping[str, audit_service_pb2.CountEventsResponse] | None = None,
        *,
        alerts: audit_service_pb2.QueryResponse | None = None,
        alerts_total: int | None = None,
        ends: tuple[audit_service_pb2.QueryResponse, ...] = (),
        unavailable: Collection[str] = (),
    ) -> ActivityReport:
        """The report of the answers: none for a log or a period with nothing to
        read. `unavailable`: the counts the server refused (`may_leave_out`)."""
        answers = counts or {}
        empty = audit_service_pb2.CountEventsResponse()
        by = {name: answers.get(name, empty) for name in _COUNTS}
        lacking = tuple(name for name in _COUNTS if name in unavailable)
        totals = {answer.total for name, answer in by.items() if name not in lacking}
        outcomes = {group.key: group.count for group in by["outcome"].groups}
        listed = (
            tuple(ReportedEvent.of(event) for event in reversed(alerts.events)) if alerts else ()
        )
        firsts = [ReportedEvent.of(page.events[0]) if page.events else None for page in ends]
        first, last = firsts if len(firsts) == 2 else (None, None)
        checkpoint = self._checkpoint
        return ActivityReport(
            since=_time(self._filter.occurred_after)
            if self._filter.HasField("occurred_after")
            else None,
            until=_time(self._filter.occurred_before)
            if self._filter.HasField("occurred_before")
            else None,
            checkpoint=None
            if checkpoint is None
            else ReportedCheckpoint(
                origin=checkpoint.origin,
                tree_size=checkpoint.tree_size,
                root_hash=base64.b64encode(checkpoint.root_hash).decode(),
                issued_at=_time(checkpoint.issued_at),
                note=checkpoint.note,
            ),
            total=by["category"].total,
            failures=outcomes.get("failure", 0),
            denied=outcomes.get("denied", 0),
            by_category=_counts(by["category"]),
            by_outcome=_counts(by["outcome"]),
            by_severity=_counts(by["severity"]),
            top_actors=_top(by["actor"]),
            top_actions=_top(by["action"]),
            top_resource_types=_top(by["resource_type"]),
            top_resources=_top(by["resource"]),
            top_credentials=_top(by["credential"]),
            alerts=listed,
            alerts_total=len(listed) if alerts_total is None else alerts_total,
            first_event=first,
            last_event=last,
            consistent=len(totals) == 1,
            unavailable=lacking,
        )


def _takes(pattern: str, action: str) -> bool:
    """Whether an EventFilter action `pattern` (exact, `prefix.*`, `*.suffix`) matches `action`."""
    if pattern.endswith(".*"):
        return action.startswith(pattern[:-1])
    if pattern.startswith("*."):
        return action.endswith(pattern[1:])
    return pattern == action


def _key(stamp: Timestamp) -> tuple[int, int]:
    return stamp.seconds, stamp.nanos


def _time(stamp: Timestamp) -> datetime:
    return stamp.ToDatetime(UTC)


def _rfc3339(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _counts(answer: audit_service_pb2.CountEventsResponse) -> tuple[EventCount, ...]:
    """The groups of `answer`, an actor's each with who it is (`label`)."""
    return tuple(
        EventCount(key=group.key, count=group.count, label=group.label) for group in answer.groups
    )


def _top(answer: audit_service_pb2.CountEventsResponse) -> TopGroups:
    return TopGroups(groups=_counts(answer), distinct=answer.total_groups)


def _groups(groups: tuple[EventCount, ...]) -> list[dict[str, Any]]:
    return [{"key": group.key, "count": group.count} for group in groups]


def share(count: int, total: int) -> str:
    """`count`'s share of `total`, as the report shows it: `37.5%`."""
    return f"{100 * count / total:.1f}%" if total else ""


def table_time(moment: datetime) -> str:
    """A time as a report shows it: UTC, to the second."""
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")


def event_line(event: ReportedEvent) -> str:
    """An event in a line: `2026-12-06 10:00:00 UTC, seq 12, user.login by alice
    with api_key key_8f3a2c ...a1b2 (failure)`."""
    used = "" if event.credential is None else f" with {event.credential.words()}"
    on = f" on {event.resource}" if event.resource else ""
    outcome = f" ({event.outcome})" if event.outcome else ""
    return (
        f"{table_time(event.occurred_at)} UTC, seq {event.seq}, {event.action}"
        f" by {event.actor}{used}{on}{outcome}"
    )


def _markdown(text: str) -> str:
    """`text` shown as it is in Markdown: its markup characters escaped, its
    line breaks spaces (a table's row is one line)."""
    return _MARKDOWN.sub(r"\\\1", " ".join(text.split()))


# The columns of a grouping whose key holds several parts, or beside it
# (an actor's id, and who it is).
_COLUMNS: Final = {
    "actor": ("actor", "name"),
    "resource": ("resource type", "resource id"),
    "credential": ("credential kind", "credential id", "hint"),
}


def columns(header: str) -> tuple[str, ...]:
    """The columns a table of groups names its key by: an actor's two, its id
    and who it is; a resource's two, its type and its id; a credential's
    three, its kind, id and hint; any other grouping's one, `header`."""
    return _COLUMNS.get(header, (header,))


def cells(header: str, group: EventCount) -> tuple[str, ...]:
    """A group's key in the `columns(header)` of its table (an actor's with
    its label); `(none)` for events that have none."""
    key = group.key
    if header == "actor":
        return (key or "(none)", group.label)
    if header == "resource":
        return ("(none)", "") if not key else resource_of_key(key)
    if header == "credential":
        kind, id, hint = credential_of_key(key)
        return (kind or "(none)", id, f"...{hint}" if hint else "")
    return (key or "(none)",)


def _markdown_table(header: str, groups: tuple[EventCount, ...], total: int) -> list[str]:
    if not groups:
        return ["None."]
    named = columns(header)
    rows = [f"| {' | '.join(named)} | events | share |", f"|{'---|' * len(named)}--:|--:|"]
    for group in groups:
        shown = " | ".join(_markdown(cell) for cell in cells(header, group))
        rows.append(f"| {shown} | {group.count:,} | {share(group.count, total)} |")
    return rows
