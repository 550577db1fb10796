"""Retention policies: what a tenant keeps, and for how long (docs/retention.md).

An event's rule is the action-prefix rule with the longest matching prefix,
else its category's rule, else the policy's default. Days count from the time
the service received the event; 0 keeps events forever.

`purge_selections` turns a policy into disjoint selections, one per rule that
removes anything, each saying which events it covers and how old they must
be: the store writes one DELETE per selection, and no event can fall under two.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import asdict, dataclass, replace
from datetime import datetime
from typing import Final

from sealtrail._words import counted

from .errors import FieldViolation, InvalidArgument
from .etags import etag_of, instant
from .event import CATEGORIES, CONTROL_CHARACTERS, MAX_ACTION, RESERVED_ACTION_PREFIX

MAX_DAYS: Final = 36_500  # a hundred years; longer is "forever" (0)
MAX_RULES: Final = 100
MAX_HOLD_REASON: Final = 1024
# Presets offered by the docs and clients: the plans the seeds describe.
PRESETS: Final = {"30d": 30, "90d": 90, "180d": 180, "1y": 365, "forever": 0}
_ACTION_PREFIX: Final = re.compile(r"[a-z][a-z0-9_]*(?:\.[a-z][a-z0-9_]*)*\.\*")
# Retention's own records (`retention.purged`, the policy's and the hold's
# changes) fall under no rule: they are what tells a tombstone retention left
# from one a superuser forged (ADR 0014), so they are kept as long as the log.
# Callers cannot record such actions (domain/event.py).
KEPT_FOR_GOOD: Final = RESERVED_ACTION_PREFIX


@dataclass(frozen=True, slots=True)
class RetentionRule:
    """Exactly one of `category` (its record name) and `action_prefix` (ending
    with ".") is set."""

    days: int
    category: str | None = None
    action_prefix: str | None = None

    def as_json(self) -> dict[str, object]:
        selector = (
            {"category": self.category}
            if self.category is not None
            else {"action_prefix": self.action_prefix}
        )
        return {**selector, "days": self.days}

    @classmethod
    def from_json(cls, data: dict[str, object]) -> RetentionRule:
        category, prefix = data.get("category"), data.get("action_prefix")
        days = data.get("days", 0)
        assert isinstance(days, int)
        return cls(
            days=days,
            category=category if isinstance(category, str) else None,
            action_prefix=prefix if isinstance(prefix, str) else None,
        )


def _rule_order(rule: RetentionRule) -> tuple[str, str, int]:
    return (rule.category or "", rule.action_prefix or "", rule.days)


@dataclass(frozen=True, slots=True)
class RetentionPolicy:
    default_days: int = 0
    rules: tuple[RetentionRule, ...] = ()

    def same_as(self, other: RetentionPolicy) -> bool:
        """Whether `other` keeps every event as this one does: the same
        default and rules, in any order, for a rule applies by what it
        selects (the longest prefix, else the category), not by its place."""
        return self.default_days == other.default_days and sorted(
            self.rules, key=_rule_order
        ) == sorted(other.rules, key=_rule_order)

    @property
    def keeps_everything(self) -> bool:
        return self.default_days == 0 and all(rule.days == 0 for rule in self.rules)

    def within(self, limits: RetentionLimits) -> RetentionPolicy:
        """The policy as the purge applies it under the operator's `limits`:
        every limit brought into their range (`RetentionLimits.applied`). A
        policy stored before the floor was raised, or before its tenant's
        ceiling was set or lowered, is kept as its tenant set it, but removes
        nothing younger than the floor, and keeps nothing longer than the
        ceiling."""
        return RetentionPolicy(
            limits.applied(self.default_days),
            tuple(replace(rule, days=limits.applied(rule.days)) for rule in self.rules),
        )


@dataclass(frozen=True, slots=True)
class RetentionLimits:
    """The range of days the operator allows a tenant's limits (ADR 0058,
    ADR 0071): at least `min_days`, the deployment's floor
    (SEALTRAIL_RETENTION_MIN_DAYS; 0: none), and at most `ceiling`, the
    tenant's plan (`sealtrail-server tenant retention-limit`; None: none).

    A ceiling below the floor (the floor raised past a ceiling set before)
    counts as the floor: the floor promises that nothing younger is removed,
    and an event removed too early is gone for good, where one kept too long
    goes at a later pass."""

    min_days: int = 0
    ceiling: int | None = None

    @property
    def max_days(self) -> int | None:
        """The longest limit allowed, as it applies; None: any, and forever."""
        return None if self.ceiling is None else max(self.ceiling, self.min_days)

    def applied(self, days: int) -> int:
        """A limit of `days` (0: forever) as the purge applies it."""
        top = self.max_days
        if top is not None and (days == 0 or days > top):
            return top
        return max(days, self.min_days) if days else 0

    def problem(self, days: int) -> str | None:
        """Why a policy may not set a limit of `days` (0: forever); None if
        it may. The floor's and the ceiling's refusals name whose they are."""
        top = self.max_days
        if top is not None and (days == 0 or days > top):
            return f"must be at most {counted(top, 'day')}, this tenant's plan"
        if 0 < days < self.min_days:
            return (
                f"must be at least {counted(self.min_days, 'day')}, this deployment's minimum"
                + (" (or 0 to keep forever)" if top is None else "")
            )
        return None


@dataclass(frozen=True, slots=True)
class PendingChange:
    """A change of the policy that keeps some events less long, waiting out
    SEALTRAIL_RETENTION_SHORTENING_DELAY (ADR 0163): `policy` applies from
    `effective_at`; until then the purge keeps each event as long as the
    longer of it and the policy in force says (`purge_selections_of_both`)."""

    policy: RetentionPolicy
    effective_at: datetime


def policy_etag(
    policy: RetentionPolicy, updated_at: datetime | None, pending: PendingChange | None = None
) -> str:
    """The policy's etag as stored (AIP-154): it changes with any rule, day
    count or update time, and with the change pending, if any (none: the
    etag is the one a policy had before changes could wait)."""
    stored: dict[str, object] = {
        "default_days": policy.default_days,
        "rules": [rule.as_json() for rule in policy.rules],
        "update_time": instant(updated_at),
    }
    if pending is not None:
        stored["pending"] = {
            "default_days": pending.policy.default_days,
            "rules": [rule.as_json() for rule in pending.policy.rules],
            "effective_time": instant(pending.effective_at),
        }
    return etag_of(stored)


def hold_etag(on: bool, reason: str, updated_at: datetime | None) -> str:
    """The legal hold's etag as stored (AIP-154)."""
    return etag_of({"on": on, "reason": reason, "update_time": instant(updated_at)})


