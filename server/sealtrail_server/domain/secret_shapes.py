"""Secrets of a known shape, found inside free text: private keys, JWTs,
bearer and basic credentials, URL passwords, the token formats of the common
providers, credential headers, and `name=value` assignments of random-looking
values. Each rule has an anchor, a cheap literal it cannot match without
(redaction.py's `_prefilter` says why)."""

from __future__ import annotations

import base64
import binascii
import math
import re
from collections import Counter
from typing import Final

from .text_patterns import QUOTE, ValuePattern, starts_after, value_pattern


def _high_entropy(value: str) -> bool:
    """Random-looking: capitals and small letters, and digits or symbols (so
    hex digests, UUIDs, and names of one case with a random suffix, such as
    Kubernetes' `api-7d9f8b6c5d-x2k9p`, are not), and at least 3.5 bits of
    Shannon entropy per character."""
    if not (any(c.islower() for c in value) and any(c.isupper() for c in value)):
        return False
    if all(c.isalpha() for c in value):
        return False
    counts = Counter(value).values()
    size = len(value)
    return -sum(n / size * math.log2(n / size) for n in counts) >= 3.5


_UUID: Final = re.compile(r"[0-9a-fA-F]{8}-(?:[0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}")

# A value's words, as keys are split into theirs: a run of capitals, a word
# with a capital or none, a run of digits (`app/Http/AuthController.php`:
# app, Http, Auth, Controller, php). Random characters make short ones: of
# base62's, 1.9 on average, 3 or more for one token of 100 of 20 characters
# and fewer of longer ones; a path, a class's name, prose, 4 to 8.
_WORD: Final = re.compile(r"[A-Z]+(?![a-z])|[A-Z]?[a-z]+|[0-9]+")
_WORD_LENGTH: Final = 3


def _made_of_words(value: str) -> bool:
    """Whether the words of `value` are 3 characters long or more on average."""
    words = _WORD.findall(value)
    return sum(map(len, words)) >= _WORD_LENGTH * len(words)


def random_value(value: str) -> bool:
    """Random-looking (`_high_entropy`), and neither a UUID nor made of words:
    a path (`app/Http/Controllers/AuthController.php`), a class's name, a
    form's prose (`bearer+token+rotation+2024`) has all that entropy asks."""
    return _UUID.fullmatch(value) is None and _high_entropy(value) and not _made_of_words(value)


def basic_credentials(value: str) -> bool:
    """Base64 of `user:password` in printable text, not a word that follows
    "basic" nor one that decodes to bytes with a `:` among them (`Okta`)."""
    try:
        value = value.replace("\\/", "/")  # as PHP's json_encode escapes it
        decoded = base64.b64decode(value + "=" * (-len(value) % 4), validate=True).decode()
    except (binascii.Error, ValueError):  # UnicodeDecodeError is a ValueError
        return False
    user, colon, password = decoded.partition(":")
    return bool(colon and user and password) and decoded.isprintable()


# Base64's own characters as a URL's query or a form encodes them.
_BASE64_ENCODED: Final = re.compile(r"%(?:2[BbFf]|3[Dd])")


def encoded_basic_credentials(value: str) -> bool:
    """`basic_credentials` of a credential whose `+`, `/` and `=` may be
    percent-encoded (`%2B`, `%2F`, `%3D`), as a URL's query or a form has it."""
    if "%" in value:
        value = _BASE64_ENCODED.sub(lambda m: chr(int(m.group()[1:], 16)), value)
    return basic_credentials(value)


_PERCENT_ENCODED: Final = re.compile(r"%[0-9A-Fa-f]{2}")


def bearer_credential(value: str) -> bool:
    """A token after "bearer", not the word prose writes there ("the bearer
    instrument", "Bearer authentication", "BEARER AUTHENTICATION"): it has a
    digit, or capitals and small letters after its first character, as a random
    token of 8 or more characters has (one of lower-case letters alone is kept).
    Its percent-encoded characters (`%2F`) are not its own: `2` is no digit."""
    value = _PERCENT_ENCODED.sub("", value)
    if any(c.isdigit() for c in value):
        return True
    rest = value[1:]
    return any(c.isupper() for c in rest) and any(c.islower() for c in rest)


