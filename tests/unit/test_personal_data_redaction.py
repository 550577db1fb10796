"""A tenant's personal-data field names in the redactor (ADR 0154): denied as
the operator's field names are, by the same code, written under their own
rule, with a redactor (and memories) of their own per set of names."""

from __future__ import annotations

from sealtrail_server.domain.redaction import Redactor

REDACTED = "[REDACTED:personal_data]"


def test_personal_data_is_denied_as_field_names_are_under_its_own_rule() -> None:
    redactor = Redactor().for_personal_data({"ssn", "date_of_birth"})
    redaction = redactor.redact(
        {
            "description": "ssn=123-45-6789 and password=hunter22",
            "details": {
                "customer_SSN": "123-45-6789",
                "ssns": ["1", "2"],
                "ssn_hash": "5e884898da28",
                "password": "hunter22",
                "pairs": [["DateOfBirth", "1980-04-01"]],
            },
            "changes": [{"field": "person.date-of-birth", "before": "1980-04-01"}],
        }
    )
    assert redaction.body["description"] == (
        f"ssn={REDACTED} and password=[REDACTED:secret_assignment]"
    )
    assert redaction.body["details"] == {
        "customer_SSN": REDACTED,
        "ssns": REDACTED,
        "ssn_hash": REDACTED,
        "password": "[REDACTED:field_name]",
        "pairs": [["DateOfBirth", REDACTED]],
    }
    assert redaction.body["changes"] == [{"field": "person.date-of-birth", "before": REDACTED}]


def test_a_name_that_is_a_secrets_too_is_written_as_a_secret() -> None:
    redactor = Redactor().for_personal_data({"password"})
    assert redactor.redact({"details": {"password": "x"}}).body["details"] == {
        "password": "[REDACTED:field_name]"
    }


def test_one_redactor_per_set_of_names_each_remembering_for_itself() -> None:
    base = Redactor()
    assert base.for_personal_data(()) is base  # none: the deployment's own
    with_ssn = base.for_personal_data(("ssn",))
    assert base.for_personal_data(["ssn"]) is with_ssn  # kept, not made per call
    assert base.for_personal_data(("ssn", "phone")) is not with_ssn
    # A verdict the deployment's redactor remembers does not serve another set.
    assert base.redact({"details": {"ssn": "1"}}).body["details"] == {"ssn": "1"}
    assert with_ssn.redact({"details": {"ssn": "1"}}).body["details"] == {"ssn": REDACTED}
    assert base.redact({"details": {"ssn": "1"}}).body["details"] == {"ssn": "1"}


def test_a_flag_or_a_number_under_a_personal_data_name_is_hidden_too() -> None:
    """A flag is no secret, and a number under a secret's plural counts them;
    under a personal-data name the flag or number is the data itself
    (helper-563 finding 3). Only nothing (null, "", {}, []) is left."""
    redactor = Redactor().for_personal_data({"hiv_positive", "pregnant", "salary", "phone"})
    redaction = redactor.redact(
        {
            "details": {
                "hiv_positive": True,
                "max_salary": 120000,
                "phones": 2,
                "pregnant": None,
                "salary": "",
                "phone": {},
            },
            "changes": [{"field": "patient.pregnant", "before": False, "after": True}],
        }
    )
    assert redaction.body["details"] == {
        "hiv_positive": REDACTED,
        "max_salary": REDACTED,
        "phones": REDACTED,
        "pregnant": None,
        "salary": "",
        "phone": {},
    }
    assert redaction.body["changes"] == [
        {"field": "patient.pregnant", "before": REDACTED, "after": REDACTED}
    ]
    # The secrets' rules are as they were: a flag, and a count of tokens, kept.
    assert redactor.redact({"details": {"token": True, "tokens": 3}}).body["details"] == {
        "token": True,
        "tokens": 3,
    }


def test_a_name_in_another_script_hides_its_own_key() -> None:
    """Keys are read as their Latin look-alikes before they are compared
    (`p\u0430ssword`); names must be too, or a Cyrillic or Greek name never
    met its own key (helper-563 finding 2)."""
    redactor = Redactor().for_personal_data({"телефон", "τηλέφωνο"})
    redaction = redactor.redact(
        {
            "description": "телефон=+79991234567",
            "details": {"телефон": "+7 999", "τηλέφωνο": "+30 21", "мой_телефон": "+7 1"},
        }
    )
    assert redaction.body["details"] == {
        "телефон": REDACTED,
        "τηλέφωνο": REDACTED,
        "мой_телефон": REDACTED,
    }
    assert redaction.body["description"] == f"телефон={REDACTED}"


def test_a_name_ending_in_s_x_z_ch_or_sh_hides_its_es_plural() -> None:
    """`address`: `addresses`, `home_addresses`, and `addresses="…"` in text
    (helper-563 finding 4), as `phone` hides `phones`."""
    redactor = Redactor().for_personal_data({"address", "tax", "branch"})
    redaction = redactor.redact(
        {
            "description": 'moved: addresses="1 Main St" and phones=none',
            "details": {
                "addresses": ["1 Main St"],
                "home_addresses": "2 Side St",
                "taxes": "A12",
                "branches": "Leeds",
            },
        }
    )
    assert redaction.body["details"] == {
        "addresses": REDACTED,
        "home_addresses": REDACTED,
        "taxes": REDACTED,
        "branches": REDACTED,
    }
    assert redaction.body["description"] == f'moved: addresses="{REDACTED}" and phones=none'


def test_a_personal_data_name_then_a_colon_hides_a_value_of_digits() -> None:
    """`Customer SSN: 123-45-6789`, `DOB: 1980-04-01`, as prose writes them
    (helper-563 finding 10); a word after the colon is prose, kept (`Phone:
    required`), as `PIN: required by policy` is."""
    redactor = Redactor().for_personal_data({"ssn", "dob", "phone"})
    assert (
        redactor.redact({"description": "Customer SSN: 123-45-6789, DOB: 1980-04-01"}).body[
            "description"
        ]
        == f"Customer SSN: {REDACTED}, DOB: {REDACTED}"
    )
    assert redactor.redact({"description": "Phone: +447946095800"}).body["description"] == (
        f"Phone: {REDACTED}"
    )
    kept = "Phone: required for sign-up"
    assert redactor.redact({"description": kept}).body["description"] == kept
