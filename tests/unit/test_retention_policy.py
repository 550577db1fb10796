"""Retention policies: validation names each bad field, and a policy's purge
selections cover every event by exactly the rule the docs say (longest
action prefix, else category, else default), never by two."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sealtrail.tlog import RemovedLeaves
from sealtrail_server.domain.errors import InvalidArgument
from sealtrail_server.domain.event import CATEGORIES
from sealtrail_server.domain.retention import (
    MAX_DAYS,
    RetentionLimits,
    RetentionPolicy,
    RetentionRule,
    RuleDraft,
    Selection,
    hold_etag,
    policy_etag,
    purge_selections,
    validate_hold_reason,
    validate_policy,
)
from sealtrail_server.retention.tenant_pass import TenantPurge, _read_from
from sealtrail_server.store.retention import PurgedBatch

CATEGORY_NUMBERS = {name: number for number, name in CATEGORIES.items()}


def fields_of(error: InvalidArgument) -> list[str]:
    return [violation.field for violation in error.violations]


def test_a_valid_policy_keeps_its_rules_in_order() -> None:
    policy = validate_policy(
        90,
        [
            RuleDraft(365, category=CATEGORY_NUMBERS["authentication"]),
            RuleDraft(0, action_prefix="rag.*"),
        ],
    )
    assert policy == RetentionPolicy(
        90, (RetentionRule(365, category="authentication"), RetentionRule(0, action_prefix="rag."))
    )
    assert not policy.keeps_everything
    assert RetentionPolicy(0, (RetentionRule(0, category="billing"),)).keeps_everything


def test_every_bad_field_is_named() -> None:
    with pytest.raises(InvalidArgument) as refused:
        validate_policy(
            MAX_DAYS + 1,
            [
                RuleDraft(MAX_DAYS + 1, category=1),
                RuleDraft(5),
                RuleDraft(5, category=1, action_prefix="a.*"),
                RuleDraft(5, category=99),
                RuleDraft(5, action_prefix="rag"),
                RuleDraft(5, action_prefix="Rag.*"),
                RuleDraft(6, category=1),
                RuleDraft(5, action_prefix="a." * 64 + "*"),  # longer than any action
                RuleDraft(5, action_prefix="retention.*"),
                RuleDraft(0, action_prefix="retention.purged.*"),
            ],
        )
    assert fields_of(refused.value) == [
        "policy.default_days",
        "policy.rules[0].days",
        "policy.rules[1]",
        "policy.rules[2]",
        "policy.rules[3].category",
        "policy.rules[4].action_prefix",
        "policy.rules[5].action_prefix",
        "policy.rules[6]",
        "policy.rules[7].action_prefix",
        "policy.rules[8].action_prefix",
        "policy.rules[9].action_prefix",
    ]
    # Each described in its violation (the message names only what fits a client's trailers).
    [reserved] = [v for v in refused.value.violations if v.field == "policy.rules[9].action_prefix"]
    assert "kept for as long as the log" in reserved.description


def test_retentions_own_records_fall_under_no_selection() -> None:
    """They tell a removal by retention from a superuser's: a tombstone whose
    purge record was purged too would be indistinguishable (ADR 0014)."""
    policy = validate_policy(
        30,
        [
            RuleDraft(10, category=CATEGORY_NUMBERS["configuration"]),
            RuleDraft(10, category=CATEGORY_NUMBERS["system"]),
            RuleDraft(5, action_prefix="rag.*"),
        ],
    )
    for action, category in [
        ("retention.purged", "system"),
        ("retention.policy_updated", "configuration"),
        ("retention.legal_hold_released", "configuration"),
    ]:
        assert not [s for s in purge_selections(policy) if _covers(s, action, category)]
    assert [s.rule for s in purge_selections(policy) if _covers(s, "rag.query", None)] == [
        "action:rag.*"
    ]
    # A rule for them stored before such rules were refused selects nothing either.
    stored = RetentionPolicy(30, (RetentionRule(10, action_prefix="retention."),))
    assert not [s for s in purge_selections(stored) if _covers(s, "retention.purged", "system")]


def test_a_limit_outside_the_operators_range_is_refused_naming_whose_it_is() -> None:
    """The floor refuses a short limit, the tenant's plan a long one and
    forever; both name their fields together."""
    plan = RetentionLimits(30, 90)
    with pytest.raises(InvalidArgument) as refused:
        validate_policy(
            0,
            [
                RuleDraft(7, category=CATEGORY_NUMBERS["authentication"]),
                RuleDraft(91, action_prefix="rag.*"),
                RuleDraft(90, action_prefix="doc.*"),
            ],
            limits=plan,
        )
    messages = {v.field: v.description for v in refused.value.violations}
    assert list(messages) == ["policy.default_days", "policy.rules[0].days", "policy.rules[1].days"]
    assert messages["policy.default_days"] == "must be at most 90 days, this tenant's plan"
    assert messages["policy.rules[0].days"] == "must be at least 30 days, this deployment's minimum"
    assert messages["policy.rules[1].days"] == "must be at most 90 days, this tenant's plan"
    assert validate_policy(90, [RuleDraft(30, action_prefix="rag.*")], limits=plan)
    # Without a ceiling, forever passes the floor, as it always did.
    assert validate_policy(0, [], limits=RetentionLimits(30)) == RetentionPolicy()


def test_the_purge_brings_each_limit_into_the_range_and_the_floor_wins_over_a_lower_ceiling() -> (
    None
):
    stored = RetentionPolicy(
        0, (RetentionRule(1, category="authentication"), RetentionRule(365, action_prefix="rag."))
    )
    assert stored.within(RetentionLimits()) == stored
    assert stored.within(RetentionLimits(30, 90)) == RetentionPolicy(
        90, (RetentionRule(30, category="authentication"), RetentionRule(90, action_prefix="rag."))
    )
    # A ceiling of 7 days under a floor raised to 30 since: 30 days, for all.
    below = RetentionLimits(30, 7)
    assert below.max_days == 30
    assert {rule.days for rule in stored.within(below).rules} == {30}
    assert stored.within(below).default_days == 30
    assert below.problem(30) is None and below.problem(31) and below.problem(0)


def test_too_many_rules_are_refused() -> None:
    rules = [RuleDraft(5, action_prefix=f"a{i}.*") for i in range(101)]
    with pytest.raises(InvalidArgument) as refused:
        validate_policy(1, rules)
    assert fields_of(refused.value) == ["policy.rules"]


def test_a_hold_needs_a_reason_and_a_release_does_not() -> None:
    with pytest.raises(InvalidArgument):
        validate_hold_reason(True, "  ")
    with pytest.raises(InvalidArgument):
        validate_hold_reason(True, "x" * 1025)
    with pytest.raises(InvalidArgument) as nul:
        validate_hold_reason(True, "Case\x007")
    assert [v.field for v in nul.value.violations] == ["reason"]
    assert validate_hold_reason(True, " Case 7 ") == "Case 7"
    assert validate_hold_reason(False, "") == ""


def test_an_etag_changes_with_every_field_of_what_it_stands_for() -> None:
    at = datetime(2026, 12, 2, 5, 0, tzinfo=UTC)
    policy = RetentionPolicy(90, (RetentionRule(365, category="authentication"),))
    etags = {
        policy_etag(policy, at),
        policy_etag(policy, None),
        policy_etag(policy, at + timedelta(microseconds=1)),
        policy_etag(RetentionPolicy(30, policy.rules), at),
        policy_etag(RetentionPolicy(90, (RetentionRule(366, category="authentication"),)), at),
        policy_etag(
            RetentionPolicy(90, (RetentionRule(365, action_prefix="authentication."),)), at
        ),
        policy_etag(RetentionPolicy(90), at),
        hold_etag(True, "Case 7", at),
        hold_etag(True, "Case 8", at),
        hold_etag(False, "Case 7", at),
        hold_etag(True, "Case 7", None),
    }
    assert len(etags) == 11
    assert policy_etag(policy, at) == policy_etag(RetentionPolicy(90, policy.rules), at)
    # One instant read in another time zone (a session's TimeZone) is the same etag.
    elsewhere = at.astimezone(timezone(timedelta(hours=-5)))
    assert policy_etag(policy, elsewhere) == policy_etag(policy, at)
    assert hold_etag(True, "Case 7", elsewhere) == hold_etag(True, "Case 7", at)
    assert all(etag.startswith('"') and etag.endswith('"') for etag in etags)  # RFC 7232


def _covers(selection: Selection, action: str, category: str | None) -> bool:
    """What the SQL of store/retention.py selects, in Python."""
    if selection.prefix is not None and not action.startswith(selection.prefix):
        return False
    if selection.category is not None and category != selection.category:
        return False
    if any(action.startswith(prefix) for prefix in selection.except_prefixes):
        return False
    return (category or "") not in selection.except_categories


def _expected_days(policy: RetentionPolicy, action: str, category: str | None) -> int:
    """The rule the docs describe: longest matching prefix, else category, else
    default; retention's own records under none (whatever an older stored
    policy says of them)."""
    if action.startswith("retention."):
        return 0
    prefixes = [
        rule
        for rule in policy.rules
        if rule.action_prefix is not None and action.startswith(rule.action_prefix)
    ]
    if prefixes:
        return max(prefixes, key=lambda rule: len(rule.action_prefix or "")).days
    for rule in policy.rules:
        if rule.category is not None and rule.category == category:
            return rule.days
    return policy.default_days


SEGMENTS = st.sampled_from(["rag", "index", "api_key", "doc", "a", "retention"])
ACTIONS = st.lists(SEGMENTS, min_size=2, max_size=4).map(".".join)
PREFIXES = st.lists(SEGMENTS, min_size=1, max_size=3).map(lambda parts: ".".join(parts) + ".")
DAYS = st.sampled_from([0, 10, 30, 365])
CATEGORY = st.one_of(st.none(), st.sampled_from(sorted(CATEGORY_NUMBERS)))


@st.composite
def policies(draw: st.DrawFn) -> RetentionPolicy:
    prefixes = draw(st.dictionaries(PREFIXES, DAYS, max_size=4))
    categories = draw(st.dictionaries(st.sampled_from(sorted(CATEGORY_NUMBERS)), DAYS, max_size=3))
    rules = [RetentionRule(days, action_prefix=p) for p, days in prefixes.items()]
    rules += [RetentionRule(days, category=c) for c, days in categories.items()]
    return RetentionPolicy(draw(DAYS), tuple(rules))


@given(policies(), ACTIONS, CATEGORY)
def test_each_event_falls_under_exactly_its_own_rule(
    policy: RetentionPolicy, action: str, category: str | None
) -> None:
    covering = [s for s in purge_selections(policy) if _covers(s, action, category)]
    expected = _expected_days(policy, action, category)
    if expected == 0:
        assert covering == []  # kept forever: no selection may reach it
    else:
        assert [s.days for s in covering] == [expected]


def test_a_purge_names_the_latest_cutoff_each_rule_ran_with() -> None:
    """A policy changed during a pass moves a rule's cutoff between batches:
    what the rule removed was received before the latest of them."""
    earlier, later = datetime(2026, 9, 1, tzinfo=UTC), datetime(2026, 11, 1, tzinfo=UTC)
    purge = TenantPurge("t")
    purge.add("default", earlier, _batch(1, 2, 4, 5))
    purge.add("default", later, _batch(6, 7, 8))  # the default shortened
    purge.add("default", earlier, _batch(9))  # and lengthened again
    purge.add("category:authentication", earlier, _batch(3))
    assert purge.details() == {
        "purged": 9,
        "first_seq": 1,
        "last_seq": 9,
        "rules": {
            "default": {"purged": 8, "received_before": later.isoformat()},
            "category:authentication": {"purged": 1, "received_before": earlier.isoformat()},
        },
        "removed": _batch(*range(1, 10)).removed.hex(),
    }
    # As kept until recorded, and read back.
    again = TenantPurge.from_summary("t", purge.purge_id, purge.details())
    assert (again.details(), again.removed) == (purge.details(), purge.removed)


def _batch(*seqs: int) -> PurgedBatch:
    """A batch that removed `seqs`, each leaf its seq's digits."""
    removed = RemovedLeaves()
    for seq in seqs:
        removed.add(seq, seq.to_bytes(32, "big"))
    return PurgedBatch(min(seqs), max(seqs), removed)


def test_a_selection_is_read_from_a_day_before_its_mark_and_never_past_its_cutoff() -> None:
    """Receive times come from the appenders' clocks, the mark from the
    purger's: a mark one clock set ahead hid what was due for good."""
    cutoff = datetime(2026, 12, 2, tzinfo=UTC)
    assert _read_from(None, cutoff) is None
    assert _read_from(cutoff - timedelta(days=3), cutoff) == cutoff - timedelta(days=4)
    assert _read_from(cutoff + timedelta(days=30), cutoff) == cutoff - timedelta(days=1)
