"""Redaction: secrets are removed from an event before it is canonicalized and
hashed, because a hashed secret is committed forever.

Three kinds of rule, each applied to the caller's part of the record:

- field names: a value under a denied key (`password`, `api_key`, ...) in
  `details` at any depth, or the before/after of a change whose `field` is
  denied, or the value of a name/value pair whose name is denied, is
  replaced whole, whatever its type (but flags and counts: a boolean, a
  number under `tokens`);
- value patterns: a secret found inside any free-text string (description,
  actor display name, resource name, user agent, and every string in
  `details` and `changes`) is replaced where it stands, the surrounding text
  kept; the actor's and the resource's ids are searched for secrets of a
  known shape only (tokens, URL passwords, keys), and so is each of the
  actor's roles (`actor.roles`, names filtered on exactly, as ids are);
  other identifiers (action,
  resource type, email, ip) are left as they are;
- API-key actors: the id of an `api_key` actor keeps its last 4 characters.

A tenant's personal-data field names (`ssn`, `phone`) deny keys as field names
do, by the same rules, under a rule of their own (`personal_data`): a
`Redactor` with them is one of its own (`for_personal_data`), with memories
of its own.

A replaced value becomes `[REDACTED:<rule>]`, or, in HMAC mode,
`hmac-sha256:<hex>`: HMAC-SHA256 under a per-tenant key of the secret's text
(a card's digits alone; its RFC 8785 JSON when it is not a string), so equal secrets still
correlate and an investigator holding the value can find it.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import unicodedata
from bisect import bisect_left
from collections.abc import Callable, Collection, Container, Iterable
from dataclasses import dataclass, field, replace
from functools import partial
from itertools import pairwise
from typing import Any, Final, NamedTuple

from .canonical import canonical_json
from .errors import FieldViolation, InvalidArgument
from .event import MAX_HTTP_ROUTE, MAX_ID, MAX_ROLE, ValidEvent, search_names
from .json_path import JsonPath, path_text
from .payment_cards import PAYMENT_CARD
from .secret_shapes import HIGH_ENTROPY_ASSIGNMENT, KNOWN_SHAPES, basic_credentials, random_value
from .text_patterns import QUOTE, TextPattern, ValuePattern, value_pattern

FIELD_NAME_RULE: Final = "field_name"
# A tenant's personal-data field names (its settings' `personal_data_fields`).
PERSONAL_DATA_RULE: Final = "personal_data"
ASSIGNMENT_RULE: Final = "secret_assignment"
# An id whose secrets, replaced, would make it longer than an id may be.
WHOLE_ID_RULE: Final = "id_of_secrets"
API_KEY_VISIBLE: Final = 4
HMAC_PREFIX: Final = "hmac-sha256:"

# Denied keys, compared lowercased with `_`, `-`, `.` and spaces removed; a key
# is denied when it is one of these or ends with one (`db_password`,
# `githubToken`, `aws_secret_access_key`) or its plural (`api_keys`), whatever
# follows its last letter (`token2`, `GITHUB_TOKEN_2`).
DEFAULT_FIELD_NAMES: Final = frozenset(
    {
        "password",
        "passwd",
        "passphrase",
        "pwd",
        "secret",
        "secrets",
        "token",
        "tokens",
        "authorization",
        "cookie",
        "cookies",
        "setcookie",
        "apikey",
        "privatekey",
        "secretkey",
        "accesskey",
        "credential",
        "credentials",
        "sessionid",
        # A card's security code: `cvv` to Visa, `cvc` to Mastercard, Stripe
        # and Adyen, `security_code` to PayPal and others.
        "cvv",
        "cvc",
        "securitycode",
        "encryptionkey",
        "signingkey",
        # One-time and recovery codes, PINs and wallet phrases: each a credential.
        "otp",
        "totp",
        "hotp",
        "otpcode",
        "mfacode",
        "passcode",
        "pin",
        "pincode",
        "recoverycode",
        "recoverycodes",
        "backupcode",
        "backupcodes",
        "mnemonic",
        "seedphrase",
    }
)

# Words that make a key denied wherever they stand in it (`password_confirmation`,
# `passwordHash`, `api_key_2`), unless the key ends with a word saying it is
# about the secret rather than the secret (`password_changed_at`, `api_key_id`;
# a word of the key's, not letters ending one: `API_KEY_ANDROID`, `password_admin`).
STRONG_FIELD_WORDS: Final = (
    "password",
    "passwd",
    "passphrase",
    "privatekey",
    "secretkey",
    "apikey",
    "clientsecret",
    "accesskey",
)
ABOUT_THE_SECRET: Final = (
    "changedat",
    "updatedat",
    "createdat",
    "expiresat",
    "resetat",
    "lastchanged",
    "changed",
    "updated",
    "created",
    "expires",
    "expired",
    "expiry",
    "count",
    "policy",
    "length",
    "strength",
    "rules",
    "enabled",
    "required",
    "reset",
    "age",
    "id",
    "ids",
    "version",
    "type",
    "name",
    "prefix",
    "suffix",
    "last4",
    "hint",
    "scope",
    "scopes",
    "path",
    "file",
    "ref",
    "days",
    "min",
    "max",
    "uppercase",
    "lowercase",
    "digits",
    "symbols",
    "less",
    "manager",
    "method",
    "mode",
    "status",
    "state",
)

# Short names that name a secret as a key's last word (`db_pass`, `smtpPass`,
# `root-pw`, `proxy_auth`; never inside a word: `bypass`, `compass`), but name
# other things too (`boarding_pass`, `first_pass`, `"auth": "sso"`): under
# them only a value shaped like the secret is hidden (`_password_shaped`,
# `_credentials_shaped`). Under a key that is `pass` or `pw` alone, any text.
PASSWORD_WORDS: Final = frozenset({"pass", "pw"})
AUTH_WORDS: Final = frozenset({"auth"})
_SHORT_WORDS: Final = tuple(PASSWORD_WORDS | AUTH_WORDS)

# Plural denied names that also name a count: a number under them is kept
# (`total_tokens: 20` of a model's usage), as under the plural of any denied
# name (`api_keys: 2`) and under a key starting with a limit (`max_token: 1000`).
_COUNTABLE: Final = ("tokens", "secrets", "credentials", "cookies")
_LIMITS: Final = frozenset({"max", "min"})

# Denied names that end ordinary words (`spin`, `hairpin`, `linchpin`): they
# name a secret only as a key's last word (`card_pin`, `cardPin`, `pins`, `pin1`).
_WHOLE_WORD_NAMES: Final = frozenset({"pin"})


# (`total_tokens: 22`).
_NOT_ASSIGNED: Final = frozenset({"authorization", "cookie", "cookies", "setcookie"}) | {
    name for name in _COUNTABLE if name != "credentials"
}
# A hash of a secret that can be guessed (a password, a PIN, a card's security
# code, a one-time code, an operator's name such as `ssn`) is a secret too: the
# secret can be found from it offline by hashing guesses (a PIN's or a CVV's in
# a moment). A key that is such a name and then one of these words denies, as
# does the name in text (`pwd_hash`, `cardPinHash`, `otp_digest`, `pin_hash=`).
_HASH_WORDS: Final = ("hash", "hashed", "digest")
# Secrets a machine makes at random, whose hash cannot be cracked: it is what
# services look a token up by (`token_hash`, `session_id_hash` are kept, but
# for the words denied wherever they stand: `api_key_hash`).
_RANDOM_SECRETS: Final = _NOT_ASSIGNED | {
    "token",
    "tokens",
    "apikey",
    "accesskey",
    "privatekey",
    "secretkey",
    "credential",
    "credentials",
    "sessionid",
    "encryptionkey",
    "signingkey",
    "mnemonic",
    "seedphrase",
}
# What may stand between two letters of a name in text (`session_id`, `API-KEY`).
_NAME_GAP: Final = "[_-]?"
# The names `secret_assignment` looked for before helper-129 (c9cd2e0): with a
# `:` after them in prose they still name a secret (`Password: hunter2`).
_PROSE_NAMES: Final = frozenset(
    {"password", "passwd", "passphrase", "pwd", "secret", "token"}
    | {"apikey", "accesskey", "privatekey", "credential", "credentials"}
)
# Where a value that is one word ends: a sentence's punctuation may follow it
# (`PIN: 4821.`, `--password option.`) before a space, a quote or the end.
_WORD_END: Final = r"[.!?:)]*+(?![^\s\"'&,;])"


def _secret_assignment(names: frozenset[str], *, personal: bool = False) -> ValuePattern:
    """The value assigned to a denied name (normalized `names`) in text:
    `password=…`, `"pin": "…"`, `'password' => '…'` (Ruby, PHP), `--password …`
    or `--db-password=…` (a command line); a quoted value whole, spaces and
    escaped quotes and all (`password="correct \\"horse\\""`), up to an
    escaped closing quote when it opened with one (JSON inside a string).

    The name is matched from its secret word on, never from where it starts:
    a prefix class before the word made each boundary of a long run of
    `a.a.a.` rescan the run (quadratic, seconds of CPU for 4 KiB). A name that
    ends ordinary words (`pin`: `spin`) has no letter before it. Whitespace
    is read by possessive quantifiers: a flag's `\\s+` and then a `\\s*`
    split a run of N spaces N ways at each failed try (`--password` and
    64 KiB of spaces held the event loop for minutes).

    Prose speaks of secrets by these names ("Reset PIN: required by policy",
    "use --password when prompted"): any `name: value` counts only for the
    names of old (`_PROSE_NAMES`), the others count in a structured form, and
    a flag's value only when it is no lowercase word.

    `personal`: a tenant's personal-data names, whose values prose writes
    after a colon (`Customer SSN: 123-45-6789`, `Phone: +44…`): there `:`
    counts before a value starting with a digit or `+` too, not only one of
    digits alone; a word after it is still prose (`Phone: required`)."""
    quoted = QUOTE
    digits = (
        r"\+?\d" if personal else rf"\d++{_WORD_END}"
    )  # a quote, or one escaped (JSON inside a string: `\"`, `\u0022`)
    number = r"(?:[_-]?\d++)?"  # `GITHUB_TOKEN_2`, `pin1`
    # `=>` in prose is an arrow ("password => changed"): an assignment with
    # its name or its value quoted (PHP's `'password' => …`, Ruby's `:pin => '…'`).
    arrow = rf"{quoted}\s*+=>|\s*+=>(?=\s*+{quoted})"
    # `=` percent-encoded, as in a URL inside a URL's query (`next=%2Fcb%3Ftoken%3D…`).
    encoded = "%3d"
    # JSON percent-encoded, as a query or a form carries a body
    # (`q=%7B%22password%22%3A%22…%22%7D`): the name's quotes, `:`, the value's quote.
    encoded_json = r"%2[27](?:%20)*+%3a(?:%20)*+%2[27]"
    pattern = value_pattern(
        ASSIGNMENT_RULE,
        rf"(?i)(?:(?:{_names(names & _PROSE_NAMES)}){number}"
        rf"(?:{quoted}?\s*+(?:=(?!>)|:)|{arrow}|{encoded}|{encoded_json})"
        # The other names (`pin`, `session_id`, an operator's): quoted, or with
        # `=`, or with `:` and a value quoted or of digits (`PIN: 4821`).
        rf"|(?:{_names(names - _PROSE_NAMES)}){number}(?:{quoted}\s*+:|{quoted}?\s*+=(?!>)"
        rf"|{arrow}|{encoded}|{encoded_json}|\s*+:(?=\s*+(?:{quoted}|{digits})))"
        # A long flag (`--password`, `--db-password`; `--no-password` says there
        # is none) where an argument starts, and a value that is no flag nor a
        # lowercase word: quoted, or with a capital, a digit or a symbol in it.
        rf"|--(?<![^\s\"']--)(?!no-)(?:[a-z0-9]+-)*(?:{_names(names)})\s++(?!-)"
        rf"(?={quoted}|(?!(?-i:[a-z])*+{_WORD_END})))\s*+{quoted}?"
        # A percent-encoded value, to the `%26` (`&`) that ends it.
        rf"((?<={encoded})(?:[^\s\"'&,;%]|%(?!26))*+"
        # ... and one of JSON, to its encoded closing quote (or `&`).
        r"|(?<=%2[27])(?:[^\s\"'&,;%]|%(?!2[267]))*+"
        r"|(?<=\\\")(?:[^\"\\]|\\[^\"])+|(?<=\")(?<!\\\")(?:[^\"\\]|\\.)+"
        # To the `\u0022` or `\u0027` that closes one opened so.
        r"|(?<=\\u0022)(?:[^\\]|\\(?!u0022))++|(?<=\\u0027)(?:[^\\]|\\(?!u0027))++"
        r"|(?<=')(?:[^'\\]|\\.)+|[^\s\"'&,;]{4,})",
        1,
        anchor="=|:|--|%3[DdAa]",
        in_identifiers=False,
    )
    return replace(pattern, kept_match=_in_a_secrets_arn)


# A Secrets Manager secret's ARN, to the `secret:` before the secret's name
# (`arn:aws:secretsmanager:eu-west-1:123456789012:secret:prod/db-AbCdEf`): a
# resource type, not a name assigned a value. Looked for within the 128
# characters before a value, at their end.
_SECRETS_ARN: Final = re.compile(r"arn:aws(?:-[a-z]+)*:secretsmanager:[a-z0-9-]*:\d{12}:secret:\Z")
_SECRETS_ARN_REACH: Final = 128
# The name itself: letters, digits and `/_+.@-`, as Secrets Manager takes
# them (`/` escaped as PHP's JSON writes it, `\\/`), a sentence's
# punctuation after it; and, as ECS's `valueFrom` writes it, the JSON key,
# version stage and version id after it (`prod/db-AbCdEf:password::`). The
# value the rule reads runs on to a space, a quote, `&`, `,` or `;`: kept
# whole, it kept what was written after the name too
# (`…:secret:prod/db-AbCdEf|db_password=…`). `=`, which a name may hold,
# reads as an assignment: such a value is replaced.
_SECRETS_NAME: Final = re.compile(
    r"(?:[A-Za-z0-9/_+.@-]|\\/)+(?::[A-Za-z0-9_.-]*:[A-Za-z0-9_.-]*:[A-Za-z0-9-]*)?[.!?:)]*"
)


def _in_a_secrets_arn(match: re.Match[str]) -> bool:
    """Whether the value the rule matched is the name of a secret in its
    ARN: the record of who read or changed which secret (CloudTrail's
    `secretId`) lost the secret's name. Only this shape: `secret: …`
    elsewhere is a secret still, and so is a value with more than a name."""
    text, start = match.string, match.start(1)
    return (
        _SECRETS_ARN.search(text, max(0, start - _SECRETS_ARN_REACH), start) is not None
        and _SECRETS_NAME.fullmatch(match.group(1)) is not None
    )


# An element's text: a CDATA section's (which may hold `<` and `>`: to its
# `]]>`, not past another section's start, so that a run of openings is read
# once), or the text to the next `<` or `>`. One group, the text alone.
_ELEMENT_TEXT: Final = (
    r"(?:<!\[CDATA\[)?+"
    r"((?<=<!\[CDATA\[)(?:[^\]<]|\](?!\]>)|<(?!!\[CDATA\[))++(?=\]\]>)"
    r"|(?<!<!\[CDATA\[)[^<>]++)"
    r"(?:\]\]>)?+"
)


def _secret_element(names: frozenset[str]) -> ValuePattern:
    """The text of an XML element of a denied name (normalized `names`),
    `<password>…</password>`, `<wsse:Password Type="…">…</wsse:Password>` as
    SOAP's WS-Security sends it, to its closing tag, which must name it too:
    `</password>tail</a>` is the end of one, and `tail` is kept. A closing
    tag may be escaped as JSON writes it (`<\\/password>`). A CDATA
    section's text (`<password><![CDATA[…]]></password>`), without its markup.

    Linear: a name's attributes are read for 256 characters at most, the
    closing tag's prefix (`wsse:`, `db_`) for 64, so that few names reach
    one `>`, and the text after it to the next `<` or `>`: a run of
    `pwd pwd pwd …` read each to its end."""
    return ValuePattern(
        ASSIGNMENT_RULE,
        re.compile(
            rf"(?i)((?:{_names(names)})(?:[_-]?\d++)?)(?:\s[^<>]{{0,256}}+)?>"
            rf"{_ELEMENT_TEXT}<\\?/[^<>\s]{{0,64}}?\1>"
        ),
        2,
        anchor="</|<\\\\/",
        in_identifiers=False,
    )


def _secret_attribute(names: frozenset[str]) -> ValuePattern:
    """The `value` attribute of an element whose `key` or `name` attribute
    ends with a denied name (normalized `names`): `<add key="Password"
    value="…"/>` as .NET's configuration files keep settings, `<param
    name="db.password" value="…"/>`, either attribute first. A quote may be
    escaped as JSON writes it (`key=\\"Password\\"`).

    Linear: the attributes are read within one tag (to its `<` or `>`), for
    512 characters at most, the key's prefix (`Smtp:`, `Db`) for 64."""
    quote = QUOTE
    key = (
        rf"\s(?:key|name)\s*+=\s*+({quote})[^\"'<>\\]{{0,64}}?"
        rf"(?:{_names(names)})(?:[_-]?\d++)?\1"
    )
    value = rf"\svalue\s*+=\s*+({quote})((?:(?!\2)[^<>])++)\2"
    return ValuePattern(
        ASSIGNMENT_RULE,
        # The key looked for ahead from the tag's name, so that it may stand
        # before the value or after it.
        re.compile(rf"(?i)<[a-z][\w:.-]*+(?=[^<>]{{0,512}}?{key})[^<>]{{0,512}}?{value}"),
        3,
        anchor="=",
        in_identifiers=False,
    )


def _secret_keyed_element(names: frozenset[str]) -> ValuePattern:
    """The text of an element whose `key` or `name` attribute ends with a
    denied name (normalized `names`), to its closing tag: `<entry
    key="db.password">…</entry>` as Java's properties are kept in XML,
    `<property name="hibernate.connection.password">…</property>` (Spring's,
    Hibernate's, Ant's), a CDATA section's text too. An element that closes
    itself has none (`<add key="Password" value="…"/>`: `_secret_attribute`).

    Linear: the attributes are read within one tag, for 512 characters at
    most (the key's prefix for 64), and the text as `_secret_element` reads it."""
    quote = QUOTE
    key = (
        rf"\s(?:key|name)\s*+=\s*+({quote})[^\"'<>\\]{{0,64}}?"
        rf"(?:{_names(names)})(?:[_-]?\d++)?\2"
    )
    return ValuePattern(
        ASSIGNMENT_RULE,
        re.compile(
            rf"(?i)<([a-z][\w:.-]*+)(?=[^<>]{{0,512}}?{key})[^<>]{{0,512}}+(?<!/)>"
            rf"{_ELEMENT_TEXT}<\\?/\1>"
        ),
        3,
        anchor="</|<\\\\/",
        in_identifiers=False,
    )


# mysql's password glued to its `-p` on a command line (`mysql -u root
# -pS3cret`, `mysqldump -p'…'`): within 256 characters of the program's name,
# on its line and in its command (not past `|`, `;` or `&`). Lowercase: `-P`
# is its port; and only after mysql's programs: `-p` is psql's port, mkdir's
# parents. Linear: from each name, 256 characters at most, then the value to
# its quote or space.
_MYSQL_PASSWORD: Final = ValuePattern(
    ASSIGNMENT_RULE,
    re.compile(
        r"(?<![\w.-])(?:mysql(?:dump|admin|import|show|check|binlog|slap)?"
        r"|mariadb(?:-?dump|-?admin|-?import|-?show|-?check|-?binlog|-?slap)?)(?![\w.-])"
        r"[^\n|;&]{0,256}?\s-p[\"']?+"
        r"((?<=')[^'\n]++(?=')|(?<=\")[^\"\n]++(?=\")|(?<![\"'])[^\s\"'&;|]++)"
    ),
    1,
    anchor="mysql|mariadb",
    in_identifiers=False,
)