# What else Python's case-insensitive matching takes for a letter than its two
# cases (`(?i)s` matches the long s); a test checks this against the engine.
_OTHER_CASES: Final = {"i": "\u0130\u0131", "k": "\u212a", "s": "\u017f"}


def either_case(word: str) -> str:
    """`word` in any case, as `(?i)` matches it, in alternatives that start with a literal:
    `bearer` -> `B[Ee][Aa]…|b[Ee][Aa]…` (where `(?i:bearer)` starts with a case-insensitive one,
    which redaction's `_prefilter` fast path does not take)."""

    def cases(letter: str) -> str:
        return letter.upper() + letter.lower() + _OTHER_CASES.get(letter.lower(), "")

    rest = "".join(f"[{cases(c)}]" for c in word[1:])
    return "|".join(first + rest for first in cases(word[0]))


# Denied names `secret_assignment` does not look for in text: those the header
# rules read with their own shape of value ("Authorization: approved by lead"


# A character of a URL query's parameter (a value ends at `&`, a space, a quote,
# `#`, `<` or `>`; for an Azure SAS also at `?` and `;`, so that a run of
# `?sv=a` is not read to its end from each), and at most how many parameters
# stand between an Azure SAS's `sig` and the `sv` or `se` that tell it one.
_QUERY_CHAR: Final = r"[^\s&\"'#<>\\]"
_SAS_CHAR: Final = r"[^\s&\"'#<>\\?;]"
_SAS_PARAMETERS: Final = 32
# How far before a Digest `response=` its `Digest` scheme is looked for.
_DIGEST_REACH: Final = 1024
_DIGEST: Final = re.compile(r"(?i)\bdigest\s")


def _outside_digest(text: str, start: int) -> bool:
    """Whether a `response="…"` at `start` is no Digest authentication's (no
    `Digest ` within the 1,024 characters before it): looked for in a bounded
    slice, so that a run of them stays linear."""
    return _DIGEST.search(text, max(0, start - _DIGEST_REACH), start) is None


# A `/` as PHP's json_encode writes it (`\/`, in Laravel's and WordPress's
# logs): inside a URL's `://`, a base64 credential or a random value, where a
# rule read `/` alone, it cut the secret or hid it.
_ESCAPED_SLASH: Final = r"\\/"
# A raw Authorization header's credential: to a space, a quote, `,`, `;` or a
# backslash (`\"` ends it in text holding JSON), but for `\/`.
_CREDENTIAL: Final = rf"(?:[^\s\"',;\\]|{_ESCAPED_SLASH})"

# A header's space as text carries it, raw or percent-encoded; a credential's
# character in a percent-encoded header: any but what ends a raw one, encoded
# too (a tab or line break `%09`-`%0D`, a space `%20`, a quote `%22` `%27`,
# `%2C`, `%3B`, `%5C`), and `&` (`%26` too). Only base64's `%2B`, `%2F`, `%3D`
# were read: `%3A` of `user:pass` or of Firebase's `key=AAAA…:APA91b…`, `%7E`
# (PHP's urlencode writes `~` so) cut it, the rest stored. A raw `+` may be
# base64's: it is taken.
_SPACE: Final = r"(?:\s|%20)"
_ENCODED_CREDENTIAL: Final = r"(?:[^\s\"',;%&\\]|%(?!0[9a-d]|2[0267c]|3b|5c)[0-9a-f]{2})"

