"""Signing in to the console through the organisation's identity provider,
in a real headless Chromium (ADR 0140): the provider a real one on
127.0.0.1 (tests/openid_provider.py) whose authorize step signs the person
in at once. The button ends signed in as the person with their role's view,
the one-time code gone from the address; a code used already is refused
with its reason on the sign-in form; Sign out revokes the session's token
(a pasted token's is only forgotten); a session ended elsewhere or expired
goes back to the form saying so, as does one the provider ended (rechecked,
the person removed there), at a call or while Live runs; a person of no
group meets the refusal page, its link back to the sign-in."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import httpx
import psycopg
import pytest
from selenium import webdriver
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support import expected_conditions as seen

from sealtrail import AuditClient
from tests.browser.test_console import sign_in, wait, wait_for_rows
from tests.browser.test_console_accessibility import AXE, check, report
from tests.conftest import ServerThread
from tests.openid_provider import (
    Issue,
    OpenIdProvider,
    console_signing_in_through,
    make_recheck_due,
    to_callback,
)

TENANT = f"t-sso-{uuid.uuid4().hex[:10]}"
PROVIDER_NAME = "Example SSO"


@pytest.fixture(scope="module")
def provider() -> Iterator[OpenIdProvider]:
    with OpenIdProvider() as running:
        yield running


@pytest.fixture(scope="module")
def sso_server(
    migrated_database_url: str, provider: OpenIdProvider, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerThread]:
    with console_signing_in_through(
        provider,
        migrated_database_url,
        tmp_path_factory.mktemp("sso"),
        tenant=TENANT,
        oidc_provider_name=PROVIDER_NAME,
    ) as running:
        yield running


@pytest.fixture(scope="module")
def sso_console(sso_server: ServerThread) -> str:
    return f"http://127.0.0.1:{sso_server.service.console_port}/"


@pytest.fixture(autouse=True)
def issue_as_usual(provider: OpenIdProvider) -> None:
    provider.issue = Issue()


@pytest.fixture
def http(sso_console: str) -> Iterator[httpx.Client]:
    """A second browser, by hand: the console's API and sign-in routes."""
    with httpx.Client(base_url=sso_console, follow_redirects=False, timeout=20) as client:
        yield client


def _stored(browser: webdriver.Chrome, key: str) -> Any:
    return browser.execute_script("return sessionStorage.getItem(arguments[0])", key)


def _role_of(http: httpx.Client, token: str) -> int | str:
    """The role /api/signin names for `token`, or the status refusing it."""
    answer = http.get("/api/signin", headers={"Authorization": f"Bearer {token}"})
    return str(answer.json()["role"]) if answer.status_code == 200 else answer.status_code


def _by_the_button(browser: webdriver.Chrome, console: str) -> str:
    """Signed in by the provider's button: the session's token."""
    browser.get(console)
    button = wait(browser).until(seen.visibility_of_element_located((By.ID, "provider-signin")))
    button.click()
    wait(browser).until(seen.visibility_of_element_located((By.ID, "signed-in-as")))
    token = _stored(browser, "sealtrail.token")
    assert token, "signed in with no token kept"
    return str(token)


@pytest.mark.parametrize(
    ("groups", "role"), [(["audit-admins"], "admin"), (["audit-readers"], "reader")]
)
def test_the_button_signs_in_as_the_person_with_their_roles_view(
    browser: webdriver.Chrome,
    sso_console: str,
    provider: OpenIdProvider,
    http: httpx.Client,
    groups: list[str],
    role: str,
) -> None:
    provider.issue = Issue(groups=groups)
    browser.get(sso_console)
    button = wait(browser).until(seen.visibility_of_element_located((By.ID, "provider-signin")))
    assert button.text == f"Sign in with {PROVIDER_NAME}"
    # The form's first way in has the focus; the token field stays beside it.
    assert browser.switch_to.active_element == button
    assert browser.find_element(By.ID, "token").is_displayed()
    button.click()
    person = wait(browser).until(seen.visibility_of_element_located((By.ID, "signed-in-as")))
    assert person.text == "Signed in as alice@example.com"
    # The one-time code left the address at once: not in it, nor in the entry kept.
    assert browser.current_url == sso_console
    assert browser.execute_script("return location.hash") == ""
    token = str(_stored(browser, "sealtrail.token"))
    assert _role_of(http, token) == role
    assert _stored(browser, "sealtrail.role") == role
    # Its own sign-in is in the log, and the role's view shown.
    wait_for_rows(browser, lambda r: any("api_token.created" in row for row in r))
    admin_links = browser.find_elements(By.CSS_SELECTOR, "#views a.admin")
    assert [link.is_displayed() for link in admin_links] == [role == "admin"] * len(admin_links)
    assert not browser.find_element(By.ID, "signin").is_displayed()