def _names(names: frozenset[str]) -> str:
    """One regex for `names` in text, `_` or `-` allowed between letters
    (`(?!)`, which matches nothing, for none)."""
    names |= {name + word for name in names - _RANDOM_SECRETS - {""} for word in _HASH_WORDS}
    whole_words = {name for name in names if _unhashed(name) in _WHOLE_WORD_NAMES}
    tree: dict[str, Any] = {}
    for name in names - _NOT_ASSIGNED - whole_words - {""}:
        node = tree
        for char in name:
            node = node.setdefault(char, {})
        node[""] = {}
    alternatives = [_trie(tree)] if tree else []
    alternatives += [
        f"{re.escape(name[0])}(?<![a-z]{re.escape(name[0])})"
        + "".join(f"{_NAME_GAP}{re.escape(char)}" for char in name[1:])
        for name in sorted(whole_words)
    ]
    return "|".join(alternatives) or "(?!)"


def _unhashed(name: str) -> str:
    """A normalized name without the word for a hash that ends it (`pinhash` -> `pin`)."""
    for word in _HASH_WORDS:
        if name.endswith(word) and name != word:
            return name.removesuffix(word)
    return name


def _trie(node: dict[str, Any]) -> str:
    """The words of a trie as one regex that shares their prefixes
    (`p(?:[_-]?a(?:…)|[_-]?w[_-]?d)`): an alternation of the words themselves,
    each tried in turn at each character of a text, took 4x the time."""
    branches = [re.escape(char) + _trie_rest(child) for char, child in sorted(node.items()) if char]
    return branches[0] if len(branches) == 1 else f"(?:{'|'.join(branches)})"