# The rules, in the order redaction applies them.
KNOWN_SHAPES: Final = (
    value_pattern(
        "pem_private_key",
        # To its END line, or to the end of the text when it was cut off.
        r"-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY(?: BLOCK)?-----[\s\S]*?"
        r"(?:-----END (?:[A-Z0-9]+ )*PRIVATE KEY(?: BLOCK)?-----|\Z)",
        anchor="PRIVATE KEY",
    ),
    # Only from where a run of token characters starts (or after an encoded
    # character): from each `eyJ` inside a run, the run was read to its end again.
    value_pattern(
        "jwt",
        starts_after("e", "[A-Za-z0-9_-]")
        + r"eyJ[A-Za-z0-9_-]{8,}+\.eyJ[A-Za-z0-9_-]{8,}+\.[A-Za-z0-9_-]{8,}",
        anchor="eyJ",
    ),
    # The password runs to the authority's last `@` (`p@ss@host`); the user may
    # be empty (`redis://:pass@host`). One with a raw `/` (`admin:pa/ss@db`, not
    # valid in a URL but written so) runs to the last `@` within 256 characters
    # before a space, unless it starts as a port does, digits then `/`, `?`,
    # `#` or `,` (`https://host:443/@alice`, `mongodb://h1:27017,h2`), each `/` as
    # it is or escaped as PHP's json_encode writes it (`\/`).
    value_pattern(
        "url_password",
        rf"(?i){starts_after('a-z', '[a-z0-9+.-]')}[a-z][a-z0-9+.-]*+:(?://|(?:{_ESCAPED_SLASH}){{2}})"
        r"[^/\s:@\[]*:"
        r"([^/\s]+|(?!\d*(?:[/?#,]|\\/))[^/\s]*/\S{0,255})@",
        1,
        anchor=r"://|:\\/\\/",
    ),
    # An access key id names a key (CloudTrail logs it as such): redacted in
    # text, where it often sits beside its secret, but not where it is an id.
    value_pattern(
        "aws_access_key",
        rf"{starts_after('A')}(?:AKIA|ASIA|ABIA|ACCA)[0-9A-Z]{{16}}\b",
        anchor="A[KSBC][IC]A",
        in_identifiers=False,
    ),
    value_pattern(
        "github_token",
        rf"{starts_after('g')}(?:gh[pousr]_[A-Za-z0-9]{{36,}}|github_pat_[A-Za-z0-9_]{{22,}})",
        anchor="gh[pousr]_|github_pat_",
    ),
    # A secret or restricted key, or a webhook endpoint's signing secret.
    value_pattern(
        "stripe_key",
        rf"{starts_after('srw')}(?:(?:sk|rk)_(?:live|test)_[A-Za-z0-9]{{16,}}|whsec_[A-Za-z0-9]{{24,}})",
        anchor="k_live_|k_test_|whsec_",
    ),
    # Bot, user and other tokens (`xoxb-`, `xoxp-`…), a rotating refresh token
    # (`xoxe-1-`) and an app-level token (`xapp-1-`, Socket Mode).
    value_pattern(
        "slack_token",
        rf"{starts_after('x')}(?:xox[abposre]-|xapp-\d-)[A-Za-z0-9-]{{10,}}",
        anchor="xox|xapp-",
    ),
    # OpenAI's keys (`sk-` and 48 letters and digits; `sk-proj-`, `sk-svcacct-`,
    # `sk-admin-` and 40 or more) and Anthropic's (`sk-ant-api03-`, 80 or more):
    # random-looking, as `sk-prod-eu-west-1-cluster-01` is not.
    value_pattern(
        "ai_api_key",
        starts_after("s", "[A-Za-z0-9_-]")
        + r"sk-(?:[A-Za-z0-9]{48}|(?:proj|svcacct|admin)-[A-Za-z0-9_-]{40,}+"
        r"|ant-(?:api|admin)\d\d-[A-Za-z0-9_-]{80,}+)(?![A-Za-z0-9_-])",
        check=random_value,
        anchor="sk-",
    ),
    value_pattern(
        "google_api_key",
        rf"{starts_after('A')}AIza[0-9A-Za-z_-]{{35}}(?![A-Za-z0-9_-])",
        anchor="AIza",
    ),
    value_pattern(
        "gitlab_token",
        rf"{starts_after('g')}gl(?:pat|dt|ptt|rt)-[0-9A-Za-z_-]{{20,}}+",
        anchor="glpat-|gldt-|glptt-|glrt-",
    ),
    value_pattern("npm_token", rf"{starts_after('n')}npm_[A-Za-z0-9]{{36}}\b", anchor="npm_"),
    value_pattern(
        "pypi_token",
        rf"{starts_after('p')}pypi-AgEIcHlwaS5vcmc[A-Za-z0-9_-]{{50,}}",
        anchor="pypi-",
    ),
    value_pattern("huggingface_token", rf"{starts_after('h')}hf_[A-Za-z]{{34}}\b", anchor="hf_"),
    value_pattern(
        "sendgrid_key",
        rf"{starts_after('S')}SG\.[A-Za-z0-9_-]{{22}}\.[A-Za-z0-9_-]{{43}}(?![A-Za-z0-9_-])",
        anchor="SG\\.",
    ),
    value_pattern(
        "digitalocean_token", rf"{starts_after('d')}do[opr]_v1_[a-f0-9]{{64}}\b", anchor="_v1_"
    ),
    # HashiCorp Vault's service, batch and recovery tokens (`hvs.`, `hvb.`,
    # `hvr.` and 24 or more): not a host name (`hvs.example.com`), whose
    # labels are shorter and end at a dot.
    value_pattern(
        "vault_token",
        starts_after("h", "[A-Za-z0-9_.-]") + r"hv[sbr]\.[A-Za-z0-9_-]{24,}+",
        anchor="hv[sbr]\\.",
    ),
    # Google's OAuth access tokens (`ya29.`) and OAuth clients' secrets (`GOCSPX-`).
    value_pattern(
        "google_oauth",
        rf"{starts_after('yG')}(?:ya29\.[A-Za-z0-9_-]{{20,}}+|GOCSPX-[A-Za-z0-9_-]{{24,}}+)",
        anchor="ya29\\.|GOCSPX-",
    ),
    # Shopify's admin API, custom app and private app tokens and an app's
    # shared secret: the prefix and 32 hex digits.
    value_pattern(
        "shopify_token",
        rf"{starts_after('s')}shp(?:at|ca|pa|ss)_[a-fA-F0-9]{{32}}\b",
        anchor="shp(?:at|ca|pa|ss)_",
    ),
    # age's X25519 identity: Bech32, upper-case as age writes it.
    value_pattern(
        "age_secret_key",
        rf"{starts_after('A')}AGE-SECRET-KEY-1[QPZRY9X8GF2TVDW0S3JN54KHCE6MUA7L]{{58}}\b",
        anchor="AGE-SECRET-KEY-1",
    ),
    # A Twilio API key's SID (`SK` and 32 lower-case hex digits, as Twilio
    # writes them): the key's user name beside its secret, which has no shape
    # of its own. As `aws_access_key`, in text where the secret often stands
    # beside it, not where it is an id.
    value_pattern(
        "twilio_api_key",
        rf"{starts_after('S')}SK[0-9a-f]{{32}}\b",
        anchor="SK[0-9a-f]{32}",
        in_identifiers=False,
    ),
    value_pattern(
        "slack_webhook",
        r"https:(?://|(?:\\/){2})hooks\.slack\.com(?:/|\\/)services(?:/|\\/)[A-Za-z0-9]+(?:/|\\/)"
        r"[A-Za-z0-9]+(?:/|\\/)\w+",
        anchor="hooks\\.slack",
    ),
    # Either format (ADR 0111), wherever a word boundary, a percent-encoded
    # character (`Bearer%20stk_`, `%3Dstk_` in a URL or a form) or an escaped
    # line break (`\nstk_` in text holding JSON) puts it: those end in a
    # letter or digit, and a token after them was kept whole.
    value_pattern(
        "sealtrail_token",
        rf"{starts_after('s')}stk_[A-Za-z0-9_-]{{20,}}",
        anchor="stk_",
    ),
    # After the token shapes, so that `Bearer%20ghp_…` is named for its token.
    # Encoded as a URL's query or a form writes it, after `%20` or the form's
    # `+` for a space: its own `+`, `/` and `=` encoded (`%2B`, `%2F`, `%3D`),
    # a raw `+` a space. Before the raw form, which stops at the first `%`.
    value_pattern(
        "bearer",
        rf"(?i){starts_after('b')}bearer(?:\+|%20)++"
        r"((?:[a-z0-9._~-]|%2[bf]){8,}+(?:=|%3d)*+)",
        1,
        bearer_credential,
        anchor=either_case("bearer"),
    ),
    # In an Authorization header (`Authorization: Bearer …`, `"authorization":
    # "bearer …"`) a credential whatever its letters: `bearer_credential`, which
    # tells prose's "the bearer instrument" from a token, kept one of lower-case
    # letters alone there too.
    value_pattern(
        "bearer",
        rf"(?i){starts_after('a')}authorization{QUOTE}?\s*[=:]\s*{QUOTE}?bearer\s++"
        rf"({_CREDENTIAL}{{8,}}+)",
        1,
        anchor=either_case("authorization"),
        in_identifiers=False,
    ),
    # After a raw space (or `%20`), base64's `+`, `/` and `=` as they are or
    # percent-encoded, as `basic_auth` reads them: a token URL-encoded into
    # its header (`encodeURIComponent(token)`) was cut at its first `%2F` or
    # `%2B`, the rest stored, or stored whole when its first part was short.
    value_pattern(
        "bearer",
        rf"(?i){starts_after('b')}bearer{_SPACE}++"
        rf"((?:[a-z0-9._~+/-]|%2[bf]|{_ESCAPED_SLASH}){{8,}}+(?:=|%3d)*+)",
        1,
        bearer_credential,
        anchor=either_case("bearer"),
    ),
    # After a space, `%20` or a form's `+` for one; base64's `+`, `/` and `=`
    # as they are or percent-encoded (`%2B`, `%2F`, `%3D`), as a URL's query or
    # a form writes them: the rule read the raw ones alone, and cut the
    # credential at its first `%2B` or `%2F`. A raw `+` may be base64's: where
    # the credential read with it is none, it is read again without
    # (`shorter`): `Basic+dXNlcjpodW50ZXIy+from+ci`, a form's spaces.
    ValuePattern(
        "basic_auth",
        re.compile(
            rf"(?i){starts_after('b')}basic(?:{_SPACE}++|\+)"
            rf"((?:[a-z0-9+/]|%2[bf]|{_ESCAPED_SLASH}){{8,}}+(?:=|%3d){{0,2}})"
        ),
        1,
        encoded_basic_credentials,
        anchor=either_case("basic"),
        shorter=re.compile(rf"(?i)(?:[a-z0-9/]|%2[bf]|{_ESCAPED_SLASH}){{8,}}+(?:=|%3d){{0,2}}"),
    ),
    # A signed URL's signature: S3's and Cloud Storage's (`X-Amz-Signature=`,
    # `X-Goog-Signature=`), and an Azure SAS's `sig=` in a query with an
    # `sv=` or `se=` within 32 parameters of it (the SAS's version and
    # expiry: `sig=` in another query is kept). `&amp;` as HTML writes `&`.
    value_pattern(
        "url_signature",
        rf"{starts_after('Xx')}(?:X-Amz|x-amz|X-Goog|x-goog)-[Ss]ignature=({_QUERY_CHAR}++)",
        1,
        anchor="X-Amz-[Ss]ignature=|x-amz-[Ss]ignature=|X-Goog-[Ss]ignature=|x-goog-[Ss]ignature=",
    ),
    value_pattern(
        "url_signature",
        rf"(?<=[?&;])(?:s[ve]={_SAS_CHAR}*+(?:&(?:amp;)?+{_SAS_CHAR}*+){{0,{_SAS_PARAMETERS}}}?"
        rf"&(?:amp;)?sig=|sig=(?={_SAS_CHAR}*+(?:&(?:amp;)?+{_SAS_CHAR}*+){{0,{_SAS_PARAMETERS}}}?"
        rf"&(?:amp;)?s[ve]=))({_QUERY_CHAR}++)",
        1,
        anchor="sig=",
    ),
    # AWS Signature Version 4 in an Authorization header (`AWS4-HMAC-SHA256
    # Credential=…, SignedHeaders=…, Signature=<64 hex>`): authorization_header
    # takes its first word with a digit, the scheme, and left the signature.
    value_pattern(
        "url_signature",
        rf"{starts_after('S')}Signature=([0-9a-f]{{64}})\b",
        1,
        anchor="Signature=",
    ),
    # Digest authentication's response (RFC 7616), a hash of the password with
    # the nonce: the password can be guessed against it offline.
    ValuePattern(
        "digest_response",
        re.compile(
            rf"{starts_after('Rr')}[Rr]esponse\s*+=\s*+{QUOTE}([0-9a-fA-F]{{32,128}}){QUOTE}"
        ),
        1,
        anchor="response\\s*=|Response\\s*=",
        in_identifiers=False,
        kept_at=_outside_digest,
    ),
    value_pattern(
        "authorization_header",
        # A credential has a digit in it; "Authorization: approved by lead" has
        # none. Looked for within its first 256 characters: unbounded, the
        # look from each header of a run of them read the run to its end.
        rf"(?i){starts_after('a')}authorization{QUOTE}?\s*[=:]\s*{QUOTE}?(?:[a-z]++\s+)?"
        rf"((?={_CREDENTIAL}{{0,255}}\d){_CREDENTIAL}{{8,}})",
        1,
        anchor=either_case("authorization"),
        in_identifiers=False,
    ),
    # Percent-encoded, as a URL's query or a form carries a header
    # (`h=Authorization%3A%20Token%20…&next=…`, or a form's `+` for a space,
    # `Authorization%3A+Token+…`): to the `&`, the space or the encoded space,
    # quote or separator that ends it (`_ENCODED_CREDENTIAL`).
    value_pattern(
        "authorization_header",
        rf"(?i){starts_after('a')}authorization(?:%2[27])?(?:%20)*+%3[ad](?:%20|\+)*+(?:%2[27])?"
        rf"(?:[a-z]++(?:%20|\+)++)?((?={_ENCODED_CREDENTIAL}{{0,255}}?\d){_ENCODED_CREDENTIAL}{{8,}}+)",
        1,
        anchor=either_case("authorization"),
        in_identifiers=False,
    ),
    value_pattern(
        "cookie_header",
        # name=value...; a name holds no `:`, so the look for its `=` stops at
        # the next header instead of reading a run of them to its end.
        # To the end of the line, or to an escaped line break or quote (`\n`,
        # `\"` in text holding JSON).
        rf"(?i){starts_after('sc')}(?:set-)?cookie{QUOTE}?\s*:\s*{QUOTE}?"
        r"([^\s\"'=;:]+=(?:[^\r\n\"'\\]|\\(?![nr\"']|u002[27]))*)",
        1,
        anchor=either_case("cookie"),
        in_identifiers=False,
    ),
    # Percent-encoded (`h=Cookie%3A%20sid%3D…%3B%20theme%3Ddark&page=2`): a
    # name has no encoded space, `:` or `=`, so that the look for its `%3D`
    # stops at the next header; the pairs run to the `&`, the space, or the
    # encoded quote, `&` or line break that ends them.
    value_pattern(
        "cookie_header",
        rf"(?i){starts_after('sc')}(?:set-)?cookie(?:%2[27])?(?:%20)*+%3a(?:%20)*+(?:%2[27])?"
        r"((?:[^\s\"'&;%=:]|%(?!3[ad]|2[027]|0[ad]))++%3d(?:[^\s\"'&%]|%(?!2[267]|0[ad]))*+)",
        1,
        anchor=either_case("cookie"),
        in_identifiers=False,
    ),
)

