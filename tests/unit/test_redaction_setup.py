"""An operator's redaction patterns, as the server loads them: compiled by
RE2, so that no pattern's time can grow faster than the text it reads; one
RE2 cannot run kept on Python's engine with a warning; a broken file or
pattern stops the server with its name."""

from __future__ import annotations

import json
import logging
import re
import time
from pathlib import Path
from typing import Any

import pytest

from sealtrail_server.config import Settings
from sealtrail_server.domain.redaction import Redactor
from sealtrail_server.redaction_setup import load_redactor
from tests.conftest import logged


def _load(tmp_path: Path, patterns: Any) -> Redactor:
    path = tmp_path / "patterns.json"
    path.write_text(json.dumps(patterns))
    redactor = load_redactor(Settings(data_dir=tmp_path, redact_patterns_file=path))
    assert redactor is not None
    return redactor


def _event(description: str) -> dict[str, Any]:
    return {
        "action": "secret.test",
        "actor": {"type": "user", "id": "u1"},
        "description": description,
    }


def test_operator_patterns_redact_with_re2(tmp_path: Path) -> None:
    redactor = _load(tmp_path, {"employee_badge": r"BADGE-\d{6}"})
    (badge,) = [pattern for pattern in redactor.patterns if pattern.name == "employee_badge"]
    assert not isinstance(badge.regex, re.Pattern)  # RE2's, not Python's
    redacted = redactor.redact(_event("über BADGE-123456 — and BADGE-654321 ✓")).body
    assert redacted["description"] == (
        "über [REDACTED:employee_badge] — and [REDACTED:employee_badge] ✓"
    )
    assert redactor.redact(_event("BADGE-12 only")).hits == []


@pytest.mark.parametrize(
    "regex",
    [
        "(a+)+b",
        # Too large for RE2's default memory (8 MiB, `\\w` being a Unicode
        # class): it ran on Python's engine, 13 s for 27 characters (helper-156).
        r"(?:\w+\s?){1,500}:",
    ],
)
def test_a_backtracking_pattern_costs_time_linear_in_the_text(tmp_path: Path, regex: str) -> None:
    """`(a+)+b` on Python's engine takes twice as long for each `a` more on a
    text without a `b` (22 of them: about a second); on RE2 the time follows
    the text. Each length's best of five; 2^6 = 64x apart if exponential."""
    redactor = _load(tmp_path, {"nested": regex})

    def best_time(length: int) -> float:
        times = []
        for _ in range(5):
            started = time.perf_counter()
            redactor.redact(_event("a" * length + "!"))
            times.append(time.perf_counter() - started)
        return min(times)

    short, long = best_time(16), best_time(22)
    assert long < 8 * max(short, 1e-4)


def test_a_pattern_re2_cannot_run_runs_on_pythons_engine_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="sealtrail_server.redaction_setup"):
        redactor = _load(tmp_path, {"after_pin": r"(?<=PIN )\d{4}"})
    (warning,) = logged(caplog, by="sealtrail_server.redaction_setup")
    assert "'after_pin'" in warning.getMessage() and "cannot run on RE2" in warning.getMessage()
    assert "invalid perl operator: (?<=" in warning.getMessage()  # RE2's own reason
    assert redactor.redact(_event("PIN 1234 used")).body["description"] == (
        "PIN [REDACTED:after_pin] used"
    )


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ({"broken": "(unclosed"}, "redaction pattern 'broken' in"),
        ({"everywhere": "x*"}, "matches the empty text"),
        (["not", "an", "object"], "must hold a JSON object"),
        # Not a string: each was compiled as the regex of its repr (helper-129).
        ({"ids": ["EMP-\\d{6}", "CTR-\\d{6}"]}, "pattern 'ids' in"),
        ({"badge": None}, "pattern 'badge' in"),
        ({"badge": True}, "must be a string"),
        ({"badge": 123456}, "must be a string"),
        # Refused by RE2 for their size, not for a feature it lacks: they ran
        # on Python's engine, whose time can grow exponentially (helper-156).
        ({"badge": r"BADGE-\d{1001}"}, "invalid repetition size"),
        ({"words": r"\w{1000}" * 8}, "pattern too large"),
        # Python's compiler recurses by the groups' depth: a traceback, naming nothing.
        ({"deep": "(" * 1100 + "x" + ")" * 1100}, "pattern 'deep' in"),
    ],
)
def test_a_broken_patterns_file_stops_the_server_with_its_name(
    tmp_path: Path, content: Any, message: str
) -> None:
    with pytest.raises(SystemExit) as stopped:
        _load(tmp_path, content)
    assert message in str(stopped.value) and "patterns.json" in str(stopped.value)
    # (One matching "" would have written its replacement between every two characters.)


