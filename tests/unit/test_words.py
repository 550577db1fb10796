"""Counts and details in messages as people read them: "1 tenant", not "1
tenants"; "HTTP 500 from host", not "HTTP 500 from host: " when the
destination said nothing."""

from __future__ import annotations

import grpc
import pytest

from sealtrail import SealtrailError
from sealtrail._cli_retention import _days
from sealtrail._words import counted, detailed, noun
from sealtrail_server.api.managed_sinks import Reconciled
from sealtrail_server.cli_sinks import _report
from sealtrail_server.domain.retention import RetentionLimits


def test_a_count_takes_the_noun_its_number_needs() -> None:
    assert counted(1, "tenant") == "1 tenant"
    assert [counted(n, "export") for n in (0, 2)] == ["0 exports", "2 exports"]
    assert counted(1, "entry", "entries") == "1 entry"
    assert counted(3, "entry", "entries") == "3 entries"
    assert counted(12345, "event", grouped=True) == "12,345 events"
    assert noun(1, "day") == "day" and noun(-1, "day") == "days"


def test_a_detail_that_says_nothing_leaves_no_separator_hanging() -> None:
    assert detailed("HTTP 500 from hooks.example.com", "") == "HTTP 500 from hooks.example.com"
    assert detailed("HTTP 500 from hooks.example.com", "  \n") == "HTTP 500 from hooks.example.com"
    assert detailed("cannot resolve x", TimeoutError()) == "cannot resolve x"
    assert detailed("HTTP 500 from h", "busy") == "HTTP 500 from h: busy"


def test_an_error_without_a_message_is_its_code_alone() -> None:
    """A status with no details (a proxy's UNAVAILABLE) read "UNAVAILABLE: "."""
    assert str(SealtrailError("", code=grpc.StatusCode.UNAVAILABLE)) == "UNAVAILABLE"
    said = SealtrailError("the log is busy", code=grpc.StatusCode.UNAVAILABLE)
    assert str(said) == "UNAVAILABLE: the log is busy"


def test_the_messages_that_said_one_in_the_plural_say_it_in_the_singular(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """ "made in 1 tenants", "at most 1 days": a count of one takes the
    singular wherever the server and the CLIs put a count before a noun."""
    _report("soc", Reconciled(created=["t-1"], updated=["t-2"]))
    assert capsys.readouterr().out == "soc: made in 1 tenant, changed in 1, removed from 0\n"
    _report("soc", Reconciled(created=["t-1", "t-2"]))
    assert capsys.readouterr().out.startswith("soc: made in 2 tenants,")

    assert RetentionLimits(ceiling=1).problem(5) == "must be at most 1 day, this tenant's plan"
    floor = RetentionLimits(min_days=1, ceiling=30).problem(0)
    assert floor == "must be at most 30 days, this tenant's plan"
    assert _days(1) == "1 day" and _days(7) == "7 days" and _days(0) == "forever"