# Identifiers the random-value rule keeps: an object's id of a documented
# prefix, `_` and 8 to 40 letters and digits of both cases, as Stripe makes
# them (`ch_3NqX…` a charge, `cus_` a customer, `pi_` a PaymentIntent, `evt_`
# an event; https://docs.stripe.com/api) and Clerk and WorkOS (`user_`,
# `org_`). A set, not a shape: a provider's API keys of one word and `_`
# (Groq's `gsk_`, Replicate's `r8_`, Notion's `ntn_`, PostHog's `phx_`, ...)
# are new each year, and only this rule finds them. Left out: a prefix a
# provider's secrets start with too (Stripe's refunds are `re_`, as Resend's
# API keys; `tok_`, `sess_`, `key_` name secrets elsewhere), and Stripe's
# ids that hold one (`pi_…_secret_…`, a client secret: no `_` after the
# prefix is an identifier's).
IDENTIFIER_PREFIXES: Final = frozenset(
    {
        # Stripe
        "acct",
        "ba",
        "card",
        "ch",
        "cn",
        "cus",
        "dp",
        "du",
        "evt",
        "ii",
        "il",
        "in",
        "pi",
        "pm",
        "po",
        "price",
        "prod",
        "py",
        "pyr",
        "req",
        "seti",
        "si",
        "src",
        "sub",
        "tr",
        "txn",
        # Clerk, WorkOS
        "user",
        "org",
    }
)
# Secrets' prefixes no identifier's may start as (a test holds the two
# apart): the known shapes', and those of keys only the random-value rule
# finds.
KNOWN_SECRET_PREFIXES: Final = frozenset(
    {
        "sk_",
        "rk_",
        "pk_",
        "ek_",
        "whsec_",
        "ghp_",
        "gho_",
        "ghu_",
        "ghs_",
        "ghr_",
        "github_pat_",
        "xoxb-",
        "xoxp-",
        "xapp-",
        "npm_",
        "hf_",
        "shpat_",
        "shpss_",
        "stk_",
        "glpat-",
        "dop_v1_",
        "gsk_",
        "r8_",
        "re_",
        "ntn_",
        "secret_",
        "phx_",
        "sntrys_",
        "rnd_",
        "figd_",
        "glsa_",
        "rubygems_",
        "lin_api_",
        "dckr_pat_",
        "key_",
        "tok_",
        "token_",
        "sess_",
    }
)


