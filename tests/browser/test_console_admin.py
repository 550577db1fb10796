"""The console's admin area in a real headless Chromium: shown to an admin
only; a token created with its secret shown once and revoked on
confirmation; a sink paused, refused when it changed since it was read, and
deleted only once its name is typed; an alert rule disabled; the legal hold
placed and released on confirmation, or its release refused with the
server's word."""

from __future__ import annotations

import base64
import json
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg
import pytest
from selenium import webdriver
from selenium.common.exceptions import StaleElementReferenceException
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support import expected_conditions as seen
from selenium.webdriver.support.ui import Select, WebDriverWait

from sealtrail import (
    AuditClient,
    UnauthenticatedError,
    build_alert_rule,
    build_filter,
    build_sink,
)
from sealtrail.v1 import access_pb2, alerting_pb2, event_pb2
from tests.browser.test_console import WAIT, sign_in
from tests.browser.test_console_admin_api import send
from tests.conftest import (
    ServerThread,
    database_of_its_own,
    run_operator,
)
from tests.integration.test_rolling_upgrades import (
    NEWER,
    _copied_rule,
    _copied_sink,
    _newer_filter_copy,
    allow_a_newer_kind,
)


@pytest.fixture
def admin_token(console_server: ServerThread, tenant: str) -> str:
    """The admin token the browser signs in with."""
    return console_server.token(tenant, "admin")


@pytest.fixture
def admin(console_server: ServerThread, admin_token: str) -> Iterator[AuditClient]:
    """A client of the tenant, to set up and check what the page does."""
    with AuditClient(console_server.target, token=admin_token) as client:
        yield client


def open_view(browser: webdriver.Chrome, url: str, token: str, view: str) -> WebElement:
    """Signs in and opens the admin view `view` from the navigation."""
    sign_in(browser, url, token)
    wait(browser).until(seen.element_to_be_clickable((By.LINK_TEXT, view))).click()
    shown = (By.CSS_SELECTOR, "section.view:not([hidden]):not(#log)")
    section = wait(browser).until(seen.visibility_of_element_located(shown))
    wait(browser).until(lambda b: section.get_attribute("aria-busy") != "true")
    return section


@contextmanager
def last_uses_held(server: ServerThread) -> Iterator[None]:
    """`server`'s tokens' last uses noted, not written, while the block runs:
    its writer (every 10 s, ADR 0064) is ended first, having written what it
    had, and started again after (what was noted meanwhile written then)."""
    uses = server.service.token_uses
    server.run(uses.stop())

    async def start() -> None:
        uses.start()

    try:
        yield
    finally:
        server.run(start())


def row_of(section: WebElement, name: str) -> WebElement:
    """The table row of `section` whose first cell is `name`."""
    for row in section.find_elements(By.CSS_SELECTOR, "tbody tr"):
        if (
            row.find_elements(By.CSS_SELECTOR, "td")
            and row.find_element(By.TAG_NAME, "td").text == name
        ):
            return row
    raise AssertionError(f"no row {name!r}")


def wait(browser: webdriver.Chrome) -> WebDriverWait[webdriver.Chrome]:
    """Past a row replaced while it was read (a view read again) or not there yet."""
    return WebDriverWait(
        browser, WAIT, ignored_exceptions=(StaleElementReferenceException, AssertionError)
    )


def token_named(admin: AuditClient, name: str) -> access_pb2.ApiToken:
    [token] = [t for t in admin.list_tokens() if t.name == name]
    return token


def confirm_dialog(browser: webdriver.Chrome) -> WebElement:
    return wait(browser).until(seen.visibility_of_element_located((By.ID, "confirm")))


