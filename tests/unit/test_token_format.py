"""The shape of API tokens (ADR 0111): a new token carries a checksum of its
random part, which a secret scanner can check, and docs/api.md publishes
the pattern and a gitleaks rule that find it."""

from __future__ import annotations

import re
import tomllib
import zlib
from pathlib import Path

from sealtrail_server.domain.access import (
    LEGACY_TOKEN_PATTERN,
    TOKEN_PATTERN,
    new_token,
    token_well_formed,
)

_API_DOC = Path(__file__).resolve().parents[2] / "docs" / "api.md"
_BASE62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
# The example docs/api.md gives: its 43 random characters, and their checksum.
_EXAMPLE = "stk_SealtrailExampleTokenOnlyNotARealSecret01231WNqTA"


def _base62_crc32(text: str) -> str:
    """CRC-32 (IEEE, as zlib and Go's hash/crc32) of `text` in 6 base62
    digits, most significant first: what docs/api.md describes."""
    value = zlib.crc32(text.encode("ascii"))
    digits = ""
    for _ in range(6):
        value, digit = divmod(value, 62)
        digits = _BASE62[digit] + digits
    return digits


def test_a_new_token_is_43_random_base62_characters_and_their_checksum() -> None:
    tokens = {new_token() for _ in range(200)}
    assert len(tokens) == 200
    for token in tokens:
        assert re.fullmatch(r"stk_[0-9A-Za-z]{49}", token), token
        random_part, checksum = token[4:47], token[47:]
        assert checksum == _base62_crc32(random_part)
        assert token_well_formed(token)
    # Every base62 character turns up in the random parts (256 bits' worth:
    # 62 ** 43 > 2 ** 256), none in the checksums past the range of 32 bits.
    assert set("".join(token[4:47] for token in tokens)) == set(_BASE62)
    assert 62**43 > 2**256


def test_the_documented_example_holds_and_a_changed_character_breaks_it() -> None:
    assert _EXAMPLE in _API_DOC.read_text("utf-8")
    assert token_well_formed(_EXAMPLE)
    for at in range(4, len(_EXAMPLE)):
        changed = "x" if _EXAMPLE[at] != "x" else "y"
        broken = _EXAMPLE[:at] + changed + _EXAMPLE[at + 1 :]
        assert TOKEN_PATTERN.fullmatch(broken)  # the shape of a token...
        assert not token_well_formed(broken)  # ...whose checksum fails


def test_a_token_issued_before_checksums_keeps_its_shape() -> None:
    """Tokens issued before ADR 0111 (`stk_` and 43 base64url characters)
    have no checksum: told apart by their length, they are well formed."""
    legacy = "stk_3f9aK2mQ8xW1zR7tY4pL6nB0vC5dH9jG-_aB3cD4eF5g"[:47]
    assert LEGACY_TOKEN_PATTERN.fullmatch(legacy)
    assert token_well_formed(legacy)
    assert not token_well_formed(legacy[:-1])
    assert not token_well_formed(new_token()[:-1])
    assert not token_well_formed(new_token() + "A")


def test_the_documented_gitleaks_rule_finds_new_tokens_only_whole() -> None:
    """The rule sample in docs/api.md parses as TOML, and its regex (RE2, as
    gitleaks compiles it; this one means the same under Python's re) finds a
    token wherever text puts it, every one of several, and neither an old
    token nor a longer run."""
    doc = _API_DOC.read_text("utf-8")
    sample = re.search(r"```toml\n(.*?)```", doc, re.DOTALL)
    assert sample is not None
    rule = tomllib.loads(sample.group(1))["rules"][0]
    assert rule["keywords"] == ["stk_"]
    regex = re.compile(rule["regex"])
    token = new_token()
    places = (
        token,
        f"SEALTRAIL_TOKEN={token}",
        f'"token": "{token}"',
        f"Bearer {token}\n",
        # After a percent-encoded character or an escaped line break, as
        # redaction finds it (ADR 0111): those end in a letter or digit.
        f"GET /cb?auth=Bearer%20{token}&x=1",
        f"next=%2Fcb%3Fid%3D{token}",
        f'"log": "said:\\n{token}\\n"',
    )
    for text in places:
        found = regex.search(text)
        assert found is not None and found.group(rule.get("secretGroup", 0)) == token, text
    legacy = "stk_" + "a1B2-c3D4_" * 4 + "e5F"
    for text in (legacy, token + "x", "x" + token, "_" + token, token + "_"):
        assert regex.search(text) is None, text
    # Several in a row, one character apart: each (a boundary is not taken
    # from the next token).
    tokens = [new_token() for _ in range(3)]
    for separator in (",", " ", "%20", "\\n"):
        text = separator.join(tokens)
        assert [found.group(rule["secretGroup"]) for found in regex.finditer(text)] == tokens