def test_a_used_code_is_refused_with_its_reason(
    browser: webdriver.Chrome, sso_console: str, http: httpx.Client
) -> None:
    back = http.get(to_callback(http))
    assert back.status_code == 303, back.text
    code = back.headers["Location"].removeprefix("/#signin=")
    assert http.post("/auth/exchange", json={"code": code}).status_code == 200
    browser.get(f"{sso_console}#signin={code}")
    error = wait(browser).until(seen.visibility_of_element_located((By.ID, "signin-error")))
    wait(browser).until(lambda _: "used already" in error.text)
    assert error.text.startswith("Sign-in refused: this sign-in's code is unknown"), error.text
    assert browser.current_url == sso_console
    assert _stored(browser, "sealtrail.token") is None
    assert not browser.find_element(By.ID, "log").is_displayed()
    assert browser.switch_to.active_element == browser.find_element(By.ID, "provider-signin")
    # The button signs in from there.
    browser.find_element(By.ID, "provider-signin").click()
    wait(browser).until(seen.visibility_of_element_located((By.ID, "signed-in-as")))
    assert browser.find_element(By.ID, "signin-error").get_attribute("textContent") == ""


def test_signing_out_revokes_the_session_and_leaves_a_pasted_token_alone(
    browser: webdriver.Chrome, sso_console: str, sso_server: ServerThread, http: httpx.Client
) -> None:
    token = _by_the_button(browser, sso_console)
    assert _role_of(http, token) == "reader"
    browser.find_element(By.ID, "signout").click()
    wait(browser).until(seen.visibility_of_element_located((By.ID, "signin")))
    assert _role_of(http, token) == 401, "the session's token still works after Sign out"
    assert _stored(browser, "sealtrail.token") is None
    assert not browser.find_element(By.ID, "signed-in-as").is_displayed()
    assert browser.find_element(By.ID, "signin-reason").get_attribute("textContent") == ""
    assert browser.switch_to.active_element == browser.find_element(By.ID, "provider-signin")

    pasted = sso_server.token(TENANT, "reader")
    sign_in(browser, sso_console, pasted)
    wait_for_rows(browser, lambda r: len(r) >= 1)
    assert not browser.find_element(By.ID, "signed-in-as").is_displayed()  # names no one
    browser.find_element(By.ID, "signout").click()
    wait(browser).until(seen.visibility_of_element_located((By.ID, "signin")))
    assert _role_of(http, pasted) == "reader", "a pasted token was revoked at Sign out"


def test_a_session_ended_elsewhere_goes_back_to_the_form_saying_so(
    browser: webdriver.Chrome, sso_console: str, http: httpx.Client
) -> None:
    token = _by_the_button(browser, sso_console)
    wait_for_rows(browser, lambda r: len(r) >= 1)
    # Signed out in another tab (the same token's sign-out, revoking it).
    signed_out = http.post("/auth/signout", headers={"Authorization": f"Bearer {token}"})
    assert signed_out.json() == {"ok": True}
    browser.execute_script("document.querySelector('#filters').requestSubmit()")
    wait(browser).until(seen.visibility_of_element_located((By.ID, "signin")))
    reason = browser.find_element(By.ID, "signin-reason")
    assert reason.text.startswith("Signed out: Your session ended (it was revoked); sign in again")
    assert browser.switch_to.active_element == reason
    assert not browser.find_element(By.ID, "signed-in-as").is_displayed()


def test_a_session_the_provider_ended_goes_back_to_the_form_saying_so(
    browser: webdriver.Chrome,
    sso_console: str,
    provider: OpenIdProvider,
    sql: psycopg.Connection[Any],
    http: httpx.Client,
) -> None:
    token = _by_the_button(browser, sso_console)
    wait_for_rows(browser, lambda r: len(r) >= 1)
    provider.issue.refresh = "invalid_grant"  # the person removed at the provider
    make_recheck_due(sql, TENANT, token)
    browser.execute_script("document.querySelector('#filters').requestSubmit()")
    reason = _signed_out_by_the_provider(browser)
    assert reason.text.endswith("; sign in again.")
    assert _role_of(http, token) == 401


def _signed_out_by_the_provider(browser: webdriver.Chrome) -> WebElement:
    """The sign-in form back, its reason (focused) saying the identity
    provider refused to renew the session."""
    wait(browser).until(seen.visibility_of_element_located((By.ID, "signin")))
    reason = browser.find_element(By.ID, "signin-reason")
    assert reason.text.startswith(
        "Signed out: The identity provider ended this session: the identity provider refused"
        " to renew the session (invalid_grant"
    ), reason.text
    assert browser.switch_to.active_element == reason
    return reason


