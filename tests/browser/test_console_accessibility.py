"""The console against WCAG 2.1 AA, as axe-core (Deque's rules engine, run in
the page) reads it: each page and state an investigator or an admin meets
(signed out and refused, the events and their activity chart, a row open on
its diff, an error, each admin view with its forms, a secret shown once, the confirmation
dialog), in the light colour scheme and the dark one. Any violation fails.

axe-core is vendored in tests/browser/vendor (axe.min.js, MPL-2.0, its
licence header kept, the licence beside it)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from selenium import webdriver
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support import expected_conditions as seen
from selenium.webdriver.support.ui import Select, WebDriverWait

from sealtrail import AuditClient
from tests.browser.test_console import WAIT, key_widened, sign_in, wait_for_rows
from tests.conftest import ServerThread

AXE = Path(__file__).with_name("vendor") / "axe.min.js"
# WCAG 2.0 and 2.1, levels A and AA, and axe's best practices (landmarks,
# one main, headings in order, scrolled regions a keyboard reaches).
TAGS = ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa", "best-practice"]
RUN_AXE = """
const done = arguments[arguments.length - 1];
axe.run(document, {runOnly: {type: "tag", values: arguments[0]}, resultTypes: ["violations"]})
  .then((r) => done(r.violations), (e) => done([{id: "axe", help: String(e), nodes: []}]));
