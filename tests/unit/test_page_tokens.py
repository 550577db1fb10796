"""Page tokens: bound to the query, the tenant and the caller, signed, and
never anything but a page token or INVALID_ARGUMENT on `page_token`."""

from __future__ import annotations

import base64
import json
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from sealtrail_server.domain.errors import InvalidArgument
from sealtrail_server.domain.filters import EventFilter, FilterDraft, validate_filter
from sealtrail_server.domain.page_tokens import PageTokens

TOKENS = PageTokens(b"s" * 32)
CALLER = "5b0f0c8e-4a9e-4d6f-9a57-3c9d1f6e2b10"


def token_of_bytes(payload: bytes) -> str:
    """A token signed for CALLER whatever `payload` holds: what its reading
    does with each payload, once the signature has passed."""
    return TOKENS.signed(payload, caller=CALLER)


def token_of(payload: Any) -> str:
    return token_of_bytes(json.dumps(payload).encode())


def decode(token: str, *, fingerprint: str | None = None) -> int:
    return TOKENS.decode(token, fingerprint=fingerprint or FINGERPRINT, caller=CALLER)


# --- page tokens ----------------------------------------------------------------

FILTER = validate_filter(FilterDraft(actions=["api_key.*"], min_severity=2))
FINGERPRINT = FILTER.fingerprint(tenant_id="acme", order="asc")


@pytest.mark.parametrize("seq", [0, 1, 42, 2**53, 2**63 - 1])
def test_page_token_round_trips(seq: int) -> None:
    token = TOKENS.encode(fingerprint=FINGERPRINT, last_seq=seq, caller=CALLER)
    assert "=" not in token
    assert set(token) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.")
    assert decode(token) == seq


def test_fingerprint_is_stable_and_binds_tenant_filter_and_order() -> None:
    same = validate_filter(FilterDraft(actions=["api_key.*", "api_key.*"], min_severity=2))
    assert same.fingerprint(tenant_id="acme", order="asc") == FINGERPRINT
    others = {
        FILTER.fingerprint(tenant_id="globex", order="asc"),
        FILTER.fingerprint(tenant_id="acme", order="desc"),
        validate_filter(FilterDraft(actions=["api_key.*"], min_severity=3)).fingerprint(
            tenant_id="acme", order="asc"
        ),
        validate_filter(FilterDraft(actions=["api_key.create"], min_severity=2)).fingerprint(
            tenant_id="acme", order="asc"
        ),
        EventFilter().fingerprint(tenant_id="acme", order="asc"),
    }
    assert len(others) == 5
    assert FINGERPRINT not in others


def test_a_field_added_to_the_filter_keeps_the_fingerprints_of_filters_without_it() -> None:
    """A filter field added later changed every filter's fingerprint (the
    dataclass's repr grew a field), so each page token issued before the
    upgrade, a poller's kept cursor too, was refused as another query's.
    These are the fingerprints e8864d0d's server gave, the last deployed
    before exclude_actions, country, actor_email_domain and severities (helper-370)."""
    assert EventFilter().fingerprint(tenant_id="acme", order="asc") == (
        "6490c10430d53b2f1a219ceafead2c07"
    )
    older = EventFilter(
        actions=("doc.edit",), min_severity=3, occurred_after=datetime(2026, 1, 1, tzinfo=UTC)
    )
    assert older.fingerprint(tenant_id="acme", order="desc") == "b143d0f504e8a575c5b58ed2a17516cf"
    # Set, a later field still binds the token to the filter.
    desc = {"tenant_id": "acme", "order": "desc"}
    later = [
        replace(older, severities=(4,)),
        replace(older, severities=(3,)),
        replace(older, excluded_prefixes=("audit_log.",)),
        replace(older, country="KP"),
        replace(older, actor_email_domain="contractor.example"),
        replace(older, user_agent="curl"),
        replace(older, user_agent="python-requests"),
        replace(older, actor_types=("api_key",)),
        replace(older, actor_types=("api_key", "service")),
        replace(older, countries=("DE",)),
        replace(older, countries=("DE", "FR")),
        replace(older, resource_types=("file",)),
        replace(older, resource_types=("file", "source")),
        replace(older, http_status_classes=("5xx",)),
        replace(older, http_status_classes=("404", "5xx")),
        replace(older, min_duration_ms=1000.0),
        replace(older, min_duration_ms=0.5),
        replace(older, http_routes=("/v1/x",)),
        replace(older, http_routes=("/v1/x", "/v1/y")),
        replace(older, has_http_route=True),
        replace(older, has_http_route=False),
        replace(older, changed_fields=("rate_limit",)),
        replace(older, changed_fields=("limits.rpm", "rate_limit")),
        replace(older, actor_prefix="ali"),
        replace(older, actor_prefix="alice"),
    ]
    fingerprints = [each.fingerprint(**desc) for each in [older, *later]]
    assert len(set(fingerprints)) == len(fingerprints)