def test_a_session_the_provider_ended_while_live_ran_goes_back_to_the_form_saying_so(
    browser: webdriver.Chrome,
    sso_console: str,
    sso_server: ServerThread,
    provider: OpenIdProvider,
    sql: psycopg.Connection[Any],
    http: httpx.Client,
) -> None:
    """Rechecked as the Live stream runs, not only at the page's calls: the
    stream's last line says the provider ended the session, and the tab is
    signed out saying why, as a call's 401 signs it out (it said "Live
    updates stopped" and stayed signed in with a revoked token)."""
    token = _by_the_button(browser, sso_console)
    wait_for_rows(browser, lambda r: len(r) >= 1)
    browser.find_element(By.ID, "live").click()
    with AuditClient(sso_server.target, token=sso_server.token(TENANT, "recorder")) as client:
        # Shown by Live: the stream is open, its recheck passed as it began.
        client.record(action="live.before", actor_id="u-live")
        wait_for_rows(browser, lambda r: "live.before" in r[0])
        provider.issue.refresh = "invalid_grant"  # the person removed at the provider
        make_recheck_due(sql, TENANT, token)
        client.record(action="live.after", actor_id="u-live")  # rechecked as it streams
    _signed_out_by_the_provider(browser)
    assert browser.find_element(By.ID, "error").get_attribute("textContent") == ""
    assert not browser.find_element(By.ID, "live").is_selected()
    assert _stored(browser, "sealtrail.token") is None
    assert _role_of(http, token) == 401


def test_an_expired_session_goes_back_to_the_form_saying_so(
    browser: webdriver.Chrome,
    migrated_database_url: str,
    provider: OpenIdProvider,
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    with console_signing_in_through(
        provider,
        migrated_database_url,
        tmp_path_factory.mktemp("short"),
        tenant=TENANT,
        oidc_session_seconds=2,
    ) as short:
        console = f"http://127.0.0.1:{short.service.console_port}/"
        with httpx.Client(base_url=console, timeout=20) as http:
            token = _by_the_button(browser, console)
            wait_for_rows(browser, lambda r: len(r) >= 1)
            # Until the API refuses it (its expiry: two seconds after the sign-in).
            wait(browser).until(lambda _: _role_of(http, token) == 401)
        browser.execute_script("document.querySelector('#filters').requestSubmit()")
        wait(browser).until(seen.visibility_of_element_located((By.ID, "signin")))
        reason = browser.find_element(By.ID, "signin-reason")
        assert reason.text.startswith("Signed out: Your session ended (it expired); sign in again")
        assert "expired" in reason.text


def test_a_person_of_no_group_meets_the_refusal_page_and_its_way_back(
    browser: webdriver.Chrome, sso_console: str, provider: OpenIdProvider
) -> None:
    provider.issue = Issue(email="mallory@example.com", groups=["sales"])
    browser.get(sso_console)
    wait(browser).until(seen.element_to_be_clickable((By.ID, "provider-signin"))).click()
    heading = wait(browser).until(seen.visibility_of_element_located((By.TAG_NAME, "h1")))
    wait(browser).until(lambda _: heading.text == "No access to this console")
    assert "You signed in as mallory@example.com" in browser.page_source
    assert urlsplit(browser.current_url).path == "/auth/callback"
    back = browser.find_element(By.ID, "back-to-sign-in")
    assert back.text == "Back to the console's sign-in"
    back.click()
    wait(browser).until(seen.visibility_of_element_located((By.ID, "provider-signin")))
    assert browser.current_url == sso_console
    assert _stored(browser, "sealtrail.token") is None


def test_the_sign_in_through_the_provider_has_no_accessibility_violation(
    browser: webdriver.Chrome, sso_console: str, provider: OpenIdProvider, http: httpx.Client
) -> None:
    if not AXE.exists():
        pytest.skip("tests/browser/vendor/axe.min.js is missing")
    browser.set_script_timeout(60)
    found: dict[str, list[str]] = {}
    browser.get(sso_console)
    wait(browser).until(seen.visibility_of_element_located((By.ID, "provider-signin")))
    check(browser, "signed out, the provider's button", found)
    browser.get(f"{sso_console}#signin=not-a-code")
    error = wait(browser).until(seen.visibility_of_element_located((By.ID, "signin-error")))
    wait(browser).until(lambda _: "Sign-in refused" in error.text)
    check(browser, "a code refused", found)
    browser.find_element(By.ID, "provider-signin").click()
    wait(browser).until(seen.visibility_of_element_located((By.ID, "signed-in-as")))
    wait_for_rows(browser, lambda r: len(r) >= 1)
    check(browser, "signed in as the person", found)
    provider.issue = Issue(groups=["sales"])
    browser.find_element(By.ID, "signout").click()
    wait(browser).until(seen.element_to_be_clickable((By.ID, "provider-signin"))).click()
    wait(browser).until(seen.visibility_of_element_located((By.ID, "back-to-sign-in")))
    check(browser, "the refusal page", found)
    assert not found, report(found)