"""


def wait(browser: webdriver.Chrome) -> WebDriverWait[webdriver.Chrome]:
    return WebDriverWait(browser, WAIT)


def violations(browser: webdriver.Chrome) -> list[str]:
    """What axe finds wrong with the page as it is now, one line a node."""
    if not browser.execute_script("return typeof window.axe === 'object'"):
        browser.execute_script(AXE.read_text())
    found: list[dict[str, Any]] = browser.execute_async_script(RUN_AXE, TAGS)
    return [
        f"{v['id']} ({v['help']}): {node['target']} {node.get('failureSummary', '')}"
        for v in found
        for node in v["nodes"] or [{"target": "", "failureSummary": ""}]
    ]


def check(browser: webdriver.Chrome, state: str, found: dict[str, list[str]]) -> None:
    """Notes what axe finds in `state`, in both colour schemes."""
    for scheme in ("light", "dark"):
        browser.execute_cdp_cmd(
            "Emulation.setEmulatedMedia",
            {"features": [{"name": "prefers-color-scheme", "value": scheme}]},
        )
        problems = violations(browser)
        if problems:
            found[f"{state} ({scheme})"] = problems


def report(found: dict[str, list[str]]) -> str:
    return json.dumps(found, indent=1)


@pytest.fixture
def axe_browser(browser: webdriver.Chrome) -> Iterator[webdriver.Chrome]:
    if not AXE.exists():
        pytest.skip("tests/browser/vendor/axe.min.js is missing")
    browser.set_script_timeout(60)
    yield browser


def test_the_investigation_views_have_no_violation(
    axe_browser: webdriver.Chrome,
    console_url: str,
    console_server: ServerThread,
    tenant: str,
) -> None:
    browser = axe_browser
    with AuditClient(console_server.target, token=console_server.token(tenant, "recorder")) as c:
        c.record(key_widened())
        c.record(action="user.login", actor_id="u-bob", outcome="failure", severity="error")
    found: dict[str, list[str]] = {}
    browser.get(console_url)
    wait(browser).until(seen.visibility_of_element_located((By.ID, "token")))
    check(browser, "signed out", found)
    browser.find_element(By.ID, "token").send_keys("stk_nonsense", Keys.ENTER)
    wait(browser).until(seen.visibility_of_element_located((By.ID, "signin-error")))
    wait(browser).until(lambda b: b.find_element(By.ID, "signin-error").text)
    check(browser, "sign-in refused", found)

    sign_in(browser, console_url, console_server.token(tenant, "reader"))
    wait_for_rows(browser, lambda r: len(r) == 2)
    wait(browser).until(seen.visibility_of_element_located((By.ID, "activity")))  # its chart
    check(browser, "events", found)
    openers = browser.find_elements(By.CSS_SELECTOR, "#events tbody tr.event button.opener")
    openers[-1].send_keys(Keys.ENTER)
    detail = wait(browser).until(
        seen.visibility_of_element_located((By.CSS_SELECTOR, "#events tr.detail"))
    )
    # Not the detail's first button: a changed field's name is one (it narrows the search).
    detail.find_element(By.XPATH, ".//button[text()='Check inclusion proof']").click()
    wait(browser).until(lambda b: "verified" in detail.text)
    check(browser, "an event's detail", found)
    browser.find_element(By.ID, "live").click()
    check(browser, "live", found)

    # An error: a filter the API refuses.
    browser.get(console_url + "?range=custom&from=2026-01-01T00:00:00Z&ip=not-an-ip")
    wait(browser).until(lambda b: b.find_element(By.ID, "error").text)
    check(browser, "an error", found)
    assert not found, report(found)


def test_the_admin_views_have_no_violation(
    axe_browser: webdriver.Chrome,
    console_url: str,
    console_server: ServerThread,
    tenant: str,
) -> None:
    browser = axe_browser
    found: dict[str, list[str]] = {}
    sign_in(browser, console_url, console_server.token(tenant, "admin"))
    wait(browser).until(seen.visibility_of_element_located((By.ID, "log")))
    for name, view in (
        ("Tokens", "admin-tokens"),
        ("Sinks", "admin-sinks"),
        ("Alert rules", "admin-alerts"),
        ("Retention", "admin-retention"),
        ("Actions", "admin-actions"),
    ):
        browser.find_element(By.LINK_TEXT, name).click()
        section = wait(browser).until(seen.visibility_of_element_located((By.ID, view)))
        wait(browser).until(lambda b, s=section: s.get_attribute("aria-busy") != "true")
        check(browser, name, found)

    # A token made, its secret shown once; then its revocation asked for.
    browser.find_element(By.LINK_TEXT, "Tokens").click()
    form = wait(browser).until(seen.visibility_of_element_located((By.ID, "token-create")))
    form.find_element(By.NAME, "name").send_keys("ci", Keys.ENTER)
    wait(browser).until(seen.visibility_of_element_located((By.ID, "token-secret")))
    check(browser, "a token's secret", found)
    browser.find_element(By.ID, "token-secret-done").click()
    revoke = wait(browser).until(
        seen.element_to_be_clickable((By.XPATH, "//tr[td[text()='ci']]//button"))
    )
    revoke.click()
    wait(browser).until(seen.visibility_of_element_located((By.ID, "confirm")))
    check(browser, "the confirmation dialog", found)
    browser.find_element(By.ID, "confirm-cancel").click()

    # A form refused, its fields named.
    browser.find_element(By.LINK_TEXT, "Alert rules").click()
    form = wait(browser).until(seen.visibility_of_element_located((By.ID, "rule-form")))
    form.find_element(By.NAME, "name").send_keys("r")
    form.find_element(By.NAME, "ip").send_keys("not-an-ip")
    form.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    wait(browser).until(lambda b: b.find_element(By.CSS_SELECTOR, "#admin-alerts .error").text)
    check(browser, "a rule refused", found)
    # A threshold counted per actor: its box for exact actor ids, with its hint.
    # Each field found afresh: the view may draw the form again as the refused
    # call's answer settles (ci-s55d: the form found before went stale).
    Select(browser.find_element(By.CSS_SELECTOR, "#rule-form [name=kind]")).select_by_value(
        "threshold"
    )
    Select(browser.find_element(By.CSS_SELECTOR, "#rule-form [name=group_by]")).select_by_value(
        "ALERT_GROUP_BY_ACTOR"
    )
    wait(browser).until(
        lambda b: b.find_element(
            By.CSS_SELECTOR, "#rule-form [name=exact_actor_ids]"
        ).is_displayed()
    )
    check(browser, "a rule counted per actor", found)
    # An action's description refused in its row: the input marked, named.
    # Its rows are drawn once the catalogue is read, in turn with the page's
    # counts, and drawn anew by each read: the input is taken once the view is
    # no longer busy (an input found before went stale when run alone).
    browser.find_element(By.LINK_TEXT, "Actions").click()
    wait(browser).until(
        lambda b: (
            b.find_element(By.ID, "admin-actions").get_attribute("aria-busy") is None
            and b.find_elements(By.CSS_SELECTOR, "#actions-table input")
        )
    )
    described = browser.find_element(By.CSS_SELECTOR, "#actions-table input")
    described.send_keys("   ", Keys.ENTER)
    wait(browser).until(lambda b: b.find_element(By.CSS_SELECTOR, "#admin-actions .error").text)
    assert described.get_attribute("aria-invalid") == "true"
    assert browser.switch_to.active_element == described  # the focus on what to put right
    check(browser, "an action's description refused", found)
    assert not found, report(found)


def ax_nodes(browser: webdriver.Chrome, selector: str) -> list[dict[str, Any]]:
    """What the browser gives a screen reader for each element `selector`
    matches: its accessibility node's role, name and properties."""
    root = browser.execute_cdp_cmd("DOM.getDocument", {"depth": -1})["root"]["nodeId"]
    found = browser.execute_cdp_cmd("DOM.querySelectorAll", {"nodeId": root, "selector": selector})
    nodes = []
    for node_id in found["nodeIds"]:
        tree = browser.execute_cdp_cmd(
            "Accessibility.getPartialAXTree", {"nodeId": node_id, "fetchRelatives": False}
        )
        [node] = [n for n in tree["nodes"] if not n.get("ignored")] or [{"role": {}}]
        nodes.append(
            {
                "role": node["role"].get("value"),
                "name": node.get("name", {}).get("value", ""),
                **{p["name"]: p["value"].get("value") for p in node.get("properties", [])},
            }
        )
    return nodes