_IDENTIFIER: Final = re.compile(
    rf"(?:{'|'.join(sorted(IDENTIFIER_PREFIXES))})_[A-Za-z0-9]{{8,40}}\.*"
)
# Names of a secret, under which an identifier is taken for one: besides the
# names `secret_assignment` reads (and replaces first), names no key of which
# is denied (`session`, `sig`, `signing_seed`, `client_key`) or which text is
# not searched for (`api_keys`): one of the name's words, or, in a name
# without word breaks, its end or a word inside it (`clientkey`).
_SECRET_WORDS: Final = frozenset(
    {
        "key",
        "keys",
        "secret",
        "secrets",
        "token",
        "tokens",
        "pass",
        "passwd",
        "password",
        "passphrase",
        "passcode",
        "pw",
        "pwd",
        "auth",
        "authorization",
        "cred",
        "creds",
        "credential",
        "credentials",
        "sig",
        "signature",
        "session",
        "sess",
        "sid",
        "cookie",
        "cookies",
        "salt",
        "nonce",
        "seed",
        "hmac",
        "private",
        "priv",
        "otp",
        "totp",
        "pin",
        "code",
        "jwt",
        "bearer",
        "hash",
        "cert",
        "cvv",
        "cvc",
        "mnemonic",
    }
)
_SECRET_INSIDE: Final = re.compile(
    r"secret|token|passw|passc|passph|apikey|credential|signature|cookie|session"
    r"|(?:key|keys|auth|pass|pw|pwd|sig|seed)\Z"
)


