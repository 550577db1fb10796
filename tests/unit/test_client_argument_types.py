"""Each public function of the client refuses an argument of the wrong type
itself, with a TypeError naming it and what it takes (a ValueError for a
naive datetime), before any call: given on to protobuf, it failed deep in a
message's construction ("bad argument type for built-in operation", "'int'
object is not iterable"), naming nothing, or was built into something else
(a dict of actions its keys, bytes an actor's id) (helper-320)."""

from __future__ import annotations

import asyncio
import inspect
import typing
from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime
from enum import StrEnum
from typing import Any

import pytest

from sealtrail import (
    AsyncAuditClient,
    AuditClient,
    UnavailableError,
    build_alert_rule,
    build_event,
    build_filter,
    build_sink,
)
from sealtrail._arguments import _compile, _fits, unchecked
from sealtrail._convert import EventFields
from sealtrail.v1 import event_pb2

_NAIVE = datetime(2026, 1, 2, 3, 4, 5)

# (what is called, its arguments, the argument named, what the error says it takes)
BUILDERS: list[tuple[Callable[..., Any], dict[str, Any], str, str]] = [
    (build_event, {"action": 5, "actor_id": "u"}, "action", "a str"),
    (build_event, {"action": "a.b", "actor_id": b"u_1"}, "actor_id", "a str"),
    (build_event, {"action": "a.b", "details": [1, 2]}, "details", "a mapping"),
    (build_event, {"action": "a.b", "changes": "role"}, "changes", "a list"),
    (build_event, {"action": "a.b", "changes": [(1, "a", "b")]}, r"changes\[0\]\[0\]", "a str"),
    (
        build_event,
        {"action": "a.b", "occurred_at": "2026-01-01"},
        "occurred_at",
        "a timezone-aware datetime",
    ),
    (
        build_event,
        {"action": "a.b", "occurred_at": date(2026, 1, 1)},
        "occurred_at",
        "a timezone-aware datetime",
    ),
    (build_event, {"action": "a.b", "severity": 3}, "severity", "a str"),
    (build_filter, {"actions": 5}, "actions", "a str or a list of str"),
    (build_filter, {"actions": {"doc.edit": 1}}, "actions", "a str or a list of str"),
    (build_filter, {"actions": b"doc.edit"}, "actions", "a str or a list of str"),
    (build_filter, {"actor": ["u_1"]}, "actor", "a str"),
    (build_filter, {"categories": [1]}, r"categories\[0\]", "a str"),
    (build_filter, {"since": "2026-01-01"}, "since", "a timezone-aware datetime"),
    (build_sink, {"name": 5, "kind": "webhook", "url": "https://x.example"}, "name", "a str"),
    (build_sink, {"name": "s", "kind": ["webhook"], "url": "https://x.example"}, "kind", "one of"),
    (
        build_sink,
        {"name": "s", "kind": "webhook", "url": "https://x.example", "filter": {"actions": []}},
        "filter",
        "an EventFilter message",
    ),
    (
        build_sink,
        {"name": "s", "kind": "chat", "url": "https://x.example", "paused": "no"},
        "paused",
        "a bool",
    ),
    (build_alert_rule, {"name": "r", "kind": "threshold", "count": "5"}, "count", "an int"),
    (build_alert_rule, {"name": "r", "kind": "threshold", "count": 5.0}, "count", "an int"),
    (build_alert_rule, {"name": "r", "kind": "threshold", "count": True}, "count", "an int"),
    (
        build_alert_rule,
        {"name": "r", "kind": "off_hours", "working_days": "12345"},
        "working_days",
        "a list of int",
    ),
    (build_alert_rule, {"name": "r", "kind": "match", "sink_ids": 5}, "sink_ids", "a str or"),
    (build_alert_rule, {"name": "r", "kind": "match", "filter": {}}, "filter", "an EventFilter"),
    (build_alert_rule, {"name": "r", "kind": "match", "disabled": "false"}, "disabled", "a bool"),
]