@dataclass(frozen=True, slots=True)
class RuleDraft:
    """A rule as a request carries it: a category number or a prefix like `rag.*`."""

    days: int
    category: int = 0
    action_prefix: str = ""


def validate_policy(
    default_days: int, rules: list[RuleDraft], *, limits: RetentionLimits | None = None
) -> RetentionPolicy:
    """A policy from request values, or InvalidArgument naming every bad field
    (paths under `policy.`). `limits`: what the operator allows (the
    deployment's floor, the tenant's ceiling), which every limit must keep to."""
    limits = limits or RetentionLimits()
    violations: list[FieldViolation] = []

    def fail(path: str, message: str) -> None:
        violations.append(FieldViolation(f"policy.{path}", message))

    def check_days(path: str, days: int) -> None:
        if days > MAX_DAYS:
            fail(path, f"must be at most {MAX_DAYS} (or 0 to keep forever)")
        elif problem := limits.problem(days):
            fail(path, problem)

    check_days("default_days", default_days)
    if len(rules) > MAX_RULES:
        fail("rules", f"holds {len(rules)} rules; the limit is {MAX_RULES}")
    valid: list[RetentionRule] = []
    seen: set[tuple[str, str]] = set()
    for index, draft in enumerate(rules[:MAX_RULES]):
        path = f"rules[{index}]"
        check_days(f"{path}.days", draft.days)
        if bool(draft.category) == bool(draft.action_prefix):
            fail(path, "must set exactly one of category and action_prefix")
            continue
        if draft.category:
            name = CATEGORIES.get(draft.category)
            if name is None:
                fail(f"{path}.category", f"unknown enum value {draft.category}")
                continue
            key, rule = ("category", name), RetentionRule(draft.days, category=name)
        else:
            if len(draft.action_prefix) > MAX_ACTION:
                fail(f"{path}.action_prefix", f"must be at most {MAX_ACTION} characters")
                continue
            if not _ACTION_PREFIX.fullmatch(draft.action_prefix):
                fail(f"{path}.action_prefix", "must be a prefix like `api_key.*`")
                continue
            prefix = draft.action_prefix[:-1]
            if prefix.startswith(KEPT_FOR_GOOD):
                fail(
                    f"{path}.action_prefix",
                    f"`{KEPT_FOR_GOOD}*` events record what retention does:"
                    " they are kept for as long as the log",
                )
                continue
            key, rule = ("prefix", prefix), RetentionRule(draft.days, action_prefix=prefix)
        if key in seen:
            fail(path, f"repeats the rule for {key[1]!r}")
            continue
        seen.add(key)
        valid.append(rule)
    if violations:
        raise InvalidArgument(violations)
    return RetentionPolicy(default_days, tuple(valid))


