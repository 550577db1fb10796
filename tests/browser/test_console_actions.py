"""The action catalogue in the console: `/api/actions` lists it for any
reading role (ListActionCatalog, recorded as the API records it) and
`/api/actions/<action>` sets or clears a description for an admin
(SetActionDescription), with the console's refusals; in a real headless
Chromium, an event's detail and the Action field's suggestions show what an
action means (one catalogue read a session, however many events are opened),
and an admin lists the actions and edits, clears and describes them in the
Actions view."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any
from urllib.parse import urlencode

import pytest
from selenium import webdriver
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support import expected_conditions as seen

from sealtrail import AuditClient, build_filter
from sealtrail.v1 import event_pb2
from tests.browser.test_console import requested, wait_for_rows
from tests.browser.test_console_admin import open_view, wait
from tests.browser.test_console_admin_api import from_the_browser, recorded, send
from tests.browser.test_console_breakdown import signed_in_hooked
from tests.conftest import ServerThread
from tests.integration.test_action_catalog import recorded_actions
from tests.unit.test_redaction import SECRETS

SHARED = "A document shared with someone outside the organisation"


@pytest.fixture
def api(console_url: str) -> str:
    return console_url + "api/"


@pytest.fixture
def admin_token(console_server: ServerThread, tenant: str) -> str:
    return console_server.token(tenant, "admin")


@pytest.fixture
def reader(console_server: ServerThread, tenant: str) -> str:
    return console_server.token(tenant, "reader")


@pytest.fixture
def admin(console_server: ServerThread, admin_token: str) -> Iterator[AuditClient]:
    with AuditClient(console_server.target, token=admin_token) as client:
        yield client


@pytest.fixture
def shares(console_server: ServerThread, tenant: str) -> None:
    """Two shares and an edit, recorded."""
    with AuditClient(console_server.target, token=console_server.token(tenant, "recorder")) as c:
        for action in ("doc.share_external", "doc.share_external", "doc.edit"):
            c.record(action=action, actor_id="u-ann")


def catalogue_reads(client: AuditClient) -> list[event_pb2.Event]:
    """The log's records of ListActionCatalog calls."""
    found = client.query_page(build_filter(actions="audit_log.queried"), page_size=1000)
    return [
        e for e in found.events if "rpc" in e.details and e.details["rpc"] == "ListActionCatalog"
    ]


# --- the console's API ----------------------------------------------------------------


@pytest.mark.usefixtures("shares")
def test_an_admin_describes_an_action_and_any_reader_lists_the_catalogue(
    api: str, admin_token: str, reader: str, admin: AuditClient
) -> None:
    status, answer = send(
        api + "actions/doc.share_external", method="PUT", token=admin_token,
        body={"description": SHARED},
    )  # fmt: skip
    assert status == 200, answer
    entry = answer["entry"]
    assert (entry["action"], entry["description"], entry["count"]) == (
        "doc.share_external", SHARED, 0,  # the change reads no event
    )  # fmt: skip
    assert entry["update_time"] and entry["updated_by"] and entry["last_occurred_time"] is None
    change = recorded(admin, "action_catalog.updated")
    assert change.id == answer["event_id"] and from_the_browser(change)
    # POST too; an action not recorded yet may be described.
    status, answer = send(
        api + "actions/doc.purge", method="POST", token=admin_token, body={"description": "Purged"}
    )
    assert status == 200 and answer["event_id"], answer

    status, listed = send(api + "actions", token=reader)
    assert status == 200, listed
    by_action = {entry["action"]: entry for entry in listed["entries"]}
    assert [entry["action"] for entry in listed["entries"]] == sorted(by_action)
    shared = by_action["doc.share_external"]
    assert (shared["count"], shared["description"]) == (2, SHARED)
    assert shared["last_occurred_time"].endswith("Z")
    assert (by_action["doc.edit"]["count"], by_action["doc.edit"]["description"]) == (1, "")
    assert by_action["doc.edit"]["update_time"] is None
    assert (by_action["doc.purge"]["count"], by_action["doc.purge"]["description"]) == (0, "Purged")
    assert listed["truncated"] is False and listed["total_entries"] == len(by_action)
    assert listed["tree_size"] >= 3
    # Recorded as the API records a listing, with the browser's address.
    read = catalogue_reads(admin)
    assert len(read) == 1 and from_the_browser(read[0]) and read[0].details["limit"] == 50

    # `limit` passed on: the first entries, by action.
    status, first = send(api + "actions?limit=1", token=reader)
    assert status == 200, first
    assert [entry["action"] for entry in first["entries"]] == [listed["entries"][0]["action"]]
    assert first["truncated"] is True and first["total_entries"] == len(by_action)
    # `page_token` passed on: the next pages of the same listing, every entry once.
    pages = [first]
    while pages[-1]["next_page_token"]:
        status, page = send(
            api + "actions?" + urlencode({"limit": 1, "page_token": pages[-1]["next_page_token"]}),
            token=reader,
        )
        assert status == 200, page
        pages.append(page)
    assert [e["action"] for p in pages for e in p["entries"]] == [
        e["action"] for e in listed["entries"]
    ]
    assert {p["tree_size"] for p in pages} == {first["tree_size"]}
    assert not pages[-1]["truncated"] and len(catalogue_reads(admin)) == 2  # once a listing
    # A token another caller was given, or one given twice: a 400 naming it.
    status, refused = send(
        api + "actions?" + urlencode({"page_token": first["next_page_token"]}), token=admin_token
    )
    assert status == 400 and "page_token: is not one issued" in refused["error"], refused
    status, refused = send(api + "actions?page_token=a&page_token=b", token=reader)
    assert (status, refused["error"]) == (400, "page_token: given more than once"), refused

    # "" clears; clearing none changes and records nothing.
    for event_id in (True, False):
        status, answer = send(
            api + "actions/doc.share_external", method="PUT", token=admin_token,
            body={"description": ""},
        )  # fmt: skip
        assert status == 200 and bool(answer["event_id"]) is event_id, answer
        assert answer["entry"]["description"] == "" and answer["entry"]["update_time"] is None
    cleared = {e.action: e.description for e in admin.action_catalog().entries}
    assert cleared["doc.share_external"] == ""


