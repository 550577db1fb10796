"""canonical_json against the reference RFC 8785 implementation, on values
normalised exactly as the API layer reads them off protobuf Structs."""

from __future__ import annotations

import json
from typing import Any

import pytest
import rfc8785
from google.protobuf import struct_pb2
from hypothesis import example, given, settings
from hypothesis import strategies as st

from sealtrail_server.api.convert import _JsonReader
from sealtrail_server.domain.canonical import canonical_json, plain_key, plain_number, plain_value
from sealtrail_server.domain.event import MISSING, ChangeDraft, plain_values

SAFE = 2**53 - 1  # rfc8785 refuses ints of magnitude 2**53 and more

# Any Unicode scalar value (protobuf strings must be valid UTF-8, so no lone
# surrogates): controls, U+2028, private use, astral planes...
text = st.text(st.characters(exclude_categories=["Cs"]), max_size=12)
tricky_text = st.sampled_from(
    ["", "\x1f", "\x7f", '"', "\\", "\u2028", "\ue000", "\uffff", "\U0001f600", "é", "a\x00b"]
)
keys = text | tricky_text

scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-SAFE, max_value=SAFE)
    | st.floats(allow_nan=False, allow_infinity=False)
    | text
    | tricky_text
)
json_values = st.recursive(
    scalars,
    lambda children: st.lists(children, max_size=5) | st.dictionaries(keys, children, max_size=5),
    max_leaves=25,
)
json_objects = st.dictionaries(keys, json_values, max_size=6)


def read_like_the_api(value: dict[str, Any]) -> tuple[Any, bool]:
    """`value` sent as a protobuf Struct and read back by the API layer."""
    struct = struct_pb2.Struct()
    struct.update(value)
    reader = _JsonReader()
    result = reader.struct(struct, "details")
    return result, reader.plain


def expected_plain(value: Any) -> bool:
    """No float left anywhere and no key with a character at or above U+E000."""
    if isinstance(value, float):
        return False
    if isinstance(value, list):
        return all(expected_plain(item) for item in value)
    if isinstance(value, dict):
        return all(
            (not key or max(key) < "\ue000") and expected_plain(item) for key, item in value.items()
        )
    return True


@settings(max_examples=400, deadline=None)
@given(json_objects)
@example({"x": 1e-7, "y": 1e21, "z": 0.1})
@example({"neg_zero": -0.0, "two53": float(2**53), "e16": 1e16, "frac": 123456789.123})
@example({"\ue000": 1, "\U0001f600": 2})
@example({"\u2028": "\u2028", "\x1f": "\x1f", '"': '"', "\\": "\\"})
@example({"nested": {"\U0001f600": [1.5, {"\ue000": None}]}, "": [True, False, None]})
def test_canonical_json_matches_rfc8785_on_api_read_values(value: dict[str, Any]) -> None:
    normalised, plain = read_like_the_api(value)
    assert plain == expected_plain(normalised)
    reference = rfc8785.dumps(normalised)
    assert canonical_json(normalised, plain=plain) == reference
    assert canonical_json(normalised, plain=False) == reference
    # Normalisation must not change what the value canonicalises to.
    assert rfc8785.dumps(value) == reference


@settings(max_examples=300, deadline=None)
@given(json_values)
def test_any_json_value_nested_in_a_struct_canonicalises_like_rfc8785(value: Any) -> None:
    normalised, plain = read_like_the_api({"v": value})
    assert canonical_json(normalised, plain=plain) == rfc8785.dumps(normalised)
    assert canonical_json(normalised["v"], plain=plain) == rfc8785.dumps(normalised["v"])


@pytest.mark.parametrize(
    ("number", "expected"),
    [
        (1e-7, b"1e-7"),
        (1e21, b"1e+21"),
        (0.1, b"0.1"),
        (-0.0, b"0"),
        (float(2**53), b"9007199254740992"),
        (1e16, b"10000000000000000"),
        (123456789.123, b"123456789.123"),
        (1.0, b"1"),
        (-5e-324, b"-5e-324"),
        (1.7976931348623157e308, b"1.7976931348623157e+308"),
    ],
)
def test_numbers_take_their_jcs_form(number: float, expected: bytes) -> None:
    normalised, plain = read_like_the_api({"n": number})
    assert canonical_json(normalised, plain=plain) == b'{"n":' + expected + b"}"
    assert rfc8785.dumps(normalised) == b'{"n":' + expected + b"}"


@pytest.mark.parametrize(
    ("number", "as_int"),
    [
        (0.0, 0),
        (-0.0, 0),
        (3.0, 3),
        (-7.0, -7),
        (float(2**53 - 1), 2**53 - 1),
        (float(-(2**53) + 1), -(2**53) + 1),
        (float(2**53), None),
        (float(-(2**53)), None),
        (1e16, None),
        (0.5, None),
        (1e-7, None),
    ],
)
def test_plain_number_keeps_only_exact_small_integers(number: float, as_int: int | None) -> None:
    result = plain_number(number)
    assert result == as_int
    assert result is None or type(result) is int


