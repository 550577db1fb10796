"""The command lines' fixed copies of what gRPC and protobuf define
(sealtrail._choices, the status codes named in _cli and _cli_sinks), so
that `--help` imports neither: each equal to what it copies, so a value added
to a proto enum fails here until the copy has it too."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import grpc
import pytest

from sealtrail import _choices, _cli, _cli_sinks, _cli_stats
from sealtrail._convert import enum_names
from sealtrail.v1 import audit_service_pb2, event_pb2


@pytest.mark.parametrize(
    ("names", "enum"),
    [
        (_choices.CATEGORIES, event_pb2.Category),
        (_choices.SEVERITIES, event_pb2.Severity),
        (_choices.OUTCOMES, event_pb2.Outcome),
        (_choices.ACTOR_TYPES, event_pb2.ActorType),
        (_choices.COUNT_GROUP_BYS, audit_service_pb2.CountGroupBy),
        (_choices.COUNT_MEASURES, audit_service_pb2.CountMeasure),
    ],
    ids=["Category", "Severity", "Outcome", "ActorType", "CountGroupBy", "CountMeasure"],
)
def test_each_fixed_tuple_is_its_enums_names(names: tuple[str, ...], enum: Any) -> None:
    assert names == tuple(enum_names(enum))


def test_stats_groupings_are_every_count_group_by() -> None:
    assert set(_cli_stats._GROUPINGS.values()) == set(enum_names(audit_service_pb2.CountGroupBy))


def test_the_client_readme_lists_every_group_by() -> None:
    """clients/python/README.md listed `group_by` values without country,
    resource, actor_type, http_route, http_status and credential."""
    readme = (Path(__file__).resolve().parents[2] / "clients/python/README.md").read_text()
    (listed,) = re.findall(r"^`group_by` is (.*?) for the total alone", readme, re.S | re.M)
    named = re.findall(r'`"(\w*)"`', listed)
    assert sorted(named) == sorted(["", *_choices.COUNT_GROUP_BYS])


def test_stats_measures_are_every_count_measure() -> None:
    assert set(_cli_stats._MEASURES.values()) == set(enum_names(audit_service_pb2.CountMeasure))


@pytest.mark.parametrize("names", [_cli._USAGE_CODES, _cli_sinks._OUTCOME_UNKNOWN])
def test_status_codes_named_are_grpcs(names: frozenset[str]) -> None:
    assert names <= {code.name for code in grpc.StatusCode}
