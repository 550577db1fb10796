"""Payment card numbers in free text: a brand's prefix and length, the Luhn
check, the groupings cards are printed in, and the IBANs whose digits look
like one."""

from __future__ import annotations

import re
from typing import Final

from .text_patterns import ValuePattern

# Card brands by their number's first digits (IIN ranges) and lengths: Visa,
# Mastercard (51-55, 2221-2720), American Express, Discover, JCB, Diners Club,
# UnionPay. A number of another prefix is taken for an id.
_CARD_BRANDS: Final = (
    # Visa's 13 digits are long retired, and as many unseparated digits are
    # a phone number written without its `+` as often (helper-191).
    (re.compile(r"4"), frozenset({16, 19})),
    (re.compile(r"5[1-5]|222[1-9]|22[3-9]\d|2[3-6]\d\d|27[01]\d|2720"), frozenset({16})),
    (re.compile(r"3[47]"), frozenset({15})),
    (re.compile(r"6011|64[4-9]|65"), frozenset(range(16, 20))),
    (re.compile(r"352[89]|35[3-8]\d"), frozenset(range(16, 20))),
    (re.compile(r"30[0-5]|36|38"), frozenset(range(14, 20))),
    (re.compile(r"62"), frozenset(range(16, 20))),
)
_CARD_SEPARATORS: Final = re.compile(r"[ .-]")


def _card_digits(number: str) -> str:
    """A card number as written, without its separators."""
    return _CARD_SEPARATORS.sub("", number)


def _payment_card(number: str) -> bool:
    """A card number as written (the pattern holds it to the groupings cards
    print): its digits a brand's length and prefix, passing the Luhn check.
    A random 16 digits passes the check one time in ten, so the brand is
    required too: an order number of another prefix is kept."""
    digits = _card_digits(number)
    if not any(prefix.match(digits) and len(digits) in lengths for prefix, lengths in _CARD_BRANDS):
        return False
    total = 0
    for position, digit in enumerate(reversed(digits)):
        value = int(digit) * (2 if position % 2 else 1)
        total += value - 9 if value > 9 else value
    return total % 10 == 0


# An IBAN as printed or stored (`DE89 3704 0044 0532 0130 00`): country code,
# check digits, then groups of 4 (the last shorter) by one kind of separator,
# or none; in capitals, as ISO 13616 writes it.
_IBAN: Final = re.compile(
    r"(?<![A-Za-z0-9])[A-Z]{2}\d\d([ .-]?)[A-Z0-9]{4}(?:\1[A-Z0-9]{4})*(?:\1[A-Z0-9]{1,3})?"
    r"(?![A-Za-z0-9])"
)
_IBAN_SEPARATORS: Final = re.compile(r"[ .-]")
# The furthest before a card's first digit an IBAN holding it starts: its
# country code, check digits and three groups, with their separators.
_IBAN_REACH: Final = 4 + 1 + 3 * 5


def _in_an_iban(text: str, start: int) -> bool:
    """Whether the card-like digits at `start` of `text` are part of an IBAN
    (`ES28 2100 4002 0002 0005 1332`: a bank account's 16 digits pass the
    Luhn check one time in ten). Only a whole IBAN whose check digits hold
    (ISO 7064 mod 97-10) counts: a run that only looked like one (`flight
    BA23 with 4111 …`, helper-200) kept the card beside it in clear."""
    for found in _IBAN.finditer(text, max(0, start - _IBAN_REACH)):
        if found.start() >= start:
            return False
        if found.end() > start and _iban_checks(_IBAN_SEPARATORS.sub("", found.group())):
            return True
    return False


def _iban_checks(iban: str) -> bool:
    """An IBAN's length and check digits: moved to the end, letters as 10 to
    35, the whole number is 1 modulo 97."""
    if not 15 <= len(iban) <= 34:
        return False
    return int("".join(str(int(c, 36)) for c in iban[4:] + iban[:4])) % 97 == 1


# Card numbers as written.
_CARD: Final = re.compile(
    # The first digit before the look-behinds: a pattern that starts with
    # a class is scanned for in C; one that starts with a look-behind is
    # tried at every position (twice the cost of redacting an event).
    r"\d"
    # Not inside a word or a number (`v4111…`, `0.4111…`, `+4111…`). After
    # `_`, `/`, `,`, `:`, a number or groups of 4 digits (`cc_4111…`,
    # `/cards/4111…/`, `10:32 4111 …`, `ref 2024 4111 …`) a card may stand;
    # inside an IBAN it is none (`_in_an_iban`).
    r"(?<![A-Za-z0-9+]\d)(?<!\d\.\d)"
    # Together, or grouped by one kind of separator as cards print them:
    # 4-4-4-4 (4-4-4-4-3 for 19 digits), American Express's 4-6-5, Diners
    # Club's 4-6-4.
    r"(?:\d{12,18}|\d{3}([ .-])(?:\d{4}\1\d{4}\1\d{4}(?:\1\d{3})?|\d{6}\1\d{4,5}))"
    # Not run on into a word or a longer number; an expiry or a CVV may
    # follow after a space (`4111… 12/25`, `4111… 123`), a list's comma too.
    r"(?![A-Za-z0-9_-]|[./:]\d)"
)
# The 16 digits of a 4-4-4-4-3 that failed the check: a card and its CVV,
# by whatever separator (`5555-5555-5555-4444-737`; helper-200: only a space
# was taken, the dash refused as running on).
_CARD_BEFORE_ITS_CVV: Final = re.compile(r"\d{4}([ .-])\d{4}\1\d{4}\1\d{4}(?=\1\d{3})")


# Not anchored: a card number starts with no literal, and an anchor of digits
# would send every text holding one through every rule. Searched on its own,
# this costs one scan of each string; the other rules run only where it
# matches. Not looked for in ids (an order number may look like one).
PAYMENT_CARD: Final = ValuePattern(
    "payment_card",
    _CARD,
    check=_payment_card,
    in_identifiers=False,
    # A 4-4-4-4-3 that fails the check is a 16-digit card and its CVV as
    # often (`4111 1111 1111 1111 123`): the 16 digits are tried alone.
    shorter=_CARD_BEFORE_ITS_CVV,
    # `2024 4111 1111 1111` of `ref 2024 4111 1111 1111 1111` is no card, and
    # the card starts inside it.
    overlapping=True,
    hmac_input=_card_digits,
    kept_at=_in_an_iban,
)