def _trie_rest(node: dict[str, Any]) -> str:
    if set(node) == {""}:
        return ""  # a word ends here, and no other goes on
    more = _NAME_GAP + _trie(node)
    return f"(?:{more})?" if "" in node else more


_DEFAULT_ASSIGNMENT: Final = _secret_assignment(DEFAULT_FIELD_NAMES)
_DEFAULT_ELEMENT: Final = _secret_element(DEFAULT_FIELD_NAMES)
_DEFAULT_ATTRIBUTE: Final = _secret_attribute(DEFAULT_FIELD_NAMES)
_DEFAULT_KEYED_ELEMENT: Final = _secret_keyed_element(DEFAULT_FIELD_NAMES)

DEFAULT_PATTERNS: Final = (
    *KNOWN_SHAPES,
    _DEFAULT_ASSIGNMENT,  # a redactor's own names replace the defaults (`Redactor`)
    _DEFAULT_ELEMENT,  # ... as here
    _DEFAULT_ATTRIBUTE,  # ... and here
    _DEFAULT_KEYED_ELEMENT,  # ... and here
    _MYSQL_PASSWORD,
    HIGH_ENTROPY_ASSIGNMENT,
    PAYMENT_CARD,
)

# Strings of the record that are free text, besides those in details and changes.
_FREE_TEXT: Final = (
    ("description",),
    ("actor", "display_name"),
    ("resource", "name"),
    ("context", "user_agent"),
)
# Ids, scanned for secrets of a known shape only (a token or a URL's password
# sent as a resource id): `name=value` is how ids are often written. An HTTP
# route too: a path rather than its template may hold a token (`/reset/<token>`;
# its query string is refused, ADR 0136).
_IDENTIFIERS: Final = (("actor", "id"), ("resource", "id"), ("context", "http_route"))
# How long each may be once its secrets are replaced: as long as it may be sent.
# A route past an id's 256 kept all but its secrets too (it was replaced whole).
_LONGEST_ID: Final[dict[tuple[str, ...], int]] = {("context", "http_route"): MAX_HTTP_ROUTE}


_STRONG: Final = re.compile("|".join(STRONG_FIELD_WORDS))
_ABOUT: Final = frozenset(ABOUT_THE_SECRET)
# An ending about the secret written right after the secret's word, in a key
# without word breaks (`passwordless`, `apikeyid`).
_GLUED_ABOUT: Final = re.compile(
    f"(?:{'|'.join(STRONG_FIELD_WORDS)})(?:{'|'.join(ABOUT_THE_SECRET)})\\Z"
)
# A key's words: `apiKeyAndroid` -> api, Key, Android; `API_KEY_LAST4` -> API,
# KEY, LAST, 4.
_WORD: Final = re.compile(r"[A-Z]+(?![a-z])|[A-Z]?[a-z]+|[0-9]+")


def names_nothing(name: str) -> bool:
    """Whether `name`, a field name to deny, is nothing as keys are compared
    (`_`, `.`): the end of every key, it would deny them all."""
    return not _normalized(name)