@pytest.mark.parametrize(
    "other",
    [
        FILTER.fingerprint(tenant_id="globex", order="asc"),
        FILTER.fingerprint(tenant_id="acme", order="desc"),
        validate_filter(FilterDraft(actions=["api_key.*"])).fingerprint(
            tenant_id="acme", order="asc"
        ),
    ],
)
def test_token_of_another_query_is_rejected(other: str) -> None:
    token = TOKENS.encode(fingerprint=other, last_seq=7, caller=CALLER)
    assert decode(token, fingerprint=other) == 7
    with pytest.raises(InvalidArgument) as caught:
        decode(token)
    assert [v.field for v in caught.value.violations] == ["page_token"]
    assert "page_token" in caught.value.message
    assert "another filter, order or tenant" in caught.value.message


VALID_TOKEN = TOKENS.encode(fingerprint=FINGERPRINT, last_seq=12345, caller=CALLER)


@pytest.mark.parametrize(
    "token",
    [
        "garbage!",
        "%%%%",
        "a",
        "é",
        "\x00",
        VALID_TOKEN[:-3],
        VALID_TOKEN[: len(VALID_TOKEN) // 2],
        VALID_TOKEN[1:],
        "x" + VALID_TOKEN,
        base64.urlsafe_b64encode(b"\xff\xfe\x00garbage").decode(),
        token_of(None),
        token_of("string"),
        token_of(7),
        token_of([1, FINGERPRINT, 5]),
        token_of({}),
        token_of({"v": 3, "f": FINGERPRINT, "s": 5}),
        token_of({"v": 0, "f": FINGERPRINT, "s": 5}),
        token_of({"v": "1", "f": FINGERPRINT, "s": 5}),
        token_of({"f": FINGERPRINT, "s": 5}),
        token_of({"v": 2, "s": 5}),
        token_of({"v": 2, "f": FINGERPRINT}),
        token_of({"v": 2, "f": FINGERPRINT, "s": -1}),
        token_of({"v": 2, "f": FINGERPRINT, "s": True}),
        token_of({"v": 2, "f": FINGERPRINT, "s": False}),
        token_of({"v": 2, "f": FINGERPRINT, "s": 5.0}),
        token_of({"v": 2, "f": FINGERPRINT, "s": "5"}),
        token_of({"v": 2, "f": FINGERPRINT, "s": None}),
        token_of({"v": 2, "f": FINGERPRINT, "s": [5]}),
        token_of({"v": 2, "f": FINGERPRINT, "s": 2**63}),
        token_of({"v": 2, "f": None, "s": 5}),
        token_of({"v": 2, "f": FINGERPRINT.upper(), "s": 5}),
        token_of_bytes(b'{"v": 2, "s": 1' + b"0" * 5000 + b"}"),
        token_of_bytes(b'{"v": NaN}'),
    ],
)
def test_malformed_tokens_are_invalid_argument(token: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        decode(token)
    assert [v.field for v in caught.value.violations] == ["page_token"]


def test_the_well_formed_token_the_malformed_ones_are_cut_from_is_accepted() -> None:
    assert decode(VALID_TOKEN) == 12345
    assert decode(token_of({"v": 2, "f": FINGERPRINT, "s": 9}))


def test_deeply_nested_token_is_invalid_argument() -> None:
    token = token_of_bytes(b"[" * 100_000)
    with pytest.raises(InvalidArgument):
        decode(token)


@settings(max_examples=500, deadline=None)
@given(st.text())
def test_arbitrary_text_is_never_another_exception(token: str) -> None:
    with pytest.raises(InvalidArgument):
        decode(token)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_arbitrary_decoded_bytes_are_never_another_exception(raw: bytes) -> None:
    token = token_of_bytes(raw)
    with pytest.raises(InvalidArgument):
        decode(token)


json_payloads = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False)
    | st.text(max_size=10)
    | st.just(FINGERPRINT),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(st.sampled_from(["v", "f", "s", "x"]), children, max_size=4)
    ),
    max_leaves=12,
)