def webhook(admin: AuditClient, name: str, *, paused: bool = False) -> str:
    sink = build_sink(
        name,
        "webhook",
        url="http://127.0.0.1:9/hook",
        secrets=["whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()],
        filter=build_filter(actions="doc.*"),
        paused=paused,
    )
    return admin.create_sink(sink).sink.id


def test_a_reader_sees_the_investigation_views_only(
    browser: webdriver.Chrome, console_url: str, console_server: ServerThread, tenant: str
) -> None:
    sign_in(browser, console_url + "#tokens", console_server.token(tenant, "reader"))
    wait(browser).until(seen.visibility_of_element_located((By.ID, "log")))
    nav = browser.find_element(By.ID, "views")
    assert [link.text for link in nav.find_elements(By.TAG_NAME, "a") if link.is_displayed()] == [
        "Events"
    ]
    assert not browser.find_element(By.ID, "admin-tokens").is_displayed()


def test_a_token_is_created_its_secret_shown_once_then_revoked(
    browser: webdriver.Chrome,
    console_url: str,
    console_server: ServerThread,
    admin: AuditClient,
    admin_token: str,
) -> None:
    section = open_view(browser, console_url, admin_token, "Tokens")
    form = section.find_element(By.ID, "token-create")
    Select(form.find_element(By.NAME, "role")).select_by_value("exporter")
    form.find_element(By.NAME, "name").send_keys("quarterly export")
    form.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    shown = wait(browser).until(seen.visibility_of_element_located((By.ID, "token-secret")))
    secret = shown.find_element(By.ID, "token-secret-value").get_attribute("value") or ""
    assert secret.startswith("stk_")
    assert "shown only this once" in shown.text
    browser.execute_cdp_cmd(
        "Browser.grantPermissions",
        {"permissions": ["clipboardReadWrite", "clipboardSanitizedWrite"]},
    )
    shown.find_element(By.ID, "token-copy").click()
    wait(browser).until(lambda b: "Copied" in shown.text)
    copied = browser.execute_async_script(
        "navigator.clipboard.readText().then(arguments[0], () => arguments[0](null))"
    )
    assert copied == secret
    # The secret works: it is a real token of this tenant, with the role asked for.
    [made] = [t for t in admin.list_tokens() if t.name == "quarterly export"]
    with AuditClient(console_server.target, token=secret) as exporter:
        exporter.get_verifier_keys()
    row = row_of(section, "quarterly export")
    assert "exporter" in row.text and made.token_id in row.text

    shown.find_element(By.ID, "token-secret-done").click()
    wait(browser).until(lambda b: not shown.is_displayed())
    assert secret not in browser.page_source
    browser.refresh()  # and it is nowhere to be read again
    section = wait(browser).until(seen.visibility_of_element_located((By.ID, "admin-tokens")))
    wait(browser).until(lambda b: row_of(section, "quarterly export"))
    assert secret not in browser.page_source

    row_of(section, "quarterly export").find_element(By.XPATH, ".//button[.='Revoke']").click()
    dialog = confirm_dialog(browser)
    assert "quarterly export" in dialog.text
    dialog.find_element(By.XPATH, ".//button[.='Cancel']").click()
    wait(browser).until(lambda b: not dialog.is_displayed())
    assert not token_named(admin, "quarterly export").HasField("revoke_time")
    row_of(section, "quarterly export").find_element(By.XPATH, ".//button[.='Revoke']").click()
    confirm_dialog(browser).find_element(By.ID, "confirm-ok").click()
    wait(browser).until(lambda b: "revoked" in row_of(section, "quarterly export").text)
    assert token_named(admin, "quarterly export").HasField("revoke_time")
    assert not row_of(section, "quarterly export").find_elements(By.XPATH, ".//button")


def test_a_secret_shown_once_is_not_shown_again_when_its_view_is_reopened(
    browser: webdriver.Chrome, console_url: str, admin_token: str
) -> None:
    """Leaving the view takes a secret off the page: it stayed, and reopening
    Tokens (or Sinks) showed it again, "shown once" as often as asked
    (helper-187)."""
    section = open_view(browser, console_url, admin_token, "Tokens")
    form = section.find_element(By.ID, "token-create")
    form.find_element(By.NAME, "name").send_keys("ci deploy")
    form.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    box = wait(browser).until(seen.visibility_of_element_located((By.ID, "token-secret")))
    secret = box.find_element(By.ID, "token-secret-value").get_attribute("value") or ""
    assert secret.startswith("stk_")
    browser.find_element(By.LINK_TEXT, "Events").click()
    wait(browser).until(seen.visibility_of_element_located((By.ID, "log")))
    assert box.find_element(By.ID, "token-secret-value").get_attribute("value") == ""
    browser.find_element(By.LINK_TEXT, "Tokens").click()
    section = wait(browser).until(seen.visibility_of_element_located((By.ID, "admin-tokens")))
    wait(browser).until(lambda b: row_of(section, "ci deploy"))
    assert not box.is_displayed()

    browser.find_element(By.LINK_TEXT, "Sinks").click()
    sinks = wait(browser).until(seen.visibility_of_element_located((By.ID, "admin-sinks")))
    form = sinks.find_element(By.ID, "sink-create")
    form.find_element(By.NAME, "name").send_keys("hooks")
    form.find_element(By.NAME, "url").send_keys("http://127.0.0.1:9/hook")
    form.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    box = wait(browser).until(seen.visibility_of_element_located((By.ID, "sink-secret")))
    browser.find_element(By.LINK_TEXT, "Tokens").click()
    wait(browser).until(seen.visibility_of_element_located((By.ID, "admin-tokens")))
    browser.find_element(By.LINK_TEXT, "Sinks").click()
    wait(browser).until(lambda b: row_of(sinks, "hooks"))
    assert not box.is_displayed()
    assert box.find_element(By.ID, "sink-secret-value").get_attribute("value") == ""


def test_a_sink_is_paused_and_a_stale_page_cannot_undo_a_newer_change(
    browser: webdriver.Chrome, console_url: str, admin: AuditClient, admin_token: str
) -> None:
    sink_id = webhook(admin, "siem")
    section = open_view(browser, console_url, admin_token, "Sinks")
    row = row_of(section, "siem")
    assert "webhook" in row.text and "http://127.0.0.1:9/hook" in row.text
    assert "actions doc.*" in row.text and "active" in row.text
    row.find_element(By.XPATH, ".//button[.='Pause']").click()
    wait(browser).until(lambda b: "paused" in row_of(section, "siem").text)
    assert admin.get_sink(sink_id).paused
    assert "sink.updated" in section.find_element(By.CSS_SELECTOR, ".done[role=status]").text

    # Someone else resumes it; this page still shows it paused.
    sink = admin.get_sink(sink_id)
    sink.paused = False
    admin.update_sink(sink, fields=["paused"])
    row_of(section, "siem").find_element(By.XPATH, ".//button[.='Resume']").click()
    error = section.find_element(By.CSS_SELECTOR, ".error")
    wait(browser).until(lambda b: "changed since" in error.text)
    assert not admin.get_sink(sink_id).paused  # nothing was changed
    wait(browser).until(lambda b: "active" in row_of(section, "siem").text)  # read again


def test_a_webhook_is_added_with_its_signing_secret_shown_once(
    browser: webdriver.Chrome, console_url: str, admin: AuditClient, admin_token: str
) -> None:
    section = open_view(browser, console_url, admin_token, "Sinks")
    form = section.find_element(By.ID, "sink-create")
    form.find_element(By.NAME, "name").send_keys("hooks")
    form.find_element(By.NAME, "url").send_keys("http://127.0.0.1:9/hook")
    form.find_element(By.NAME, "actions").send_keys("doc.*, user.login")
    Select(form.find_element(By.NAME, "min_severity")).select_by_visible_text("warning")
    form.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    shown = wait(browser).until(seen.visibility_of_element_located((By.ID, "sink-secret")))
    secret = shown.find_element(By.CSS_SELECTOR, "input").get_attribute("value") or ""
    assert secret.startswith("whsec_") and "shown only this once" in shown.text
    assert "may have been added" not in shown.text  # it was: the answer said so
    row = wait(browser).until(lambda b: row_of(section, "hooks"))
    assert "webhook" in row.text and "actions doc.*, user.login" in row.text
    [sink] = admin.list_sinks()
    assert list(sink.webhook.secret_hints) == [secret[-4:]]
    assert list(sink.filter.actions) == ["doc.*", "user.login"]
    assert sink.filter.min_severity == event_pb2.SEVERITY_WARNING
    shown.find_element(By.XPATH, ".//button[.='I have stored it']").click()
    wait(browser).until(lambda b: not shown.is_displayed())

    # A chat channel's URL is its credential: sent, then shown as its hint only.
    Select(form.find_element(By.NAME, "kind")).select_by_value("chat")
    form.find_element(By.NAME, "name").send_keys("security channel")
    url = "http://127.0.0.1:9/services/T0000/B0000/abcdefghijklmnopqrstuvwx"
    form.find_element(By.NAME, "url").send_keys(url)
    form.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    row = wait(browser).until(lambda b: row_of(section, "security channel"))
    assert "chat" in row.text and "…" in row.text and "abcdefghijklmnopqrstuvwx" not in row.text
    assert not shown.is_displayed()


# The answer to the page's POST /api/sinks lost after the console made the call:
# the connection cut (fetch rejects), or a proxy's 502 in its place.
_LOSE_THE_ANSWER = """
const how = arguments[0];
const real = window.fetch;
window.fetch = async (url, init = {}) => {
  const answer = await real(url, init);
  if (String(url) !== "/api/sinks" || init.method !== "POST") return answer;
  await answer.text();
  if (how === "cut") throw new TypeError("Failed to fetch");
  return new Response("<html>Bad Gateway</html>", { status: 502, statusText: "Bad Gateway" });
};
"""


@pytest.mark.parametrize("lost", ["cut", "502"])
def test_a_webhook_whose_answer_is_lost_still_shows_its_signing_secret(
    browser: webdriver.Chrome, console_url: str, admin: AuditClient, admin_token: str, lost: str
) -> None:
    """The page makes the secret: when no answer of the API's came back, the
    sink may exist and sign with it, and the page threw it away unshown,
    leaving only a blind rotation from the CLI (helper-187)."""
    section = open_view(browser, console_url, admin_token, "Sinks")
    browser.execute_script(_LOSE_THE_ANSWER, lost)
    form = section.find_element(By.ID, "sink-create")
    form.find_element(By.NAME, "name").send_keys("siem")
    form.find_element(By.NAME, "url").send_keys("http://127.0.0.1:9/hook")
    form.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    shown = wait(browser).until(seen.visibility_of_element_located((By.ID, "sink-secret")))
    secret = shown.find_element(By.CSS_SELECTOR, "input").get_attribute("value") or ""
    assert "may have been added" in shown.text
    [sink] = admin.list_sinks()  # it was
    assert secret.startswith("whsec_") and list(sink.webhook.secret_hints) == [secret[-4:]]
    wait(browser).until(lambda b: row_of(section, "siem"))  # the list read again shows it
    assert section.find_element(By.CSS_SELECTOR, ".error").text
    shown.find_element(By.XPATH, ".//button[.='I have stored it']").click()
    wait(browser).until(lambda b: not shown.is_displayed())
    assert "may have been added" not in shown.text


# The named inputs of the admin views' forms that hold anything but their
# default (a retention policy's days are shown as read, and are no input's).
_TYPED = """
return [...document.querySelectorAll("section.view[id^='admin-'] form")]
  .flatMap((form) => [...form.elements].map((element) => [form.id, element]))
  .filter(([, e]) => e.name && (e.type === "checkbox" || e.type === "radio"
    ? e.checked !== e.defaultChecked
    : e.tagName === "SELECT" ? e.options.length > 0
      && e.selectedIndex !== Math.max(0, [...e.options].findIndex((o) => o.defaultSelected))
      : "defaultValue" in e && e.value !== e.defaultValue))
  .map(([form, e]) => `${form} ${e.name}: ${e.value}`);
"""


def test_what_was_typed_in_the_admin_forms_goes_with_signing_out(
    browser: webdriver.Chrome,
    console_url: str,
    console_server: ServerThread,
    admin_token: str,
) -> None:
    """A Splunk token or a chat channel's URL (its credential) typed into Add
    sink stayed in the page after signing out, and was there for whoever
    signed into the tab next, another tenant's admin (helper-187)."""
    section = open_view(browser, console_url, admin_token, "Sinks")
    form = section.find_element(By.ID, "sink-create")
    for name in ("url", "token", "api_key"):  # no browser keeps them to offer elsewhere
        assert form.find_element(By.NAME, name).get_attribute("autocomplete") == "off", name
    Select(form.find_element(By.NAME, "kind")).select_by_value("splunk_hec")
    form.find_element(By.NAME, "name").send_keys("splunk")
    form.find_element(By.NAME, "url").send_keys("https://splunk.example:8088")
    form.find_element(By.NAME, "token").send_keys("hec-" + secrets.token_hex(8))
    browser.find_element(By.LINK_TEXT, "Tokens").click()
    tokens = wait(browser).until(seen.visibility_of_element_located((By.ID, "admin-tokens")))
    tokens.find_element(By.CSS_SELECTOR, "#token-create [name=name]").send_keys("half typed")
    browser.find_element(By.LINK_TEXT, "Retention").click()
    reason = wait(browser).until(seen.visibility_of_element_located((By.NAME, "reason")))
    reason.send_keys("matter 2026-114")
    browser.find_element(By.NAME, "confirm_tenant_id").send_keys("t-half-typed")
    # kind, name, url, token; name; reason, the tenant id typed back
    assert len(browser.execute_script(_TYPED)) == 7

    browser.find_element(By.ID, "signout").click()
    wait(browser).until(seen.visibility_of_element_located((By.ID, "token")))
    assert browser.execute_script(_TYPED) == []
    other = console_server.token(f"t-{secrets.token_hex(6)}", "admin")
    browser.find_element(By.ID, "token").send_keys(other, Keys.ENTER)
    wait(browser).until(seen.element_to_be_clickable((By.LINK_TEXT, "Sinks"))).click()
    form = wait(browser).until(seen.visibility_of_element_located((By.ID, "sink-create")))
    assert form.find_element(By.NAME, "url").get_attribute("value") == ""
    assert not form.find_element(By.NAME, "token").is_displayed()  # a webhook's form again
    assert browser.execute_script(_TYPED) == []


# The next answer to `method` `path` held in the page until `window.fetch.held()`:
# the call is made and answered, and its answer reaches the page only then.
_HOLD_NEXT_ANSWER = """
const [method, path] = arguments;
const fetched = window.fetch;
window.fetch = async (url, init) => {
  const answer = await fetched(url, init);
  if (window.fetch.held === undefined && String(url).startsWith(path)
      && (init?.method || "GET") === method) {
    await new Promise((resolve) => { window.fetch.held = resolve; });
  }
  return answer;
};
"""


def test_an_answer_to_a_session_signed_out_is_not_shown_to_the_next(
    browser: webdriver.Chrome,
    console_url: str,
    console_server: ServerThread,
    admin_token: str,
) -> None:
    """A token created as its admin signed out: its answer, arriving once the
    tab's next session had begun (another tenant's admin), showed that
    session the new token's secret and listed the token among its own."""
    section = open_view(browser, console_url, admin_token, "Tokens")
    browser.execute_script(_HOLD_NEXT_ANSWER, "POST", "/api/tokens")
    form = section.find_element(By.ID, "token-create")
    Select(form.find_element(By.NAME, "role")).select_by_value("admin")
    form.find_element(By.NAME, "name").send_keys("made as I left")
    submit = form.find_element(By.CSS_SELECTOR, "button[type=submit]")
    submit.click()
    wait(browser).until(lambda b: b.execute_script("return window.fetch.held !== undefined"))
    browser.find_element(By.ID, "signout").click()

    other = f"t-{secrets.token_hex(6)}"
    with AuditClient(console_server.target, token=console_server.token(other)) as next_admin:
        next_admin.create_token("reader", name="the next tenant's")
    field = wait(browser).until(seen.visibility_of_element_located((By.ID, "token")))
    field.send_keys(console_server.token(other), Keys.ENTER)
    wait(browser).until(lambda b: row_of(section, "the next tenant's"))  # its own Tokens view
    browser.execute_script("window.fetch.held()")
    wait(browser).until(lambda b: submit.is_enabled())  # the creation's answer handled

    assert not section.find_element(By.ID, "token-secret").is_displayed()
    assert section.find_element(By.ID, "token-secret-value").get_attribute("value") == ""
    names = [row.find_element(By.TAG_NAME, "td").text for row in
             section.find_elements(By.CSS_SELECTOR, "#tokens-table tbody tr")]  # fmt: skip
    assert "made as I left" not in names and "the next tenant's" in names
    assert "made as I left" not in section.text


def test_a_sink_is_deleted_only_once_its_name_is_typed(
    browser: webdriver.Chrome, console_url: str, admin: AuditClient, admin_token: str
) -> None:
    webhook(admin, "old siem", paused=True)
    section = open_view(browser, console_url, admin_token, "Sinks")
    row_of(section, "old siem").find_element(By.XPATH, ".//button[.='Delete']").click()
    dialog = confirm_dialog(browser)
    ok = dialog.find_element(By.ID, "confirm-ok")
    assert not ok.is_enabled()
    typed = dialog.find_element(By.ID, "confirm-typed")
    typed.send_keys("old sie")
    assert not ok.is_enabled()
    typed.send_keys("m")
    assert ok.is_enabled()
    ok.click()
    wait(browser).until(lambda b: "No sinks" in section.text)
    assert admin.list_sinks() == []


def test_a_sink_named_with_hidden_characters_before_the_rule_is_told_apart_and_deleted(
    browser: webdriver.Chrome,
    console_url: str,
    admin: AuditClient,
    admin_token: str,
    sql: psycopg.Connection[Any],
) -> None:
    """A name stored before hidden characters were refused (docs/api.md,
    "Names"): the table and the dialog show them as \\u escapes, so it is
    not taken for its look-alike; the dialog's title keeps the name's bidi
    override inside it (a <bdi>); the escaped name, typed back, deletes it."""
    webhook(admin, "siem", paused=True)
    old_id = webhook(admin, "old", paused=True)
    old = "si\u200bem\u202e"
    sql.execute("UPDATE sinks SET name = %s WHERE id = %s", [old, old_id])
    escaped = "si\\u200bem\\u202e"
    section = open_view(browser, console_url, admin_token, "Sinks")
    row_of(section, escaped).find_element(By.XPATH, ".//button[.='Delete']").click()
    dialog = confirm_dialog(browser)
    isolated = browser.execute_script(
        "return [...document.querySelectorAll('#confirm-title bdi')].map((e) => e.textContent)"
    )
    assert isolated == [escaped]
    title = dialog.find_element(By.ID, "confirm-title").text
    assert title == f"Delete the sink \u201c{escaped}\u201d?"
    assert dialog.find_element(By.ID, "confirm-name").text == escaped
    ok = dialog.find_element(By.ID, "confirm-ok")
    typed = dialog.find_element(By.ID, "confirm-typed")
    typed.send_keys("siem")
    assert not ok.is_enabled()
    typed.clear()
    typed.send_keys(escaped)
    assert ok.is_enabled()
    ok.click()
    wait(browser).until(lambda b: escaped not in section.text)
    assert [s.name for s in admin.list_sinks()] == ["siem"]


def test_a_rule_shows_its_sinks_named_with_hidden_characters_as_the_sinks_view_does(
    browser: webdriver.Chrome,
    console_url: str,
    admin: AuditClient,
    admin_token: str,
    sql: psycopg.Connection[Any],
) -> None:
    """The sinks view showed a name stored before hidden characters were
    refused with its \\u escapes, but a rule's Sinks column and the rule
    form's sink choices showed it as it is: the two look-alikes were one
    name twice, and a rule was routed to the one not meant."""
    webhook(admin, "siem", paused=True)
    old_id = webhook(admin, "old", paused=True)
    sql.execute("UPDATE sinks SET name = %s WHERE id = %s", ["si\u200bem", old_id])
    escaped = "si\\u200bem"
    rule = build_alert_rule("pages", "match", filter=build_filter(actions="x.y"), sink_ids=[old_id])
    rule_id = admin.create_alert_rule(rule).rule.id
    # The rule's own name, of before too: its form's title keeps its bidi in place.
    sql.execute("UPDATE alert_rules SET name = %s WHERE id = %s", ["pages\u202e", rule_id])
    section = open_view(browser, console_url, admin_token, "Alert rules")
    row = wait(browser).until(lambda b: row_of(section, "pages\\u202e"))
    assert escaped in row.text, row.text
    row.find_element(By.XPATH, ".//button[.='Edit']").click()
    isolated = browser.execute_script(
        "return [...document.querySelectorAll('#rule-form-title bdi')].map((e) => e.textContent)"
    )
    assert isolated == ["pages\\u202e"]
    offered = {
        tick.get_attribute("value"): tick.find_element(By.XPATH, "..").text.strip()
        for tick in wait(browser).until(
            lambda b: b.find_elements(By.CSS_SELECTOR, "#rule-form [name=sink_ids]")
        )
    }
    assert offered[old_id] == escaped, offered
    assert sorted(offered.values()) == sorted(["siem", escaped]), offered


def test_a_confirmation_title_isolates_the_name_it_shows(
    browser: webdriver.Chrome, console_url: str, admin: AuditClient, admin_token: str
) -> None:
    """A right-to-left name in a title stays inside its quotes: isolated."""
    admin.create_token("reader", name="\u0633\u062c\u0644")
    section = open_view(browser, console_url, admin_token, "Tokens")
    row = row_of(section, "\u0633\u062c\u0644")
    row.find_element(By.XPATH, ".//button[.='Revoke']").click()
    confirm_dialog(browser)
    isolated = browser.execute_script(
        "return [...document.querySelectorAll('#confirm-title bdi')].map((e) => e.textContent)"
    )
    assert isolated == ["\u0633\u062c\u0644"]


def test_an_alert_rule_is_disabled_and_shows_its_condition_and_sinks(
    browser: webdriver.Chrome, console_url: str, admin: AuditClient, admin_token: str
) -> None:
    sink_id = webhook(admin, "pager", paused=True)
    rule = build_alert_rule(
        "failed logins",
        "threshold",
        filter=build_filter(actions="user.login", outcomes="failure"),
        count=5,
        window_seconds=300,
        group_by="ip",
        sink_ids=[sink_id],
    )
    rule_id = admin.create_alert_rule(rule).rule.id
    section = open_view(browser, console_url, admin_token, "Alert rules")
    row = row_of(section, "failed logins")
    assert "5 within 5 min per IP" in row.text and "outcomes failure" in row.text
    assert "pager" in row.text and "enabled" in row.text
    row.find_element(By.XPATH, ".//button[.='Disable']").click()
    wait(browser).until(lambda b: "disabled" in row_of(section, "failed logins").text)
    assert [r.disabled for r in admin.list_alert_rules() if r.id == rule_id] == [True]


def test_a_rule_reading_countries_says_the_server_locates_none(
    browser: webdriver.Chrome, console_url: str, admin: AuditClient, admin_token: str
) -> None:
    """The console's server has no GeoIP database: a new-country rule sees
    only the countries callers send, and its row says so; another does not."""
    admin.create_alert_rule(build_alert_rule("abroad", "new_country"))
    admin.create_alert_rule(build_alert_rule("keys", "match", filter=build_filter(actions="k.x")))
    section = open_view(browser, console_url, admin_token, "Alert rules")
    warned = row_of(section, "abroad").find_element(By.CSS_SELECTOR, ".rule-warning")
    assert warned.text.startswith("this server has no GeoIP database (SEALTRAIL_GEOIP_DB)")
    assert row_of(section, "keys").find_elements(By.CSS_SELECTOR, ".rule-warning") == []


def test_the_legal_hold_is_released_on_confirmation(
    browser: webdriver.Chrome, console_url: str, admin: AuditClient, admin_token: str
) -> None:
    admin.set_retention_policy(365, categories={"authentication": 90})
    admin.set_legal_hold(True, reason="matter 2026-114")
    section = open_view(browser, console_url, admin_token, "Retention")
    assert "365 days" in section.text and "authentication: 90 days" in section.text
    hold = section.find_element(By.ID, "legal-hold")
    assert "On" in hold.text and "matter 2026-114" in hold.text
    hold.find_element(By.XPATH, ".//button[.='Release the hold']").click()
    dialog = confirm_dialog(browser)
    assert "purge" in dialog.text
    dialog.find_element(By.XPATH, ".//button[.='Cancel']").click()
    assert admin.get_retention_policy().legal_hold.on
    hold.find_element(By.XPATH, ".//button[.='Release the hold']").click()
    confirm_dialog(browser).find_element(By.ID, "confirm-ok").click()
    wait(browser).until(lambda b: "Off" in hold.text)
    assert not admin.get_retention_policy().legal_hold.on

    # Placed again from the page, with its reason.
    hold.find_element(By.NAME, "reason").send_keys("matter 2026-200")
    hold.find_element(By.XPATH, ".//button[.='Place a hold']").click()
    confirm_dialog(browser).find_element(By.ID, "confirm-ok").click()
    wait(browser).until(lambda b: "On" in hold.text and "matter 2026-200" in hold.text)
    assert admin.get_retention_policy().legal_hold.reason == "matter 2026-200"


def test_a_held_legal_holds_reason_is_changed_on_confirmation(
    browser: webdriver.Chrome, console_url: str, admin: AuditClient, admin_token: str
) -> None:
    """While on, the hold's reason is edited in place (the matter renamed, a
    second case added): the API records the change with the reason it
    replaces, and the page asks first, as it does to place one. Cancel, or
    the reason unchanged, changes nothing; the hold stays on throughout."""
    admin.set_legal_hold(True, reason="matter 2026-114")
    section = open_view(browser, console_url, admin_token, "Retention")
    hold = section.find_element(By.ID, "legal-hold")
    form = hold.find_element(By.ID, "hold-reason")
    reason = form.find_element(By.NAME, "reason")
    assert reason.get_attribute("value") == "matter 2026-114"
    assert not hold.find_element(By.ID, "hold-place").is_displayed()
    reason.clear()
    reason.send_keys("matter 2026-114 and 2026-120")
    form.find_element(By.XPATH, ".//button[.='Change the reason']").click()
    dialog = confirm_dialog(browser)
    assert "matter 2026-114" in dialog.text and "matter 2026-114 and 2026-120" in dialog.text
    dialog.find_element(By.XPATH, ".//button[.='Cancel']").click()
    assert admin.get_retention_policy().legal_hold.reason == "matter 2026-114"

    form.find_element(By.XPATH, ".//button[.='Change the reason']").click()
    confirm_dialog(browser).find_element(By.ID, "confirm-ok").click()
    wait(browser).until(lambda b: "matter 2026-114 and 2026-120" in hold.text)
    held = admin.get_retention_policy().legal_hold
    assert held.on and held.reason == "matter 2026-114 and 2026-120"
    said = section.find_element(By.CSS_SELECTOR, ".done")
    assert "reason changed" in said.text
    changed = next(iter(admin.query(build_filter(actions="retention.legal_hold_placed"))))
    assert changed.details["previous_reason"] == "matter 2026-114"

    # The reason as it is: nothing asked, sent or recorded.
    before = admin.count_events(build_filter(actions="retention.*")).total
    form.find_element(By.XPATH, ".//button[.='Change the reason']").click()
    wait(browser).until(lambda b: "already" in said.text)
    assert not browser.find_element(By.ID, "confirm").is_displayed()
    assert admin.count_events(build_filter(actions="retention.*")).total == before


def test_a_release_kept_to_the_operator_shows_the_servers_word(
    browser: webdriver.Chrome, migrated_database_url: str, tenant: str
) -> None:
    guarded = ServerThread(
        migrated_database_url, console_listen="127.0.0.1:0", legal_hold_release="operator"
    )
    try:
        token = guarded.token(tenant)
        with AuditClient(guarded.target, token=token) as client:
            client.set_legal_hold(True, reason="matter 7")
        url = f"http://127.0.0.1:{guarded.service.console_port}/"
        section = open_view(browser, url, token, "Retention")
        hold = section.find_element(By.ID, "legal-hold")
        hold.find_element(By.XPATH, ".//button[.='Release the hold']").click()
        confirm_dialog(browser).find_element(By.ID, "confirm-ok").click()
        error = section.find_element(By.CSS_SELECTOR, ".error")
        wait(browser).until(lambda b: "operator releases legal holds" in error.text)
        assert "On" in hold.text
    finally:
        guarded.close()


def test_the_admin_views_fit_a_360_pixel_screen(
    browser: webdriver.Chrome, console_url: str, admin: AuditClient, admin_token: str
) -> None:
    webhook(admin, "a sink with a rather long name for a small screen")
    admin.create_alert_rule(
        build_alert_rule("any login", "match", filter=build_filter(actions="user.login"))
    )
    browser.set_window_size(360, 800)
    open_view(browser, console_url, admin_token, "Tokens")
    for view, shown in (
        ("Tokens", "admin-tokens"),
        ("Sinks", "admin-sinks"),
        ("Alert rules", "admin-alerts"),
        ("Retention", "admin-retention"),
        ("Actions", "admin-actions"),
    ):
        browser.find_element(By.LINK_TEXT, view).click()
        section = wait(browser).until(seen.visibility_of_element_located((By.ID, shown)))
        wait(browser).until(lambda b, s=section: s.get_attribute("aria-busy") != "true")
        width = browser.execute_script("return document.documentElement.scrollWidth")
        # The tables scroll inside their own boxes, their hidden headers too.
        assert width <= browser.execute_script("return window.innerWidth"), view


def test_a_tab_signed_in_before_the_admin_views_learns_its_role(
    browser: webdriver.Chrome, console_url: str, admin_token: str
) -> None:
    """A tab whose session holds a token but no role (signed in by the page
    before this version) shows the admin views once it has asked."""
    browser.get(console_url)
    browser.execute_script("sessionStorage.setItem('sealtrail.token', arguments[0])", admin_token)
    browser.get(console_url + "#tokens")  # the same page: only its fragment changes
    browser.refresh()
    section = wait(browser).until(seen.visibility_of_element_located((By.ID, "admin-tokens")))
    wait(browser).until(lambda b: section.get_attribute("aria-busy") != "true")
    assert browser.find_element(By.LINK_TEXT, "Retention").is_displayed()
    assert browser.execute_script("return sessionStorage.getItem('sealtrail.role')") == "admin"


def test_an_alert_rule_is_created_from_the_searchs_filter_fields_then_edited(
    browser: webdriver.Chrome, console_url: str, admin: AuditClient, admin_token: str
) -> None:
    sink_id = webhook(admin, "pager", paused=True)
    section = open_view(browser, console_url, admin_token, "Alert rules")
    form = section.find_element(By.ID, "rule-form")
    form.find_element(By.NAME, "name").send_keys("failed logins")
    Select(form.find_element(By.NAME, "kind")).select_by_value("threshold")
    count = form.find_element(By.NAME, "count")
    count.clear()
    count.send_keys("10")
    Select(form.find_element(By.NAME, "group_by")).select_by_value("ALERT_GROUP_BY_IP")
    Select(form.find_element(By.NAME, "severity")).select_by_visible_text("error")
    # The event search's own filter fields, in the rule's form.
    watched = form.find_element(By.CSS_SELECTOR, "fieldset[name=filter]")
    assert not watched.find_elements(By.NAME, "text")  # a rule's filter takes no full text
    watched.find_element(By.NAME, "actions").send_keys("user.login, sso.login")
    Select(watched.find_element(By.NAME, "outcomes")).select_by_visible_text("failure")
    form.find_element(By.XPATH, ".//label[contains(., 'pager')]/input").click()
    form.find_element(By.XPATH, ".//button[.='Create rule']").click()
    wait(browser).until(lambda b: "alert_rule.created" in section.text)

    [rule] = admin.list_alert_rules()
    assert (rule.name, rule.WhichOneof("condition")) == ("failed logins", "threshold")
    assert (rule.threshold.count, rule.threshold.window_seconds) == (10, 300)
    assert list(rule.threshold.filter.actions) == ["user.login", "sso.login"]
    assert list(rule.threshold.filter.outcomes) == [event_pb2.OUTCOME_FAILURE]
    assert list(rule.sink_ids) == [sink_id] and rule.severity == event_pb2.SEVERITY_ERROR
    row = wait(browser).until(lambda b: row_of(section, "failed logins"))
    assert "10 within 5 min per IP" in row.text and "pager" in row.text

    # Edited as read: the form shows the rule, its filter in the search's fields.
    row.find_element(By.XPATH, ".//button[.='Edit']").click()
    assert form.find_element(By.NAME, "actions").get_attribute("value") == "user.login,sso.login"
    assert form.find_element(By.NAME, "outcomes").get_attribute("value") == "failure"
    Select(form.find_element(By.NAME, "kind")).select_by_value("off_hours")
    form.find_element(By.NAME, "time_zone").send_keys("Mars/Olympus")
    form.find_element(By.XPATH, ".//button[.='Save changes']").click()
    # The API's refusal names the field; the page marks it and says it by its label.
    error = section.find_element(By.CSS_SELECTOR, ".error")
    wait(browser).until(lambda b: "Time zone" in error.text)
    zone = form.find_element(By.NAME, "time_zone")
    assert zone.get_attribute("aria-invalid") == "true"
    assert admin.list_alert_rules()[0].WhichOneof("condition") == "threshold"  # unchanged
    zone.clear()
    zone.send_keys("Europe/Paris")
    form.find_element(By.XPATH, ".//button[.='Save changes']").click()
    wait(browser).until(lambda b: "alert_rule.updated" in section.text)
    [rule] = admin.list_alert_rules()
    assert (rule.WhichOneof("condition"), rule.off_hours.time_zone) == ("off_hours", "Europe/Paris")
    assert list(rule.off_hours.filter.actions) == ["user.login", "sso.login"]
    assert list(rule.off_hours.working_days) == [1, 2, 3, 4, 5]


def test_an_edit_of_a_rule_changed_meanwhile_changes_nothing(
    browser: webdriver.Chrome, console_url: str, admin: AuditClient, admin_token: str
) -> None:
    made = admin.create_alert_rule(
        build_alert_rule("any login", "match", filter=build_filter(actions="user.login"))
    ).rule
    section = open_view(browser, console_url, admin_token, "Alert rules")
    row_of(section, "any login").find_element(By.XPATH, ".//button[.='Edit']").click()
    form = section.find_element(By.ID, "rule-form")
    made.name = "renamed elsewhere"
    admin.update_alert_rule(made)
    name = form.find_element(By.NAME, "name")
    name.clear()
    name.send_keys("mine")
    form.find_element(By.XPATH, ".//button[.='Save changes']").click()
    error = section.find_element(By.CSS_SELECTOR, ".error")
    wait(browser).until(lambda b: "changed since" in error.text)
    assert [rule.name for rule in admin.list_alert_rules()] == ["renamed elsewhere"]
    # Shown again as it is now, in the form too.
    wait(browser).until(lambda b: name.get_attribute("value") == "renamed elsewhere")


def test_a_rule_comparing_actor_ids_exactly_keeps_it_when_edited(
    browser: webdriver.Chrome, console_url: str, admin: AuditClient, admin_token: str
) -> None:
    """The rule form rebuilt a threshold from its own fields, which had none
    for `exact_actor_ids` (ADR 0110): an edit of anything else (the count)
    silently made a rule over case-sensitive ids fold them again, merging
    actors apart. The form shows it, a box ticked only for a rule grouped per
    actor, and keeps it unless it is unticked."""
    rule = build_alert_rule(
        "key misuse", "threshold", filter=build_filter(actions="api_key.use"), count=5,
        window_seconds=60, group_by="actor", exact_actor_ids=True,
    )  # fmt: skip
    assert admin.create_alert_rule(rule).rule.threshold.exact_actor_ids
    section = open_view(browser, console_url, admin_token, "Alert rules")
    row = wait(browser).until(lambda b: row_of(section, "key misuse"))
    assert "5 within 1 min per actor (ids compared exactly)" in row.text
    row.find_element(By.XPATH, ".//button[.='Edit']").click()
    form = section.find_element(By.ID, "rule-form")
    exact = form.find_element(By.NAME, "exact_actor_ids")
    assert exact.is_displayed() and exact.is_selected()
    hint = browser.find_element(By.ID, exact.get_attribute("aria-describedby") or "none")
    assert "case" in hint.text
    count = form.find_element(By.NAME, "count")
    count.clear()
    count.send_keys("7")
    form.find_element(By.XPATH, ".//button[.='Save changes']").click()
    wait(browser).until(lambda b: "alert_rule.updated" in section.text)
    [rule] = admin.list_alert_rules()
    assert rule.threshold.count == 7 and rule.threshold.exact_actor_ids  # kept

    # Shown only where it applies: per actor, not per IP (nor sent then).
    row = wait(browser).until(lambda b: row_of(section, "key misuse"))
    row.find_element(By.XPATH, ".//button[.='Edit']").click()
    group_by = Select(form.find_element(By.NAME, "group_by"))
    group_by.select_by_value("ALERT_GROUP_BY_IP")
    assert not exact.is_displayed()
    group_by.select_by_value("ALERT_GROUP_BY_ACTOR")
    assert exact.is_displayed() and exact.is_selected()
    exact.click()  # unticked: folded again
    form.find_element(By.XPATH, ".//button[.='Save changes']").click()
    wait(browser).until(lambda b: not admin.list_alert_rules()[0].threshold.exact_actor_ids)

    # A new rule may set it; the form's next rule starts unticked.
    form.find_element(By.NAME, "name").send_keys("ids apart")
    Select(form.find_element(By.NAME, "kind")).select_by_value("threshold")
    assert not exact.is_displayed()  # counted all together
    Select(form.find_element(By.NAME, "group_by")).select_by_value("ALERT_GROUP_BY_ACTOR")
    assert exact.is_displayed() and not exact.is_selected()
    exact.click()
    form.find_element(By.NAME, "actions").send_keys("user.login")
    form.find_element(By.XPATH, ".//button[.='Create rule']").click()
    wait(browser).until(lambda b: "alert_rule.created" in section.text)
    [new] = [r for r in admin.list_alert_rules() if r.name == "ids apart"]
    assert new.threshold.exact_actor_ids


def _rule_renamed(
    browser: webdriver.Chrome, console_url: str, admin_token: str, old: str, new: str
) -> tuple[WebElement, WebElement]:
    """The Alert rules view and its form, once the rule named `old` has been
    opened in the form, renamed `new` and saved there (nothing else typed)."""
    section = open_view(browser, console_url, admin_token, "Alert rules")
    row = wait(browser).until(lambda b: row_of(section, old))
    row.find_element(By.XPATH, ".//button[.='Edit']").click()
    form = section.find_element(By.ID, "rule-form")
    name = form.find_element(By.NAME, "name")
    name.clear()
    name.send_keys(new)
    form.find_element(By.XPATH, ".//button[.='Save changes']").click()
    wait(browser).until(lambda b: "alert_rule.updated" in section.text)
    return section, form


def test_a_rule_filtering_by_actor_roles_keeps_them_when_edited(
    browser: webdriver.Chrome, console_url: str, admin: AuditClient, admin_token: str
) -> None:
    """The rule form's "Actor role" field shows a rule's `actor_roles`, and an
    edit of its name keeps them (an edit without the field would have sent
    the filter back without them: a rule on admins watching everyone)."""
    rule = build_alert_rule(
        "admin refunds", "match",
        filter=build_filter(actions="invoice.refund", actor_roles=["admin", "billing"]),
    )  # fmt: skip
    rule_id = admin.create_alert_rule(rule).rule.id
    section, form = _rule_renamed(browser, console_url, admin_token, "admin refunds", "refunds")
    [kept] = [r for r in admin.list_alert_rules() if r.id == rule_id]
    assert kept.name == "refunds"
    assert list(kept.match.filter.actor_roles) == ["admin", "billing"]  # kept, not dropped
    row = wait(browser).until(lambda b: row_of(section, "refunds"))
    assert "actor roles admin, billing" in row.text
    row.find_element(By.XPATH, ".//button[.='Edit']").click()
    assert form.find_element(By.NAME, "actor_roles").get_attribute("value") == "admin,billing"


def test_a_role_the_actor_role_field_cannot_carry_is_never_split_by_an_edit(
    browser: webdriver.Chrome, console_url: str, admin: AuditClient, admin_token: str
) -> None:
    """A role holding a comma (or a space at an end) cannot be written in
    "Actor role" (comma-separated, each trimmed): an edit of the rule is
    refused, saying so, rather than saving `ops, eu` as two roles; roles
    typed anew there are saved."""
    roles = ["admin", "ops, eu"]
    rule = build_alert_rule(
        "eu ops", "match", filter=build_filter(actions="invoice.refund", actor_roles=roles)
    )
    rule_id = admin.create_alert_rule(rule).rule.id
    section = open_view(browser, console_url, admin_token, "Alert rules")
    row = wait(browser).until(lambda b: row_of(section, "eu ops"))
    row.find_element(By.XPATH, ".//button[.='Edit']").click()
    form = section.find_element(By.ID, "rule-form")
    form.find_element(By.NAME, "name").send_keys(" renamed")
    form.find_element(By.XPATH, ".//button[.='Save changes']").click()
    error = section.find_element(By.CSS_SELECTOR, ".error")
    wait(browser).until(lambda b: "a role holds a comma" in error.text)
    field = form.find_element(By.NAME, "actor_roles")
    assert field.get_attribute("aria-invalid") == "true"
    [kept] = [r for r in admin.list_alert_rules() if r.id == rule_id]
    assert (kept.name, list(kept.match.filter.actor_roles)) == ("eu ops", roles)

    field.clear()
    field.send_keys("admin")
    form.find_element(By.XPATH, ".//button[.='Save changes']").click()
    wait(browser).until(lambda b: "alert_rule.updated" in section.text)
    [saved] = [r for r in admin.list_alert_rules() if r.id == rule_id]
    assert (saved.name, list(saved.match.filter.actor_roles)) == ("eu ops renamed", ["admin"])


def test_a_rule_filtering_by_details_keeps_them_when_edited(
    browser: webdriver.Chrome, console_url: str, admin: AuditClient, admin_token: str
) -> None:
    """helper-508: the rule form copied the search's fields, none of which
    held `details_equals`: an edit of the rule's name sent its filter back
    without it, a rule on production keys silently watching every key. The
    form shows it in "Details", the row says it, and an edit keeps it."""
    watched = {"environment": "prod", "attempt": "3"}
    rule = build_alert_rule(
        "prod keys", "match", filter=build_filter(actions="api_key.read", details_equals=watched)
    )
    rule_id = admin.create_alert_rule(rule).rule.id
    section, form = _rule_renamed(browser, console_url, admin_token, "prod keys", "production keys")
    [rule] = [r for r in admin.list_alert_rules() if r.id == rule_id]
    assert rule.name == "production keys"
    assert dict(rule.match.filter.details_equals) == watched  # kept, not dropped
    assert list(rule.match.filter.actions) == ["api_key.read"]
    row = wait(browser).until(lambda b: row_of(section, "production keys"))
    assert "details attempt=3, environment=prod" in row.text

    # Shown in the form, changed there as the search's field is.
    row.find_element(By.XPATH, ".//button[.='Edit']").click()
    details = form.find_element(By.NAME, "detail")
    assert details.get_attribute("value") == "attempt=3,environment=prod"
    details.clear()
    details.send_keys("environment=staging")
    form.find_element(By.XPATH, ".//button[.='Save changes']").click()
    wait(browser).until(
        lambda b: (
            dict(admin.list_alert_rules()[0].match.filter.details_equals)
            == {"environment": "staging"}
        )
    )


def test_a_splunk_sink_is_added_its_token_sent_once_and_shown_by_its_hint(
    browser: webdriver.Chrome, console_url: str, admin: AuditClient, admin_token: str
) -> None:
    section = open_view(browser, console_url, admin_token, "Sinks")
    form = section.find_element(By.ID, "sink-create")
    Select(form.find_element(By.NAME, "kind")).select_by_value("splunk_hec")
    assert not form.find_element(By.NAME, "api_key").is_displayed()
    form.find_element(By.NAME, "name").send_keys("splunk")
    form.find_element(By.NAME, "url").send_keys("http://127.0.0.1:9")
    token = "hec-" + secrets.token_hex(8)
    form.find_element(By.NAME, "token").send_keys(token)
    form.find_element(By.NAME, "index").send_keys("audit")
    form.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    row = wait(browser).until(lambda b: row_of(section, "splunk"))
    assert "Splunk HEC" in row.text and f"token …{token[-4:]}" in row.text
    assert token not in browser.page_source
    assert form.find_element(By.NAME, "token").get_attribute("value") == ""
    [sink] = admin.list_sinks()
    assert (sink.splunk_hec.url, sink.splunk_hec.index) == ("http://127.0.0.1:9", "audit")
    assert sink.splunk_hec.token_hint == token[-4:]


def test_a_pagerduty_sink_is_added_its_routing_key_sent_once_and_shown_by_its_hint(
    browser: webdriver.Chrome, console_url: str, admin: AuditClient, admin_token: str
) -> None:
    section = open_view(browser, console_url, admin_token, "Sinks")
    form = section.find_element(By.ID, "sink-create")
    Select(form.find_element(By.NAME, "kind")).select_by_value("pagerduty")
    assert not form.find_element(By.NAME, "token").is_displayed()
    form.find_element(By.NAME, "name").send_keys("on-call")
    routing_key = secrets.token_hex(16)
    form.find_element(By.NAME, "routing_key").send_keys(routing_key)
    form.find_element(By.NAME, "source").send_keys("audit.example.com")
    # No URL: PagerDuty's own.
    form.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    row = wait(browser).until(lambda b: row_of(section, "on-call"))
    assert "PagerDuty" in row.text and f"routing key …{routing_key[-4:]}" in row.text
    assert "https://events.pagerduty.com (default)" in row.text
    assert routing_key not in browser.page_source
    assert form.find_element(By.NAME, "routing_key").get_attribute("value") == ""
    [sink] = admin.list_sinks()
    assert (sink.pagerduty.url, sink.pagerduty.source) == ("", "audit.example.com")
    assert sink.pagerduty.routing_key_hint == routing_key[-4:]


def test_the_retention_policy_is_changed_after_saying_what_it_shortens(
    browser: webdriver.Chrome, console_url: str, admin: AuditClient, admin_token: str
) -> None:
    admin.set_retention_policy(365, categories={"authentication": 90})
    section = open_view(browser, console_url, admin_token, "Retention")
    form = section.find_element(By.ID, "retention-form")
    default = form.find_element(By.CSS_SELECTOR, ".default select")
    assert Select(default).first_selected_option.text == "1 year (1y)"
    Select(default).select_by_visible_text("30 days (30d)")
    form.find_element(By.XPATH, ".//button[.='Add an action-prefix rule']").click()
    rule = form.find_elements(By.CSS_SELECTOR, ".retention-rule")[-1]
    rule.find_element(By.NAME, "action_prefix").send_keys("billing.*")
    Select(rule.find_element(By.CSS_SELECTOR, "select")).select_by_visible_text("forever")
    form.find_element(By.XPATH, ".//button[.='Save the policy']").click()
    dialog = confirm_dialog(browser)
    assert "shortens retention" in dialog.text and "default: 365 days → 30 days" in dialog.text
    dialog.find_element(By.XPATH, ".//button[.='Cancel']").click()
    assert admin.get_retention_policy().policy.default_days == 365  # nothing changed

    form.find_element(By.XPATH, ".//button[.='Save the policy']").click()
    confirm_dialog(browser).find_element(By.ID, "confirm-ok").click()
    done = section.find_element(By.CSS_SELECTOR, ".done")
    wait(browser).until(lambda b: "a warning" in done.text)
    policy = admin.get_retention_policy().policy
    assert policy.default_days == 30
    assert {(r.action_prefix, r.days) for r in policy.rules if r.action_prefix} == {
        ("billing.*", 0)
    }
    wait(browser).until(lambda b: "billing.*: forever" in section.text)  # read again

    # A number of days the API refuses is marked where it was typed.
    Select(form.find_element(By.CSS_SELECTOR, ".default select")).select_by_visible_text(
        "another number of days"
    )
    form.find_element(By.CSS_SELECTOR, ".default input").send_keys("36500")
    other = form.find_elements(By.CSS_SELECTOR, ".retention-rule")[0]
    Select(other.find_element(By.CSS_SELECTOR, ".days-preset")).select_by_visible_text(
        "another number of days"
    )
    browser.execute_script(  # past the input's own max, to see the API's word
        "arguments[0].removeAttribute('max'); arguments[0].value = '40000'",
        other.find_element(By.CSS_SELECTOR, ".days-other"),
    )
    form.find_element(By.XPATH, ".//button[.='Save the policy']").click()
    error = section.find_element(By.CSS_SELECTOR, ".error")
    wait(browser).until(lambda b: "Rule 1, kept" in error.text)
    assert other.find_element(By.CSS_SELECTOR, "label.days").get_attribute("aria-invalid") == "true"
    assert admin.get_retention_policy().policy.default_days == 30


def test_a_managed_sink_is_shown_as_the_operators_with_nothing_to_change(
    browser: webdriver.Chrome, migrated_database_url: str, tmp_path: Path
) -> None:
    """The deployment's operator keeps a sink in every tenant (ADR 0070); the
    API refuses a tenant's pause, replay and delete of it, so the page offers
    none, says whose it is, and leaves it out of an alert rule's sinks."""
    with database_of_its_own(migrated_database_url, "console_managed") as url:
        server = ServerThread(url, console_listen="127.0.0.1:0")
        try:
            token = server.token("t-console-managed", "admin")
            with AuditClient(server.target, token=token) as admin:
                admin.record(action="doc.read", actor_id="u")  # the tenant has a log
                webhook(admin, "own")
            secret = tmp_path / "secret"
            secret.write_text("whsec_" + base64.b64encode(secrets.token_bytes(32)).decode())
            made = run_operator(
                url,
                "sink", "create", "soc", "--kind", "webhook", "--url", "http://127.0.0.1:9/soc",
                "--secret", f"@{secret}",
            )  # fmt: skip
            assert made.exit_code == 0, made.output
            console = f"http://127.0.0.1:{server.service.console_port}/"
            section = open_view(browser, console, token, "Sinks")
            managed = wait(browser).until(lambda b: row_of(section, "soc"))
            assert "kept by the operator" in managed.text
            assert not managed.find_elements(By.TAG_NAME, "button")  # no Edit, Pause, ...
            # Nor may the console's API change it: the API refuses (ADR 0070).
            [soc] = [s for s in AuditClient(server.target, token=token).list_sinks() if s.managed]
            status, refused = send(
                f"{console}api/sinks/{soc.id}",
                method="PUT",
                token=token,
                body={"sink": {"name": "mine", "webhook": {}}, "filter": {}, "etag": soc.etag},
            )
            assert (status, refused["reason"]) == (403, "SINK_MANAGED_BY_OPERATOR"), refused
            assert row_of(section, "own").find_elements(By.TAG_NAME, "button")

            browser.find_element(By.LINK_TEXT, "Alert rules").click()
            offered = wait(browser).until(
                lambda b: b.find_elements(By.CSS_SELECTOR, "#rule-form [name=sink_ids]")
            )
            assert [tick.get_attribute("value") for tick in offered] == [
                sink.id
                for sink in AuditClient(server.target, token=token).list_sinks()
                if sink.name == "own"
            ]
        finally:
            server.close()


def test_a_newer_releases_sinks_and_rule_are_shown_marked_with_nothing_to_change(
    browser: webdriver.Chrome, migrated_database_url: str
) -> None:
    """Sinks and an alert rule a newer Sealtrail release stored (a rolling
    upgrade, docs/operations.md): the API shows them with what it knows and
    refuses their changes, so the page marks them as that release's and
    offers their Edit, Pause, Replay, Disable and Delete disabled, its other
    rows as before; the console's API answers them, never a 500."""
    tenant = "t-console-newer"
    with database_of_its_own(migrated_database_url, "console_newer") as url:
        allow_a_newer_kind(url)
        server = ServerThread(url, console_listen="127.0.0.1:0")
        try:
            token = server.token(tenant, "admin")
            with AuditClient(server.target, token=token) as admin, psycopg.connect(url) as sql:
                sql.autocommit = True
                known = webhook(admin, "known")
                rule = admin.create_alert_rule(
                    build_alert_rule("known rule", "match", filter=build_filter(actions="doc.*"))
                ).rule
                _newer_filter_copy(sql, tenant, known, name="narrowed")
                pigeon = _copied_sink(
                    sql, tenant, known, kind="carrier_pigeon", destination='{"loft": "north"}'
                )
                _copied_rule(sql, tenant, rule.id, {"kind": "quorum"})
            console = f"http://127.0.0.1:{server.service.console_port}/"
            marked = f"{NEWER} release"

            status, listed = send(f"{console}api/sinks", token=token)
            assert status == 200, listed
            errors = {sink["name"]: sink["state"]["last_error"] for sink in listed["sinks"]}
            [etag] = [sink["etag"] for sink in listed["sinks"] if sink["id"] == pigeon]
            assert errors["known"] == "" and marked in errors["pigeon post"], errors
            status, refused = send(
                f"{console}api/sinks/{pigeon}", method="PATCH", token=token,
                body={"paused": True, "etag": etag},
            )  # fmt: skip
            assert (status, refused["reason"]) == (409, "SINK_FROM_A_NEWER_RELEASE"), refused
            status, rules = send(f"{console}api/alert-rules", token=token)
            assert status == 200 and len(rules["rules"]) == 2, rules

            section = open_view(browser, console, token, "Sinks")
            for name in ("narrowed", "pigeon post"):
                row = wait(browser).until(lambda b: row_of(section, name))  # noqa: B023
                assert marked in row.text, row.text
                offered = row.find_elements(By.CSS_SELECTOR, "td.actions button")
                assert {b.text for b in offered} >= {"Edit", "Pause", "Delete"}, row.text
                assert not any(b.is_enabled() for b in offered), row.text
            own = row_of(section, "known")
            assert marked not in own.text
            assert all(b.is_enabled() for b in own.find_elements(By.TAG_NAME, "button"))

            browser.find_element(By.LINK_TEXT, "Alert rules").click()
            rules_view = wait(browser).until(
                lambda b: (
                    b.find_element(By.ID, "admin-alerts").is_displayed()
                    and b.find_element(By.ID, "admin-alerts")
                )
            )
            newer = wait(browser).until(lambda b: row_of(rules_view, "newer rule"))
            assert marked in newer.text, newer.text
            offered = newer.find_elements(By.CSS_SELECTOR, "td.actions button")
            assert {b.text for b in offered} == {"Edit", "Disable", "Delete"}, newer.text
            assert not any(b.is_enabled() for b in offered), newer.text
            own = row_of(rules_view, "known rule")
            assert marked not in own.text
            assert all(b.is_enabled() for b in own.find_elements(By.TAG_NAME, "button"))
        finally:
            server.close()


def test_the_retention_view_shows_the_tenants_limits_and_says_why_a_value_is_refused(
    browser: webdriver.Chrome, migrated_database_url: str, tenant: str, sql: psycopg.Connection[Any]
) -> None:
    """The deployment's floor and the tenant's plan are shown before the
    admin tries a value: the presets beyond them cannot be chosen, and a
    number typed beyond them is refused by the API in words naming whose
    limit it is, marked where it was typed."""
    floored = ServerThread(
        migrated_database_url, console_listen="127.0.0.1:0", retention_min_days=30
    )
    try:
        token = floored.token(tenant)
        sql.execute(  # as `sealtrail-server tenant retention-limit --max-days 90` sets it
            "INSERT INTO retention_policies (tenant_id, max_days) VALUES (%s, 90)", [tenant]
        )
        url = f"http://127.0.0.1:{floored.service.console_port}/"
        section = open_view(browser, url, token, "Retention")
        limits = section.find_element(By.ID, "retention-limits")
        assert "at least 30 days" in limits.text and "this deployment's minimum" in limits.text
        assert "at most 90 days" in limits.text and "this tenant's plan" in limits.text
        # The policy never set keeps forever, which the plan brings to 90 days.
        policy = section.find_element(By.ID, "retention-policy")
        assert "forever, applied as 90 days (this tenant's plan)" in policy.text

        form = section.find_element(By.ID, "retention-form")
        assert "at least 30 and at most 90 days" in form.text
        default = form.find_element(By.CSS_SELECTOR, ".default select")
        offered = {
            option.get_attribute("value"): option.is_enabled() for option in Select(default).options
        }
        assert offered == {"30": True, "90": True, "180": False, "365": False, "0": False,
                           "other": True}  # fmt: skip
        assert "over this tenant's plan" in Select(default).options[3].text
        Select(default).select_by_value("other")
        days = form.find_element(By.CSS_SELECTOR, ".default input")
        assert days.get_attribute("placeholder") == "30 to 90"
        days.send_keys("120")
        form.find_element(By.XPATH, ".//button[.='Save the policy']").click()
        error = section.find_element(By.CSS_SELECTOR, ".error")
        wait(browser).until(
            lambda b: "Kept by default: must be at most 90 days, this tenant's plan" in error.text
        )
        label = form.find_element(By.CSS_SELECTOR, ".default label.days")
        assert label.get_attribute("aria-invalid") == "true"
        days.clear()
        days.send_keys("20")
        form.find_element(By.XPATH, ".//button[.='Save the policy']").click()
        wait(browser).until(lambda b: "at least 30 days, this deployment's minimum" in error.text)
        with AuditClient(floored.target, token=token) as client:
            assert client.get_retention_policy().policy.update_time.seconds == 0  # never set
    finally:
        floored.close()


def open_sink(section: WebElement, name: str) -> WebElement:
    """Opens the sink `name` in the sink form, as read."""
    row_of(section, name).find_element(By.XPATH, ".//button[.='Edit']").click()
    return section.find_element(By.ID, "sink-create")


def test_a_sink_is_edited_as_read_its_credentials_kept_unless_typed_again(
    browser: webdriver.Chrome, console_url: str, admin: AuditClient, admin_token: str
) -> None:
    token = "hec-" + secrets.token_hex(8)
    sink = build_sink(
        "splunk", "splunk_hec", url="http://127.0.0.1:9", token=token, index="audit",
        filter=build_filter(actions="doc.*", categories=["authentication", "security"]),
        paused=True,
    )  # fmt: skip
    sink_id = admin.create_sink(sink).sink.id
    section = open_view(browser, console_url, admin_token, "Sinks")
    form = open_sink(section, "splunk")
    assert "Edit the sink “splunk”" in form.text
    fields = {name: form.find_element(By.NAME, name) for name in ("name", "url", "index", "token")}
    assert [fields[n].get_attribute("value") for n in ("name", "url", "index")] == [
        "splunk",
        "http://127.0.0.1:9",
        "audit",
    ]
    assert not form.find_element(By.NAME, "kind").is_enabled()  # a sink keeps its kind
    # The token is not the page's to show: left empty, it stays as it is.
    assert fields["token"].get_attribute("value") == ""
    assert fields["token"].get_attribute("placeholder") == f"unchanged (…{token[-4:]})"
    assert form.find_element(By.NAME, "categories").get_attribute("value") == (
        "authentication,security"
    )
    fields["index"].clear()
    fields["index"].send_keys("security")
    actions = form.find_element(By.NAME, "actions")
    actions.clear()
    actions.send_keys("doc.*, user.login")
    form.find_element(By.XPATH, ".//button[.='Save changes']").click()
    wait(browser).until(lambda b: "sink.updated" in section.text)
    now = admin.get_sink(sink_id)
    assert (now.splunk_hec.index, now.splunk_hec.token_hint) == ("security", token[-4:])
    assert list(now.filter.actions) == ["doc.*", "user.login"]
    assert list(now.filter.categories) == [
        event_pb2.CATEGORY_AUTHENTICATION,
        event_pb2.CATEGORY_SECURITY,
    ]
    assert now.paused  # an edit never pauses or resumes
    assert "Add a sink" in form.text  # the form is back to adding one

    # A token typed again replaces it, sent once and shown by its hint only.
    again = "hec-" + secrets.token_hex(8)
    form = open_sink(section, "splunk")
    form.find_element(By.NAME, "token").send_keys(again)
    form.find_element(By.XPATH, ".//button[.='Save changes']").click()
    wait(browser).until(lambda b: f"token …{again[-4:]}" in row_of(section, "splunk").text)
    assert admin.get_sink(sink_id).splunk_hec.token_hint == again[-4:]
    assert again not in browser.page_source
    assert form.find_element(By.NAME, "token").get_attribute("value") == ""

    # An edit of a sink changed meanwhile changes nothing, and shows it as it is now.
    form = open_sink(section, "splunk")
    current = admin.get_sink(sink_id)
    current.name = "renamed elsewhere"
    admin.update_sink(current, fields=["name"])
    name = form.find_element(By.NAME, "name")
    name.clear()
    name.send_keys("mine")
    form.find_element(By.XPATH, ".//button[.='Save changes']").click()
    error = section.find_element(By.CSS_SELECTOR, ".error")
    wait(browser).until(lambda b: "changed since" in error.text)
    assert admin.get_sink(sink_id).name == "renamed elsewhere"
    wait(browser).until(lambda b: name.get_attribute("value") == "renamed elsewhere")


def test_a_sink_filtering_by_details_keeps_them_when_edited(
    browser: webdriver.Chrome, console_url: str, admin: AuditClient, admin_token: str
) -> None:
    """helper-508: as a rule's, a sink's `details_equals` was dropped by an
    edit of its name (the form had no field for it): a sink of production's
    events forwarded every event. The form shows and keeps it."""
    sink = build_sink(
        "prod events", "webhook", url="http://127.0.0.1:9/hook",
        secrets=["whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()],
        filter=build_filter(details_equals={"environment": "prod"}), paused=True,
    )  # fmt: skip
    sink_id = admin.create_sink(sink).sink.id
    section = open_view(browser, console_url, admin_token, "Sinks")
    assert "details environment=prod" in row_of(section, "prod events").text
    form = open_sink(section, "prod events")
    assert form.find_element(By.NAME, "detail").get_attribute("value") == "environment=prod"
    name = form.find_element(By.NAME, "name")
    name.clear()
    name.send_keys("production events")
    form.find_element(By.XPATH, ".//button[.='Save changes']").click()
    wait(browser).until(lambda b: "sink.updated" in section.text)
    now = admin.get_sink(sink_id)
    assert now.name == "production events"
    assert dict(now.filter.details_equals) == {"environment": "prod"}  # kept, not dropped


def test_a_sink_filtering_by_route_presence_and_actor_type_keeps_them_when_edited(
    browser: webdriver.Chrome, console_url: str, admin: AuditClient, admin_token: str
) -> None:
    """helper-569: the form read the filter's enums by their prefixes, and
    knew neither PRESENCE_ nor ACTOR_TYPE_: any sink's edit sent
    `PRESENCE_UNSPECIFIED` back (400, every sink and rule unsaveable), and one
    of `actor_types=user` sent `ACTOR_TYPE_USER`. Both are read and kept."""
    sink = build_sink(
        "api events", "webhook", url="http://127.0.0.1:9/hook",
        secrets=["whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()],
        filter=build_filter(has_http_route=True, actor_types=["user"]), paused=True,
    )  # fmt: skip
    sink_id = admin.create_sink(sink).sink.id
    section = open_view(browser, console_url, admin_token, "Sinks")
    assert "PRESENCE" not in row_of(section, "api events").text
    form = open_sink(section, "api events")
    name = form.find_element(By.NAME, "name")
    name.clear()
    name.send_keys("api events of people")
    form.find_element(By.XPATH, ".//button[.='Save changes']").click()
    wait(browser).until(lambda b: "sink.updated" in section.text)
    now = admin.get_sink(sink_id)
    assert now.name == "api events of people"
    assert now.filter.http_route_presence == event_pb2.PRESENCE_PRESENT
    assert list(now.filter.actor_types) == [event_pb2.ACTOR_TYPE_USER]


def test_a_filter_entry_the_details_field_cannot_carry_is_never_dropped_by_an_edit(
    browser: webdriver.Chrome, console_url: str, admin: AuditClient, admin_token: str
) -> None:
    """An entry whose value holds a comma (or whose key an `=`) cannot be
    written in "Details" (`KEY=VALUE`, comma-separated): the edit is refused,
    saying so, rather than saving the rule with it dropped or split."""
    watched = {"note": "a,b"}
    rule = build_alert_rule(
        "notes", "match", filter=build_filter(actions="doc.*", details_equals=watched)
    )
    rule_id = admin.create_alert_rule(rule).rule.id
    section = open_view(browser, console_url, admin_token, "Alert rules")
    row = wait(browser).until(lambda b: row_of(section, "notes"))
    row.find_element(By.XPATH, ".//button[.='Edit']").click()
    form = section.find_element(By.ID, "rule-form")
    form.find_element(By.NAME, "name").send_keys(" renamed")
    form.find_element(By.XPATH, ".//button[.='Save changes']").click()
    error = section.find_element(By.CSS_SELECTOR, ".error")
    wait(browser).until(lambda b: "cannot be written here" in error.text)
    [rule] = [r for r in admin.list_alert_rules() if r.id == rule_id]
    assert (rule.name, dict(rule.match.filter.details_equals)) == ("notes", watched)


def test_a_webhook_moved_elsewhere_is_given_a_new_signing_secret_shown_once(
    browser: webdriver.Chrome, console_url: str, admin: AuditClient, admin_token: str
) -> None:
    sink_id = webhook(admin, "hooks", paused=True)
    hint = admin.get_sink(sink_id).webhook.secret_hints[0]
    section = open_view(browser, console_url, admin_token, "Sinks")
    form = open_sink(section, "hooks")
    choice = Select(form.find_element(By.NAME, "secret"))
    assert choice.first_selected_option.text == f"keep the current one (…{hint})"
    url = form.find_element(By.NAME, "url")
    url.clear()
    url.send_keys("http://127.0.0.1:9/elsewhere")
    form.find_element(By.XPATH, ".//button[.='Save changes']").click()
    # The API sends a kept secret nowhere new: the page says so, at the secret.
    error = section.find_element(By.CSS_SELECTOR, ".error")
    wait(browser).until(lambda b: "give its secrets again" in error.text)
    assert error.text.startswith("Signing secret:")
    assert form.find_element(By.NAME, "secret").get_attribute("aria-invalid") == "true"
    assert admin.get_sink(sink_id).webhook.url == "http://127.0.0.1:9/hook"

    choice.select_by_value("generate")
    form.find_element(By.XPATH, ".//button[.='Save changes']").click()
    shown = wait(browser).until(seen.visibility_of_element_located((By.ID, "sink-secret")))
    secret = shown.find_element(By.CSS_SELECTOR, "input").get_attribute("value") or ""
    assert secret.startswith("whsec_") and "shown only this once" in shown.text
    now = admin.get_sink(sink_id).webhook
    assert (now.url, list(now.secret_hints)) == ("http://127.0.0.1:9/elsewhere", [secret[-4:]])


def test_the_tenant_is_erased_with_its_id_typed_back_and_its_receipt_shown(
    browser: webdriver.Chrome,
    console_url: str,
    admin: AuditClient,
    admin_token: str,
    tenant: str,
) -> None:
    for actor in ("u-1", "u-2"):
        admin.record(action="doc.read", actor_id=actor)
    admin.set_legal_hold(True, reason="matter 7")
    section = open_view(browser, console_url, admin_token, "Retention")
    zone = section.find_element(By.ID, "erasure")
    said = zone.text
    assert "every event" in said and "tokens" in said and "sinks" in said  # removed
    assert "receipt" in said and "signed final checkpoint" in said  # what remains
    assert "The legal hold is on" in said
    typed = zone.find_element(By.NAME, "confirm_tenant_id")
    erase = zone.find_element(By.XPATH, ".//button[.='Erase this tenant…']")

    # Typed wrongly: the API's own confirmation refuses it, marked where typed.
    typed.send_keys("t-someone-else")
    erase.click()
    dialog = confirm_dialog(browser)
    assert "cannot be undone" in dialog.text and "receipt" in dialog.text
    dialog.find_element(By.XPATH, ".//button[.='Cancel']").click()
    erase.click()
    confirm_dialog(browser).find_element(By.ID, "confirm-ok").click()
    error = section.find_element(By.CSS_SELECTOR, ".error")
    wait(browser).until(
        lambda b: "Tenant id, typed back: must be the calling token's" in error.text
    )
    assert typed.get_attribute("aria-invalid") == "true"

    # The legal hold refuses it, in the server's words.
    typed.clear()
    typed.send_keys(tenant)
    erase.click()
    confirm_dialog(browser).find_element(By.ID, "confirm-ok").click()
    wait(browser).until(lambda b: "a legal hold is on: release it" in error.text)
    assert len(list(admin.query(build_filter(actions="doc.read")))) == 2

    admin.set_legal_hold(False)
    erase.click()
    confirm_dialog(browser).find_element(By.ID, "confirm-ok").click()
    receipt = wait(browser).until(seen.visibility_of_element_located((By.ID, "erasure-receipt")))
    wait(browser).until(lambda b: tenant in receipt.text)
    assert "Final checkpoint" in receipt.text and f"sealtrail.test/log/{tenant}" in receipt.text
    # The root hash in hex, decoded from the receipt's base64 (console/static/base64.js).
    kept = json.loads(receipt.get_attribute("data-receipt") or "{}")
    shown = receipt.find_element(By.XPATH, ".//dt[.='Final root hash']/following-sibling::dd[1]")
    assert shown.text == base64.b64decode(kept["final_root_hash"]).hex() and len(shown.text) == 64
    # The receipt signed as a whole, shown, and whether its signature verifies
    # (the server's check, which only a key the auditor pinned makes a proof).
    signed = receipt.find_element(By.CSS_SELECTOR, "pre.signed-note").text
    assert signed.startswith(f"sealtrail erasure receipt v1\nsealtrail.test/log/{tenant}\n{tenant}")
    assert "Signed: its signature verifies against this deployment's registered keys" in (
        receipt.text
    )
    assert "only a verifier key you pinned proves" in receipt.text
    assert "sealtrail verify-erasure" in receipt.text
    assert receipt.find_element(By.XPATH, ".//button[.='Download the receipt']").is_displayed()
    with pytest.raises(UnauthenticatedError):
        admin.get_retention_policy()


def test_a_sinks_dead_letters_past_the_thousand_listed_are_listed_on_asking(
    browser: webdriver.Chrome,
    console_url: str,
    admin: AuditClient,
    admin_token: str,
    migrated_database_url: str,
    tenant: str,
) -> None:
    """ListDeadLetters answered the oldest 1,000 and no more: the replay form
    listed those and said the others were there, with no way to reach them (a
    sink with 1,005 could not have its 5 newest replayed from the page). It
    lists them 1,000 at a time, says how many there are, and More dead
    letters lists the next."""
    sink_id = webhook(admin, "siem", paused=True)
    with psycopg.connect(migrated_database_url, autocommit=True) as conn:
        newest = conn.execute(
            "INSERT INTO sink_dead_letters (tenant_id, sink_id, id, first_seq, last_seq,"
            " event_count, http_status, error, created_at) SELECT %s, %s, gen_random_uuid(),"
            " n, n, 1, 400, 'refused', now() - (1006 - n) * interval '1 second'"
            " FROM generate_series(1, 1005) AS n RETURNING id::text, first_seq",
            [tenant, sink_id],
        ).fetchall()
    section = open_view(browser, console_url, admin_token, "Sinks")
    wait(browser).until(lambda b: "1,005 dead letters" in row_of(section, "siem").text)
    row_of(section, "siem").find_element(By.XPATH, ".//button[.='Replay…']").click()
    form = section.find_element(By.ID, "sink-replay")
    form.find_element(By.CSS_SELECTOR, "input[name=kind][value=dead_letter_id]").click()
    letters = form.find_element(By.NAME, "dead_letter_id")
    wait(browser).until(lambda b: len(Select(letters).options) > 1)
    options = Select(letters).options
    assert len(options) == 1001, len(options)
    last = options[-1]
    assert not last.is_enabled()
    assert "the oldest 1,000 of this sink's 1,005 dead letters are listed" in (
        last.get_attribute("textContent") or ""
    )
    more = form.find_element(By.ID, "dead-letters-more")
    assert more.is_displayed()
    more.click()
    wait(browser).until(lambda b: len(Select(letters).options) == 1005)
    options = Select(letters).options
    assert all(option.is_enabled() for option in options)
    assert "seq 1005 " in (options[-1].get_attribute("textContent") or "")
    assert options[-1].get_attribute("value") == max(newest, key=lambda row: row[1])[0]
    assert not more.is_displayed()


def test_a_token_in_use_whose_use_is_not_written_yet_is_not_said_unused(
    browser: webdriver.Chrome,
    console_url: str,
    admin_token: str,
    console_server: ServerThread,
) -> None:
    """A token's last use is noted once a minute and written behind (ADR
    0064): the very token this tab uses showed "not since created", as if no
    call had used it. The page says none is recorded yet, and why."""
    # The sign-in's use, written 10 s on, could be written before it is shown.
    with last_uses_held(console_server):
        section = open_view(browser, console_url, admin_token, "Tokens")
        row = next(r for r in section.find_elements(By.CSS_SELECTOR, "tbody tr") if r.text)
        shown, said = row.text, section.text
    assert "not since created" not in shown
    assert "none recorded yet" in shown
    assert "written behind the calls, up to a minute or so late" in said


def test_a_rule_whose_filter_only_leaves_events_out_is_refused_naming_its_input(
    browser: webdriver.Chrome, console_url: str, admin: AuditClient, admin_token: str
) -> None:
    """A rule watching every event but the log's reads was created, and fired
    on nearly every event (helper-375): the page says why by the input's label."""
    section = open_view(browser, console_url, admin_token, "Alert rules")
    form = section.find_element(By.ID, "rule-form")
    form.find_element(By.NAME, "name").send_keys("everything")
    watched = form.find_element(By.CSS_SELECTOR, "fieldset[name=filter]")
    watched.find_element(By.NAME, "exclude_actions").send_keys("audit_log.*")
    form.find_element(By.XPATH, ".//button[.='Create rule']").click()
    error = section.find_element(By.CSS_SELECTOR, ".error")
    wait(browser).until(lambda b: "Leave out" in error.text)
    assert "which events the rule watches" in error.text, error.text
    left_out = watched.find_element(By.NAME, "exclude_actions")
    assert left_out.get_attribute("aria-invalid") == "true"
    assert admin.list_alert_rules() == []
    watched.find_element(By.NAME, "actions").send_keys("api_key.*")
    form.find_element(By.XPATH, ".//button[.='Create rule']").click()
    wait(browser).until(lambda b: "alert_rule.created" in section.text)
    [rule] = admin.list_alert_rules()
    assert list(rule.match.filter.exclude_actions) == ["audit_log.*"]


def test_a_spike_rule_is_described_edited_as_a_spike_and_created_from_the_form(
    browser: webdriver.Chrome, console_url: str, admin: AuditClient, admin_token: str
) -> None:
    """The page knew no spike rule (ADR 0132): its row said "unknown
    condition", and its Edit opened it as a match rule with an empty filter,
    none of its settings shown. It is described, edited and created as a
    spike, the server's bounds shown at the field they concern."""
    made = admin.create_alert_rule(
        build_alert_rule(
            "login spike", "spike", filter=build_filter(actions="user.login", outcomes="failure"),
            window_seconds=600, baseline_windows=24, factor=5.0, min_count=20,
        )
    ).rule  # fmt: skip
    section = open_view(browser, console_url, admin_token, "Alert rules")
    row = wait(browser).until(lambda b: row_of(section, "login spike"))
    assert "5x the average of the 24 windows of 10 min before, at least 20" in row.text
    assert "user.login" in row.text

    row.find_element(By.XPATH, ".//button[.='Edit']").click()
    form = section.find_element(By.ID, "rule-form")
    assert (
        Select(form.find_element(By.NAME, "kind")).first_selected_option.get_attribute("value")
        == "spike"
    )
    shown = {
        name: form.find_element(By.NAME, name).get_attribute("value")
        for name in ("spike_window", "baseline_windows", "factor", "min_count")
    }
    assert shown == {"spike_window": "600", "baseline_windows": "24", "factor": "5",
                     "min_count": "20"}  # fmt: skip
    assert form.find_element(By.NAME, "factor").is_displayed()
    assert not form.find_element(By.NAME, "count").is_displayed()  # a threshold's
    assert form.find_element(By.NAME, "actions").get_attribute("value") == "user.login"

    def typed(name: str, value: str) -> None:
        field = form.find_element(By.NAME, name)
        field.clear()
        field.send_keys(value)

    # A day's windows, 36 of them: 36 days back, past the 35 the server takes
    # (no bound of one input alone); refused naming the baseline's field.
    typed("spike_window", "86400")
    typed("baseline_windows", "36")
    form.find_element(By.XPATH, ".//button[.='Save changes']").click()
    error = section.find_element(By.CSS_SELECTOR, ".error")
    wait(browser).until(lambda b: "Baseline windows" in error.text and "35 days" in error.text)
    baseline = form.find_element(By.NAME, "baseline_windows")
    assert baseline.get_attribute("aria-invalid") == "true"
    assert form.find_element(By.NAME, "spike_window").get_attribute("aria-invalid") is None
    [rule] = admin.list_alert_rules()
    assert (rule.WhichOneof("condition"), rule.spike.window_seconds) == ("spike", 600)  # unchanged
    typed("spike_window", "300")
    typed("baseline_windows", "12")
    typed("factor", "2.5")
    form.find_element(By.XPATH, ".//button[.='Save changes']").click()
    wait(browser).until(lambda b: "alert_rule.updated" in section.text)
    [rule] = admin.list_alert_rules()
    assert rule.id == made.id and rule.WhichOneof("condition") == "spike"
    assert (rule.spike.window_seconds, rule.spike.baseline_windows) == (300, 12)
    assert (rule.spike.factor, rule.spike.min_count) == (2.5, 20)
    assert list(rule.spike.filter.actions) == ["user.login"]
    assert list(rule.spike.filter.outcomes) == [event_pb2.OUTCOME_FAILURE]
    row = wait(browser).until(lambda b: row_of(section, "login spike"))
    assert "2.5x the average of the 12 windows of 5 min before, at least 20" in row.text

    # A new one from the form, its settings the form's defaults but one.
    form.find_element(By.NAME, "name").send_keys("deletions")
    Select(form.find_element(By.NAME, "kind")).select_by_value("spike")
    typed("min_count", "50")
    form.find_element(By.NAME, "actions").send_keys("document.delete")
    form.find_element(By.XPATH, ".//button[.='Create rule']").click()
    wait(browser).until(lambda b: "alert_rule.created" in section.text)
    [new] = [r for r in admin.list_alert_rules() if r.name == "deletions"]
    assert new.WhichOneof("condition") == "spike"
    assert (new.spike.window_seconds, new.spike.baseline_windows) == (600, 24)
    assert (new.spike.factor, new.spike.min_count) == (5.0, 50)
    assert list(new.spike.filter.actions) == ["document.delete"]


def test_a_spike_per_credential_is_created_described_and_edited_with_its_grouping_kept(
    browser: webdriver.Chrome, console_url: str, admin: AuditClient, admin_token: str
) -> None:
    """A spike grouped by credential (ADR 0147) from the form's "Counted"
    choice, shown with a spike's settings; its row says it; an edit of its
    factor keeps the grouping, which the form sent no more before it offered one."""
    section = open_view(browser, console_url, admin_token, "Alert rules")
    form = section.find_element(By.ID, "rule-form")
    form.find_element(By.NAME, "name").send_keys("leaked key")
    Select(form.find_element(By.NAME, "kind")).select_by_value("spike")
    counted = Select(form.find_element(By.NAME, "group_by"))
    assert form.find_element(By.NAME, "group_by").is_displayed()
    assert not form.find_element(By.NAME, "exact_actor_ids").is_displayed()  # per actor only
    counted.select_by_value("ALERT_GROUP_BY_CREDENTIAL")
    form.find_element(By.NAME, "actions").send_keys("api.request")
    form.find_element(By.XPATH, ".//button[.='Create rule']").click()
    wait(browser).until(lambda b: "alert_rule.created" in section.text)
    [rule] = [r for r in admin.list_alert_rules() if r.name == "leaked key"]
    assert rule.spike.group_by == alerting_pb2.ALERT_GROUP_BY_CREDENTIAL
    row = wait(browser).until(lambda b: row_of(section, "leaked key"))
    assert "at least 20 per credential" in row.text, row.text

    row.find_element(By.XPATH, ".//button[.='Edit']").click()
    form = section.find_element(By.ID, "rule-form")
    chosen = Select(form.find_element(By.NAME, "group_by")).first_selected_option
    assert chosen.get_attribute("value") == "ALERT_GROUP_BY_CREDENTIAL"
    factor = form.find_element(By.NAME, "factor")
    factor.clear()
    factor.send_keys("3")
    form.find_element(By.XPATH, ".//button[.='Save changes']").click()
    wait(browser).until(lambda b: "alert_rule.updated" in section.text)
    [rule] = [r for r in admin.list_alert_rules() if r.name == "leaked key"]
    assert (rule.spike.factor, rule.spike.group_by) == (3.0, alerting_pb2.ALERT_GROUP_BY_CREDENTIAL)


def test_a_spike_per_actor_comparing_ids_exactly_is_created_shown_and_kept_when_edited(
    browser: webdriver.Chrome, console_url: str, admin: AuditClient, admin_token: str
) -> None:
    """A spike counted per actor offers the threshold's box for exact actor
    ids (SpikeCondition.exact_actor_ids): sent when ticked, its row says it,
    an edit of the factor keeps it, and unticked it is cleared."""
    section = open_view(browser, console_url, admin_token, "Alert rules")
    form = section.find_element(By.ID, "rule-form")
    form.find_element(By.NAME, "name").send_keys("base64 ids")
    Select(form.find_element(By.NAME, "kind")).select_by_value("spike")
    exact = form.find_element(By.NAME, "exact_actor_ids")
    assert not exact.is_displayed()  # counted all together
    Select(form.find_element(By.NAME, "group_by")).select_by_value("ALERT_GROUP_BY_ACTOR")
    assert exact.is_displayed() and not exact.is_selected()
    exact.click()
    form.find_element(By.NAME, "actions").send_keys("api.request")
    form.find_element(By.XPATH, ".//button[.='Create rule']").click()
    wait(browser).until(lambda b: "alert_rule.created" in section.text)
    [rule] = [r for r in admin.list_alert_rules() if r.name == "base64 ids"]
    assert rule.spike.group_by == alerting_pb2.ALERT_GROUP_BY_ACTOR and rule.spike.exact_actor_ids
    row = wait(browser).until(lambda b: row_of(section, "base64 ids"))
    assert "at least 20 per actor (ids compared exactly)" in row.text, row.text

    row.find_element(By.XPATH, ".//button[.='Edit']").click()
    form = section.find_element(By.ID, "rule-form")
    exact = form.find_element(By.NAME, "exact_actor_ids")
    assert exact.is_displayed() and exact.is_selected()
    factor = form.find_element(By.NAME, "factor")
    factor.clear()
    factor.send_keys("3")
    form.find_element(By.XPATH, ".//button[.='Save changes']").click()
    wait(browser).until(lambda b: "alert_rule.updated" in section.text)
    [rule] = admin.list_alert_rules()
    assert rule.spike.factor == 3.0 and rule.spike.exact_actor_ids  # kept

    row = wait(browser).until(lambda b: row_of(section, "base64 ids"))
    row.find_element(By.XPATH, ".//button[.='Edit']").click()
    exact = section.find_element(By.ID, "rule-form").find_element(By.NAME, "exact_actor_ids")
    exact.click()  # unticked: folded again
    form.find_element(By.XPATH, ".//button[.='Save changes']").click()
    wait(browser).until(lambda b: not admin.list_alert_rules()[0].spike.exact_actor_ids)


def test_an_email_sink_is_described_edited_and_added_its_password_shown_by_its_hint(
    browser: webdriver.Chrome, console_url: str, admin: AuditClient, admin_token: str
) -> None:
    """The page knew no email sink (ADR 0133): its row said "unknown", with no
    destination, and offered no Edit; the form had no email kind. It is
    described (server, security, login, sender, recipients), edited (the
    password asked again when the server moves, as the API asks) and added,
    the server's refusals marked at their field."""
    password = "pw-" + secrets.token_hex(8)
    sink_id = admin.create_sink(
        build_sink(
            "on-call mail", "email", host="127.0.0.1", port=2525, security="none",
            username="sealtrail", password=password, from_address="Sealtrail <alerts@example.com>",
            to_addresses=["oncall@example.com", "Security Team <security@example.org>"],
            filter=build_filter(actions="security.alert"), paused=True,
        )
    ).sink.id  # fmt: skip
    section = open_view(browser, console_url, admin_token, "Sinks")
    row = wait(browser).until(lambda b: row_of(section, "on-call mail"))
    for said in ("email", "smtp://127.0.0.1:2525 (plain text, loopback)",
                 "from Sealtrail <alerts@example.com>",
                 "to oncall@example.com, Security Team <security@example.org>",
                 f"login sealtrail, password …{password[-4:]}"):  # fmt: skip
        assert said in row.text, row.text
    assert password not in browser.page_source

    form = open_sink(section, "on-call mail")
    shown = {
        name: form.find_element(By.NAME, name).get_attribute("value")
        for name in ("host", "port", "security", "username", "password", "from_address",
                     "to_addresses")
    }  # fmt: skip
    assert shown == {
        "host": "127.0.0.1", "port": "2525", "security": "none", "username": "sealtrail",
        "password": "", "from_address": "Sealtrail <alerts@example.com>",
        "to_addresses": "oncall@example.com\nSecurity Team <security@example.org>",
    }  # fmt: skip
    assert form.find_element(By.NAME, "password").get_attribute("placeholder") == (
        f"unchanged (…{password[-4:]})"
    )
    assert not form.find_element(By.NAME, "url").is_displayed()

    def typed(name: str, value: str) -> None:
        field = form.find_element(By.NAME, name)
        field.clear()
        field.send_keys(value)

    # Another port: the API sends the password only where it was given for,
    # and asks for it again; the page says so at the password.
    typed("port", "2526")
    form.find_element(By.XPATH, ".//button[.='Save changes']").click()
    error = section.find_element(By.CSS_SELECTOR, ".error")
    wait(browser).until(lambda b: "give its secrets again" in error.text)
    assert error.text.startswith("Password")
    assert form.find_element(By.NAME, "password").get_attribute("aria-invalid") == "true"
    assert admin.get_sink(sink_id).email.port == 2525

    # A recipient given twice: said at the recipients, by its line.
    again = "pw-" + secrets.token_hex(8)
    typed("password", again)
    typed("to_addresses", "oncall@example.com\nteam@example.org\nONCALL@example.com\n")
    form.find_element(By.XPATH, ".//button[.='Save changes']").click()
    wait(browser).until(lambda b: "line 3: is given twice" in error.text)
    assert error.text.startswith("Recipients")
    recipients = form.find_element(By.NAME, "to_addresses")
    assert recipients.get_attribute("aria-invalid") == "true"
    assert form.find_element(By.NAME, "password").get_attribute("aria-invalid") is None
    typed("password", again)
    typed("to_addresses", "oncall@example.com\n\n Team <team@example.org> \n")
    form.find_element(By.XPATH, ".//button[.='Save changes']").click()
    wait(browser).until(lambda b: "sink.updated" in section.text)
    now = admin.get_sink(sink_id)
    assert (now.email.port, now.email.password_hint) == (2526, again[-4:])
    assert list(now.email.to_addresses) == ["oncall@example.com", "Team <team@example.org>"]
    assert now.paused and list(now.filter.actions) == ["security.alert"]
    assert again not in browser.page_source

    # A new one from the form: no login, the security's default port.
    Select(form.find_element(By.NAME, "kind")).select_by_value("email")
    assert not form.find_element(By.NAME, "url").is_displayed()
    assert form.find_element(By.NAME, "host").is_displayed()
    typed("name", "relay mail")
    typed("host", "localhost")
    Select(form.find_element(By.NAME, "security")).select_by_value("none")
    typed("from_address", "alerts@example.com")
    typed("to_addresses", "audit@example.com")
    form.find_element(By.NAME, "actions").send_keys("security.alert")
    form.find_element(By.XPATH, ".//button[.='Add sink']").click()
    wait(browser).until(lambda b: "sink.created" in section.text)
    [new] = [s for s in admin.list_sinks() if s.name == "relay mail"]
    assert (new.email.host, new.email.port, new.email.security) == ("localhost", 0, "none")
    assert (new.email.username, list(new.email.to_addresses)) == ("", ["audit@example.com"])
    row = wait(browser).until(lambda b: row_of(section, "relay mail"))
    assert "smtp://localhost:25 (plain text, loopback)" in row.text
    assert "login" not in row.text


def test_a_sinks_row_says_why_its_oldest_dead_letter_was_parked_as_text(
    browser: webdriver.Chrome,
    console_url: str,
    admin: AuditClient,
    admin_token: str,
    migrated_database_url: str,
    tenant: str,
) -> None:
    """`sealtrail sinks` says why a sink's oldest dead letter was parked; the
    Sinks view said only how many waited (a dead letter sets no last error).
    It says the oldest's reason, the destination's words shown as text (its
    markup never obeyed, its bidi characters escaped), unless a failure holds
    the sink, whose last error is said instead, as the CLI does."""
    parked_id = webhook(admin, "siem", paused=True)
    held_id = webhook(admin, "held", paused=True)
    webhook(admin, "clean", paused=True)
    why = 'HTTP 422 from hooks: <img src=x onerror="window.obeyed=1">no such field \u202eevil'
    with psycopg.connect(migrated_database_url, autocommit=True) as conn:
        for sink_id, seconds, error in [
            (parked_id, 7200, why), (parked_id, 60, "HTTP 400 from hooks: later"),
            (held_id, 60, "HTTP 400 from hooks: parked"),
        ]:  # fmt: skip
            conn.execute(
                "INSERT INTO sink_dead_letters (tenant_id, sink_id, id, first_seq, last_seq,"
                " event_count, http_status, error, created_at) VALUES (%s, %s,"
                " gen_random_uuid(), 1, 1, 1, 400, %s, now() - %s * interval '1 second')",
                [tenant, sink_id, error, seconds],
            )
        conn.execute(
            "UPDATE sinks SET last_error = 'HTTP 503 from hooks: busy', last_error_at = now()"
            " WHERE tenant_id = %s AND id = %s",
            [tenant, held_id],
        )
    section = open_view(browser, console_url, admin_token, "Sinks")
    wait(browser).until(lambda b: "2 dead letters" in row_of(section, "siem").text)
    lines = [
        line.get_attribute("textContent")
        for line in row_of(section, "siem").find_elements(By.CSS_SELECTOR, "td:nth-child(5) div")
    ]
    shown = why.replace("\u202e", "\\u202e")
    assert f"oldest dead letter: {shown}" in lines, lines
    assert row_of(section, "siem").find_elements(By.TAG_NAME, "img") == []
    assert browser.execute_script("return window.obeyed") is None
    assert "later" not in row_of(section, "siem").text
    held = row_of(section, "held").text
    assert "HTTP 503 from hooks: busy" in held and "oldest dead letter" not in held, held
    assert "dead letter" not in row_of(section, "clean").text


def test_times_in_utc_shows_the_admin_views_times_in_utc(
    browser: webdriver.Chrome, console_url: str, admin: AuditClient, admin_token: str
) -> None:
    """The rows' times only changed with "Times in UTC": the tokens' and the
    legal hold's stayed in the viewer's zone beside rows in UTC. With `utc=1`
    every view says its times in UTC, "UTC" named; without, the viewer's."""
    browser.execute_cdp_cmd("Emulation.setTimezoneOverride", {"timezoneId": "Asia/Kolkata"})
    admin.set_legal_hold(True, reason="matter 2026-300")
    section = open_view(browser, console_url + "?utc=1", admin_token, "Tokens")
    created = (By.CSS_SELECTOR, "#tokens-table tbody td:nth-child(4)")
    wait(browser).until(lambda b: b.find_element(*created).text.endswith(" UTC"))
    assert "GMT" not in section.text, section.text
    # A tab opened on a view by its link, the events never shown: the URL says it too.
    browser.get(console_url + "?utc=1#retention")
    hold = wait(browser).until(seen.visibility_of_element_located((By.ID, "legal-hold-state")))
    wait(browser).until(lambda b: "Placed" in hold.text and " UTC" in hold.text)
    assert "GMT" not in hold.text, hold.text
    browser.get(console_url + "#retention")  # off: the viewer's zone, as by default
    hold = wait(browser).until(seen.visibility_of_element_located((By.ID, "legal-hold-state")))
    wait(browser).until(lambda b: "GMT+5:30" in hold.text)