@pytest.mark.parametrize(
    ("build", "arguments", "named", "takes"),
    BUILDERS,
    ids=[f"{build.__name__}-{named}-{i}" for i, (build, _, named, _) in enumerate(BUILDERS)],
)
def test_a_builder_refuses_an_argument_of_the_wrong_type_naming_it(
    build: Callable[..., Any], arguments: dict[str, Any], named: str, takes: str
) -> None:
    with pytest.raises(TypeError, match=f"^{named}: must be {takes}"):
        build(**arguments)


@pytest.mark.parametrize(
    ("build", "arguments", "named"),
    [
        (build_event, {"action": "a.b", "occurred_at": _NAIVE}, "occurred_at"),
        (build_filter, {"since": _NAIVE}, "since"),
        (build_filter, {"until": _NAIVE}, "until"),
    ],
)
def test_a_naive_datetime_is_a_value_error_naming_it(
    build: Callable[..., Any], arguments: dict[str, Any], named: str
) -> None:
    with pytest.raises(ValueError, match=f"^{named}: datetime must be timezone-aware"):
        build(**arguments)


def test_an_optional_text_given_as_none_is_none_as_before() -> None:
    """`actor_email=user.email`, None for a user without one: protobuf took
    it for none, and so it stays."""
    event = build_event(action="a.b", actor_id="u", actor_email=None)  # type: ignore[typeddict-item]
    assert event.actor.email == ""
    assert build_filter(ip=None) == event_pb2.EventFilter()  # type: ignore[arg-type]


_FILTER = {"actions": ["doc.edit"]}  # a dict where an EventFilter goes
# Each public method of both clients, called with one argument of the wrong
# type: (method, positional arguments, keyword arguments, the argument named).
CALLS: list[tuple[str, tuple[Any, ...], dict[str, Any], str]] = [
    ("record", ({"action": "a.b"},), {}, "event"),
    ("record", (), {"action": "a.b", "actor_id": 7}, "actor_id"),
    ("record_batch", ("doc.edit",), {}, "events"),
    ("record_batch", ([{"action": "a.b"}],), {}, r"events\[0\]"),
    ("get_event", (5,), {}, "id"),
    ("query", (_FILTER,), {}, "filter"),
    ("query_page", (), {"page_size": "10"}, "page_size"),
    ("count_events", (), {"limit": "5"}, "limit"),
    ("activity_report", (_FILTER,), {}, "filter"),
    ("activity_report", (), {"top": "10"}, "top"),
    ("get_checkpoint", (), {"tree_size": "9"}, "tree_size"),
    ("get_inclusion_proof", (), {"seq": "3"}, "seq"),
    ("get_consistency_proof", (), {"old_size": 1.5}, "old_size"),
    ("check_checkpoint", ("note",), {"key": 5}, "key"),
    ("list_purged_leaves", (), {"after_seq": "1"}, "after_seq"),
    ("get_received_range", (), {"since": "2026-01-01"}, "since"),
    ("set_redaction_mode", (1,), {}, "mode"),
    ("hash_secret", (b"s3cret",), {}, "value"),
    ("set_action_description", ("doc.edit", 5), {}, "description"),
    ("set_action_description", ("doc.edit", "An edit"), {"category": 6}, "category"),
    ("set_strict_actions", ("on",), {}, "on"),
    ("set_personal_data_fields", ("ssn",), {}, "names"),
    ("set_ip_recording", (1,), {}, "mode"),
    ("update_tenant_settings", (), {"strict_actions": "on"}, "strict_actions"),
    ("update_tenant_settings", (), {"personal_data_fields": "ssn"}, "personal_data_fields"),
    ("action_catalog", (), {"limit": "5"}, "limit"),
    ("action_catalog", (), {"page_token": 5}, "page_token"),
    ("action_catalog_entries", (), {"page_size": "10"}, "page_size"),
    ("create_token", ("reader",), {"expire_time": date(2027, 1, 1)}, "expire_time"),
    ("revoke_token", (["tok_1"],), {}, "token_id"),
    ("set_retention_policy", (90.5,), {}, "default"),
    ("preview_retention_policy", (), {"categories": ["authentication"]}, "categories"),
    ("set_legal_hold", ("on",), {}, "on"),
    ("erase_tenant", (42,), {}, "confirm_tenant_id"),
    ("verify_erasure_receipt", (7,), {"key": "k"}, "receipt"),
    ("create_sink", ({"name": "s"},), {}, "sink"),
    ("get_sink", (1,), {}, "sink_id"),
    (
        "update_sink",
        (build_sink("s", "chat", url="https://x.example"),),
        {"fields": "name"},
        "fields",
    ),
    ("delete_sink", ("snk_1",), {"etag": 3}, "etag"),
    ("list_dead_letters", (None,), {}, "sink_id"),
    ("replay_sink", ("snk_1",), {"seq_range": (1, "9")}, r"seq_range\[1\]"),
    ("create_alert_rule", ({"name": "r"},), {}, "rule"),
    ("update_alert_rule", (build_alert_rule("r", "match"),), {"fields": {"name": 1}}, "fields"),
    ("delete_alert_rule", (5,), {}, "rule_id"),
    ("verify_log", (), {"check_views": "yes"}, "check_views"),
    ("export_stream", (_FILTER,), {}, "filter"),
    ("export", ("out.ndjson",), {"first_seq": "1"}, "first_seq"),
    ("export", (5,), {}, "path"),  # str | os.PathLike[str]: worded without end
    ("stream", (), {"since": "2026-01-01"}, "since"),
]
# What takes no argument but the client.
NO_ARGUMENTS = {
    "close",
    "get_verifier_keys",
    "get_tenant_settings",
    "list_tokens",
    "get_retention_policy",
    "list_sinks",
    "list_alert_rules",
}