def test_a_description_is_answered_as_redaction_stored_it(api: str, admin_token: str) -> None:
    """The answer is what readers will see: a pasted secret is redaction's
    placeholder at once, for the admin to reword (ADR 0141)."""
    rule, secret, template = SECRETS[0]
    status, answer = send(
        api + "actions/session.expire", method="PUT", token=admin_token,
        body={"description": template.format(secret)},
    )  # fmt: skip
    assert status == 200, answer
    assert secret not in answer["entry"]["description"]
    assert f"[REDACTED:{rule}]" in answer["entry"]["description"], answer


def test_a_description_or_a_category_sent_alone_keeps_the_other(
    api: str, admin_token: str, admin: AuditClient
) -> None:
    """Each field the body holds is changed, the other kept (ADR 0148,
    addendum): a page that edits descriptions never reverts a category."""
    admin.set_action_description("key.create", "A key made", category="security")
    url = api + "actions/key.create"
    status, answer = send(url, method="PUT", token=admin_token, body={"description": "Made"})
    assert status == 200, answer
    assert (answer["entry"]["description"], answer["entry"]["category"]) == ("Made", "security")
    status, answer = send(url, method="PUT", token=admin_token, body={"category": "billing"})
    assert status == 200, answer
    assert (answer["entry"]["description"], answer["entry"]["category"]) == ("Made", "billing")
    status, answer = send(url, method="PUT", token=admin_token, body={"description": ""})
    assert status == 200, answer
    entry = {e.action: e for e in admin.action_catalog().entries}["key.create"]
    assert (entry.description, entry.category) == ("", event_pb2.CATEGORY_BILLING)


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        ("actions/Doc.Share", {"description": "x"}, "action"),
        ("actions/doc", {"description": "x"}, "action"),
        ("actions/doc%2Fshare", {"description": "x"}, "action"),
        ("actions/doc.share", {"description": "   "}, "description"),
        ("actions/doc.share", {"description": "x" * 501}, "description"),
        ("actions/doc.share", {"description": "zero\u200bwidth"}, "description"),
        ("actions/doc.share", {"description": 7}, "description"),
        ("actions/doc.share", {}, "description"),
        ("actions/doc.share", {"description": "x", "action": "doc.edit"}, "action"),
    ],
)
def test_a_description_asked_wrongly_is_refused_naming_the_field(
    api: str, admin_token: str, admin: AuditClient, path: str, body: dict[str, Any], field: str
) -> None:
    status, answer = send(api + path, method="PUT", token=admin_token, body=body)
    assert status == 400, answer
    assert [named["field"] for named in answer["fields"]] == [field], answer
    assert all(not entry.description for entry in admin.action_catalog().entries)