def test_reader_normalises_integral_numbers_and_flags_floats() -> None:
    normalised, plain = read_like_the_api({"a": 3, "b": [1, 2.0, {"c": -0.0}]})
    assert normalised == {"a": 3, "b": [1, 2, {"c": 0}]}
    assert type(normalised["a"]) is int
    assert type(normalised["b"][2]["c"]) is int
    assert plain is True
    normalised, plain = read_like_the_api({"a": [1, {"b": 2.5}]})
    assert normalised == {"a": [1, {"b": 2.5}]}
    assert plain is False


@pytest.mark.parametrize(
    ("key", "plain"),
    [
        ("", True),
        ("abc", True),
        ("\ud7ff", True),
        ("\ue000", False),
        ("a\U0001f600", False),
        ("\uffff", False),
    ],
)
def test_plain_key_is_false_from_u_e000(key: str, plain: bool) -> None:
    assert plain_key(key) is plain


def test_keys_sort_by_utf16_code_units() -> None:
    value = {"\ue000": 1, "\U0001f600": 2, "a": 3}
    normalised, plain = read_like_the_api(value)
    assert plain is False
    # U+1F600 is D83D DE00 in UTF-16, which sorts before E000.
    expected = '{"a":3,"\U0001f600":2,"\ue000":1}'.encode()
    assert canonical_json(normalised, plain=plain) == expected
    assert rfc8785.dumps(value) == expected
    # The fast path (code-point order) would get it wrong, which is why the flag exists.
    assert canonical_json(normalised, plain=True) != expected


@pytest.mark.parametrize(
    ("string", "expected"),
    [
        ("\u2028", '"\u2028"'.encode()),
        ("\u2029", '"\u2029"'.encode()),
        ("\x1f", b'"\\u001f"'),
        ("\x00", b'"\\u0000"'),
        ("\x08\t\n\x0c\r", b'"\\b\\t\\n\\f\\r"'),
        ('"', b'"\\""'),
        ("\\", b'"\\\\"'),
        ("/", b'"/"'),
        ("\x7f", b'"\x7f"'),
        ("é\U0001f600", '"é\U0001f600"'.encode()),
    ],
)
@pytest.mark.parametrize("plain", [True, False])
def test_strings_escape_as_jcs_does(string: str, expected: bytes, plain: bool) -> None:
    assert canonical_json(string, plain=plain) == expected
    assert canonical_json({string: string}, plain=plain) == b"{" + expected + b":" + expected + b"}"
    assert rfc8785.dumps(string) == expected


def test_output_is_compact_utf8_json_that_round_trips() -> None:
    value = {"b": [1, True, None, "ü"], "a": {"y": "", "x": 0}}
    out = canonical_json(value, plain=True)
    assert out == '{"a":{"x":0,"y":""},"b":[1,true,null,"ü"]}'.encode()
    assert json.loads(out) == value


@pytest.mark.parametrize("plain", [True, False])
def test_non_finite_numbers_are_refused(plain: bool) -> None:
    with pytest.raises(ValueError):
        canonical_json({"n": float("nan")}, plain=plain)


# Values Sealtrail builds itself (its own events' details and changes): any
# int, tuples, and keys or values rfc8785 refuses.
built_scalars = (
    scalars
    | st.integers()
    | st.sampled_from([2**53 - 1, 2**53, -(2**53) + 1, -(2**53), 1.0, -0.0, 10**30])
)
built_values = st.recursive(
    built_scalars,
    lambda children: (
        st.lists(children, max_size=5)
        | st.lists(children, max_size=3).map(tuple)
        | st.dictionaries(keys, children, max_size=5)
    ),
    max_leaves=25,
)


@settings(max_examples=400, deadline=None)
@given(st.dictionaries(keys, built_values, max_size=6))
@example({"seq": 2**53, "n": 1.0, "t": (1, "\ue000")})
@example({"\U0001f600": {"a": 1}, "\ue000": None})
def test_a_value_built_in_python_is_plain_only_where_both_paths_agree(
    value: dict[str, Any],
) -> None:
    try:
        reference = rfc8785.dumps(value)
    except rfc8785.CanonicalizationError:
        assert not plain_value(value)  # left to rfc8785, to refuse as before
        return
    if plain_value(value):
        assert canonical_json(value, plain=True) == reference
    assert canonical_json(value, plain=plain_value(value)) == reference


@pytest.mark.parametrize(
    ("value", "plain"),
    [
        (None, True),
        ({"filter": {"actions": ["a.b"]}, "page_size": 100, "ok": True}, True),
        ({"limit": 2**53 - 1}, True),
        ({"limit": 2**53}, False),  # rfc8785 refuses it: left to it
        ({"ratio": 0.5}, False),
        ({"whole": 1.0}, False),  # a float, even integral: JCS writes 1, json 1.0
        ({"\ue000": 1}, False),
        ({1: "a"}, False),  # json.dumps would write "1"; rfc8785 refuses it
        ({"at": object()}, False),
    ],
)
def test_plain_value(value: Any, plain: bool) -> None:
    assert plain_value(value) is plain


def test_plain_values_of_an_own_event_count_each_change_set_and_skip_those_missing() -> None:
    assert plain_values({"a": 1}, [ChangeDraft("x", before=MISSING, after={"days": 30})])
    assert plain_values(None, [ChangeDraft("x")])
    assert not plain_values({"a": 1}, [ChangeDraft("x", before=0.5)])
    assert not plain_values({"a": 1.5}, [])
