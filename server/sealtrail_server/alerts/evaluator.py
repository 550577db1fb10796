"""Checks each tenant's new events against its alert rules, in seq order,
from a cursor in PostgreSQL (ADR 0017).

Every process runs one Evaluator; a tenant's cursor is leased as the
forwarder leases sinks, so one process evaluates a tenant at a time and
another takes over when it dies. A firing rule records a `security.alert`
event whose idempotency key is the rule and the event that fired it: a
re-evaluation after a crash (the cursor not yet moved) finds that event
instead of recording a second one. The alert then goes to the rule's sinks
(routing.py).

Threshold windows live in memory, and are kept beside the cursor: each step
that moves the cursor keeps, in the same transaction, what changed in them
(ADR 0086). Whenever a process takes a threshold rule up (at its start, when
a lease moves to it, after a step that failed) it takes the window up as
kept, so it decides as the window that evaluated every event before would
have, whatever retention purged of the log since. A rule whose window was
never kept (its condition changed, or kept by no release before) replays its
matching events already evaluated instead, back a few windows before the
newest of them, with the decisions the log records. A spike that straddles a
restart fires as it would have without it."""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Final

from opentelemetry.metrics import Meter, Observation

from sealtrail.v1 import event_pb2

from ..api.convert import UNREADABLE, caller_view, filter_from_json
from ..domain.alerts import (
    ALERT_ACTION,
    NEW_ORIGIN_KINDS,
    Condition,
    ThresholdWindow,
    actor_group,
    condition_shown,
    group_key,
    origin_of,
    outside_working_hours,
    validate_condition,
)
from ..domain.errors import AlreadyExists, FailedPrecondition, InvalidArgument, SealtrailError
from ..domain.event import (
    COUNTRY_SOURCE_GEOIP,
    MAX_FUTURE_SKEW_SECONDS,
    MAX_NAME,
    MAX_RECORD_BYTES,
    SEVERITIES,
    EventDraft,
    ValidEvent,
    located,
    plain_values,
    trigger_request,
    validate_event,
)
from ..domain.filters import EventFilter, RecordMatcher
from ..leased_work import LeasedWork, WaitingForRoom, new_owner
from ..measures import no_meter
from ..newer_objects import NEWER, condition_not_understood
from ..store import alerts as store
from ..store.appended import Appended
from ..store.appender import Appender
from ..store.changes import share_erasure_at_once
from ..store.database import Connection, Database
from ..store.events import PAGE_BYTES, StoredEvent, page_rows, query_events, stream_events
from ..store.idempotency import stored_under_key
from ..store.tree import tree_size
from . import ACTOR_ID
from .routing import route_alert

log = logging.getLogger(__name__)

_BATCH: Final = 1000  # events read per step
_PRIME_PAGE: Final = 1000  # events read per query when a threshold's window is rebuilt
_PRIME_EVENTS: Final = 100_000  # and at most this many in all
_SEVERITY_NUMBERS: Final = {name: number for number, name in SEVERITIES.items()}
# How long an alert's count may sit idle in its transaction, between two of
# its statements, before PostgreSQL ends its session and rolls it back. The
# count holds the rule's row to its commit: a process frozen there (SIGSTOP,
# `docker pause`, a debugger) held it for as long as it stayed frozen, and the
# rule's changes and deletion, through any process, waited meanwhile. Between
# its statements a count only matches the alert to its sinks' filters. As a
# change's (store/changes.py); the step runs again and counts it then.
IDLE_IN_COUNT_SECONDS = 30.0


@dataclass(slots=True)
class _SpikeWindow:
    """A spike rule's window as last counted (ADR 0132): its start, its
    matching events up to the last one evaluated (counted in SQL at the first,
    one more at each after), the baseline's average (None: no history) and
    over how many windows, and whether it fired. A cache: a process that
    takes the rule up counts again."""

    start: datetime
    count: int
    average: float | None
    windows: int
    fired: bool = False
    # Grouped (ADR 0147): the groups judged, by key, and the step (its last
    # seq) that counted them; a group met that none of them is counts again,
    # at most once a step.
    groups: dict[str, _SpikeGroup] | None = None
    counted_upto: int = 0


@dataclass(slots=True)
class _SpikeGroup:
    """A group of a grouped spike rule's window: its matching events up to
    the last one evaluated, those of the baseline's windows, whether it fired."""

    count: int
    baseline: int
    fired: bool = False


# The groups a grouped spike rule judges in a window at most (ADR 0147): the
# ones with the most events in it. A tenant with 100,000 addresses makes a
# count of 100,000 groups, but the rows read back, and the groups kept, stay
# bounded; the others are logged and counted (sealtrail.alerts.spike.left_out).
MAX_SPIKE_GROUPS: Final = 1000


@dataclass(slots=True)
class _Silence:
    """An absence rule's silence as last probed (ADR 0162): the seq it runs
    from (the last matching event's, or the rule's start), when it reaches
    the window (the receipt it runs from, and the window), and whether its
    alert was made. A cache: a process that takes the rule up probes again,
    and its alert's key finds one made before."""

    since_seq: int
    since: datetime
    due: datetime
    last: store.LastExpected | None
    fired: bool = False


@dataclass(slots=True)
class _Rule:
    stored: store.StoredRule
    condition: Condition
    matcher: RecordMatcher
    window: ThresholdWindow | None
    primed: bool = False  # its window holds the events evaluated before it was taken up
    spike: _SpikeWindow | None = None  # a spike rule's window as last counted
    silence: _Silence | None = None  # an absence rule's silence as last probed


_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)  # spike windows are aligned to it
_SKEW: Final = timedelta(seconds=MAX_FUTURE_SKEW_SECONDS)


def _is_threshold(rule: store.StoredRule) -> bool:
    """Whether the rule keeps a window (only an enabled threshold rule does)."""
    return bool(rule.condition.get("kind") == "threshold")


def _fitted(name: str) -> str:
    """A rule's name as its alerts show it, cut to a resource's name's limit.
    Redacted, a name may grow past it (a secret's replacement is longer than
    many secrets); the alert was then refused at every try and the tenant's
    every rule stopped firing (helper-155). Such names are refused since, but
    one stored before, or redacted otherwise since, still fires."""
    return name if len(name) <= MAX_NAME else name[: MAX_NAME - 1] + "\u2026"


def condition_of(stored: dict[str, Any], *, path: str = "rule", given: bool = False) -> Condition:
    """A stored condition, validated again (as the API validated it); `given`:
    one a request gives, checked whole (a filter that names which events the
    rule watches, which the rules stored before need not)."""
    stored = condition_shown(stored)  # a grouped spike's `spike_group_by` as `group_by`
    return validate_condition(
        stored["kind"],
        filter_from_json(stored.get("filter", {})),
        path=path,
        count=stored.get("count", 0),
        window_seconds=stored.get("window_seconds", 0),
        group_by=stored.get("group_by", "none"),
        exact_actor_ids=stored.get("exact_actor_ids", False),
        time_zone=stored.get("time_zone", ""),
        start_hour=stored.get("start_hour", 0),
        end_hour=stored.get("end_hour", 0),
        working_days=tuple(stored.get("working_days", ())),
        baseline_windows=stored.get("baseline_windows", 0),
        factor=stored.get("factor", 0.0),
        min_count=stored.get("min_count", 0),
        stored=not given,
    )