@pytest.mark.parametrize(
    ("query", "said"),
    [
        ("limit=-1", "limit"),  # the API's
        ("limit=ten", "limit"),
        ("limit=1&limit=2", "limit"),
        ("limit=99999999999", "limit"),
    ],
)
def test_a_listing_asked_wrongly_is_refused_naming_limit(
    api: str, reader: str, query: str, said: str
) -> None:
    status, answer = send(api + "actions?" + query, token=reader)
    assert status == 400, answer
    assert [named["field"] for named in answer["fields"]] == [said], answer


@pytest.mark.usefixtures("shares")
def test_a_reader_lists_the_catalogue_but_may_not_describe_an_action(
    api: str, reader: str, admin: AuditClient
) -> None:
    """Refused by the API itself, as every other admin path of the console."""
    for method in ("PUT", "POST"):
        status, answer = send(
            api + "actions/doc.edit", method=method, token=reader, body={"description": "mine"}
        )
        assert (status, answer["code"]) == (403, "PERMISSION_DENIED"), answer
    assert send(api + "actions", token=reader)[0] == 200
    assert all(not entry.description for entry in admin.action_catalog().entries)
    assert recorded(admin, "audit_log.access_denied").details["rpc"] == "SetActionDescription"


def test_a_description_changes_only_as_json_from_the_consoles_own_origin(
    api: str, admin_token: str, admin: AuditClient
) -> None:
    status, answer = send(
        api + "actions/doc.edit", method="PUT", token=admin_token,
        body={"description": "mine"}, Origin="http://evil.example",
    )  # fmt: skip
    assert status == 403, answer
    status, answer = send(
        api + "actions/doc.edit", method="PUT", token=admin_token,
        raw=b"description=mine", **{"Content-Type": "application/x-www-form-urlencoded"},
    )  # fmt: skip
    assert status == 415, answer
    assert send(api + "actions/doc.edit", method="PUT", body={"description": "x"})[0] == 401
    assert all(not entry.description for entry in admin.action_catalog().entries)


# --- the page -------------------------------------------------------------------------


def suggestion_labels(browser: webdriver.Chrome) -> dict[str, str]:
    found: list[list[str]] = browser.execute_script(
        "return [...document.querySelectorAll('#action-suggestions option')]"
        ".map((option) => [option.value, option.label])"
    )
    return dict((value, label) for value, label in found)


def detail_fields(browser: webdriver.Chrome) -> dict[str, str]:
    """The open event's fields: name -> value, as shown."""
    found: list[list[str]] = browser.execute_script(
        "return [...document.querySelectorAll('#events tr.detail dl.fields dt')]"
        ".map((dt) => [dt.textContent, dt.nextElementSibling.textContent])"
    )
    return dict((name, value) for name, value in found)


@pytest.mark.usefixtures("shares")
def test_a_reader_sees_what_an_action_means_read_once_and_nothing_to_edit(
    browser: webdriver.Chrome,
    console_url: str,
    reader: str,
    admin: AuditClient,
) -> None:
    markup = '<b data-xss="1">x</b>'
    admin.set_action_description("doc.share_external", f"{SHARED} {markup}")
    signed_in_hooked(browser, console_url + "?actions=doc.*", reader)
    wait_for_rows(browser, lambda r: len(r) == 3)
    openers = browser.find_elements(By.CSS_SELECTOR, "#events tbody tr.event button.opener")
    # The newest first: the edit, then the two shares.
    openers[0].click()
    wait(browser).until(lambda b: detail_fields(b).get("action") == "doc.edit")
    openers[1].click()
    wait(browser).until(
        lambda b: detail_fields(b).get("action description") == f"{SHARED} {markup}"
    )
    assert browser.find_elements(By.CSS_SELECTOR, "[data-xss]") == []  # text, not markup
    after_action = browser.execute_script(
        "return document.querySelectorAll('#events tr.detail dd.action')[1]"
        ".nextElementSibling.textContent"
    )
    assert after_action == "action description"  # beside the action it describes
    openers[2].click()
    detail = (By.CSS_SELECTOR, "#events tr.detail dd.action-description")
    wait(browser).until(lambda b: len(b.find_elements(*detail)) == 2)
    # The edit's action has no description: none shown for it.
    assert len(browser.find_elements(By.CSS_SELECTOR, "#events tr.detail")) == 3

    # The Action field's suggestions: the description beside its action.
    browser.find_element(By.NAME, "actions").click()
    wait(browser).until(lambda b: "doc.share_external" in suggestion_labels(b))
    labels = suggestion_labels(browser)
    assert labels["doc.share_external"] == f"2 events: {SHARED} {markup}", labels
    assert labels["doc.edit"] == "1 event", labels

    # One read of the catalogue for the page, however many events were opened.
    assert len(requested(browser, "/api/actions")) == 1
    assert len(catalogue_reads(admin)) == 1
    # No Actions view for a reader: its address shows the events.
    nav = browser.find_element(By.ID, "views")
    links = [a.text for a in nav.find_elements(By.TAG_NAME, "a") if a.is_displayed()]
    assert links == ["Events"], links
    browser.get(console_url + "#actions")
    wait(browser).until(seen.visibility_of_element_located((By.ID, "log")))
    assert not browser.find_element(By.ID, "admin-actions").is_displayed()


