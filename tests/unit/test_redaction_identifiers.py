"""Identifiers of a documented prefix (a Stripe charge's `ch_…`, a Clerk
user's `user_…`) assigned in text are the audit trail's subject, not a
secret: the random-value rule replaced them (`charge: ch_3NqX…` lost which
charge was refunded). Secrets shaped alike, and any random value under a
name of a secret, are still replaced."""

from __future__ import annotations

import json
from string import ascii_letters, digits
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sealtrail_server.domain.redaction import Redactor
from sealtrail_server.domain.secret_shapes import (
    IDENTIFIER_PREFIXES,
    KNOWN_SECRET_PREFIXES,
    random_value,
)

REDACTOR = Redactor()

IDENTIFIERS = [
    "ch_3NqXkL2eZvKYlo2C1x9aBcDe",
    "pi_3MtwBwLkdIwHu7ix28a3tqPa",
    "evt_1NG8Du2eZvKYlo2CUI79vXWy",
    "cus_NffrFeUfNV2HibXq9Lm2",
    "in_1MtHbELkdIwHu7ixl4OzzPMv",
    "sub_1MowQVLkdIwHu7ixeRlqHVzs",
    "pm_1MqLiJLkdIwHu7ixUEgbFdYF",
    "user_2NNEqL2nrIRdJ194ndJqAHwEfxC",
    "org_2Z3bY6kqLmN8pQrStUvWxYz",
]

# Names an id is assigned to in text, in the forms text writes them.
FORMS = (
    "Refunded charge: {}",
    "charge_id={}&page=2",
    "stripe_customer => '{}'",
    '{{"customer": "{}", "amount": 1200}}',
    '{{\\"payment_intent\\": \\"{}\\"}}',
    "next=%2Fcb%3Fevent%3D{}%26x%3D1",
    "user={}.",
)


def _event(**fields: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"action": "charge.refunded", "actor": {"type": "user", "id": "u1"}}
    body.update(fields)
    return body


def test_the_identifiers_look_random() -> None:
    """Else the tests below would pass whatever the rule says of identifiers."""
    assert all(random_value(identifier) for identifier in IDENTIFIERS)


@pytest.mark.parametrize("identifier", IDENTIFIERS)
@pytest.mark.parametrize("form", FORMS)
def test_an_identifier_of_a_known_prefix_is_kept(identifier: str, form: str) -> None:
    text = form.format(identifier)
    for body in (_event(description=text), _event(details={"note": text})):
        redaction = REDACTOR.redact(body)
        assert redaction.hits == [], text
        assert redaction.body == body


# (rule, secret): Stripe's keys and client secrets, other providers' tokens.
SECRETS = [
    ("stripe_key", "sk_live_4eC39HqLyjWDarjtT1zdp7dc"),
    ("stripe_key", "sk_test_51H8x2eF4kLmNoPqRsTuVwXyZ"),
    ("stripe_key", "rk_live_51H8x2eF4kLmNoPqRsTuVwXyZ"),
    ("stripe_key", "whsec_5f8Kd2LmQ9xTz3Wv7Rb1Nc6Hy4Jp0Ase"),
    ("github_token", "ghp_16C7e42F292c6912E7710c838347Ae178B4a"),
    ("github_token", "gho_16C7e42F292c6912E7710c838347Ae178B4b"),
    ("github_token", "github_pat_11ABCDEFG0abcdefghijkl_mnopqrstuvwxyz0123456789ABCDEF"),
    ("slack_token", "xoxb-123456789012-1234567890123-AbCdEfGhIjKlMnOpQrStUvWx"),
    ("aws_access_key", "AKIAIOSFODNN7EXAMPLE"),
    # A PaymentIntent's and a SetupIntent's client secret: an id of a kept
    # prefix, then `_secret_` and the secret.
    ("high_entropy_assignment", "pi_3MtwBwLkdIwHu7ix28a3tqPa_secret_YrKJUKribcBjcG8HVhfZluoGH"),
    ("high_entropy_assignment", "seti_1Mm8s8LkdIwHu7ix0OXBfTRG_secret_NXDXl1YLXhf5BxnbVmp"),
    # Other providers' keys of one word and `_`, which only this rule finds.
    ("high_entropy_assignment", "gsk_Xk29LmQ8pRt5VwZ3nBy7CdFh1JsG4aEo"),
    ("high_entropy_assignment", "re_Xk29LmQ8_pRt5VwZ3nBy7CdFh1JsG4aEo"),
    ("high_entropy_assignment", "re_Xk29LmQ8pRt5VwZ3nBy7CdFh1JsG4aEo"),
    ("high_entropy_assignment", "tok_1MqLiJLkdIwHu7ixUEgbFdYF"),
    ("high_entropy_assignment", "Zq8vN2xLmR4tY7wK1pS9dF3gH6jB0cXe"),
    # A kept prefix glued to more than an id: a dot and more random text.
    ("high_entropy_assignment", "ch_3NqXkL2eZvKYlo2C.1x9aBcDeQ7Wm"),
]