def _public(cls: type) -> set[str]:
    return {name for name, _ in inspect.getmembers(cls, inspect.isfunction) if name[0] != "_"}


def test_every_public_method_is_called_here_with_a_wrong_argument() -> None:
    called = {name for name, *_ in CALLS}
    assert _public(AuditClient) - NO_ARGUMENTS == called
    assert _public(AsyncAuditClient) - NO_ARGUMENTS == called


@pytest.fixture
def client() -> Iterator[AuditClient]:
    # Nothing listens on port 9: a call the check let through fails UNAVAILABLE.
    with AuditClient("127.0.0.1:9", token="t", max_attempts=1) as made:
        yield made


@pytest.mark.parametrize(
    ("method", "args", "kwargs", "named"),
    CALLS,
    ids=[f"{method}-{i}" for i, (method, *_) in enumerate(CALLS)],
)
def test_a_method_refuses_an_argument_of_the_wrong_type_naming_it(
    client: AuditClient, method: str, args: tuple[Any, ...], kwargs: dict[str, Any], named: str
) -> None:
    # Refused at the call, a generator's too (not at its first item).
    with pytest.raises(TypeError, match=f"^{named}: must be "):
        getattr(client, method)(*args, **kwargs)


@pytest.mark.parametrize(
    ("method", "args", "kwargs", "named"),
    CALLS,
    ids=[f"{method}-{i}" for i, (method, *_) in enumerate(CALLS)],
)
def test_an_async_method_refuses_an_argument_of_the_wrong_type_naming_it(
    method: str, args: tuple[Any, ...], kwargs: dict[str, Any], named: str
) -> None:
    async def call() -> None:
        async with AsyncAuditClient("127.0.0.1:9", token="t", max_attempts=1) as client:
            called = getattr(client, method)(*args, **kwargs)
            if inspect.isawaitable(called):
                await called

    with pytest.raises(TypeError, match=f"^{named}: must be "):
        asyncio.run(call())


@pytest.mark.parametrize("client_class", [AuditClient, AsyncAuditClient])
def test_a_client_refuses_a_setting_of_the_wrong_type_naming_it(client_class: type) -> None:
    with pytest.raises(TypeError, match=r"^token: must be a str, not bytes"):
        client_class("127.0.0.1:9", token=b"t")
    with pytest.raises(TypeError, match=r"^timeout: must be a float, not str"):
        client_class("127.0.0.1:9", token="t", timeout="10")
    with pytest.raises(TypeError, match=r"^root_certificates: must be bytes or None, not str"):
        client_class("127.0.0.1:9", token="t", tls=True, root_certificates="-----BEGIN")