@pytest.mark.parametrize(
    ("regex", "text", "secret", "on_re2"),
    [
        (r"PIN-\d{,6}", "PIN-4821 used", "PIN-4821", True),  # RE2 reads `{,6}` as text
        (r"geheim_\w+", "key geheim_müller123 set", "geheim_müller123", True),
        (r"acct\s\d+", "acct\u00a04711", "acct\u00a04711", True),  # a no-break space
        (
            r"\d{4}-\d{4}",
            "card \uff11\uff12\uff13\uff14-5678",
            "\uff11\uff12\uff13\uff14-5678",
            True,
        ),
        (r"BADGE-\d+$", "BADGE-123456\n", "BADGE-123456", False),  # `$` before a final newline
    ],
)
def test_an_operator_pattern_means_what_it_means_in_python(
    tmp_path: Path, regex: str, text: str, secret: str, on_re2: bool
) -> None:
    """RE2 reads `\\d`, `\\w`, `\\s` as ASCII and `{,n}` as text: run as written,
    these patterns kept the secrets they were written for (helper-76)."""
    redactor = _load(tmp_path, {"custom": regex})
    (custom,) = [pattern for pattern in redactor.patterns if pattern.name == "custom"]
    assert isinstance(custom.regex, re.Pattern) is not on_re2
    redacted = redactor.redact(_event(text)).body["description"]
    assert redacted == text.replace(secret, "[REDACTED:custom]")


@pytest.mark.parametrize("name", ["_", ".", "-", "_ - ."])
def test_a_field_name_of_separators_alone_stops_the_server(tmp_path: Path, name: str) -> None:
    """Keys compare without `_ - .` and spaces: such a name was the empty
    suffix of every key, and every value in `details` was hidden (helper-156)."""
    with pytest.raises(SystemExit) as stopped:
        load_redactor(Settings(data_dir=tmp_path, redact_fields=f"ssn, {name} "))
    assert "SEALTRAIL_REDACT_FIELDS" in str(stopped.value) and repr(name) in str(stopped.value)


@pytest.mark.parametrize(
    ("regex", "text", "secret"),
    [
        # `{0,4}` for `{4}`: empty at every word's start and end.
        # (a badge number: a card's the built-in rule finds first)
        (r"\b(?:\d{4}[- ]?){0,4}\b", "badge 1234 5678 9012 3456", "1234 5678 9012 3456"),
        (r"(?<=ticket )\w*", "see ticket #1 or ticket AB12", "AB12"),
    ],
)
def test_a_pattern_matching_empty_text_within_a_text_replaces_only_what_it_finds(
    tmp_path: Path, regex: str, text: str, secret: str
) -> None:
    """Such a pattern passes the startup check (it finds nothing in the empty
    text), then wrote its replacement beside every word of every event, keys
    included (helper-156): an empty match hides nothing, and is kept."""
    redactor = _load(tmp_path, {"custom": regex})
    plain = {**_event("User bob paid 20 EUR"), "details": {"note": "a b", "n": "0"}}
    assert redactor.redact(plain).hits == []
    redacted = redactor.redact(_event(text)).body["description"]
    assert redacted == text.replace(secret, "[REDACTED:custom]")


def test_redaction_turned_off_is_warned_of_at_startup(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Every secret sent is then stored for good, and nothing said so (helper-156)."""
    with caplog.at_level(logging.WARNING, logger="sealtrail_server.redaction_setup"):
        assert load_redactor(Settings(data_dir=tmp_path, redaction=False)) is None
    (warning,) = logged(caplog, by="sealtrail_server.redaction_setup")
    assert "SEALTRAIL_REDACTION=false" in warning.getMessage()
