"""The values the command lines' options offer and the limits they check,
importable without gRPC or protobuf: `sealtrail --help` (and the server's
`sink` commands, which share those options) imports nothing heavier.

A proto enum's names are fixed here, as `enum_names` gives them
(CATEGORY_DATA_ACCESS -> "data_access", the zero value left out);
tests/unit/test_cli_choices.py checks each tuple against its enum, so a value
added to the proto fails it until it is added here."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final, Literal, get_args

# event.proto's Category, Severity, Outcome and ActorType.
CATEGORIES: Final = (
    "authentication",
    "data_access",
    "configuration",
    "member",
    "billing",
    "security",
    "system",
    "api_usage",
)
SEVERITIES: Final = ("info", "warning", "error", "critical")
OUTCOMES: Final = ("success", "failure", "denied")
ACTOR_TYPES: Final = ("user", "api_key", "service", "system")
# audit_service.proto's CountGroupBy: a count's grouping by name (the
# client's GroupBy adds "", none), and the names in the enum's order.
CountGroupByName = Literal[
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
COUNT_GROUP_BYS: Final[tuple[CountGroupByName, ...]] = get_args(CountGroupByName)
# audit_service.proto's CountMeasure: what a count measures of each group's
# `context.duration_ms`, or of the numbers under one key of their details
# (the client's Measure adds "", none).
CountMeasureName = Literal[
    "duration_avg",
    "duration_p50",
    "duration_p95",
    "duration_p99",
    "duration_max",
    "detail_sum",
    "detail_avg",
    "detail_max",
]
COUNT_MEASURES: Final[tuple[CountMeasureName, ...]] = get_args(CountMeasureName)

RedactionMode = Literal["replace", "hmac"]
# settings.proto's IpRecording: how much of a client's address events keep.
IpRecording = Literal["full", "truncated", "none"]
TokenRole = Literal["recorder", "reader", "exporter", "admin"]

# The most events one RecordEvents takes.
MAX_BATCH: Final = 1000
# The largest seq a log can reach, as the server's MAX_SEQ (domain/event.py):
# the largest integer a JSON reader holds exactly. A seq past it the server
# refuses (INVALID_ARGUMENT) where it takes a seq alone (a stream's start, an
# event's proof).
MAX_SEQ: Final = 2**53 - 1
# The most groups a top list holds: what one CountEvents answers at most.
MAX_TOP: Final = 1000
# Seconds a CountEvents is waited for: more than the server gives a count
# (SEALTRAIL_COUNT_TIMEOUT, 30 s by default), so that its answer, or its clear
# refusal to count so much, arrives before the client gives up.
COUNT_TIMEOUT: Final = 60.0

# EventFilter's list fields, each matching any of its values: what the CLI's
# repeatable filter options and the console's comma-separated parameters fill.
REPEATED_FILTER_FIELDS: Final = (
    "actions",
    "exclude_actions",
    "categories",
    "outcomes",
    "severities",
    "actor_types",
    "countries",
    "resource_types",
    "http_status_classes",
    "http_routes",
    "changed_fields",
    "actor_roles",
)

# The settings each kind of destination takes (docs/forwarding.md).
SINK_SETTINGS: Mapping[str, frozenset[str]] = {
    "webhook": frozenset({"url", "secrets"}),
    "splunk_hec": frozenset({"url", "token", "index", "source", "sourcetype"}),
    "datadog_logs": frozenset({"url", "api_key", "service", "tags"}),
    "elasticsearch": frozenset({"url", "index", "api_key"}),
    "chat": frozenset({"url"}),  # Slack's incoming webhook, and those that take its messages
    "pagerduty": frozenset({"url", "routing_key", "source"}),  # Events API v2
    # SMTP: a message per event (ADR 0133)
    "email": frozenset(
        {"host", "port", "security", "username", "password", "from_address", "to_addresses"}
    ),
}


def kinds_named(words: str) -> list[str]:
    """The kinds of alert rule `words` names, as the messages that refuse a
    setting of another kind say them: `threshold`, `threshold or spike`,
    `threshold, spike or absence`."""
    return [kind for part in words.split(" or ") for kind in part.split(", ")]