def compared_name(name: str) -> str:
    """`name`, a field name to deny, as keys are compared with it (its Latin
    look-alike, normalized): names alike so (`date_of_birth`, `DateOfBirth`)
    deny the same keys."""
    return _normalized(_latin(name))


# Letters of other scripts that read as a Latin one (Unicode's confusables),
# which NFKC leaves as they are: `p\u0430ssword` with a Cyrillic a (U+0430),
# `t\u03bfken` with a Greek omicron. Capitals map to capitals, so camelCase keeps its words.
_LOOK_ALIKES: Final = str.maketrans(
    # Cyrillic
    "\u0430\u0435\u043e\u0440\u0441\u0443\u0445\u043a\u0456\u0458\u0455\u0501\u051b\u051d\u04bb\u04cf"
    "\u0410\u0412\u0415\u041a\u041c\u041d\u041e\u0420\u0421\u0422\u0425\u0406\u0408\u0405\u04ae"
    # Greek
    "\u03b1\u03bf\u03c1\u03bd\u03b9\u03ba\u03c5\u03c7\u03c4"
    "\u0391\u0392\u0395\u0396\u0397\u0399\u039a\u039c\u039d\u039f\u03a1\u03a4\u03a5\u03a7"
    # Latin letters that read as others: dotless i, script a and g
    "\u0131\u0251\u0261",
    "aeopcyxkijsdqwhlABEKMHOPCTXIJSYaopvikuxtABEZHIKMNOPTYXiag",
)


def _latin(key: str) -> str:
    """A key that is not ASCII as its Latin look-alike: NFKC-normalized
    (fullwidth letters), then each letter that reads as a Latin one taken
    for it."""
    return key if key.isascii() else unicodedata.normalize("NFKC", key).translate(_LOOK_ALIKES)


def _normalized(name: str) -> str:
    if name.isascii():
        return name.lower().replace("_", "").replace("-", "").replace(".", "").replace(" ", "")
    # Fullwidth letters, zero-width characters, and Unicode dashes or spaces
    # between the letters hid a denied name that reads the same.
    folded = unicodedata.normalize("NFKC", name).casefold()
    return "".join(c for c in folded if c not in "_-." and unicodedata.category(c) not in _GAPS)


# Unicode categories dropped from a key that is not ASCII: separators, controls,
# format characters (zero-width ones), dashes and connectors.
_GAPS: Final = frozenset({"Zs", "Zl", "Zp", "Cc", "Cf", "Pd", "Pc"})


# Endings whose plural is in `es` (`address`, `tax`, `buzz`, `branch`, `wish`).
_ES_PLURAL_ENDINGS: Final = ("s", "x", "z", "ch", "sh")


@dataclass(frozen=True, slots=True)
class _DeniedNames:
    """Field names as keys are compared with them (`compared_name`), and what
    denies a key by them: the deployment's secrets, or a tenant's personal
    data, alike."""

    names: frozenset[str]
    # ... as text rules look for them: normalized as written and as compared
    # (`телефон=…` in Cyrillic, its look-alike in Latin letters).
    written: frozenset[str]
    plurals: frozenset[str]
    suffixes: tuple[str, ...]
    whole_words: frozenset[str]
    guessable: tuple[str, ...]

    @classmethod
    def of(cls, field_names: Iterable[str], *, es_plurals: bool = False) -> _DeniedNames:
        """`es_plurals`: a name ending as `address`, `tax`, `branch` does
        denies its plural in `es` too (`home_addresses`), in keys and in
        text; the personal-data names' (the secrets' names keep theirs:
        `passes`, `accesses` are ordinary words there)."""
        # As keys are: a name in another script (`телефон`) compared as the
        # key's Latin look-alike never met its own key.
        names = {compared_name(n) for n in field_names}
        plurals = {f"{n}s" for n in names if not n.endswith("s")}
        if es_plurals:
            plurals |= {f"{n}es" for n in names if n.endswith(_ES_PLURAL_ENDINGS)}
        written = names | {_normalized(n) for n in field_names}
        if es_plurals:
            written |= plurals
        whole_words = {n for n in names | plurals if n.removesuffix("s") in _WHOLE_WORD_NAMES}
        suffixes = sorted((names | plurals) - whole_words, key=len, reverse=True)
        guessable = sorted(names - _RANDOM_SECRETS - whole_words - {""}, key=len, reverse=True)
        return cls(
            frozenset(names),
            frozenset(written),
            frozenset(plurals),
            tuple(suffixes),
            frozenset(whole_words),
            tuple(guessable),
        )

    def deny(self, name: str, bare: str, latin: str, words: list[str]) -> bool:
        """Whether a key (normalized `name`, `bare` to its last letter, its
        `latin` look-alike, its `words`) ends with one of the names or its
        plural, or is the hash of one that can be guessed."""
        # `name` too: an operator's name may end with digits (`pkcs12`).
        return (
            bare.endswith(self.suffixes)
            or name.endswith(self.suffixes)
            or _last_word(latin) in self.whole_words
            or self._hash_of_a_guessable_secret(words)
        )

    def _hash_of_a_guessable_secret(self, words: list[str]) -> bool:
        """Whether a key (its `words`) is the hash of a secret that can be
        guessed: `pwd_hash`, `cardPinHash`, `db_pass_hash`, `otp_digest_2`
        (not `token_hash`, `spin_hash`)."""
        end = len(words)
        while end and words[end - 1].isdigit():
            end -= 1
        if end < 2 or words[end - 1] not in _HASH_WORDS:
            return False
        secret = words[end - 2]
        return (
            "".join(words[: end - 1]).endswith(self.guessable)
            or secret in self.whole_words
            or secret in PASSWORD_WORDS
        )


def _with_personal_patterns(
    patterns: tuple[ValuePattern, ...], after: ValuePattern, names: frozenset[str]
) -> tuple[ValuePattern, ...]:
    """`patterns` with the text rules of field names for personal-data
    `names` (normalized), written under `PERSONAL_DATA_RULE`, right after
    those of the secrets' names (`after`; at the end without it): before the
    rules of values of no name (`high_entropy_assignment`), which would
    write a personal value under their own."""
    personal = tuple(
        replace(pattern, name=PERSONAL_DATA_RULE)
        for pattern in (
            _secret_assignment(names, personal=True),
            _secret_element(names),
            _secret_attribute(names),
            _secret_keyed_element(names),
        )
    )
    at = patterns.index(after) + 1 if after in patterns else len(patterns)
    return (*patterns[:at], *personal, *patterns[at:])


class _KeyVerdict(NamedTuple):
    """What the rules say of one key."""

    denied: bool  # any value under it but a flag or an empty one is a secret
    personal: bool  # ... denied as personal data, not as a secret
    counts: bool  # ... but a number, which counts them (`total_tokens`)
    short_word: str  # its last word, if one of the short names, else ""
    whole_word: bool  # ... and it is the whole key (`pass`, `PW`)
    may_hold_secret: bool  # the key's own text may hold one


# Keys whose verdicts a redactor remembers: at most this many, of at most this
# length (a caller's keys are as they like; the memory is emptied when full).
_REMEMBERED_KEYS: Final = 4096
_REMEMBERED_KEY_LENGTH: Final = 128
# Texts a redactor remembers finding no pattern can match, likewise: most
# events repeat the descriptions, user agents and names of the ones before
# them, whose scan was a third of a clean event's redaction. Only texts found
# clean: one that may hold a secret is scanned again each time it is met.
_REMEMBERED_TEXTS: Final = 4096
_REMEMBERED_TEXT_LENGTH: Final = 1024
# Redactors of a tenant's personal-data names a redactor keeps, one per
# distinct set (emptied when full, as the memories above).
_REMEMBERED_RULE_SETS: Final = 256


