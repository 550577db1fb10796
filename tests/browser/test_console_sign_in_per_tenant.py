"""The console's sign-in through a provider per tenant (ADR 0151) in a real
browser: the organisation's id asked at the first sign-in, remembered for
the next, and another organisation's a link away."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from selenium import webdriver
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as seen

from tests.browser.test_console import wait
from tests.browser.test_console_accessibility import AXE, check, report
from tests.conftest import ServerThread
from tests.openid_provider import Issue, OpenIdProvider, console_signing_in_per_tenant

ACME = f"t-acme-{uuid.uuid4().hex[:8]}"
GLOBEX = f"t-globex-{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="module")
def acme_provider() -> Iterator[OpenIdProvider]:
    with OpenIdProvider() as running:
        yield running


@pytest.fixture(scope="module")
def globex_provider() -> Iterator[OpenIdProvider]:
    with OpenIdProvider() as running:
        running.issue = Issue(email="bob@globex.example")
        yield running


@pytest.fixture(scope="module")
def console_server(
    migrated_database_url: str,
    acme_provider: OpenIdProvider,
    globex_provider: OpenIdProvider,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[ServerThread]:
    with console_signing_in_per_tenant(
        {ACME: acme_provider, GLOBEX: globex_provider},
        migrated_database_url,
        Path(tmp_path_factory.mktemp("oidc-tenants")),
    ) as running:
        yield running


def _signed_in_through_the_form(browser: webdriver.Chrome, tenant: str) -> str:
    """The organisation's form answered with `tenant`: whom the page says is signed in."""
    field = wait(browser).until(seen.visibility_of_element_located((By.ID, "tenant")))
    assert field.get_attribute("value") == ""  # it names no organisation
    field.send_keys(tenant)
    browser.find_element(By.CSS_SELECTOR, "form button[type=submit]").click()
    return str(
        wait(browser).until(seen.visibility_of_element_located((By.ID, "signed-in-as"))).text
    )


def test_the_organisation_is_asked_once_and_another_is_a_link_away(
    browser: webdriver.Chrome, console_url: str
) -> None:
    browser.get(console_url)
    button = wait(browser).until(seen.visibility_of_element_located((By.ID, "provider-signin")))
    assert button.text == "Sign in with your identity provider"
    assert not browser.find_element(By.ID, "another-organisation").is_displayed()
    button.click()
    assert _signed_in_through_the_form(browser, ACME) == "Signed in as alice@example.com"

    browser.find_element(By.ID, "signout").click()
    button = wait(browser).until(seen.visibility_of_element_located((By.ID, "provider-signin")))
    # Signed out, the browser still knows its organisation: the button goes there.
    assert button.text == f"Sign in to {ACME}"
    another = browser.find_element(By.ID, "another-organisation")
    assert another.text == "Sign in to another organisation"
    button.click()
    person = wait(browser).until(seen.visibility_of_element_located((By.ID, "signed-in-as")))
    assert person.text == "Signed in as alice@example.com"

    browser.find_element(By.ID, "signout").click()
    wait(browser).until(seen.element_to_be_clickable((By.ID, "another-organisation"))).click()
    assert _signed_in_through_the_form(browser, GLOBEX) == "Signed in as bob@globex.example"
    browser.find_element(By.ID, "signout").click()
    button = wait(browser).until(seen.visibility_of_element_located((By.ID, "provider-signin")))
    assert button.text == f"Sign in to {GLOBEX}"


def test_the_organisations_sign_in_has_no_accessibility_violation(
    browser: webdriver.Chrome, console_url: str
) -> None:
    if not AXE.exists():
        pytest.skip("tests/browser/vendor/axe.min.js is missing")
    browser.set_script_timeout(60)
    found: dict[str, list[str]] = {}
    browser.get(console_url)
    wait(browser).until(seen.element_to_be_clickable((By.ID, "provider-signin"))).click()
    _signed_in_through_the_form(browser, ACME)
    browser.find_element(By.ID, "signout").click()
    wait(browser).until(seen.visibility_of_element_located((By.ID, "another-organisation")))
    check(browser, "signed out, the organisation remembered", found)
    browser.find_element(By.ID, "another-organisation").click()
    wait(browser).until(seen.visibility_of_element_located((By.ID, "tenant")))
    check(browser, "the organisation's form", found)
    assert not found, report(found)
