"""Whatever a caller or an admin can set is shown as text in every view of
the console, never read as markup: an event's fields (its actor, resource,
description, details, changes, user agent), a token's, a sink's and an alert
rule's names, the legal hold's reason, an action's description. Markup that became elements would be
found by its `data-xss` attribute (the page's CSP would stop a script, not a
forged link or form)."""

from __future__ import annotations

import base64
import json
import re
import secrets
from pathlib import Path
from typing import Any

import psycopg
from selenium import webdriver
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as seen

from sealtrail import AuditClient, build_alert_rule, build_event, build_filter, build_sink
from tests.browser.test_console import sign_in, wait, wait_for_rows
from tests.conftest import ServerThread

MARKUP = '<b data-xss="1">x</b><script>window.__xss=1</script><img src=x data-xss="2">'
SHOTS = Path(__file__).resolve().parents[2] / "test-artifacts"


def injected(browser: webdriver.Chrome) -> list[str]:
    """What of the markup became elements (or ran)."""
    found = browser.execute_script(
        "return [...document.querySelectorAll('[data-xss]')].map((e) => e.outerHTML)"
        ".concat(window.__xss ? ['window.__xss'] : [])"
    )
    return list(found)


def test_what_callers_and_admins_set_is_shown_as_text_in_every_view(
    browser: webdriver.Chrome, console_server: ServerThread, console_url: str, tenant: str
) -> None:
    admin_token = console_server.token(tenant, "admin")
    with AuditClient(console_server.target, token=admin_token) as admin:
        # First: its record's row (newest first) names doc.share too.
        admin.set_action_description("doc.share", MARKUP)
        admin.record(
            build_event(
                action="doc.share",
                description=f"shared {MARKUP}",
                actor_id=f"u-{MARKUP}",
                actor_email=f"{MARKUP}@example.com",
                actor_display_name=MARKUP,
                resource_type=f"doc{MARKUP}",
                resource_id=MARKUP,
                resource_name=MARKUP,
                user_agent=MARKUP,
                details={MARKUP: MARKUP},
                changes=[(MARKUP, MARKUP, [MARKUP])],
            )
        )
        admin.create_token("reader", name=MARKUP)
        sink = build_sink(
            MARKUP,
            "webhook",
            url="http://127.0.0.1:9/hook",
            secrets=["whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()],
            filter=build_filter(actor=MARKUP),
            paused=True,
        )
        admin.create_sink(sink)
        admin.create_alert_rule(
            build_alert_rule(MARKUP, "match", filter=build_filter(actions="doc.*", actor=MARKUP))
        )
        admin.set_legal_hold(True, reason=MARKUP)

    sign_in(browser, console_url, admin_token)
    shown = wait_for_rows(browser, lambda r: any("doc.share" in row for row in r))
    assert any(MARKUP in row for row in shown), shown
    row = next(
        r
        for r in browser.find_elements(By.CSS_SELECTOR, "#events tbody tr.event")
        if "doc.share" in r.text
    )
    row.click()
    detail = wait(browser).until(
        seen.visibility_of_element_located((By.CSS_SELECTOR, "#events tr.detail"))
    )
    assert f"shared {MARKUP}" in detail.text
    meaning = (By.CSS_SELECTOR, "dd.action-description")  # the action catalogue's
    wait(browser).until(lambda b: detail.find_element(*meaning).text == MARKUP)
    detail.find_element(By.XPATH, ".//button[contains(., 'Check inclusion proof')]").click()
    wait(browser).until(lambda b: "verified" in detail.text or "FAILED" in detail.text)
    assert "verified" in detail.text, detail.text
    SHOTS.mkdir(exist_ok=True)
    browser.save_screenshot(str(SHOTS / "escaping-events.png"))
    assert injected(browser) == []

    for view in ("Tokens", "Sinks", "Alert rules", "Retention"):
        browser.find_element(By.LINK_TEXT, view).click()
        shown = (By.CSS_SELECTOR, "section.view:not([hidden]):not(#log)")
        section = wait(browser).until(seen.visibility_of_element_located(shown))
        wait(browser).until(lambda b, s=section: s.get_attribute("aria-busy") != "true")
        wait(browser).until(lambda b, s=section: MARKUP in s.text)
        if view == "Sinks":
            section.find_element(By.XPATH, ".//button[.='Replay…']").click()
            section.find_element(By.XPATH, ".//button[.='Edit']").click()
        browser.save_screenshot(str(SHOTS / f"escaping-{view.replace(' ', '-').lower()}.png"))
        assert injected(browser) == [], view
    # An action's description, in the input that edits it.
    browser.find_element(By.LINK_TEXT, "Actions").click()
    described = (By.CSS_SELECTOR, "#admin-actions tr[data-action='doc.share'] input")
    wait(browser).until(lambda b: b.find_element(*described).get_attribute("value") == MARKUP)
    assert injected(browser) == [], "Actions"


# Characters that show nothing or reorder the text around them.
HIDDEN = re.compile(
    "[\x00-\x1f\x7f-\x9f\u00ad\u200b-\u200f\u202a-\u202e\u2028\u2029\u2060-\u2069\ufeff]"
)
SPOOFED = "\u202emoc.elpmaxe@nimda"  # a right-to-left override: shown raw, "admin@example.com"


def test_an_events_hidden_and_bidi_characters_are_shown_as_escapes_not_obeyed(
    browser: webdriver.Chrome, console_server: ServerThread, console_url: str, tenant: str
) -> None:
    """An event's fields are whatever its recorder sent, often a user's own
    words: a bidi override made one actor read as another in the table, its
    detail and its JSON, and a zero-width space made two actors look alike.
    The admin views showed names so since 9ebaaa4; the events did not."""
    admin_token = console_server.token(tenant, "admin")
    with AuditClient(console_server.target, token=admin_token) as admin:
        admin.record(
            build_event(
                action="doc.spoof",
                description="paid \u2066\u202e0001\u2069 EUR",
                actor_id="u-\u200bann",
                actor_email=SPOOFED,
                resource_type="doc\u202e",
                resource_id="key",
                user_agent="agent\u2028two",
                details={"note\u202e": "x\u200by"},
                changes=[("owner\u202e", "ann", "b\u202eob")],
            )
        )
    sign_in(browser, console_url + "?actions=doc.spoof", admin_token)
    shown = wait_for_rows(browser, lambda r: len(r) == 1)
    assert not HIDDEN.search(shown[0]), ascii(shown[0])
    assert "\\u202emoc.elpmaxe@nimda" in shown[0] and "doc\\u202e: key" in shown[0], shown
    browser.find_element(By.CSS_SELECTOR, "#events tbody tr.event").click()
    detail = wait(browser).until(
        seen.visibility_of_element_located((By.CSS_SELECTOR, "#events tr.detail"))
    )
    cells = [
        e.get_attribute("textContent") or ""
        for e in detail.find_elements(By.CSS_SELECTOR, "dd, td")
    ]
    for text in cells:
        assert not HIDDEN.search(text.replace("\n", "")), ascii(text)
    assert "u-\\u200bann" in cells and "agent\\u2028two" in cells, cells
    pre = detail.find_element(By.TAG_NAME, "pre").get_attribute("textContent") or ""
    assert not HIDDEN.search(pre.replace("\n", "")), ascii(pre)
    # Still the event's JSON, its values as recorded.
    event = json.loads(pre)
    assert event["actor"]["email"] == SPOOFED and event["details"] == {"note\u202e": "x\u200by"}
    assert event["changes"][0]["after"] == "b\u202eob"


def test_a_destinations_errors_and_a_hold_reason_show_hidden_characters_as_escapes(
    browser: webdriver.Chrome,
    console_server: ServerThread,
    console_url: str,
    tenant: str,
    migrated_database_url: str,
) -> None:
    """A sink's last error and its dead letters' errors hold what the
    destination answered (its control characters escaped, no more), and a
    legal hold's reason is free text (Persian takes a zero-width non-joiner):
    a bidi override in either reordered the page around it, as one in a name
    would, where names are shown with escapes."""
    admin_token = console_server.token(tenant, "admin")
    with AuditClient(console_server.target, token=admin_token) as admin:
        sink_id = admin.create_sink(
            build_sink(
                "siem",
                "webhook",
                url="http://127.0.0.1:9/hook",
                secrets=["whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()],
                paused=True,
            )
        ).sink.id
        admin.set_legal_hold(True, reason="case \u202e4321-ESAC")
    with psycopg.connect(migrated_database_url, autocommit=True) as sql:
        sql.execute(
            "UPDATE sinks SET last_error = %s, last_error_at = now() WHERE id = %s",
            ["HTTP 400 from siem: \u202edeliftiton\u2066 ok", sink_id],
        )
        sql.execute(
            "INSERT INTO sink_dead_letters (tenant_id, sink_id, id, first_seq, last_seq,"
            " event_count, http_status, error, created_at)"
            " VALUES (%s, %s, gen_random_uuid(), 1, 1, 1, 400, %s, now())",
            [tenant, sink_id, "HTTP 400 from siem: bad\u200bfield \u202eyek"],
        )
    sign_in(browser, console_url, admin_token)
    wait(browser).until(seen.element_to_be_clickable((By.LINK_TEXT, "Sinks"))).click()
    section = wait(browser).until(seen.visibility_of_element_located((By.ID, "admin-sinks")))
    wait(browser).until(lambda b: "last error" in section.text)
    row = section.get_attribute("textContent") or ""
    assert not HIDDEN.search(row.replace("\n", "")), ascii(row)
    assert "\\u202edeliftiton\\u2066 ok" in row, row
    section.find_element(By.XPATH, ".//button[.='Replay…']").click()
    form = section.find_element(By.ID, "sink-replay")
    form.find_element(By.CSS_SELECTOR, "input[name=kind][value=dead_letter_id]").click()
    letters = form.find_element(By.NAME, "dead_letter_id")
    wait(browser).until(lambda b: "seq 1 " in (letters.get_attribute("textContent") or ""))
    options = letters.find_elements(By.TAG_NAME, "option")
    texts = [option.get_attribute("textContent") or "" for option in options]
    assert not any(HIDDEN.search(text) for text in texts), [ascii(t) for t in texts]
    assert any("bad\\u200bfield \\u202eyek" in text for text in texts), texts
    browser.find_element(By.LINK_TEXT, "Retention").click()
    hold = wait(browser).until(seen.visibility_of_element_located((By.ID, "legal-hold-state")))
    wait(browser).until(lambda b: "Reason" in hold.text)
    shown = hold.get_attribute("textContent") or ""
    assert not HIDDEN.search(shown), ascii(shown)
    assert "case \\u202e4321-ESAC" in shown, shown


def test_a_long_unbroken_value_wraps_in_its_cell_whole(
    browser: webdriver.Chrome, console_url: str, console_server: ServerThread, tenant: str
) -> None:
    """An actor id or resource id of the API's longest (256 characters, no
    space) widened the table to twice the screen: outcome, severity and IP
    were off it, to be scrolled to row by row. It now wraps in its cell,
    shown whole, and the table fits the page."""
    actor = "svc-" + "a1b2c3d4" * 31 + "tail"
    resource = "arn:aws:s3:::" + "bucket-" * 34 + "end"
    with AuditClient(console_server.target, token=console_server.token(tenant, "recorder")) as c:
        c.record(action="door.open", actor_id=actor, resource_type="s3", resource_id=resource,
                 outcome="failure", ip="203.0.113.7")  # fmt: skip
    sign_in(browser, console_url + "?actions=door.open", console_server.token(tenant, "reader"))
    wait_for_rows(browser, lambda r: len(r) == 1)
    cells = browser.find_elements(By.CSS_SELECTOR, "#events tbody tr.event td")
    assert cells[2].get_attribute("textContent") == actor
    assert cells[3].get_attribute("textContent") == f"s3: {resource}"
    wide, shown = browser.execute_script(
        "const box = document.querySelector('#events').parentElement;"
        "return [box.scrollWidth, box.clientWidth]"
    )
    assert wide <= shown, (wide, shown)
    assert cells[-1].text == "203.0.113.7" and cells[-1].is_displayed()


# The left edge on screen of the first occurrence of arguments[1] in the text
# of arguments[0] (null if it has none): where the reader's eye finds it.
_LEFT_OF = """
const [root, piece] = arguments;
const walker = document.createTreeWalker(root, NodeFilter.SHOW_TEXT);
const nodes = [];
let text = "";
while (walker.nextNode()) {
  nodes.push([walker.currentNode, text.length]);
  text += walker.currentNode.data;
}
const at = text.indexOf(piece);
if (at < 0) return null;
const point = (offset, end) => {
  for (const [node, start] of nodes) {
    if (end ? offset <= start + node.data.length : offset < start + node.data.length) {
      return [node, offset - start];
    }
  }
};
const range = document.createRange();
range.setStart(...point(at, false));
range.setEnd(...point(at + piece.length, true));
return range.getBoundingClientRect().left;
"""


def left_of(browser: webdriver.Chrome, root: Any, piece: str) -> float:
    found = browser.execute_script(_LEFT_OF, root, piece)
    assert found is not None, piece
    return float(found)


def test_right_to_left_values_cannot_reorder_the_words_around_them(
    browser: webdriver.Chrome, console_server: ServerThread, console_url: str, tenant: str
) -> None:
    """A resource's cell is "type: name", an event's JSON "key": value, a
    rule's sinks "a, b": two right-to-left values with only punctuation
    between them (or one and a number) were one right-to-left run, shown
    backwards in the left-to-right page: "חשבון: שלום" read as the name
    first, then the type; a details key "שם": 42 as 42 before its key; a
    rule's first sink after its second. Each value is now isolated (<bdi>),
    the words between them kept in the page's order."""
    admin_token = console_server.token(tenant, "admin")
    with AuditClient(console_server.target, token=admin_token) as admin:
        admin.record(
            build_event(
                action="doc.rtl",
                actor_id="u-1",
                resource_type="חשבון",
                resource_id="r-1",
                resource_name="שלום",
                details={"שם": 42, "מפתח": "ערך"},
            )
        )
        sinks = [
            admin.create_sink(
                build_sink(
                    name,
                    "webhook",
                    url="http://127.0.0.1:9/hook",
                    secrets=["whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()],
                    paused=True,
                )
            ).sink.id
            for name in ("אלף", "בית")
        ]
        admin.create_alert_rule(
            build_alert_rule("rtl", "match", filter=build_filter(actions="doc.*"), sink_ids=sinks)
        )
    sign_in(browser, console_url + "?actions=doc.rtl", admin_token)
    wait_for_rows(browser, lambda r: len(r) == 1)
    row = browser.find_element(By.CSS_SELECTOR, "#events tbody tr.event")
    resource = row.find_elements(By.TAG_NAME, "td")[3]
    assert resource.get_attribute("textContent") == "חשבון: שלום"  # the same text
    assert left_of(browser, resource, "חשבון") < left_of(browser, resource, "שלום")
    row.click()
    pre = wait(browser).until(
        seen.visibility_of_element_located((By.CSS_SELECTOR, "#events tr.detail pre"))
    )
    assert json.loads(pre.get_attribute("textContent") or "")["details"]["שם"] == 42
    assert left_of(browser, pre, "שם") < left_of(browser, pre, "42")
    assert left_of(browser, pre, "מפתח") < left_of(browser, pre, "ערך")
    browser.find_element(By.LINK_TEXT, "Alert rules").click()
    section = wait(browser).until(seen.visibility_of_element_located((By.ID, "admin-alerts")))
    wait(browser).until(lambda b: "בית" in section.text)
    listed = section.find_element(By.XPATH, ".//td[contains(., 'בית')]")
    assert listed.get_attribute("textContent") == "אלף, בית"
    assert left_of(browser, listed, "אלף") < left_of(browser, listed, "בית")