@dataclass(frozen=True, slots=True)
class Selection:
    """Events kept `days` days: those with action prefix `prefix` (if set) or
    category `category` (if set; if neither, any event), minus those whose
    action starts with one of `except_prefixes` or whose category is one of
    `except_categories` (they have rules of their own)."""

    days: int
    rule: str  # how the policy names it: "default", "category:x", "action:x.*"
    prefix: str | None = None
    category: str | None = None
    except_prefixes: tuple[str, ...] = ()
    except_categories: tuple[str, ...] = ()


def selection_key(selection: Selection) -> str:
    """All that decides what `selection` removes, as one short string: equal
    keys, equal selections. A digest: written out, a selection names every
    other rule's prefix, and a policy of 70 rules of ids made a key past
    PostgreSQL's index row limit, so the batch that marked it failed at every
    pass (helper-146)."""
    decides = json.dumps(asdict(selection), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(decides.encode()).hexdigest()


def purge_selections(policy: RetentionPolicy) -> list[Selection]:
    """The disjoint selections of `policy` that remove anything (days > 0),
    none of them covering KEPT_FOR_GOOD (whatever rule a policy stored before
    it was refused names)."""
    prefixes = [rule for rule in policy.rules if rule.action_prefix is not None]
    all_prefixes = tuple(sorted(rule.action_prefix for rule in prefixes if rule.action_prefix))
    never = tuple(sorted({*all_prefixes, KEPT_FOR_GOOD}))
    categories = tuple(sorted(rule.category for rule in policy.rules if rule.category))
    selections = []
    for rule in prefixes:
        prefix = rule.action_prefix
        assert prefix is not None
        if rule.days and not prefix.startswith(KEPT_FOR_GOOD):
            longer = tuple(p for p in all_prefixes if p != prefix and p.startswith(prefix))
            selections.append(
                Selection(rule.days, f"action:{prefix}*", prefix=prefix, except_prefixes=longer)
            )
    for rule in policy.rules:
        if rule.category is not None and rule.days:
            selections.append(
                Selection(
                    rule.days,
                    f"category:{rule.category}",
                    category=rule.category,
                    except_prefixes=never,
                )
            )
    if policy.default_days:
        selections.append(
            Selection(
                policy.default_days,
                "default",
                except_prefixes=never,
                except_categories=categories,
            )
        )
    return selections


def validate_hold_reason(on: bool, reason: str) -> str:
    if len(reason) > MAX_HOLD_REASON:
        raise InvalidArgument.field("reason", f"must be at most {MAX_HOLD_REASON} characters")
    # NUL was refused as the description of the hold's event, a field not
    # sent; and the reason is printed to admins' terminals, as names are.
    if CONTROL_CHARACTERS.search(reason):
        raise InvalidArgument.field("reason", "must not contain control characters")
    if on and not reason.strip():
        raise InvalidArgument.field("reason", "is required to place a legal hold")
    return reason.strip()


def purge_selections_of_both(
    in_force: RetentionPolicy, pending: RetentionPolicy
) -> list[Selection]:
    """The disjoint selections that remove what both policies remove, each
    event once both have expired it: one for each pair of their selections
    that can share an event, kept the longer of the pair's days. An event
    either keeps forever is in none. While a shortening waits (ADR 0163), no
    event goes before the policy in force lets it, nor before the pending
    one would: a change that shortens one rule and lengthens another keeps
    the longer of each at once."""
    selections = []
    for ours in purge_selections(in_force):
        for theirs in purge_selections(pending):
            if (both := _both(ours, theirs)) is not None:
                selections.append(both)
    return selections


def _both(ours: Selection, theirs: Selection) -> Selection | None:
    """The events of both selections, kept as long as the longer keeps them;
    None if no event can be of both."""
    prefix = ours.prefix
    if theirs.prefix is not None:
        if prefix is None or theirs.prefix.startswith(prefix):
            prefix = theirs.prefix
        elif not prefix.startswith(theirs.prefix):
            return None
    if ours.category and theirs.category and ours.category != theirs.category:
        return None
    category = ours.category or theirs.category
    except_prefixes = tuple(sorted({*ours.except_prefixes, *theirs.except_prefixes}))
    except_categories = tuple(sorted({*ours.except_categories, *theirs.except_categories}))
    if category is not None and category in except_categories:
        return None
    if prefix is not None and any(prefix.startswith(p) for p in except_prefixes):
        return None
    return Selection(
        max(ours.days, theirs.days),
        # Unique per pair: a pass tells its selections apart by their names.
        f"{ours.rule} & {theirs.rule}",
        prefix=prefix,
        category=category,
        except_prefixes=except_prefixes,
        except_categories=except_categories,
    )
