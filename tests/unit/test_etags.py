"""Etags (AIP-154): the condition, and what a sink's etag is made of."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone

import pytest

from sealtrail_server.domain.errors import Aborted
from sealtrail_server.domain.etags import etag_of, instant, require_etag
from sealtrail_server.domain.sinks import SinkDefinition, sink_etag

AT = datetime(2026, 3, 1, 12, 30, tzinfo=UTC)
SPLUNK = SinkDefinition(
    name="SOC",
    kind="splunk_hec",
    format="ocsf",
    filter={"actions": ["user.*"]},
    destination={"url": "https://splunk.example/services/collector", "token": "0123456789abcdef"},
    paused=False,
)


def test_a_condition_holds_when_absent_or_met() -> None:
    require_etag("", '"abc"', what="policy")
    require_etag('"abc"', '"abc"', what="policy")
    with pytest.raises(Aborted, match="policy changed since etag") as aborted:
        require_etag('"abd"', '"abc"', what="policy")
    assert aborted.value.reason == "ETAG_MISMATCH"


def test_an_etag_is_a_quoted_checksum_of_the_fields_whatever_their_order() -> None:
    etag = etag_of({"a": 1, "b": [2, "x"]})
    assert etag == etag_of({"b": [2, "x"], "a": 1})
    assert etag != etag_of({"a": 1, "b": [2, "y"]})
    assert etag.startswith('"') and etag.endswith('"') and len(etag) == 34  # RFC 7232


def test_an_instant_is_the_same_in_every_time_zone() -> None:
    elsewhere = AT.astimezone(timezone(timedelta(hours=-5)))
    assert instant(elsewhere) == instant(AT) == "2026-03-01T12:30:00+00:00"
    assert instant(None) is None


def test_a_sinks_etag_changes_with_its_definition_and_update_time() -> None:
    variants = [
        SPLUNK,
        replace(SPLUNK, name="SOC 2"),
        replace(SPLUNK, format="json"),
        replace(SPLUNK, filter={"actions": ["admin.*"]}),
        replace(SPLUNK, paused=True),
        replace(SPLUNK, destination={**SPLUNK.destination, "url": "https://other.example/"}),
    ]
    etags = {sink_etag(variant, AT) for variant in variants}
    etags.add(sink_etag(SPLUNK, AT + timedelta(microseconds=1)))
    assert len(etags) == len(variants) + 1


def test_a_sinks_etag_tells_nothing_of_its_secret_beyond_the_hint_it_shows() -> None:
    # Same last four characters (the hint answers show), another secret: the
    # same etag. A rotation moves the update time, and so the etag.
    rotated = replace(SPLUNK, destination={**SPLUNK.destination, "token": "fedcba9876543210abcdef"})
    assert sink_etag(rotated, AT) == sink_etag(SPLUNK, AT)