def _names_a_secret(name: str) -> bool:
    """Whether a name in text (`charge_id`, `stripeCustomer`, `signing_seed`)
    is a secret's (`_SECRET_WORDS`)."""
    if any(word.lower() in _SECRET_WORDS for word in _WORD.findall(name)):
        return True
    return _SECRET_INSIDE.search(re.sub(r"[^a-z0-9]", "", name.lower())) is not None


def _an_identifier(match: re.Match[str]) -> bool:
    """Whether a random value assigned in text (the rule's match: its name,
    then the value) is an identifier of a kept prefix (`IDENTIFIER_PREFIXES`;
    a sentence's dots may follow it) under a name that is no secret's
    (`charge: ch_3NqX…`, `{"customer": "cus_…"}`; not `session=user_…`).

    What a caller logging a secret by mistake gets through: a secret that
    starts as an id of a kept prefix does (`user_` and 8 to 40 letters and
    digits, a provider's key of that prefix), assigned to a name that is no
    secret's. No known secret's prefix is kept (a test holds them apart),
    and a value with more in it than the id (`pi_…_secret_…`, `ch_….x9K…`,
    `==` at its end) is no identifier."""
    return _IDENTIFIER.fullmatch(match.group(2)) is not None and not _names_a_secret(match.group(1))


# A name starts where a run of name characters does (the look-behind):
# tried from each boundary inside a run, the run was scanned again each
# time. Or after an encoded character, with its `=` encoded too, as a URL
# inside a URL's query has it (`next=%2Fcb%3Fstate%3D…%26…`). The name is a
# group of its own: an identifier under it is kept (`_an_identifier`).
HIGH_ENTROPY_ASSIGNMENT: Final = ValuePattern(
    "high_entropy_assignment",
    re.compile(
        rf"{starts_after('A-Za-z_-', '[A-Za-z0-9_.-]')}([A-Za-z_-][A-Za-z0-9_.-]*+)"
        rf"{QUOTE}?\s*(?:=>?|:|%3[Dd])\s*{QUOTE}?"
        rf"([A-Za-z0-9+_~-](?:[A-Za-z0-9+/_.~-]|{_ESCAPED_SLASH}){{19,}}={{0,2}})"
    ),
    2,
    random_value,
    anchor="=|:|%3[Dd]",
    in_identifiers=False,
    kept_match=_an_identifier,
)