@dataclass(frozen=True)
class Redactor:
    """The rules, and how a match is written."""

    field_names: frozenset[str] = DEFAULT_FIELD_NAMES
    patterns: tuple[ValuePattern, ...] = DEFAULT_PATTERNS
    # A tenant's personal-data field names, denied as `field_names` are,
    # written under `PERSONAL_DATA_RULE`.
    personal_data: frozenset[str] = frozenset()
    # False: no rule of secrets at all, not even the built-in ones (strong
    # words, short words, API-key actors), for `PERSONAL_DATA_ONLY`.
    secrets: bool = True
    _secrets: _DeniedNames = field(init=False, repr=False)
    _personal: _DeniedNames | None = field(init=False, repr=False)
    _countable: tuple[str, ...] = field(init=False, repr=False)
    _patterns: tuple[ValuePattern, ...] = field(init=False, repr=False)
    _any: _Prefilter = field(init=False, repr=False)
    _id_patterns: tuple[ValuePattern, ...] = field(init=False, repr=False)
    _any_in_id: _Prefilter = field(init=False, repr=False)
    _verdicts: dict[str, _KeyVerdict] = field(init=False, repr=False, compare=False)
    _clean_texts: set[str] = field(init=False, repr=False, compare=False)
    # Personal-data names (as a tenant's settings hold them) -> the redactor
    # of these rules and them (`for_personal_data`).
    _with_personal: dict[frozenset[str], Redactor] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        secrets = _DeniedNames.of(self.field_names)
        personal = (
            _DeniedNames.of(self.personal_data, es_plurals=True) if self.personal_data else None
        )
        names = secrets.written
        object.__setattr__(self, "_secrets", secrets)
        object.__setattr__(self, "_personal", personal)
        plurals = secrets.plurals | (personal.plurals if personal is not None else frozenset())
        object.__setattr__(self, "_countable", (*_COUNTABLE, *sorted(plurals)))
        # `secret_assignment` looks for this redactor's names (an operator's too).
        own: dict[ValuePattern, ValuePattern] = {}
        if names != DEFAULT_FIELD_NAMES and self.secrets:
            own = {
                _DEFAULT_ASSIGNMENT: _secret_assignment(frozenset(names)),
                _DEFAULT_ELEMENT: _secret_element(frozenset(names)),
                _DEFAULT_ATTRIBUTE: _secret_attribute(frozenset(names)),
                _DEFAULT_KEYED_ELEMENT: _secret_keyed_element(frozenset(names)),
            }
        patterns = tuple(own.get(pattern, pattern) for pattern in self.patterns)
        if personal is not None:
            patterns = _with_personal_patterns(
                patterns, own.get(_DEFAULT_KEYED_ELEMENT, _DEFAULT_KEYED_ELEMENT), personal.written
            )
        object.__setattr__(self, "_patterns", patterns)
        object.__setattr__(self, "_any", _prefilter(patterns))
        in_ids = tuple(pattern for pattern in patterns if pattern.in_identifiers)
        object.__setattr__(self, "_id_patterns", in_ids)
        object.__setattr__(self, "_any_in_id", _prefilter(in_ids))
        object.__setattr__(self, "_verdicts", {})
        object.__setattr__(self, "_clean_texts", set())
        object.__setattr__(self, "_with_personal", {})

    def for_personal_data(self, names: Collection[str]) -> Redactor:
        """These rules and a tenant's personal-data field names (itself for
        none): one redactor per distinct set of names, kept, each with
        memories of its own (texts found clean, verdicts on keys), so that
        no verdict reached without a tenant's names spares its events a
        look under them."""
        if not names:
            return self
        wanted = frozenset(names)
        kept = self._with_personal.get(wanted)
        if kept is None:
            if len(self._with_personal) >= _REMEMBERED_RULE_SETS:
                self._with_personal.clear()
            kept = Redactor(
                self.field_names, self.patterns, personal_data=wanted, secrets=self.secrets
            )
            self._with_personal[wanted] = kept
        return kept

    def rule_of(self, key: str) -> str:
        """The rule a value `hides` found under `key` is written under."""
        return PERSONAL_DATA_RULE if self._verdict(key).personal else FIELD_NAME_RULE

    def may_hold_secret(self, text: str) -> bool:
        """False when no pattern can match `text`: one scan instead of one per
        rule, and none for a text found so before (remembered)."""
        clean = self._clean_texts
        if text in clean:
            return False
        if self._any.may_match(text):
            return True
        if len(text) <= _REMEMBERED_TEXT_LENGTH:
            if len(clean) >= _REMEMBERED_TEXTS:
                clean.clear()
            clean.add(text)
        return False

    def _clean_id(self, value: Any) -> bool:
        return not isinstance(value, str) or not self._any_in_id.may_match(value)

    def secret_in(self, text: str) -> str | None:
        """The rule that finds a secret in `text`, as in an id (a pattern
        of `in_identifiers`: tokens, keys, URL passwords), or None."""
        if not self._any_in_id.may_match(text):
            return None
        run = _Run(self, None)
        run.text(text, "", self._id_patterns)
        return run.hits[0][1] if run.hits else None

    def with_rules(
        self, *, field_names: Iterable[str] = (), patterns: Iterable[ValuePattern] = ()
    ) -> Redactor:
        """These rules and more."""
        return Redactor(self.field_names | set(field_names), (*self.patterns, *patterns))

    def denies(self, key: str) -> bool:
        """Whether `key` names a secret, whatever its value (not one of the
        short names, which name one only for some values: `hides`)."""
        return self._verdict(key).denied

    def names_a_secret(self, key: str) -> bool:
        """Whether some value under `key` would be a secret."""
        verdict = self._verdict(key)
        return verdict.denied or bool(verdict.short_word)

    def hides(self, key: str, value: Any) -> bool:
        """Whether `value` under `key` is a secret, or personal data, to replace."""
        if _empty(value):
            return False
        verdict = self._verdict(key)
        if verdict.personal:
            # The flag or number is the data itself (`hiv_positive: true`,
            # `max_salary: 120000`): no exception for flags or counts.
            return True
        if isinstance(value, bool) or not self.secrets:  # a flag is no secret
            return False
        if verdict.denied:
            return not (verdict.counts and isinstance(value, int | float))
        if verdict.short_word in PASSWORD_WORDS:
            # `pass` alone is a password as `pwd` is, but for a count (`pass: 120`).
            return isinstance(value, str) if verdict.whole_word else _password_shaped(value)
        return verdict.short_word in AUTH_WORDS and _credentials_shaped(value)

    def _verdict(self, key: str) -> _KeyVerdict:
        """What the rules say of `key`, remembered: most events repeat the
        keys of the ones before them."""
        verdict = self._verdicts.get(key)
        if verdict is not None:
            return verdict
        latin = _latin(key)  # `p\u0430ssword` (a Cyrillic a) is a password
        name = _normalized(latin)
        bare = _to_last_letter(name)  # `token2`, `GITHUB_TOKEN_2`, `Authorization:`
        words = _words(latin)
        secret = self.secrets and (
            self._secrets.deny(name, bare, latin, words)
            or (_STRONG.search(name) is not None and not _about_the_secret(name, words))
        )
        personal = (
            not secret
            and self._personal is not None
            and self._personal.deny(name, bare, latin, words)
        )
        verdict = _KeyVerdict(
            denied=secret or personal,
            personal=personal,
            counts=bare.endswith(self._countable) or (bool(words) and words[0] in _LIMITS),
            short_word=_short_word(name, latin),
            whole_word=name in _SHORT_WORDS,
            may_hold_secret=self.may_hold_secret(key),
        )
        if len(key) <= _REMEMBERED_KEY_LENGTH:
            if len(self._verdicts) >= _REMEMBERED_KEYS:
                self._verdicts.clear()
            self._verdicts[key] = verdict
        return verdict

    def _clean(self, value: Any) -> bool:
        """Whether a JSON value certainly needs nothing redacted (most do not:
        checking first spares copying every event)."""
        if isinstance(value, str):
            return not self.may_hold_secret(value)
        if isinstance(value, dict):
            return _paired_secret(self, value) is None and all(
                not self.hides(key, item)
                and not self._verdict(key).may_hold_secret
                and self._clean(item)
                for key, item in value.items()
            )
        if isinstance(value, list):
            if _is_pairs(value) and any(self.hides(name, item) for name, item in value):
                return False
            if any(self.follows_a_secret_flag(flag, item) for flag, item in pairwise(value)):
                return False
            return all(self._clean(item) for item in value)
        return True

    def follows_a_secret_flag(self, flag: Any, value: Any) -> bool:
        """Whether `value` is a secret for following, in a list of arguments,
        a long flag with a denied name: `["mysql", "--password", "hunter2"]`
        (not a flag after it, nor a count: `--max-tokens 1000`; `--no-password`
        says there is none)."""
        if not (isinstance(flag, str) and flag.startswith("--") and isinstance(value, str)):
            return False
        if not value or value.startswith("-") or flag.startswith("--no-") or "=" in flag:
            return False  # `--password=…` holds its value, the text rules find it
        verdict = self._verdict(flag[2:])
        return verdict.denied and not (verdict.counts and value.isdigit())

    def _clean_change(self, change: dict[str, Any]) -> bool:
        name = change.get("field")
        denied = _denied_step(self, name) if isinstance(name, str) else None
        if denied is not None and any(
            self.hides(denied, change.get(side)) for side in ("before", "after")
        ):
            return False
        return self._clean(change)

    def _role(self, run: _Run, role: Any, index: int, names: _Names) -> Any:
        """`actor.roles[index]` with the secrets an id would lose replaced,
        in its place, numbered as a key is when that makes it a role the
        actor holds already (two tokens both read `[REDACTED:github_token]`:
        the second is `[REDACTED:github_token] (2)`, so that the record
        validates again, as `sealtrail import` of its export does); replaced
        whole, then numbered, if that made it longer than a role may be."""
        if not isinstance(role, str):
            return role
        cleaned = run.text(role, ("actor.roles", index), self._id_patterns)
        if cleaned is role:
            return role
        if len(cleaned) <= MAX_ROLE:
            cleaned = names.unique(cleaned)
        if len(cleaned) > MAX_ROLE:
            cleaned = names.unique(run.replacement(role, WHOLE_ID_RULE))
        return cleaned

    def redact(self, body: dict[str, Any], *, hmac_key: bytes | None = None) -> Redaction:
        """`body` with its secrets replaced (a new dict; `body` is left as it
        was), and which rules matched where."""
        actor = body.get("actor")
        api_key_actor = self.secrets and isinstance(actor, dict) and actor.get("type") == "api_key"
        # Each part is looked at closely only if its quick check finds it may
        # need it: a URL as an id must not cost the details their fast path.
        details_clean = self._clean(body.get("details"))
        changes_clean = all(self._clean_change(change) for change in body.get("changes", ()))
        text_clean = all(self._clean(_at(body, path)) for path in _FREE_TEXT)
        ids_clean = all(self._clean_id(_at(body, path)) for path in _IDENTIFIERS)
        roles = actor.get("roles") if isinstance(actor, dict) else None
        roles_clean = not roles or all(self._clean_id(role) for role in roles)
        clean = details_clean and changes_clean and text_clean and ids_clean and roles_clean
        if clean and not api_key_actor:
            return Redaction(body, [])
        run = _Run(self, hmac_key)
        result = dict(body)
        for clean, paths, patterns, ids in (
            (text_clean, _FREE_TEXT, self._patterns, False),
            (ids_clean, _IDENTIFIERS, self._id_patterns, True),
        ):
            for path in () if clean else paths:
                value = _at(result, path)
                if isinstance(value, str):
                    cleaned = run.text(value, ".".join(path), patterns)
                    if ids and len(cleaned) > _LONGEST_ID.get(path, MAX_ID):
                        # Its secrets' HMACs made it longer than it may be
                        # (an index entry can outgrow a page): replaced whole.
                        cleaned = run.replacement(value, WHOLE_ID_RULE)
                    if cleaned is not value:
                        _set(result, path, cleaned)
        if not roles_clean:
            assert roles is not None  # a list: roles_clean is True without one
            cleaned_roles: list[Any] = []
            names = _Names(roles, cleaned_roles)
            for index, role in enumerate(roles):
                cleaned_roles.append(self._role(run, role, index, names))
            if any(new is not old for new, old in zip(cleaned_roles, roles, strict=True)):
                _set(result, ("actor", "roles"), cleaned_roles)
        actor = result.get("actor")
        if api_key_actor and isinstance(actor, dict):
            actor_id = actor.get("id")
            if isinstance(actor_id, str) and len(actor_id) > API_KEY_VISIBLE:
                masked = "*" * 4 + actor_id[-API_KEY_VISIBLE:]
                _set(result, ("actor", "id"), masked)
                run.hits.append(("actor.id", "api_key_actor"))
        if "details" in result and not details_clean:
            result["details"] = run.value(result["details"], "details")
        if "changes" in result and not changes_clean:
            result["changes"] = [
                run.change(change, f"changes[{i}]") for i, change in enumerate(result["changes"])
            ]
        if not run.hits:
            return Redaction(body, [])
        return Redaction(result, run.hits)


