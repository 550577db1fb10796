"""A client's timeouts as a caller means them. `timeout=float("inf")` (no
deadline an attempt could reach) failed every call with DEADLINE_EXCEEDED,
after five attempts, as did any beyond what grpc takes (about 235 years):
grpc takes such a deadline for one long past. A timeout of 0, less or NaN,
which no attempt could meet, was taken too (every call failed so), and a
NaN `total_timeout` bounded nothing. Against a real server, both clients."""

from __future__ import annotations

import math
from typing import Any

import pytest

from sealtrail import AsyncAuditClient, AuditClient, build_filter
from tests.conftest import ServerThread

_EDITS = build_filter(actions="doc.edit")


@pytest.mark.parametrize("timeout", [math.inf, 1e12])
def test_a_timeout_beyond_reach_is_no_deadline(
    server: ServerThread, tenant: str, timeout: float
) -> None:
    with AuditClient(server.target, token=server.token(tenant), timeout=timeout) as client:
        client.record(action="doc.edit", actor_id="u_1")
        assert [token.role for token in client.list_tokens()]
        assert client.count_events(_EDITS, timeout=timeout).total == 1
    with AuditClient(server.target, token=server.token(tenant), total_timeout=math.inf) as client:
        assert client.count_events(_EDITS).total == 1


@pytest.mark.parametrize("timeout", [math.inf, 1e12])
async def test_a_timeout_beyond_reach_is_no_deadline_for_the_async_client(
    server: ServerThread, tenant: str, timeout: float
) -> None:
    async with AsyncAuditClient(
        server.target, token=server.token(tenant), timeout=timeout
    ) as audit:
        await audit.record(action="doc.edit", actor_id="u_1")
        assert [token.role for token in await audit.list_tokens()]
        assert (await audit.count_events(_EDITS, timeout=timeout)).total == 1


@pytest.mark.parametrize("client_class", [AuditClient, AsyncAuditClient])
@pytest.mark.parametrize(
    ("setting", "value"),
    [
        ("timeout", 0),
        ("timeout", -1.0),
        ("timeout", math.nan),
        ("total_timeout", math.nan),
        ("total_timeout", 0),
    ],
)
def test_a_timeout_no_attempt_could_meet_is_refused_naming_it(
    client_class: type, setting: str, value: float
) -> None:
    with pytest.raises(ValueError, match=f"^{setting} must be more than 0 seconds"):
        client_class("127.0.0.1:9", token="stk_x", **{setting: value})


@pytest.mark.parametrize("timeout", [0, -5.0, math.nan])
def test_a_call_given_such_a_timeout_refuses_it_before_any_call(
    client: AuditClient, timeout: float
) -> None:
    calls: list[Any] = [
        lambda: client.count_events(timeout=timeout),
        lambda: client.verify_log(timeout=timeout),
    ]
    for call in calls:
        with pytest.raises(ValueError, match=r"^timeout must be more than 0 seconds"):
            call()