@settings(max_examples=300, deadline=None)
@given(json_payloads)
@example({"v": True, "s": 0, "f": FINGERPRINT})  # equal to 1, but not a version
@example({"v": 2.0, "s": 0, "f": FINGERPRINT})
def test_arbitrary_json_payloads_decode_or_are_invalid_argument(payload: Any) -> None:
    token = token_of(payload)
    well_formed = (
        isinstance(payload, dict)
        and type(payload.get("v")) is int
        and payload["v"] == 2
        and payload.get("f") == FINGERPRINT
        and type(payload.get("s")) is int
        and 0 <= payload["s"] < 2**63
    )
    if well_formed:
        assert decode(token) == payload["s"]
    else:
        with pytest.raises(InvalidArgument):
            decode(token)


def _unsigned(payload: Any) -> str:
    raw = json.dumps(payload).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


@pytest.mark.parametrize(
    "forged",
    [
        # As tokens were before they were signed: written by hand for any query.
        _unsigned({"v": 1, "f": FINGERPRINT, "s": 0}),
        _unsigned({"v": 2, "f": FINGERPRINT, "s": 0}),
        # Signed, but another caller's.
        TOKENS.encode(fingerprint=FINGERPRINT, last_seq=0, caller="another-token"),
        # Signed by another deployment.
        PageTokens(b"t" * 32).encode(fingerprint=FINGERPRINT, last_seq=0, caller=CALLER),
        # This caller's, its position moved.
        token_of({"v": 2, "f": FINGERPRINT, "s": 0}).split(".")[0]
        + "."
        + VALID_TOKEN.split(".")[1],
    ],
)
def test_a_token_not_issued_to_this_caller_for_this_query_is_refused(forged: str) -> None:
    """A query is recorded on its first page only: a token written by hand,
    or handed to another token, paged through the log with no record
    (helper-67)."""
    with pytest.raises(InvalidArgument) as caught:
        decode(forged)
    assert [v.field for v in caught.value.violations] == ["page_token"]
    assert "issued to this caller" in caught.value.message


# --- tokens holding a key of several columns (a sink's dead letters) -----------

KINDS = (int, int, str)
KEY = [1767225600123456, 42, "0b0d9a4e-9c3a-4c55-9d0e-2f1b6a7c8d90"]


def decode_key(token: str, *, fingerprint: str = FINGERPRINT) -> list[Any]:
    return TOKENS.decode_key(token, fingerprint=fingerprint, caller=CALLER, kinds=KINDS)


def test_a_key_token_round_trips_and_is_bound_as_a_seq_token_is() -> None:
    token = TOKENS.encode_key(fingerprint=FINGERPRINT, key=KEY, caller=CALLER)
    assert decode_key(token) == KEY
    with pytest.raises(InvalidArgument, match="another filter") as caught:
        decode_key(token, fingerprint=FILTER.fingerprint(tenant_id="globex", order="asc"))
    assert [v.field for v in caught.value.violations] == ["page_token"]
    with pytest.raises(InvalidArgument, match="issued to this caller"):
        TOKENS.decode_key(token, fingerprint=FINGERPRINT, caller="another", kinds=KINDS)


@pytest.mark.parametrize(
    "payload",
    [
        {"v": 2, "f": FINGERPRINT, "s": 7},  # a seq token where a key is read
        {"v": 2, "f": FINGERPRINT, "k": KEY[:2]},
        {"v": 2, "f": FINGERPRINT, "k": [*KEY, 1]},
        {"v": 2, "f": FINGERPRINT, "k": ["1", 42, KEY[2]]},
        {"v": 2, "f": FINGERPRINT, "k": [True, 42, KEY[2]]},
        {"v": 2, "f": FINGERPRINT, "k": [-1, 42, KEY[2]]},
        {"v": 2, "f": FINGERPRINT, "k": [1, 42, 3]},
        {"v": 2, "f": FINGERPRINT, "k": {"a": 1}},
        {"v": 1, "f": FINGERPRINT, "k": KEY},
    ],
)
def test_a_key_token_holding_anything_else_is_invalid(payload: Any) -> None:
    with pytest.raises(InvalidArgument, match="issued to this caller") as caught:
        decode_key(token_of(payload))
    assert [v.field for v in caught.value.violations] == ["page_token"]


def test_a_key_token_is_no_seq_token() -> None:
    token = TOKENS.encode_key(fingerprint=FINGERPRINT, key=KEY, caller=CALLER)
    with pytest.raises(InvalidArgument, match="issued to this caller"):
        decode(token)