def test_an_event_row_is_a_row_of_cells_its_opener_a_button(
    browser: webdriver.Chrome,
    console_url: str,
    console_server: ServerThread,
    tenant: str,
) -> None:
    """Each row was a `<tr role="button">`: a button's content is
    presentational, so a screen reader heard one long button, its cells no
    cells and no column header named for them (WCAG 1.3.1). The row is a row
    now, and its first cell holds a real button that opens it, said expanded
    or collapsed, reached with Tab and pressed with Enter or Space."""
    with AuditClient(console_server.target, token=console_server.token(tenant, "recorder")) as c:
        c.record(action="door.open", actor_id="u-kim", ip="203.0.113.9")
    sign_in(browser, console_url + "?actions=door.open", console_server.token(tenant, "reader"))
    wait_for_rows(browser, lambda r: len(r) == 1)
    [row] = ax_nodes(browser, "#events tbody tr.event")
    assert row["role"] == "row", row
    cells = ax_nodes(browser, "#events tbody tr.event td")
    assert [cell["role"] for cell in cells] == ["cell"] * 8, cells
    assert "door.open" in cells[1]["name"] and "203.0.113.9" in cells[7]["name"]
    [opener] = ax_nodes(browser, "#events tbody tr.event td:first-child button")
    assert opener["role"] == "button" and opener["expanded"] is False, opener
    assert "UTC" in opener["name"], opener  # the event's time: what it opens

    # The keyboard: Tab from the form's last control reaches the activity chart's
    # bars (one stop for them all), the Breakdown panel's lists (by, duration)
    # and value, "Times in UTC", then the opener, not the row.
    wait(browser).until(seen.visibility_of_element_located((By.ID, "activity")))
    wait(browser).until(lambda b: b.find_elements(By.CSS_SELECTOR, "#breakdown button.value"))
    browser.find_element(By.ID, "export-json").send_keys(Keys.TAB)
    assert browser.execute_script("return document.activeElement.closest('#activity') !== null")
    browser.switch_to.active_element.send_keys(Keys.TAB)
    assert browser.switch_to.active_element.get_attribute("id") == "breakdown-by"
    browser.switch_to.active_element.send_keys(Keys.TAB)
    assert browser.switch_to.active_element.get_attribute("id") == "breakdown-measure"
    browser.switch_to.active_element.send_keys(Keys.TAB)
    assert browser.switch_to.active_element.text == "door.open"
    browser.switch_to.active_element.send_keys(Keys.TAB)
    assert browser.switch_to.active_element.get_attribute("id") == "utc"
    browser.switch_to.active_element.send_keys(Keys.TAB)
    focused = browser.switch_to.active_element
    assert focused.tag_name == "button" and focused.get_attribute("aria-expanded") == "false"
    assert browser.execute_script("return document.activeElement.closest('tr.event') !== null")
    focused.send_keys(Keys.ENTER)
    wait(browser).until(seen.visibility_of_element_located((By.CSS_SELECTOR, "#events tr.detail")))
    [opener] = ax_nodes(browser, "#events tbody tr.event td:first-child button")
    assert opener["expanded"] is True, opener
    focused.send_keys(Keys.SPACE)
    wait(browser).until(lambda b: not b.find_elements(By.CSS_SELECTOR, "#events tr.detail"))
    assert focused.get_attribute("aria-expanded") == "false"
    # A mouse may still click anywhere on the row.
    browser.find_elements(By.CSS_SELECTOR, "#events tbody tr.event td")[2].click()
    wait(browser).until(seen.visibility_of_element_located((By.CSS_SELECTOR, "#events tr.detail")))
    assert focused.get_attribute("aria-expanded") == "true"


