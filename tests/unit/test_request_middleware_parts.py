"""What the request middlewares derive from a request by themselves (ADR 0139):
the default action, always within the server's syntax and limit, and a path
as the server takes it for a route."""

from __future__ import annotations

import pytest

from sealtrail._middleware import AuditedRequest, derived_action, outcome_of, route_of_path
from sealtrail_server.domain.event import ACTION_PATTERN, MAX_ACTION, RESERVED_ACTION_PREFIX


def _request(method: str, route: str) -> AuditedRequest:
    return AuditedRequest(method, route, route, 200, {}, "", {})


@pytest.mark.parametrize(
    ("method", "route", "action"),
    [
        ("POST", "/v1/templates/{id}/publish", "http.v1.templates.publish.post"),
        ("DELETE", "/users/<int:user_id>/roles/:role", "http.users.roles.delete"),
        ("PUT", "/users/42/2fa/Enable-Now", "http.users.enable_now.put"),
        ("PATCH", "/", "http.patch"),
        ("POST", "/retention/policy", "http.retention.policy.post"),
        ("POST", "/caf%C3%A9/%20x", "http.caf.x.post"),
        ("M-SEARCH", "/x", "http.x.m_search"),
    ],
)
def test_the_default_action_is_the_routes_literal_segments_and_the_method(
    method: str, route: str, action: str
) -> None:
    assert derived_action(_request(method, route)) == action


def test_the_default_action_keeps_within_the_servers_limit_and_syntax() -> None:
    action = derived_action(_request("POST", "/segment" * 40))
    assert len(action) <= MAX_ACTION
    assert ACTION_PATTERN.fullmatch(action)
    assert action.endswith(".post") and not action.startswith(RESERVED_ACTION_PREFIX)


def test_a_path_is_encoded_where_the_server_refuses_it_and_cut_between_escapes() -> None:
    assert route_of_path("/a?b#c\n d") == "/a%3Fb%23c%0A%20d"
    assert route_of_path("") == "/"
    cut = route_of_path("/" + "x" * 509 + "?")  # the escape would straddle 512
    assert cut == "/" + "x" * 509


@pytest.mark.parametrize(
    ("status", "outcome"),
    [(200, "success"), (302, "success"), (401, "denied"), (403, "denied"), (404, "failure")],
)
def test_the_outcome_follows_the_status(status: int, outcome: str) -> None:
    assert outcome_of(status) == outcome