def test_an_action_past_the_first_page_shows_its_description(
    browser: webdriver.Chrome, console_url: str, reader: str, admin: AuditClient
) -> None:
    # More actions than the API answers in one page (1,000): the page reads
    # the next page too, one listing recorded once.
    recorded_actions(admin, [f"svc.a{n:04d}" for n in range(1001)])
    admin.set_action_description("svc.a1000", "The last action, on the second page")
    signed_in_hooked(browser, console_url + "?actions=svc.a1000", reader)
    wait_for_rows(browser, lambda r: len(r) == 1)
    browser.find_element(By.CSS_SELECTOR, "#events tbody tr.event button.opener").click()
    wait(browser).until(
        lambda b: (
            detail_fields(b).get("action description") == "The last action, on the second page"
        )
    )
    assert len(requested(browser, "/api/actions")) == 2
    assert len(catalogue_reads(admin)) == 1


def action_row(section: WebElement, action: str) -> WebElement:
    return section.find_element(By.CSS_SELECTOR, f"tbody tr[data-action='{action}']")


@pytest.mark.usefixtures("shares")
def test_an_admin_lists_edits_clears_and_describes_actions_in_place(
    browser: webdriver.Chrome, console_url: str, admin_token: str, admin: AuditClient
) -> None:
    admin.set_action_description("doc.edit", "An edit of a document")
    section = open_view(browser, console_url, admin_token, "Actions")
    wait(browser).until(lambda b: section.find_elements(By.CSS_SELECTOR, "tbody tr"))
    rows = {
        row.get_attribute("data-action"): [td.text for td in row.find_elements(By.TAG_NAME, "td")]
        for row in section.find_elements(By.CSS_SELECTOR, "tbody tr")
    }
    assert rows["doc.share_external"][:2] == ["doc.share_external", "2"], rows
    assert rows["doc.share_external"][2]  # when it was last seen
    assert rows["doc.edit"][:2] == ["doc.edit", "1"], rows
    assert "audit_log.queried" in rows  # the log's own reads are actions too
    edit = action_row(section, "doc.edit").find_element(By.NAME, "description")
    assert edit.get_attribute("value") == "An edit of a document"
    assert "set " in action_row(section, "doc.edit").text  # when, and by which token

    # An edit in place: saved with Enter, said and recorded.
    share = action_row(section, "doc.share_external").find_element(By.NAME, "description")
    assert share.get_attribute("value") == ""
    share.send_keys(SHARED, Keys.ENTER)
    done = section.find_element(By.CSS_SELECTOR, ".done")
    wait(browser).until(lambda b: "recorded as action_catalog.updated" in done.text)
    assert "doc.share_external" in done.text and "set" in done.text
    assert {e.action: e.description for e in admin.action_catalog().entries}[
        "doc.share_external"
    ] == SHARED

    # A refusal shown as the other forms show theirs: the field marked, named.
    share.clear()
    share.send_keys("   ", Keys.ENTER)
    error = section.find_element(By.CSS_SELECTOR, ".error")
    wait(browser).until(lambda b: error.text)
    assert error.text.startswith("Description of doc.share_external: "), error.text
    assert share.get_attribute("aria-invalid") == "true"
    assert {e.action: e.description for e in admin.action_catalog().entries}[
        "doc.share_external"
    ] == SHARED

    # Cleared with an empty field, by its Save button.
    clear = action_row(section, "doc.edit")
    clear.find_element(By.NAME, "description").clear()
    clear.find_element(By.XPATH, ".//button[.='Save']").click()
    wait(browser).until(lambda b: "cleared" in done.text)
    assert error.text == ""
    assert {e.action: e.description for e in admin.action_catalog().entries}["doc.edit"] == ""

    # An action not recorded yet, described by its name: listed, count 0.
    form = section.find_element(By.ID, "action-describe")
    form.find_element(By.NAME, "action").send_keys("doc.purge")
    form.find_element(By.NAME, "description").send_keys("A document purged", Keys.ENTER)
    wait(browser).until(
        lambda b: action_row(section, "doc.purge").find_element(By.NAME, "description")
        .get_attribute("value") == "A document purged"
    )  # fmt: skip
    assert [td.text for td in action_row(section, "doc.purge").find_elements(By.TAG_NAME, "td")][
        :3
    ] == ["doc.purge", "0", "not recorded yet"]
    changes = [e for e in admin.query_page(build_filter(actions="action_catalog.updated")).events]
    assert sorted(e.resource.id for e in changes) == [
        "doc.edit", "doc.edit", "doc.purge", "doc.share_external",
    ]  # fmt: skip

    # The events' detail reads the catalogue the view read: no second read.
    reads = len(catalogue_reads(admin))
    browser.find_element(By.LINK_TEXT, "Events").click()
    wait_for_rows(browser, lambda r: any("doc.share_external" in row for row in r))
    browser.find_element(
        By.XPATH, "//table[@id='events']//tr[contains(., 'doc.share_external')]//button"
    ).click()
    wait(browser).until(lambda b: detail_fields(b).get("action description") == SHARED)
    assert len(catalogue_reads(admin)) == reads