@dataclass(frozen=True)
class Redaction:
    """A body after redaction, and each (path, rule) that changed it."""

    body: dict[str, Any]
    # Paths written out only when shown: a path per hit, each as long as a
    # caller's key, would cost their product.
    found: list[tuple[JsonPath, str]]

    @property
    def hits(self) -> list[tuple[str, str]]:
        return [(path_text(path), rule) for path, rule in self.found]


@dataclass(frozen=True)
class _Prefilter:
    """Where any of some patterns may match: `anchored`, their anchors in one
    scan; `unanchored`, the patterns without one (an operator's), each
    searched itself, with its own engine (`redaction_setup`)."""

    anchored: re.Pattern[str] | None
    unanchored: tuple[TextPattern, ...]

    def may_match(self, text: str) -> bool:
        if self.anchored is not None and self.anchored.search(text) is not None:
            return True
        # A loop, not any() over a generator, whose making cost every string
        # more than the search of the one built-in pattern without an anchor.
        for pattern in self.unanchored:  # noqa: SIM110
            if pattern.search(text) is not None:
                return True
        return False


def _prefilter(patterns: tuple[ValuePattern, ...]) -> _Prefilter:
    """The anchors are joined as they are, one alternation: when every
    alternative of it starts with a literal character, Python's engine skips
    to the positions where one of those characters stands instead of trying
    each alternative at each position (4x faster on the bench's event; one
    alternative in a group, or starting with a class, loses that). Patterns
    without an anchor are searched one by one: joined with the built-in
    anchors they would lose that, and an operator's may be RE2's, not
    Python's."""
    anchored = [pattern for pattern in patterns if pattern.anchor]
    try:
        union = re.compile("|".join(f"{pattern.anchor}" for pattern in anchored))
    except re.error:  # anchors of flags that do not combine: each pattern searched
        anchored = []
    unanchored = tuple(pattern.regex for pattern in patterns if pattern not in anchored)
    return _Prefilter(union if anchored else None, unanchored)


def _at(body: dict[str, Any], path: tuple[str, ...]) -> Any:
    value: Any = body
    for key in path:
        if not isinstance(value, dict):
            return None
        value = value.get(key)
    return value


def redact_event(event: ValidEvent, redactor: Redactor, *, hmac_key: bytes | None) -> ValidEvent:
    """`event` with its secrets redacted (itself when it holds none)."""
    redaction = redactor.redact(event.body, hmac_key=hmac_key)
    if not redaction.found:
        return event
    body = redaction.body
    # Its API view (the answer to Record, what Query shows) is then built from
    # this body, not copied from the request.
    return replace(
        event,
        body=body,
        verbatim=False,
        actor_id=body["actor"]["id"],
        resource_id=_at(body, ("resource", "id")),
        search_names=search_names(body),
    )


# `actor.credential`'s parts in which a secret is refused, not redacted.
_CREDENTIAL_PARTS: Final = ("id", "hint")
_DEFAULT_REDACTOR: list[Redactor] = []


def refuse_secret_credential(event: ValidEvent, redactor: Redactor | None) -> None:
    """INVALID_ARGUMENT naming `<path>.actor.credential.id` (or `.hint`) when
    the redactor (the default rules when redaction is off) finds a secret in
    it: a caller naming the credential its actor used must learn that it
    sent the secret itself, not have it stored as `[REDACTED:...]`."""
    credential = event.body["actor"].get("credential")
    if credential is None:
        return
    if redactor is None:
        if not _DEFAULT_REDACTOR:
            _DEFAULT_REDACTOR.append(Redactor())
        redactor = _DEFAULT_REDACTOR[0]
    violations = []
    for part in _CREDENTIAL_PARTS:
        value = credential.get(part)
        rule = None if value is None else redactor.secret_in(value)
        if rule is not None:
            violations.append(
                FieldViolation(
                    f"{event.path}.actor.credential.{part}",
                    f"holds a secret ({rule}): send the credential's id, never its secret",
                )
            )
    if violations:
        raise InvalidArgument(violations)