def test_a_refused_filter_marks_its_inputs_described_by_the_error(
    browser: webdriver.Chrome,
    console_url: str,
    console_server: ServerThread,
    tenant: str,
) -> None:
    """A filter the API or the console refused was said in the page's error
    alone: the input at fault was not marked, and a screen reader's user who
    went back to the form heard nothing of which one it was nor why (WCAG
    3.3.1). It is now invalid (`aria-invalid`), described by the error, and
    unmarked once a filter is taken."""
    reader = console_server.token(tenant, "reader")
    sign_in(browser, console_url + "?ip=not-an-ip&actions=door.*", reader)
    error = wait(browser).until(seen.visibility_of_element_located((By.ID, "error")))
    wait(browser).until(lambda b: "ip" in error.text)
    [ip] = ax_nodes(browser, "#filters input[name=ip]")
    assert ip["invalid"] == "true", ip
    field = browser.find_element(By.NAME, "ip")
    assert field.get_attribute("aria-describedby") == "error"
    assert browser.find_elements(By.CSS_SELECTOR, "#filters [aria-invalid]") == [field]

    # The API's own refusal (filter.occurred_before) marks the input it came from: To.
    browser.get(console_url + "?range=custom&from=2026-12-02T00:00:00Z&to=2026-12-01T00:00:00Z")
    wait(browser).until(lambda b: "occurred_before" in b.find_element(By.ID, "error").text)
    to = browser.find_element(By.NAME, "to")
    assert to.get_attribute("aria-invalid") == "true"
    assert to.get_attribute("aria-describedby") == "error"

    # A filter taken: nothing is marked.
    browser.find_element(By.ID, "clear").click()
    wait(browser).until(lambda b: b.find_element(By.ID, "error").text == "")
    wait(browser).until(lambda b: not b.find_elements(By.CSS_SELECTOR, "#filters [aria-invalid]"))
    assert to.get_attribute("aria-describedby") is None