@pytest.mark.usefixtures("shares")
def test_the_actions_view_reads_the_catalogue_in_turn_with_the_pages_counts(
    browser: webdriver.Chrome, console_url: str, admin_token: str
) -> None:
    """A listing of the catalogue counts as one of the tenant's counts, and a
    tenant runs one count at a time: the Actions view's read waits for the
    counts the page made before it (the chart's, the Breakdown panel's), as
    the events' detail's does, rather than be refused beside them (429).
    Opened while the chart's count is held, the view is busy and has asked
    nothing; once the count is answered, it reads the catalogue, after every
    count asked before it, and lists the actions."""
    signed_in_hooked(browser, console_url, admin_token, hold="/api/counts")
    wait_for_rows(browser, lambda r: len(r) == 3)
    wait(browser).until(lambda b: requested(b, "/api/counts"))  # the chart's, held
    browser.find_element(By.LINK_TEXT, "Actions").click()
    section = browser.find_element(By.ID, "admin-actions")
    # Busy once its loader ran: a read not in turn has been asked by then (the
    # loader asks before it first waits).
    wait(browser).until(
        lambda b: section.get_attribute("aria-busy") == "true" or requested(b, "/api/actions")
    )
    assert requested(browser, "/api/actions") == []
    assert section.get_attribute("aria-busy") == "true"

    browser.execute_script("window.release = true;")
    wait(browser).until(lambda b: section.find_elements(By.CSS_SELECTOR, "tbody tr"))
    asked: list[str] = browser.execute_script("return window.requests")
    mine = [url for url in asked if url.startswith(("/api/counts", "/api/actions"))]
    # One read of the catalogue, after every count asked before it.
    assert len(mine) > 1 and mine[-1].startswith("/api/actions?"), mine
    assert all(url.startswith("/api/counts?") for url in mine[:-1]), mine
    shares = action_row(section, "doc.share_external").find_elements(By.TAG_NAME, "td")
    assert [td.text for td in shares][:2] == ["doc.share_external", "2"]
    assert section.find_element(By.CSS_SELECTOR, ".error").text == ""


def test_an_edit_in_the_actions_view_keeps_the_declared_category(
    browser: webdriver.Chrome, console_url: str, admin_token: str, admin: AuditClient
) -> None:
    """The view edits descriptions alone (ADR 0148, addendum): the category
    the catalogue declares is shown, and a save keeps the one declared since
    the page read it, not the one it showed."""
    admin.set_action_description("key.create", "A key made", category="security")
    section = open_view(browser, console_url, admin_token, "Actions")
    wait(browser).until(lambda b: section.find_elements(By.CSS_SELECTOR, "tbody tr"))
    assert "category security, set " in action_row(section, "key.create").text
    admin.set_action_description("key.create", "A key made", category="billing")  # elsewhere
    edit = action_row(section, "key.create").find_element(By.NAME, "description")
    edit.clear()
    edit.send_keys("An API key was created", Keys.ENTER)
    done = section.find_element(By.CSS_SELECTOR, ".done")
    wait(browser).until(lambda b: "recorded as action_catalog.updated" in done.text)
    entry = {e.action: e for e in admin.action_catalog().entries}["key.create"]
    assert (entry.description, entry.category) == (
        "An API key was created",
        event_pb2.CATEGORY_BILLING,
    )