def _set(body: dict[str, Any], path: tuple[str, ...], value: Any) -> None:
    """Set body[path] = value, copying the dicts on the way (the caller's body
    and its parts are never changed)."""
    if len(path) == 1:
        body[path[0]] = value
        return
    child = dict(body[path[0]])
    _set(child, path[1:], value)
    body[path[0]] = child


def tenant_key(secret: bytes, tenant_id: str) -> bytes:
    """A tenant's HMAC key, derived from the deployment's redaction secret:
    equal secrets correlate within a tenant, never across tenants."""
    message = b"sealtrail redaction v1\x00" + tenant_id.encode()
    return hmac.new(secret, message, hashlib.sha256).digest()


def hmac_token(key: bytes, value: Any) -> str:
    """`hmac-sha256:<hex>` of a secret: its text, or RFC 8785 JSON if not a string."""
    data = value.encode() if isinstance(value, str) else canonical_json(value, plain=False)
    return HMAC_PREFIX + hmac.new(key, data, hashlib.sha256).hexdigest()


class _Names:
    """The keys of one object (or the roles of one actor) as they are
    rewritten: which are taken, sent or rewritten, and the last number given
    to each replacement, so that numbering N names that replace alike costs
    N steps, not N^2."""

    def __init__(self, original: Container[Any], cleaned: Container[Any]) -> None:
        self.original = original
        self.cleaned = cleaned
        self.numbers: dict[str, int] = {}

    def unique(self, shown: str) -> str:
        number = self.numbers.get(shown, 1)
        unique = shown if number == 1 else f"{shown} ({number})"
        while unique in self.cleaned or unique in self.original:
            number += 1
            unique = f"{shown} ({number})"
        self.numbers[shown] = number
        return unique


class _Run:
    """One event's redaction: the replacements and what was hit."""

    def __init__(self, redactor: Redactor, hmac_key: bytes | None) -> None:
        self.redactor = redactor
        self.hmac_key = hmac_key
        self.hits: list[tuple[JsonPath, str]] = []

    def replacement(self, secret: Any, rule: str) -> str:
        if self.hmac_key is not None:
            return hmac_token(self.hmac_key, secret)
        return f"[REDACTED:{rule}]"

    def text(
        self, text: str, path: JsonPath, patterns: Iterable[ValuePattern] | None = None
    ) -> str:
        """`text` with every secret a pattern (the redactor's, unless given)
        finds replaced; `text` itself (the same object) when none is found."""
        result = text
        # Where earlier rules wrote their replacements in `result`: a later rule
        # matching there (an operator's `\d{6,}` in an HMAC's hex) would
        # rewrite what is no longer the caller's text. So would any rule in a
        # replacement of an earlier redaction (the text of a search for an
        # HMAC): `Bearer hmac-sha256:…` became `hmac-sha256:<new>:<old>`.
        replaced = [match.span() for match in _REPLACEMENT.finditer(text)]
        for pattern in self.redactor._patterns if patterns is None else patterns:
            if pattern.regex.search(result) is None:
                continue
            edits: list[tuple[int, int, int]] = []
            substitute = partial(
                self._substitute, pattern=pattern, path=path, replaced=replaced, edits=edits
            )
            if pattern.overlapping:
                result = _sub_overlapping(pattern.regex, substitute, result)
            else:
                result = pattern.regex.sub(substitute, result)
            if edits:
                replaced = _moved(replaced, edits)
        return result

    def _substitute(
        self,
        match: re.Match[str],
        *,
        pattern: ValuePattern,
        path: JsonPath,
        replaced: list[tuple[int, int]],
        edits: list[tuple[int, int, int]],
    ) -> str:
        start, end = match.start(pattern.group), match.end(pattern.group)
        if start == end:
            # Empty (an operator's `\b\d{0,4}\b`, `(?<=PIN )\d*` beside any
            # word): nothing to hide, and no replacement beside every word.
            return match.group(0)
        secret = match.group(pattern.group)
        if secret.startswith(("[REDACTED:", HMAC_PREFIX)) or _overlaps(replaced, start, end):
            return match.group(0)  # already replaced (by an earlier rule, or before)
        if pattern.check is not None and not pattern.check(secret):
            shorter = (
                None if pattern.shorter is None else pattern.shorter.match(match.string, start)
            )
            if shorter is None or shorter.end() >= end or not pattern.check(shorter.group()):
                return match.group(0)
            secret, end = shorter.group(), shorter.end()
        if pattern.kept_at is not None and pattern.kept_at(match.string, start):
            return match.group(0)
        if pattern.kept_match is not None and pattern.kept_match(match):
            return match.group(0)
        self.hits.append((path, pattern.name))
        hashed = secret if pattern.hmac_input is None else pattern.hmac_input(secret)
        replacement = self.replacement(hashed, pattern.name)
        edits.append((start, end, len(replacement)))
        whole, offset = match.group(0), match.start(0)
        return whole[: start - offset] + replacement + whole[end - offset :]

    def value(self, value: Any, path: JsonPath) -> Any:
        """A JSON value with denied keys' values replaced and text cleaned, at any depth."""
        if isinstance(value, str):
            return self.text(value, path)
        if isinstance(value, dict):
            cleaned: dict[str, Any] = {}
            keys = _Names(value, cleaned)
            paired = _paired_secret(self.redactor, value)
            for key, item in value.items():
                if self.redactor.hides(key, item):
                    rule: str | None = self.redactor.rule_of(key)
                else:
                    rule = paired if key.lower() == "value" else None
                shown_key = self.key(key, path, keys)
                if rule is not None:
                    self.hits.append(((path, shown_key), rule))
                    cleaned[shown_key] = self.replacement(item, rule)
                else:
                    cleaned[shown_key] = self.value(item, (path, shown_key))
            return cleaned
        if isinstance(value, list):
            if _is_pairs(value):
                return [self.pair(item, (path, i)) for i, item in enumerate(value)]
            items = []
            for i, item in enumerate(value):
                if i and self.redactor.follows_a_secret_flag(value[i - 1], item):
                    self.hits.append(((path, i), ASSIGNMENT_RULE))
                    items.append(self.replacement(item, ASSIGNMENT_RULE))
                else:
                    items.append(self.value(item, (path, i)))
            return items
        return value

    def key(self, key: str, path: JsonPath, keys: _Names) -> str:
        """A key of the object at `path` with its secrets replaced (a key is
        caller's text too: `{"ghp_…": "repo"}`), numbered when that makes it
        a key the object has already (`[REDACTED:github_token] (2)`)."""
        if not self.redactor._verdict(key).may_hold_secret:
            return key
        found = len(self.hits)
        shown = self.text(key, path)
        if shown is key:
            return key
        unique = keys.unique(shown)
        # The secret is no part of where it was found.
        self.hits[found:] = [((path, unique), rule) for _, rule in self.hits[found:]]
        return unique

    def pair(self, pair: list[Any], path: JsonPath) -> list[Any]:
        name, item = pair
        if self.redactor.hides(name, item):
            rule = self.redactor.rule_of(name)
            self.hits.append(((path, 1), rule))
            return [self.text(name, (path, 0)), self.replacement(item, rule)]
        return [self.text(name, (path, 0)), self.value(item, (path, 1))]

    def change(self, change: dict[str, Any], path: str) -> dict[str, Any]:
        name = change.get("field")
        denied = _denied_step(self.redactor, name) if isinstance(name, str) else None
        cleaned = dict(change)
        for side in ("before", "after"):
            if side not in change:
                continue
            # As a value under that key in `details` would be (`hides`).
            if denied is not None and self.redactor.hides(denied, change[side]):
                rule = self.redactor.rule_of(denied)
                self.hits.append((f"{path}.{side}", rule))
                cleaned[side] = self.replacement(change[side], rule)
            else:
                cleaned[side] = self.value(change[side], f"{path}.{side}")
        return cleaned