class Evaluator:
    def __init__(
        self,
        db: Database,
        appender: Appender,
        *,
        poll_interval: float = 1.0,
        lease_seconds: float = 30.0,
        max_tenants: int = 1000,
        sinks_changed: Callable[[], None] = lambda: None,
        shown_name: Callable[[str, str], Awaitable[str]] | None = None,
        meter: Meter | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        spike_groups: int = MAX_SPIKE_GROUPS,
    ) -> None:
        """`sinks_changed` is called after an alert was queued for sinks.
        `shown_name(tenant_id, name)`: a rule's name as its alerts show it
        (redacted as the tenant's events are; as given by default).
        `meter`: the alerts raised, the tenants waiting (docs/metrics.md).
        `clock`: the server's (tests move it), as the appender's that stamps
        the alert's receipt: when an alert occurs, when its rule last fired
        and when it was queued for the rule's sinks. (Which window an event
        falls in, and whether it is off hours, go by when it occurred.)
        `spike_groups`: the groups a grouped spike rule judges in a window."""
        self._db = db
        self._spike_groups = spike_groups
        self._clock = clock
        self._shown_name = shown_name
        meter = meter or no_meter()
        self._raised = meter.create_counter(
            "sealtrail.alerts.raised",
            unit="{alert}",
            description="security.alert events this process recorded, by the rule's severity.",
        )
        self._left_out = meter.create_counter(
            "sealtrail.alerts.spike.left_out",
            unit="{event}",
            description="Matching events of grouped spike rules not judged: their group was not"
            " among the ones with the most events in its window (ADR 0147).",
        )
        self._waiting = WaitingForRoom(
            log, prefix="alerts", held="evaluates %d tenants", limit="SEALTRAIL_ALERT_MAX_TENANTS"
        )
        meter.create_observable_up_down_counter(
            "sealtrail.alerts.tenants.waiting",
            callbacks=[lambda _options: [Observation(self._waiting.count)]],
            unit="{tenant}",
            description="Tenants with rules no process had room for, as this one's last claim"
            " at its limit saw.",
        )
        # tenant -> the events of its log past the cursor, as of its last step
        self._behind: dict[str, int] = {}
        meter.create_observable_gauge(
            "sealtrail.alerts.lag",
            callbacks=[lambda _options: [Observation(max(self._behind.values(), default=0))]],
            unit="{event}",
            description="The most events of its log a tenant this process evaluates has yet to"
            " have evaluated by its alert rules, as of its last step.",
        )
        self._sinks_changed = sinks_changed
        self._appender = appender
        self._poll = poll_interval
        self._lease_seconds = lease_seconds
        self._max_tenants = max_tenants
        self.owner = new_owner()
        self._rules: dict[str, dict[str, _Rule]] = {}  # tenant -> rule id -> rule
        # tenant -> the cursor its rules' windows stand at (every event up to it counted)
        self._windows_at: dict[str, int] = {}
        # Rules a newer release made (newer_objects.py), as defined when this
        # process met them: each said once, until deleted or changed.
        self._left: dict[str, datetime] = {}
        # Their tenants, as their enabled rules stood when left: not claimed
        # again until a rule of theirs is added, changed or deleted.
        self._left_tenants: dict[str, store.LeftTenant] = {}
        self._work: LeasedWork[str] = LeasedWork(
            "alerts",
            claim=self._claim,
            step=self._step,
            release=self._release,
            tenant_of=lambda tenant_id: tenant_id,
            poll_interval=poll_interval,
            lease_seconds=lease_seconds,
        )

    def start(self) -> None:
        if self._max_tenants > 0:
            self._work.start()

    async def stop(self) -> None:
        await self._work.stop()

    def rules_changed(self) -> None:
        self._work.claim_soon()
        self._work.wake_all()

    def wake(self, tenant_id: str) -> None:
        self._work.wake(tenant_id)

    async def _claim(self) -> list[str]:
        leave = list(self._left_tenants.values())
        met = list(self._left.items())
        async with self._db.system_connection() as conn:
            held = await store.claim_tenants(
                conn,
                owner=self.owner,
                lease_seconds=self._lease_seconds,
                limit=self._max_tenants,
                leave=leave,
            )
            full = len(held) >= self._max_tenants
            waiting = await store.count_unleased(conn, leave=leave) if full else 0
            standing = set(await store.rules_still_left(conn, met))
            tenants_standing = set(await store.tenants_still_left(conn, leave))
        self._waiting.saw(len(held), waiting, what="tenant")
        # A rule left, deleted or changed since, is forgotten (met again if changed).
        for rule_id, at in met:
            if (rule_id, at) not in standing and self._left.get(rule_id) == at:
                del self._left[rule_id]
        # A tenant left whose rules changed since is read again (left again
        # if a newer rule still stands, saying only those not said before).
        for left in leave:
            gone = left.tenant_id not in tenants_standing
            if gone and self._left_tenants.get(left.tenant_id) == left:
                del self._left_tenants[left.tenant_id]
        for tenant_id in set(self._rules) - set(held):
            del self._rules[tenant_id]  # another process's now: its windows go with it
            self._windows_at.pop(tenant_id, None)
        for tenant_id in set(self._behind) - set(held):
            del self._behind[tenant_id]  # measured by the process that holds it
        return held

    async def _release(self) -> None:
        async with self._db.system_connection() as conn:
            await store.release_leases(conn, owner=self.owner)
        self._behind.clear()

    async def _step(self, tenant_id: str) -> float | None:
        try:
            return await self._evaluate_step(tenant_id)
        except _ErasedMeanwhile:
            # Its alert refused by the log: the tenant's evaluation ends (its
            # cursor went with it), said once; failed, the step was said as
            # a failure to try again.
            log.info(
                "alerts: tenant %s was erased while its rules were evaluated; its evaluation ends",
                tenant_id,
            )
            self._rules.pop(tenant_id, None)
            self._windows_at.pop(tenant_id, None)
            self._behind.pop(tenant_id, None)
            return None

    async def _evaluate_step(self, tenant_id: str) -> float | None:
        async with self._db.system_connection() as conn:
            cursor = await store.leased_cursor(conn, tenant_id, owner=self.owner)
            if cursor is None:
                self._behind.pop(tenant_id, None)
                return None
            # The head before the rules: an event recorded after a rule's
            # creation (or enabling) answered is past this head, or else the
            # rule was stored before this read and the step sees it. (Events
            # recorded while that call ran may be passed over.)
            head = await tree_size(conn, tenant_id)
            stored_rules = await store.enabled_rules(conn, tenant_id)
            newer = [
                (rule, what)
                for rule in stored_rules
                if (what := condition_not_understood(rule.condition)) is not None
            ]
            if newer:
                # The tenant's one cursor: evaluating the rest would move it
                # past events the newer rule never saw. All left to the newer
                # release's processes.
                await store.release_lease(conn, tenant_id, owner=self.owner)
                self._leave(tenant_id, stored_rules, newer)
                return None
            self._left_tenants.pop(tenant_id, None)
            # No enabled rule watches the events up to the earliest start of
            # them all. The cursor stands still while a tenant has no enabled
            # rule (it is claimed only while it has one): a rule created or
            # enabled then waited while the backlog was read a batch a step
            # (helper-130). It moves past them at once; a rule that started
            # before keeps it where it is. (One created or enabled since this
            # read starts after all of these.)
            watched_from = min((rule.start_seq for rule in stored_rules), default=cursor + 1)
            if watched_from - 1 > cursor:
                async with conn.transaction():
                    moved = await store.advance(
                        conn, tenant_id, owner=self.owner, from_seq=cursor, to_seq=watched_from - 1
                    )
                    if moved and any(_is_threshold(rule) for rule in stored_rules):
                        await store.keep_windows(  # windows kept at the cursor move with it
                            conn, tenant_id, from_seq=cursor, to_seq=watched_from - 1, windows=[]
                        )
                if not moved:
                    return None
                if self._windows_at.get(tenant_id) == cursor:
                    self._windows_at[tenant_id] = watched_from - 1  # they counted nothing past
                cursor = watched_from - 1
        if self._windows_at.get(tenant_id) != cursor:
            # Built to another cursor: the lease lapsed here (a partition, a
            # stall) and another process moved it meanwhile, evaluating events
            # these windows never counted; kept, they fired a burst twice or
            # missed one (helper-122). Primed afresh from the log instead.
            self._rules.pop(tenant_id, None)
        rules = self._refresh(tenant_id, stored_rules)
        for rule in rules:
            if rule.window is not None and not rule.primed:
                await self._prime(tenant_id, rule, cursor)
        self._windows_at[tenant_id] = cursor
        # Silences are judged at every step, events to evaluate or not: a
        # step runs every poll while the tenant has an enabled rule.
        for rule in rules:
            if rule.condition.kind == "absence":
                await self._judge_silence(tenant_id, rule)
        if cursor >= head:
            self._behind[tenant_id] = 0
            return self._poll
        upto = min(head, cursor + _BATCH)
        # Events before every rule's start (a rule enabled again after a long
        # pause, say) are passed over unparsed.
        watched_after = min((rule.stored.start_seq for rule in rules), default=upto)
        moved = False
        try:
            # Evaluated as they are read, a page (about 8 MiB) at a time: the
            # batch collected first was up to 64 MiB a tenant (helper-155). No
            # connection is held between pages.
            stream = stream_events(
                self._db, tenant_id=tenant_id, event_filter=EventFilter(), after_seq=cursor,
                upto_seq=upto, fetch_rows=_BATCH,
            )  # fmt: skip
            async with contextlib.aclosing(stream):
                async for event in stream:
                    await self._evaluate(tenant_id, rules, event, watched_after, upto)
            changed = [
                (rule, changes)
                for rule in rules
                if rule.window is not None and (changes := rule.window.changes()) is not None
            ]
            kept: set[str] = set()
            # The windows kept with the cursor, as they stand past its events:
            # a window taken up stands where the cursor does.
            async with self._db.system_connection() as conn, conn.transaction():
                moved = await store.advance(
                    conn, tenant_id, owner=self.owner, from_seq=cursor, to_seq=upto
                )
                if moved and any(rule.window is not None for rule in rules):
                    kept = await store.keep_windows(
                        conn, tenant_id, from_seq=cursor, to_seq=upto,
                        windows=[(rule.stored, changes) for rule, changes in changed],
                    )  # fmt: skip
            if moved:
                self._windows_at[tenant_id] = upto
                self._behind[tenant_id] = head - upto
                for rule, _ in changed:
                    assert rule.window is not None
                    if rule.stored.id in kept:
                        rule.window.kept()
                    else:  # kept whole at the next step, if it is still the rule's
                        rule.window.unkept()
        finally:
            if not moved:
                # The step runs again from the same cursor (here or where the
                # lease went). Windows that counted part of its events would
                # count them twice: primed afresh from the log instead, they
                # stand as they did before it.
                self._rules.pop(tenant_id, None)
                self._windows_at.pop(tenant_id, None)
        return 0.0 if moved else None

    def _leave(
        self,
        tenant_id: str,
        enabled: list[store.StoredRule],
        newer: list[tuple[store.StoredRule, str]],
    ) -> None:
        """Notes the rules of `tenant_id` a newer release made, of its
        `enabled` rules, each said once; the tenant is not claimed again
        while those stand as they are."""
        self._left_tenants[tenant_id] = store.LeftTenant.of(tenant_id, enabled)
        self._behind.pop(tenant_id, None)
        self._rules.pop(tenant_id, None)
        self._windows_at.pop(tenant_id, None)
        for rule, what in newer:
            if self._left.get(rule.id) != rule.updated_at:
                log.warning(
                    "alerts: tenant %s rule %s was %s release (%s not known to this one);"
                    " the tenant's rules are left to a process that knows it",
                    tenant_id, rule.id, NEWER, what,
                )  # fmt: skip
            self._left[rule.id] = rule.updated_at

    async def _evaluate(
        self,
        tenant_id: str,
        rules: list[_Rule],
        event: StoredEvent,
        watched_after: int,
        upto: int,
    ) -> None:
        """Checks one event against the rules that watch it. A record no event
        is (rewritten in the database) is passed over: failing its step at
        every try, it stopped every rule of the tenant for good."""
        if event.seq <= watched_after:
            return
        try:
            record = json.loads(event.record)
            if record["action"] == ALERT_ACTION:
                return
            for rule in rules:
                if (
                    rule.condition.kind != "absence"  # judged by its silence, not by events
                    and event.seq > rule.stored.start_seq
                    and rule.matcher.matches(record)
                ):
                    await self._check(tenant_id, rule, event, record, upto)
        except UNREADABLE as error:
            _unreadable(tenant_id, event.seq, error)

    def _refresh(self, tenant_id: str, stored: list[store.StoredRule]) -> list[_Rule]:
        """The tenant's rules, keeping the windows of those whose condition is unchanged."""
        known = self._rules.setdefault(tenant_id, {})
        current: dict[str, _Rule] = {}
        for row in stored:
            rule = known.get(row.id)
            if rule is not None and (rule.stored.condition, rule.stored.start_seq) != (
                row.condition,
                row.start_seq,
            ):
                rule = None  # changed, or enabled again (UpdateAlertRule): taken up afresh
            if rule is not None:
                rule.stored = row  # its name, severity and sinks as they are now
            else:
                try:
                    condition = condition_of(row.condition)
                except SealtrailError as error:  # stored by an older, laxer version
                    log.warning("alerts: rule %s cannot be evaluated: %s", row.id, error)
                    continue
                window = (
                    ThresholdWindow(
                        condition.count,
                        timedelta(seconds=condition.window_seconds),
                        key_of=_key_of(condition),
                    )
                    if condition.kind == "threshold"
                    else None
                )
                rule = _Rule(row, condition, RecordMatcher(condition.filter), window)
            current[row.id] = rule
        self._rules[tenant_id] = current
        return list(current.values())

    async def _prime(self, tenant_id: str, rule: _Rule, cursor: int) -> None:
        """Takes a threshold's window up as the steps up to `cursor` kept it.
        Kept with the cursor, it is the window that evaluated every event up
        to it, whatever retention purged of them or of the rule's alerts since.

        A window not kept at `cursor` (the rule changed since; kept by no
        release before; left behind by a cursor moved otherwise, as by a
        process of the release before) is rebuilt from the log: the matching events up
        to `cursor` (since the rule's start) are replayed into it, back to the
        first received four windows and twice the allowed clock skew before
        the newest occurred: at most _PRIME_EVENTS read. Each group fired
        where an alert was recorded for the rule and that event, and nowhere
        else. It is kept whole at the step's end.

        Why the window then judges every event to come as the one that
        evaluated them all would: received in seq order, and occurring at most
        the skew after its receipt, every event up to the first not replayed
        occurred before B, that one's receipt and the skew; so did each one the
        replay counts that the live window passed over (the newest the live
        window had seen then was one of those). The two windows differ only in
        times before B, and in quiet periods from firings whose windows held
        such times (at events less than a window after B), which end before B
        and three windows: at most the newest minus the window's reach (a window
        and the skew). An event still to be counted occurs at or after that, so
        no window holding it reaches a time before B, nor does such a quiet
        period silence it. Any other firing leaves the same quiet period in
        both, as the replay takes it from the log, not from its own count."""
        assert rule.window is not None
        kept = await store.kept_window(self._db, tenant_id=tenant_id, rule=rule.stored, at=cursor)
        if kept is not None:
            rule.window.restore(kept)
            rule.primed = True
            return
        condition = rule.condition
        window = timedelta(seconds=condition.window_seconds)
        back = rule.window.reach + 3 * window + timedelta(seconds=MAX_FUTURE_SKEW_SECONDS)
        replayed: list[tuple[int, str, datetime, str | None]] = []
        newest: datetime | None = None
        before, read, done = cursor + 1, 0, False
        # Pages sized by their records, as stream_events sizes its own: 1,000
        # records of 64 KiB were 64 MiB in one page.
        limit = page_rows(_PRIME_PAGE, PAGE_BYTES, rows=1, size=MAX_RECORD_BYTES)
        while not done and read < _PRIME_EVENTS:
            # Bounded in SQL: by the rule's start, where the index scan stops
            # (it went on to the tenant's first event: 20,000 read to return
            # 2, helper-130), and once the newest is known, by receipt (the
            # months received before are not read).
            page = await query_events(
                self._db, tenant_id=tenant_id, event_filter=condition.filter, order="newest",
                after_seq=before, limit=limit, seq_above=rule.stored.start_seq,
                received_from=None if newest is None else newest - back,
            )  # fmt: skip
            read += len(page)
            done = len(page) < limit
            if page:
                size = sum(len(event.record) for event in page)
                limit = page_rows(_PRIME_PAGE, PAGE_BYTES, rows=len(page), size=size)
            for event in page:
                before = event.seq
                try:
                    record = json.loads(event.record)
                    received = datetime.fromisoformat(record["received_at"])
                    key = group_key(condition, record)
                    occurred = datetime.fromisoformat(record["occurred_at"])
                except UNREADABLE as error:
                    _unreadable(tenant_id, event.seq, error)
                    continue  # passed over, as when it was evaluated
                if newest is not None and received < newest - back:
                    done = True
                    break
                if record["action"] == ALERT_ACTION or key is None:
                    continue  # not counted
                newest = occurred if newest is None else max(newest, occurred)
                replayed.append((event.seq, key, occurred, _form(condition, record)))
        # Only a replayed event can have fired an alert that matters here, and
        # an alert comes after its trigger: a noisy rule's older alerts (one a
        # minute is half a million a year) are not read at every priming.
        fired = (
            await store.alert_triggers(
                self._db,
                tenant_id=tenant_id,
                rule_id=rule.stored.id,
                after_seq=replayed[-1][0] - 1,  # the oldest replayed
            )
            if replayed
            else set()
        )
        for seq, key, occurred, form in reversed(replayed):  # in seq order, as evaluated
            rule.window.replay(key, occurred, fired=seq in fired, form=form)
        rule.primed = True

    async def _check(
        self, tenant_id: str, rule: _Rule, event: StoredEvent, record: dict[str, Any], upto: int
    ) -> None:
        """Whether `rule` fires on `event` (its record `record`), evaluated by
        a step that reads up to the seq `upto`; fires it if so."""
        condition = rule.condition
        occurred = datetime.fromisoformat(record["occurred_at"])
        details: dict[str, Any] = {"trigger_seq": event.seq, "trigger_event_id": record["id"]}
        if condition.kind in _JUDGED_ALONE:
            judged = judged_alone(condition, record)
            if judged is None:
                return
            reason, alone = judged
            details |= alone
        elif condition.kind == "threshold":
            key = group_key(condition, record)
            assert rule.window is not None
            form = _form(condition, record)
            counted = None if key is None else rule.window.observe(key, occurred, form)
            if counted is None:
                return
            assert key is not None
            details |= {"count": counted, "window_seconds": condition.window_seconds}
            group, grouped = _group_named(condition, key, record)
            if group is not None:
                details["group"] = group
            if form is not None:
                # The ids as recorded that the group counted: `Admin`,
                # `ADMIN` and its full-width form are one attacker's (ADR 0110).
                forms = rule.window.forms(key)
                details["forms"] = list(forms)
                if forms != (key,):
                    grouped += f" ({len(forms)} forms)"
            # At least: a group keeps only its newest `count` times (docs/alerting.md).
            reason = f"at least {counted} events within {condition.window_seconds} s{grouped}"
        elif condition.kind == "spike":
            spiked = await self._spike(tenant_id, rule, event.seq, occurred, record, upto)
            if spiked is None:
                return
            reason, counts = spiked
            details |= counts
        elif condition.kind in NEW_ORIGIN_KINDS:
            origin = origin_of(condition.kind, record)
            if origin is None:
                return
            actor = record["actor"]["id"]
            async with self._db.system_connection() as conn:
                new, seen_before = await store.learn_origin(
                    conn,
                    rule.stored,
                    actor,
                    origin,
                    seq=event.seq,
                    at=occurred,
                    received=datetime.fromisoformat(record["received_at"]),
                )
            if not (new and seen_before):
                return
            if condition.kind == "new_ip":
                ip = record["context"]["ip"]
                details |= {"actor_id": actor, "ip": ip, "network": origin}
                seen = f"{'network' if '/' in origin else 'address'} {origin}"
                reason = f"{actor} seen from a new {seen}" + ("" if ip == origin else f" ({ip})")
            else:
                details |= {"actor_id": actor, "country": origin}
                reason = f"{actor} seen from a new country {origin}"
        else:
            raise AssertionError(f"no such kind: {condition.kind}")
        await self._fire(tenant_id, rule, event.seq, record, reason, details)

    async def _judge_silence(self, tenant_id: str, rule: _Rule) -> None:
        """Fires an absence rule once no matching event was received for its
        window (ADR 0162): from the newest matching event received after its
        start, or from its start (its creation or its enabling again, the
        receipt of its record) with none, to the evaluator's clock. Once a
        silence, its alert keyed by the seq the silence runs from, so a
        process that takes the rule up finds the alert made before; a
        matching event starts another silence. Probed (one read down an
        index, newest first) only once the silence last seen has reached the
        window: until then no event received since can end it sooner."""
        now = self._clock()
        silence = rule.silence
        if silence is not None and not silence.fired and now < silence.due:
            return
        window = timedelta(seconds=rule.condition.window_seconds)
        start_seq = rule.stored.start_seq
        last = await store.last_expected(
            self._db, tenant_id=tenant_id, event_filter=rule.condition.filter, after_seq=start_seq
        )
        since_seq = start_seq if last is None else last.seq
        if silence is None or silence.since_seq != since_seq:
            if last is not None:
                since = last.received_at
            else:
                # The rule's record (its creation, or its enabling again) was
                # received as it started; gone (purged), its change's time.
                started = await store.received_at(self._db, tenant_id=tenant_id, seq=start_seq)
                since = rule.stored.updated_at if started is None else started
            silence = rule.silence = _Silence(since_seq, since, since + window, last)
        if silence.fired or now < silence.due:
            return
        span = f"{rule.condition.window_seconds} s"
        since_text = store.instant_text(silence.since)
        details: dict[str, Any] = {
            "window_seconds": rule.condition.window_seconds,
            "silent_since": since_text,
        }
        if silence.last is not None:
            details |= {"last_event_seq": silence.last.seq, "last_event_id": silence.last.id}
            reason = f"no matching event received for {span}, the last at {since_text}"
        else:
            reason = f"no matching event received for {span} since the rule started at {since_text}"
        await self._fire(
            tenant_id, rule, since_seq, {}, reason, details,
            key=store.absence_key(rule.stored.id, since_seq),
        )  # fmt: skip
        silence.fired = True  # made, or found made: once a silence

    async def _spike(
        self,
        tenant_id: str,
        rule: _Rule,
        seq: int,
        occurred: datetime,
        record: dict[str, Any],
        upto: int,
    ) -> tuple[str, dict[str, Any]] | None:
        """Whether a spike rule fires at its matching event `seq`: why, and
        the counts its alert records; None if not (ADR 0132). The window that
        holds the event is counted in SQL once, at its first matching event
        this process evaluates, and one more at each after: a burst of a
        thousand events runs one count, not a thousand. The window counts the
        events the rule watched (since its start), the baseline all. An event
        of a window before the newest the rule judged (arrived late, an import
        of history) is counted by the windows to come, in their baselines, and
        fires nothing: the window last counted says so here, and after the
        rule was taken up, a matching event evaluated before that occurred
        later. A window fires once, whatever the rule went through (changed,
        disabled and enabled again). Grouped (ADR 0147), each group is judged
        against its own baseline and fires once a window, as `_group_spike`
        says."""
        condition = rule.condition
        length = timedelta(seconds=condition.window_seconds)
        start = _EPOCH + (occurred - _EPOCH) // length * length
        window = rule.spike
        if window is not None and start < window.start:
            return None
        if condition.group_by != "none":
            return await self._group_spike(tenant_id, rule, seq, start, record, upto)
        if window is not None and start == window.start:
            window.count += 1
        else:
            baseline_from = await self._baseline_from(tenant_id, condition, seq, start)
            counts = await store.spike_counts(
                self._db, tenant_id=tenant_id, event_filter=condition.filter,
                start_seq=rule.stored.start_seq, upto_seq=seq, baseline_from=baseline_from,
                window_from=start, window_to=start + length,
            )  # fmt: skip
            average, windows = _average(condition, counts.baseline, counts.history_from, start)
            window = rule.spike = _SpikeWindow(start, counts.current, average, windows)
        if window.fired or window.average is None:
            return None
        line = max(float(condition.min_count), condition.factor * window.average)
        if window.count < line:
            return None
        window.fired = True  # once a window, whatever comes of the alert
        if not await self._spike_first(tenant_id, rule, seq, start, None):
            return None
        window_text = store.instant_text(start)
        reason = (
            f"{window.count} events in {condition.window_seconds} s from {window_text},"
            f" {condition.factor:g}x or more the average {window.average:.1f}"
            f" of the {window.windows} windows before"
        )
        return reason, _spike_details(
            condition, start, window.count, window.average, window.windows
        )

    async def _baseline_from(
        self, tenant_id: str, condition: Condition, seq: int, start: datetime
    ) -> datetime:
        """Where the baseline of the window starting at `start` starts, as
        judged at the event `seq`: `baseline_windows` before it, or after
        what retention removed."""
        length = timedelta(seconds=condition.window_seconds)
        baseline_from = start - condition.baseline_windows * length
        kept = await store.kept_since(
            self._db, tenant_id=tenant_id, upto_seq=seq, now=self._clock()
        )
        if kept is not None and kept + _SKEW > baseline_from:
            # Retention removed events received before `kept`: those of
            # the windows before it (an event occurs at most the allowed
            # skew after its receipt) may be gone, and counted as none they
            # lowered the average, a false spike each time a purge removed
            # a window (ADR 0132). The baseline starts at the first window
            # wholly after; none left, the rule has no history yet.
            baseline_from = min(start, _EPOCH - (_EPOCH - kept - _SKEW) // length * length)
        return baseline_from

    async def _spike_first(
        self, tenant_id: str, rule: _Rule, seq: int, start: datetime, group: dict[str, Any] | None
    ) -> bool:
        """Whether the window starting at `start` (of `group`, grouped) fires
        at the event `seq`, once the cache says it reaches the line: it did
        not fire there before, and no later window was judged."""
        condition = rule.condition
        # What a process that took the rule up (a restart, a lease moved, a
        # step run again after it failed) does not know: whether the window
        # fired, and which windows the rule judged. An alert that retention
        # purged is not found, and need not be: it was received after its
        # window opened (less the skew), so its tombstone keeps that window's
        # baseline empty above, and the window fires nothing again (pinned by
        # test_spike_alerts).
        trigger = await store.spike_fired(
            self._db, tenant_id=tenant_id, rule=rule.stored, window_from=start,
            window_seconds=condition.window_seconds, group=group,
        )  # fmt: skip
        if trigger is not None and trigger != seq:
            return False  # fired there already, once a window a rule (or group)
        # Set off by this very event (trigger == seq), the alert was recorded
        # by a run of this step that failed after: `_fire` finds it, and counts
        # and queues it if that run did not, once. Only the newest window
        # judged fires: a late event's does not.
        return not (
            trigger is None
            and await store.spike_judged_later(
                self._db,
                tenant_id=tenant_id,
                event_filter=condition.filter,
                start_seq=rule.stored.start_seq,
                before_seq=seq,
                after=start + timedelta(seconds=condition.window_seconds),
            )
        )

    async def _group_spike(
        self,
        tenant_id: str,
        rule: _Rule,
        seq: int,
        start: datetime,
        record: dict[str, Any],
        upto: int,
    ) -> tuple[str, dict[str, Any]] | None:
        """A grouped spike rule at its matching event `seq` of the window
        starting at `start` (ADR 0147): the event's group, against that
        group's own average over the baseline's windows (the windows of the
        tenant's history, as ungrouped). Counted in SQL at the window's first
        matching event, and again at the first event of a step whose group
        the count did not judge: the groups with the most events in the
        window up to the step's last event (`upto`), at most `spike_groups`
        of them, each counted exactly up to this event; one more at each
        event after. A group with no event in the baseline (a key never used
        before) has an average of 0: it fires at min_count, once the tenant
        has history there (before, nothing fires, as ungrouped)."""
        condition = rule.condition
        key = group_key(condition, record)
        if key is None:
            return None  # no address, no credential: not counted
        window = rule.spike
        same = window is not None and window.start == start and window.groups is not None
        if (
            same
            and window is not None
            and window.groups is not None
            and (key in window.groups or window.counted_upto == upto)
        ):
            group = window.groups.get(key)
            if group is None:  # left out by the cap, counted again in this step already
                self._left_out.add(1)
                return None
            group.count += 1
        else:
            length = timedelta(seconds=condition.window_seconds)
            baseline_from = await self._baseline_from(tenant_id, condition, seq, start)
            counts = await store.spike_group_counts(
                self._db,
                store.SpikeGroupsAsked(
                    tenant_id=tenant_id, event_filter=condition.filter,
                    group_by=condition.group_by, start_seq=rule.stored.start_seq, at_seq=seq,
                    upto_seq=upto, baseline_from=baseline_from, window_from=start,
                    window_to=start + length, cap=self._spike_groups, fold=_key_of(condition),
                ),
            )  # fmt: skip
            average, windows = _average(condition, 0, counts.history_from, start)
            fired = (
                {k for k, g in window.groups.items() if g.fired}
                if same and window is not None and window.groups is not None
                else set()
            )
            groups: dict[str, _SpikeGroup] = {}
            for counted in counts.judged:
                # Actor ids folded (ADR 0110): the ids that read alike are one group.
                k = _spike_group_key(condition, counted.parts)
                merged = groups.setdefault(k, _SpikeGroup(0, 0, k in fired))
                merged.count += counted.before
                merged.baseline += counted.baseline
            left_out = counts.groups - len(counts.judged)
            if left_out > 0 and not (same and window is not None and window.counted_upto):
                log.warning(
                    "alerts: tenant %s rule %s: %d groups had events in the window from %s;"
                    " the %d with the most were judged, %d left out",
                    tenant_id, rule.stored.id, counts.groups, store.instant_text(start),
                    len(counts.judged), left_out,
                )  # fmt: skip
            window = rule.spike = _SpikeWindow(start, 0, average, windows, groups=groups)
            window.counted_upto = upto
            group = groups.get(key)
            if group is None:
                self._left_out.add(1)
                return None
        if group.fired or window.average is None:
            return None
        group_average = group.baseline / window.windows
        line = max(float(condition.min_count), condition.factor * group_average)
        if group.count < line:
            return None
        group.fired = True  # once a window a group, whatever comes of the alert
        named, grouped = _group_named(condition, key, record)
        assert named is not None
        if not await self._spike_first(tenant_id, rule, seq, start, _fired_group(named)):
            return None
        reason = (
            f"{group.count} events in {condition.window_seconds} s from"
            f" {store.instant_text(start)}{grouped}, {condition.factor:g}x or more its average"
            f" {group_average:.1f} of the {window.windows} windows before"
        )
        details = _spike_details(condition, start, group.count, group_average, window.windows)
        return reason, details | {"group": named}

    async def _fire(
        self,
        tenant_id: str,
        rule: _Rule,
        trigger_seq: int,
        record: dict[str, Any],
        reason: str,
        details: dict[str, Any],
        *,
        key: str | None = None,
    ) -> None:
        """Records `rule`'s alert on the event at `trigger_seq` (its record
        `record`; an absence rule's, the silence's start and no record),
        idempotent by `key` (by default the rule and its trigger), then
        counts it and queues it for the rule's sinks."""
        # The step read its rules once, before up to a batch of events (each
        # alert an append: seconds for a busy rule): a rule deleted, disabled
        # or changed since went on firing under its old definition long after
        # the change had answered. Read again as the alert is made (a change
        # in flight waited for); what the alert shows (name, severity, sinks)
        # is the rule's now. A change made between this read and the alert's
        # commit, milliseconds, still sees it (docs/alerting.md).
        async with self._db.system_connection() as conn, conn.transaction():
            # No wait for an erasure's lock on the rule: refused instead, the
            # step runs again.
            await share_erasure_at_once(conn, tenant_id)
            current = await store.firing_rule(conn, rule.stored)
        if current is None:
            return
        stored = current
        now = self._clock()
        drafted = await self._drafted(
            tenant_id, stored, rule.condition.kind, trigger_seq, record, reason, details, now=now,
            key=key,
        )  # fmt: skip
        if drafted is None:
            return
        draft, valid, view = drafted
        try:
            [outcome] = await self._appender.append(tenant_id, [valid], [view])
        except FailedPrecondition as error:
            outcome = error  # refused whole, as when answered of this event alone
        if isinstance(outcome, AlreadyExists):
            # Recorded by a run of this step that failed after, since when the
            # rule's name or severity (or this release's wording) changed: that
            # alert stands, counted and queued as it is. Refused, the step
            # would fail at it for ever, and the tenant's rules with it.
            outcome = await stored_under_key(self._db, tenant_id, draft.idempotency_key) or outcome
        if isinstance(outcome, InvalidArgument):
            # The log refused the alert's record (past the record limit, or
            # no canonical JSON), which validation does not weigh: what it
            # copies of a record rewritten in the database. No try makes it
            # writable; raised, it failed the step for good, and the
            # tenant's every rule with it.
            _refused(tenant_id, stored.id, trigger_seq, outcome)
            return
        if isinstance(outcome, FailedPrecondition) and outcome.reason == "TENANT_ERASED":
            raise _ErasedMeanwhile from outcome
        if isinstance(outcome, SealtrailError):
            raise outcome  # of the moment (being erased, the database away): the step runs again
        if not outcome.deduplicated:
            log.info("alerts: tenant %s: %s", tenant_id, draft.description)
            self._raised.add(1, {"sealtrail.alert.severity": stored.severity})
        # Recorded now, or by a run of this step that failed before or after
        # the rest: counted and queued for the rule's sinks together, once.
        alert = json.loads(outcome.record)
        async with self._db.system_connection() as conn, conn.transaction():
            await conn.execute(
                "SELECT set_config('idle_in_transaction_session_timeout', %s, true)",
                [f"{max(1, round(IDLE_IN_COUNT_SECONDS * 1000))}ms"],
            )
            # No wait for an erasure's lock on the rule or its sinks: refused
            # instead, the step runs again (store/alerts.py).
            await share_erasure_at_once(conn, tenant_id)
            if not await store.count_firing(
                conn, tenant_id, stored.id, alert_seq=outcome.seq, at=now
            ):
                return  # counted and queued by the run that failed after
            # To the sinks the alert names (one recorded by an earlier run
            # names those of then; one recorded before alerts named them, the
            # rule's now).
            routed = alert["details"].get("sink_ids", stored.sink_ids)
            queued = await route_alert(conn, tenant_id, alert, routed, now=now)
        if queued:
            self._sinks_changed()

    async def _drafted(
        self,
        tenant_id: str,
        stored: store.StoredRule,
        kind: str,
        trigger_seq: int,
        record: dict[str, Any],
        reason: str,
        details: dict[str, Any],
        *,
        now: datetime,
        key: str | None = None,
    ) -> tuple[EventDraft, ValidEvent, bytes] | None:
        """The alert of `stored` on the event `record` at `trigger_seq`: its
        draft, the draft validated, and its view (with which it is stored, as
        every event is: Query shows it as stored, not rebuilt from its
        record, ADR 0025). None, logged, where no such alert can be made:
        drafting it failed, or it is no valid event. Either comes of the
        rule, the record and this release alone, and fails again at every
        try: raised, it failed the evaluation step for good (and the tenant's
        every rule with it), or a change of the rule (its last word). An
        error of the moment (the tenant's settings not read, to redact the
        rule's name) is raised: the step, or the change, runs again."""
        try:
            draft = await self._alert_draft(
                tenant_id, stored, kind, trigger_seq, record, reason, details, key=key
            )
        except UNREADABLE as error:
            # The record was read (its rules matched it): what failed is this
            # release's drafting of the alert, no rewritten record. Raised,
            # it passed the event over for the rules after this one, and was
            # said as a record rewritten in the database.
            _undrafted(tenant_id, stored.id, trigger_seq, error)
            return None
        try:
            valid = _valid_alert(draft, record, now=now)
            view = caller_view(valid).SerializeToString()
        except UNREADABLE as error:
            _undrafted(tenant_id, stored.id, trigger_seq, error)
            return None
        except SealtrailError as error:
            # What it copies of the record (its address, country, request)
            # or of the rule (its name as shown) is no valid event's: a
            # record rewritten in the database, or a rule stored by a laxer
            # release. No try makes it valid (helper-472).
            _invalid(tenant_id, stored.id, trigger_seq, error)
            return None
        return draft, valid, view

    async def _alert_draft(
        self,
        tenant_id: str,
        stored: store.StoredRule,
        kind: str,
        trigger_seq: int,
        record: dict[str, Any],
        reason: str,
        details: dict[str, Any],
        *,
        key: str | None = None,
    ) -> EventDraft:
        """The `security.alert` event of `stored` (the rule as it fires) on
        the event `record` at `trigger_seq`, under the idempotency key `key`
        (by default the rule and its trigger)."""
        # A secret pasted into a rule's name stays out of its alerts, as out
        # of the records of its changes (helper-133).
        name = _fitted(
            stored.name
            if self._shown_name is None
            else await self._shown_name(tenant_id, stored.name)
        )
        context = record.get("context", {})
        alert_details = {
            "rule_id": stored.id,
            "rule": name,
            "condition": kind,
            **details,
            "sink_ids": list(stored.sink_ids),
        }
        # The API request the trigger was, for its chat line, page and mail
        # to say (domain/chat_text.py, `request`): in its details, for an
        # alert is no request of its own (a count by HTTP status or route
        # takes the trigger alone).
        said = trigger_request(context)
        if said:
            alert_details["trigger_request"] = said
        return EventDraft(
            action=ALERT_ACTION,
            category=event_pb2.CATEGORY_SECURITY,
            severity=_SEVERITY_NUMBERS[stored.severity],
            actor_type=event_pb2.ACTOR_TYPE_SYSTEM,
            actor_id=ACTOR_ID,
            description=f"Alert {name!r}: {reason}",
            resource_type="alert_rule",
            resource_id=stored.id,
            resource_name=name,
            details=alert_details,
            # Where the trigger came from, as its record says: its chat line,
            # page and mail say it (domain/chat_text.py, `origin`).
            ip=context.get("ip", ""),
            country=context.get("country", ""),
            idempotency_key=key or store.alert_key(stored.id, trigger_seq),
            plain=plain_values(alert_details, []),
        )

    async def last_word(
        self, conn: Connection, rule: store.StoredRule, change: Appended, *, now: datetime
    ) -> bool:
        """The alert of `rule`, as it was before a change of it (or its
        deletion), on that change's own record (`change`), if its condition
        takes the record: made in the change's transaction (`conn`, the
        rule's row written or its tombstone left), after the record, counted
        and routed there. Evaluated later, the record found the rule
        disabled, gone or changed (its sinks taken off, its severity
        lowered), and a watchdog on rule changes never saw the change that
        silenced it. Only a match or off-hours rule, which judge an event
        alone; one disabled before fires nothing. An evaluation that reaches
        the record under the rule's definition of after finds this alert
        (its key) counted, and routes nothing again. Whether an alert was
        queued for a sink (its sinks as the rule had them)."""
        if rule.disabled or change.seq <= rule.start_seq:
            return False
        if condition_not_understood(rule.condition) is not None:
            return False  # a newer release's (newer_objects.py): its process judges it
        try:
            condition = condition_of(rule.condition)
        except SealtrailError:
            return False  # never evaluated either (`_refresh`)
        record = json.loads(change.record)
        if condition.kind not in _JUDGED_ALONE or not RecordMatcher(condition.filter).matches(
            record
        ):
            return False
        judged = judged_alone(condition, record)
        if judged is None:
            return False
        reason, alone = judged
        details = {"trigger_seq": change.seq, "trigger_event_id": record["id"], **alone}
        tenant_id = rule.tenant_id
        # One that cannot be made is logged, and the change goes ahead: it
        # failed the change (INTERNAL), and a rule whose alert could not be
        # drafted could be neither changed nor deleted.
        drafted = await self._drafted(
            tenant_id, rule, condition.kind, change.seq, record, reason, details, now=now
        )
        if drafted is None:
            return False
        draft, valid, view = drafted
        [outcome] = await self._appender.append_within(conn, tenant_id, [valid], [view])
        if isinstance(outcome, SealtrailError):
            raise outcome
        log.info("alerts: tenant %s: %s", tenant_id, draft.description)
        self._raised.add(1, {"sealtrail.alert.severity": rule.severity})
        queued = False
        for alert, sink_ids in await store.count_uncounted_within(conn, tenant_id, rule.id, at=now):
            queued |= await route_alert(conn, tenant_id, alert, sink_ids, now=now)
        return queued


def _valid_alert(draft: EventDraft, trigger: dict[str, Any], *, now: datetime) -> ValidEvent:
    """`draft`, an alert on the event whose record is `trigger`, validated as
    the server's own event, its trigger's country (copied in the draft) marked
    as the server's where the server located the trigger's (ADR 0134), as the
    caller's otherwise, as the trigger's record marks it."""
    valid = validate_event(draft, now=now, path=ALERT_ACTION, own=True)
    context = trigger.get("context") or {}
    if draft.country and context.get("country_source") == COUNTRY_SOURCE_GEOIP:
        return located(valid, draft.country)
    return valid


def _key_of(condition: Condition) -> Callable[[str], str] | None:
    """How a threshold's window, or a grouped spike's count, keys its groups
    of actor ids, as group_key does (None: as recorded)."""
    return actor_group if condition.group_by == "actor" and not condition.exact_actor_ids else None


def _form(condition: Condition, record: dict[str, Any]) -> str | None:
    """The actor id as recorded, where a threshold groups folded actor ids."""
    return str(record["actor"]["id"]) if _key_of(condition) is not None else None


def _group_named(
    condition: Condition, key: str, record: dict[str, Any]
) -> tuple[dict[str, Any] | None, str]:
    """How a grouped rule's alert names the group `key` of its trigger
    `record`: its `details.group` (None ungrouped) and the words its
    description adds. A credential as the trigger records it: kind, id, and
    the hint if any."""
    if condition.group_by == "credential":
        credential = record["actor"]["credential"]
        named = {part: str(credential.get(part, "")) for part in ("kind", "id", "hint")}
        hint = f" ...{named['hint']}" if named["hint"] else ""
        return {"credential": named}, f" for credential {named['kind']} {named['id']}{hint}"
    if condition.group_by != "none":
        return {condition.group_by: key}, f" for {condition.group_by} {key}"
    return None, ""


def _fired_group(named: dict[str, Any]) -> dict[str, Any]:
    """What an alert's `details.group` holds whatever its trigger: a
    credential's kind and id (its hint may differ from event to event)."""
    credential = named.get("credential")
    if isinstance(credential, dict):
        return {"credential": {"kind": credential["kind"], "id": credential["id"]}}
    return named


def _spike_group_key(condition: Condition, parts: tuple[str, str]) -> str:
    """The group key (as group_key makes it of a record) of a grouped spike's
    counted group, from the parts the database read (store.SpikeGroup)."""
    if condition.group_by == "credential":
        return json.dumps(list(parts), ensure_ascii=False, separators=(",", ":"))
    fold = _key_of(condition)
    return parts[0] if fold is None else fold(parts[0])


def _average(
    condition: Condition, baseline: int, history_from: datetime | None, start: datetime
) -> tuple[float | None, int]:
    """A spike window's average of `baseline` events over the windows since
    the tenant's first event among them (`history_from`), at most
    baseline_windows, and over how many; (None, 0) with no history."""
    if history_from is None:
        return None, 0
    length = timedelta(seconds=condition.window_seconds)
    # The whole windows from the one it occurred in.
    windows = max(1, min(condition.baseline_windows, -((history_from - start) // length)))
    return baseline / windows, windows


def _spike_details(
    condition: Condition, start: datetime, count: int, average: float, windows: int
) -> dict[str, Any]:
    """What a spike's alert records of its counts."""
    return {
        "count": count,
        "baseline_average": round(average, 3),
        "factor": condition.factor,
        "min_count": condition.min_count,
        "window_seconds": condition.window_seconds,
        "window_start": store.instant_text(start),
        "baseline_windows": windows,
    }


# The kinds that judge an event alone (no window, nothing learned).
_JUDGED_ALONE: Final = ("match", "off_hours")


def judged_alone(condition: Condition, record: dict[str, Any]) -> tuple[str, dict[str, Any]] | None:
    """Whether a match or off-hours condition fires on `record` (taken by its
    filter): why, and what its alert adds to its details; None if not."""
    by = f"{record['action']} by {record['actor']['id']}"
    if condition.kind == "match":
        return by, {}
    if not outside_working_hours(condition, datetime.fromisoformat(record["occurred_at"])):
        return None
    return f"{by} outside working hours", {"time_zone": condition.time_zone}


def _undrafted(tenant_id: str, rule_id: str, seq: int, error: Exception) -> None:
    """Says that rule `rule_id`'s alert on the event at `seq` could not be
    drafted: the error's class alone (its words may quote the record)."""
    log.error(
        "alerts: tenant %s rule %s: drafting its alert on the event at seq %d failed (%s),"
        " no alert raised: a defect of this release, not of the record",
        tenant_id,
        rule_id,
        seq,
        type(error).__name__,
    )


class _ErasedMeanwhile(Exception):
    """The tenant was erased while a step evaluated its rules: its alert
    refused (TENANT_ERASED), the step ends."""


def _refused(tenant_id: str, rule_id: str, seq: int, error: InvalidArgument) -> None:
    """Says that the log refused rule `rule_id`'s alert on the event at `seq`:
    why, in the appender's words up to a colon (a size; what follows one, as
    a canonicalisation's error, may quote a value of the record)."""
    log.error(
        "alerts: tenant %s rule %s: its alert on the event at seq %d was refused by the log"
        " (%s), no alert raised: the record holds what no alert may copy"
        " (a record rewritten in the database? VerifyLog names it)",
        tenant_id,
        rule_id,
        seq,
        "; ".join(f"{v.field}: {v.description.split(':')[0]}" for v in error.violations)
        or type(error).__name__,
    )


def _invalid(tenant_id: str, rule_id: str, seq: int, error: SealtrailError) -> None:
    """Says that rule `rule_id`'s alert on the event at `seq` is no valid
    event: the fields refused alone (their values are the record's)."""
    violations = error.violations if isinstance(error, InvalidArgument) else []
    fields = sorted({v.field for v in violations}) or [type(error).__name__]
    log.error(
        "alerts: tenant %s rule %s: its alert on the event at seq %d is no valid event (%s),"
        " no alert raised: the record, or the rule, holds what no event may"
        " (a record rewritten in the database? VerifyLog names it)",
        tenant_id,
        rule_id,
        seq,
        ", ".join(fields),
    )


def _unreadable(tenant_id: str, seq: int, error: Exception) -> None:
    log.error(
        "alerts: tenant %s: the record at seq %d is not a readable event (%r), passed over;"
        " it was rewritten in the database (VerifyLog names it)",
        tenant_id,
        seq,
        error,
    )