ID_NAMES = ("charge", "customer_id", "stripeCustomer", "user", "resource.id", "event")


@pytest.mark.parametrize(("rule", "secret"), SECRETS)
@pytest.mark.parametrize("name", ID_NAMES)
def test_a_secret_under_an_identifiers_name_is_replaced(rule: str, secret: str, name: str) -> None:
    for text in (f"{name}={secret}", f"{name}: {secret}", json.dumps({name: secret})):
        redaction = REDACTOR.redact(_event(description=text))
        assert secret not in json.dumps(redaction.body), text
        assert [found for _, found in redaction.hits] == [rule], text


# Names of a secret: an id of a kept prefix under them is no id (a caller
# who put a secret there shaped it as the name says), or a key the rules
# do not deny (`session`, `sig`, `signing_seed`).
SECRET_NAMES = (
    "auth",
    "db_pass",
    "session",
    "sig",
    "signature",
    "signing_seed",
    "client_key",
    "clientkey",
    "webhookSecretRef",
    "refresh_tokens",
    "hmac",
    "nonce",
    "api_keys",
    "cookie",
)


@pytest.mark.parametrize("identifier", IDENTIFIERS)
@pytest.mark.parametrize("name", SECRET_NAMES)
def test_an_identifier_under_a_secrets_name_is_replaced(identifier: str, name: str) -> None:
    for text in (f"{name}={identifier}", json.dumps({name: identifier})):
        redaction = REDACTOR.redact(_event(description=text))
        assert identifier not in json.dumps(redaction.body), text


def test_no_kept_prefix_starts_a_known_secret() -> None:
    """A prefix kept for identifiers that a provider's secrets start with
    (Resend's API keys are `re_…`, as Stripe's refunds) would let them by."""
    for prefix in IDENTIFIER_PREFIXES:
        for secret in KNOWN_SECRET_PREFIXES:
            assert not secret.startswith(f"{prefix}_"), (prefix, secret)
            assert not f"{prefix}_".startswith(secret), (prefix, secret)


_BASE62 = ascii_letters + digits


@settings(max_examples=200, deadline=None)
@given(
    prefix=st.sampled_from(sorted(KNOWN_SECRET_PREFIXES)),
    body=st.text(alphabet=_BASE62, min_size=24, max_size=40),
    name=st.sampled_from(ID_NAMES),
)
def test_a_random_value_of_a_secrets_prefix_is_never_kept_as_an_identifier(
    prefix: str, body: str, name: str
) -> None:
    secret = prefix + body
    text = f"{name}={secret} done"
    # A random value is replaced: no secret's prefix is read as an identifier's.
    if random_value(secret):
        assert secret not in REDACTOR.redact(_event(description=text)).body["description"]


@settings(max_examples=200, deadline=None)
@given(
    prefix=st.sampled_from(sorted(IDENTIFIER_PREFIXES)),
    body=st.text(alphabet=_BASE62, min_size=16, max_size=40),
    name=st.sampled_from(("charge", "customer_id", "object")),
)
def test_any_random_id_of_a_kept_prefix_is_kept(prefix: str, body: str, name: str) -> None:
    identifier = f"{prefix}_{body}"
    text = f"{name}={identifier} done"
    assert REDACTOR.redact(_event(description=text)).hits == [], text