def _sub_overlapping(regex: TextPattern, substitute: Callable[[Any], str], text: str) -> str:
    """`regex.sub(substitute, text)`, but where `substitute` left a match as
    it was, the text is searched again from the match's next character."""
    pieces: list[str] = []
    done = position = 0
    while (match := regex.search(text, position)) is not None:
        written = substitute(match)
        if written == match.group(0):
            position = match.start(0) + 1
            continue
        pieces += (text[done : match.start(0)], written)
        done = position = match.end(0)
    return "".join((*pieces, text[done:])) if pieces else text


# A replacement `_Run` writes: an HMAC (64 hex digits) or `[REDACTED:<rule>]`.
_REPLACEMENT: Final = re.compile(rf"{HMAC_PREFIX}[0-9a-f]{{64}}\b|\[REDACTED:[^\[\]]*\]")


def _overlaps(spans: list[tuple[int, int]], start: int, end: int) -> bool:
    """Whether `start`-`end` overlaps one of `spans` (in order, none
    overlapping): a look at each made a text of N replacements that a later
    rule also matches take N^2 steps (HMAC mode, 64 KiB of `pwd=abcd `: 0.9 s)."""
    before = bisect_left(spans, (end,))  # the spans starting before `end`
    return before > 0 and spans[before - 1][1] > start


def _moved(
    replaced: list[tuple[int, int]], edits: list[tuple[int, int, int]]
) -> list[tuple[int, int]]:
    """The spans of replacements in a text after `edits` (each a span of it
    and the length of what replaced it, in order, none overlapping a span of
    `replaced`), with the edits' own spans."""
    spans = []
    shift = 0
    pending = iter(replaced)
    span = next(pending, None)
    for start, end, length in edits:
        while span is not None and span[1] <= start:
            spans.append((span[0] + shift, span[1] + shift))
            span = next(pending, None)
        spans.append((start + shift, start + shift + length))
        shift += length - (end - start)
    while span is not None:
        spans.append((span[0] + shift, span[1] + shift))
        span = next(pending, None)
    return spans


def _denied_step(redactor: Redactor, field_path: str) -> str | None:
    """The first step of a change's field path that names a secret, which
    hides the values under it as a key in `details` hides all beneath it:
    `credentials.password.new` -> `password`; `api_keys[0]` -> `api_keys`;
    `headers['Authorization']` -> `Authorization`; None when no step does."""
    split = (step.strip("'\"") for step in re.split(r"[.\[\]/]", field_path))
    steps = [step for step in split if step and not step.isdigit()]
    # A step that names a secret whatever its value first: `auth.password` is
    # a password, whatever `auth` alone would hide.
    for step in steps:
        if redactor.denies(step):
            return step
    for step in steps:
        if redactor.names_a_secret(step):
            return step
    return None


def _to_last_letter(name: str) -> str:
    """`name` without what follows its last letter (a loop: a regex searching
    for a run at the end reads each run again from each of its characters)."""
    end = len(name)
    while end and not name[end - 1].isalpha():
        end -= 1
    return name[:end]


def _words(key: str) -> list[str]:
    """A key's words, lowercased: runs of ASCII letters, split where the
    case changes as camelCase does, and runs of digits."""
    if not key.isascii():
        key = unicodedata.normalize("NFKC", key)
    return [word.lower() for word in _WORD.findall(key)]


def _about_the_secret(name: str, words: list[str]) -> bool:
    """Whether a key (normalized `name`, its `words`) ends with one or two
    words about the secret (`password_changed_at`, `api_key_last4`), or with
    such an ending right after the secret's word (`apikeyid`)."""
    return (
        "".join(words[-1:]) in _ABOUT
        or "".join(words[-2:]) in _ABOUT
        or _GLUED_ABOUT.search(name) is not None
    )


def _short_word(name: str, key: str) -> str:
    """The key's last word if it is one of the short names, else "" (the
    normalized name tested first, as few keys end with one)."""
    if not name.rstrip("0123456789").endswith(_SHORT_WORDS):
        return ""
    word = _last_word(key)
    return word if word in _SHORT_WORDS else ""


# A value that is not a password: an email address, a date, a UUID.
_NOT_A_PASSWORD: Final = re.compile(
    r"[^\s@]+@[^\s@]+\.[A-Za-z]{2,}|\d{4}[-/]\d\d[-/]\d\d(?:[T ].*)?"
    r"|[0-9a-fA-F]{8}-(?:[0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}"
)
_PASSWORD_LENGTH: Final = range(6, 257)


def _password_shaped(value: Any) -> bool:
    """A text that may be a password: one token (no whitespace) of 6 to 256
    characters with a lowercase letter and a digit or a symbol in it
    (`hunter2!`; not `completed`, `VP-00123`, `120/120`, `N/A`, `BA117 seat
    4C`), not an email address, a date or a UUID. A number is a count
    (`tests_pass: 120`)."""
    return (
        isinstance(value, str)
        and len(value) in _PASSWORD_LENGTH
        and any(c.islower() for c in value)
        and any(not c.isalpha() for c in value)
        and not any(c.isspace() for c in value)
        and _NOT_A_PASSWORD.fullmatch(value) is None
    )


# `user:password`: a user not starting with a digit (`10:00:00` is a time) and
# no URL (`https://…`), a password of 8 or more characters (`aws:sigv4`,
# `oidc:google` name methods); or `email:password`, any password.
_USER_AND_PASSWORD: Final = re.compile(r"(?!\d)[^\s:/@]+:(?!//)\S{8,}|[^\s:/@]+@[^\s:/@]+:\S+")
_RANDOM_TOKEN_LENGTH: Final = 16


def _credentials_shaped(value: Any) -> bool:
    """A text that may be credentials: `user:password` (above), Basic
    authentication's base64 of it, or a random-looking token of 16 or more
    characters. A method's name is not (`sso`, `oauth2`, `HMAC-SHA256`,
    `aws:sigv4`, `Okta`), nor a URL."""
    return isinstance(value, str) and (
        _USER_AND_PASSWORD.fullmatch(value) is not None
        or basic_credentials(value)
        or (len(value) >= _RANDOM_TOKEN_LENGTH and random_value(value))
    )


def _last_word(key: str) -> str:
    """The last word of a key, lowercased: `db_pass2` -> `pass`, `smtpPass`
    -> `pass`, `BYPASS` -> `bypass`; "" when it has no letter."""
    if not key.isascii():
        key = unicodedata.normalize("NFKC", key)
    end = len(key)
    while end and not _is_letter(key[end - 1]):
        end -= 1
    start = end
    if start and key[start - 1].isupper():
        while start and _is_letter(key[start - 1]) and key[start - 1].isupper():
            start -= 1
    else:
        while start and _is_letter(key[start - 1]) and key[start - 1].islower():
            start -= 1
        if start and _is_letter(key[start - 1]):
            start -= 1  # the capital that starts a camelCase word
    return key[start:end].lower()


def _is_letter(char: str) -> bool:
    return char.isascii() and char.isalpha()


def _empty(value: Any) -> bool:
    """Nothing at all to hide: null, "", or an empty object or array."""
    return value is None or (not isinstance(value, bool) and value in ("", {}, []))


def _paired_secret(redactor: Redactor, item: dict[str, Any]) -> str | None:
    """The rule hiding the value of a name/value pair whose name is denied:
    `{"name": "DB_PASSWORD", "value": "..."}` as Kubernetes lists environment
    variables, or `{"key": "X-Api-Key", "value": "..."}` as many list
    headers; None for any other object."""
    fields = {key.lower(): value for key, value in item.items() if len(key) <= len("value")}
    name = fields.get("name", fields.get("key"))
    if isinstance(name, str) and redactor.hides(name, fields.get("value")):
        return redactor.rule_of(name)
    return None


def _is_pairs(items: list[Any]) -> bool:
    """Name/value pairs written as lists, `[["user", "bob"], ["password",
    "..."]]`, as form fields and query strings are often kept: a value under
    a denied name is hidden as under a denied key. (A list of two strings
    alone, `["password", "reset"]`, is not taken for a pair.)"""
    return bool(items) and all(
        isinstance(item, list) and len(item) == 2 and isinstance(item[0], str) for item in items
    )


# The rules with the deployment's redaction off (SEALTRAIL_REDACTION=false, for
# measuring its cost): none of secrets, a tenant's personal-data names alone
# (`for_personal_data`): those are the tenant's, not the operator's to switch.
PERSONAL_DATA_ONLY: Final = Redactor(frozenset(), (), secrets=False)