def test_a_naive_time_given_to_a_method_is_a_value_error_naming_it(client: AuditClient) -> None:
    with pytest.raises(ValueError, match=r"^since: datetime must be timezone-aware"):
        client.stream(since=_NAIVE)
    with pytest.raises(ValueError, match=r"^expire_time: datetime must be timezone-aware"):
        client.create_token("reader", expire_time=_NAIVE)


def _every_hint() -> list[Any]:
    functions = [build_event, build_filter, build_sink, build_alert_rule]
    for cls in (AuditClient, AsyncAuditClient):
        # Sorted: each pytest-xdist worker collects the same ids in the same order.
        functions += [getattr(cls, name) for name in sorted(_public(cls) | {"__init__"})]
    hints = [typing.get_type_hints(unchecked(function)) for function in functions]
    hints.append(typing.get_type_hints(EventFields))
    every = {
        repr(hint): hint
        for found in hints
        for hint in found.values()
        if typing.get_origin(hint) is not typing.Unpack  # **fields: EventFields's, below
    }
    return [*every.values(), str | None]


class _Text(str):
    pass


class _Choice(StrEnum):
    """A caller's own names for the client's choices: each a str."""

    WEBHOOK = "webhook"
    THRESHOLD = "threshold"
    ACTOR = "actor"
    NEWEST = "newest"


# Values of every kind a caller may give, right and wrong.
_VALUES: list[Any] = [
    None,
    "",
    "doc.edit",
    _Text("doc.edit"),
    b"doc.edit",
    bytearray(b"x"),
    0,
    7,
    True,
    1.5,
    _NAIVE,
    datetime(2026, 1, 2, tzinfo=UTC),
    date(2026, 1, 2),
    [],
    ["doc.edit"],
    ["doc.edit", 5],
    [_Text("a")],
    [1, 2],
    [True],
    ("doc.edit",),
    (1, 9),
    (1, "9"),
    [("role", "a", "b")],
    [(1, "a", "b")],
    [{"field": "role"}],
    {"doc.edit": 1},
    {1: "a"},
    {"doc.edit"},
    frozenset({1}),
    {"a": 1}.keys(),
    {"a": 1}.values(),
    [event_pb2.Event()],
    [event_pb2.Event(), {"action": "a.b"}],
    event_pb2.Event(),
    event_pb2.EventFilter(),
    print,
    object(),
    "webhook",
    "threshold",
    _Choice.WEBHOOK,
    [_Choice.ACTOR],
]


@pytest.mark.parametrize("hint", _every_hint(), ids=repr)
def test_the_quick_check_passes_only_what_the_whole_check_passes(hint: Any) -> None:
    """The arguments a quick check passes are not looked at again: one it
    passes that the whole check (which words the errors) refuses would be
    taken in, unnamed, as before the checks."""
    check = _compile(hint)
    for value in _VALUES:
        if check is None or type(value) in check[0] or check[1](value):
            assert _fits(value, hint, "value"), (hint, value)


def test_a_choice_given_as_a_str_enum_member_is_taken_as_its_text(client: AuditClient) -> None:
    """A StrEnum member is a str: the builders took it as its value, and the
    checks refused it ("kind: must be one of 'webhook', ..., not _Choice")."""
    assert build_sink("s", _Choice.WEBHOOK, url="https://x.example") == build_sink(
        "s", "webhook", url="https://x.example"
    )
    assert build_alert_rule(
        "r", _Choice.THRESHOLD, count=5, group_by=_Choice.ACTOR
    ) == build_alert_rule("r", "threshold", count=5, group_by="actor")
    # Past the check, to the call: nothing listens on port 9.
    with pytest.raises(UnavailableError):
        client.query_page(order=_Choice.NEWEST)
    # A value of another kind is still refused, an int for one of str.
    with pytest.raises(TypeError, match=r"^order: must be one of 'newest', 'oldest', not int"):
        client.query_page(order=1)  # type: ignore[arg-type]


def test_a_path_of_the_wrong_type_is_named_as_a_path(client: AuditClient) -> None:
    """`path: str | os.PathLike[str]`: the error's wording of a generic class
    called itself without end (RecursionError, naming nothing)."""
    with pytest.raises(TypeError, match=r"^path: must be a str or a PathLike, not bytes"):
        client.export(b"out.ndjson")  # type: ignore[arg-type]
