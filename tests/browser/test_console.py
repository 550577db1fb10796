"""The console in a real headless Chromium: sign in (and be refused), filter
(the URL keeps the view), expand a row, watch a live event arrive, export,
check an inclusion proof, and fit a 360 px screen."""

from __future__ import annotations

import json
import re
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit

import psycopg
import pytest
from selenium import webdriver
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support import expected_conditions as seen
from selenium.webdriver.support.ui import Select, WebDriverWait

from sealtrail import AuditClient, build_event, build_filter
from sealtrail._cli import _role_words
from sealtrail.v1 import event_pb2
from sealtrail_server.domain.access import new_token
from tests.clock import Clock
from tests.conftest import ServerThread, token_id_of

WAIT = 15


def wait(browser: webdriver.Chrome) -> WebDriverWait[webdriver.Chrome]:
    return WebDriverWait(browser, WAIT)


def sign_in(browser: webdriver.Chrome, url: str, token: str) -> None:
    browser.get(url)
    field = wait(browser).until(seen.visibility_of_element_located((By.ID, "token")))
    field.send_keys(token, Keys.ENTER)


def rows(browser: webdriver.Chrome) -> list[str]:
    return [row.text for row in browser.find_elements(By.CSS_SELECTOR, "#events tbody tr.event")]


def wait_for_rows(browser: webdriver.Chrome, done: Callable[[list[str]], bool]) -> list[str]:
    wait(browser).until(lambda b: done(rows(b)))
    return rows(browser)


def key_widened() -> event_pb2.Event:
    """Ann's API key made with its scopes widened: an event whose row opens on
    an actor, a resource, an IP and a diff."""
    return build_event(
        action="api_key.create",
        actor_id="u-ann",
        actor_email="ann@example.com",
        resource_type="api_key",
        resource_id="key_7",
        ip="203.0.113.9",
        changes=[("scopes", ["read"], ["read", "write"])],
    )


@pytest.fixture
def recorded(console_server: ServerThread, tenant: str) -> AuditClient:
    client = AuditClient(console_server.target, token=console_server.token(tenant, "recorder"))
    client.record(key_widened())
    client.record(action="member.invite", actor_id="u-bob", resource_type="member")
    client.record(action="user.login", actor_id="u-bob", outcome="failure", ip="198.51.100.4")
    return client


def test_a_recorder_or_unknown_token_is_refused(
    browser: webdriver.Chrome, console_url: str, console_server: ServerThread, tenant: str
) -> None:
    sign_in(browser, console_url, console_server.token(tenant, "recorder"))
    error = wait(browser).until(seen.visibility_of_element_located((By.ID, "signin-error")))
    wait(browser).until(lambda b: "may not read" in error.text)
    assert not browser.find_element(By.ID, "log").is_displayed()
    field = browser.find_element(By.ID, "token")  # it keeps a refused token
    field.clear()
    field.send_keys(new_token(), Keys.ENTER)
    wait(browser).until(lambda b: error.text == "Unknown or revoked token.")
    assert browser.execute_script("return sessionStorage.getItem('sealtrail.token')") is None
    # One cut short when pasted was "Unknown or revoked token." too (helper-517).
    field.clear()
    field.send_keys("stk_nonsense", Keys.ENTER)
    wait(browser).until(lambda b: error.text.startswith("Malformed token: cut short, or not a"))
    assert "stk_nonsense" not in error.text
    assert browser.execute_script("return sessionStorage.getItem('sealtrail.token')") is None


def test_an_actor_is_shown_by_name_and_email_else_either_else_id(
    browser: webdriver.Chrome, console_url: str, console_server: ServerThread, tenant: str
) -> None:
    """An actor with a display name and no email was shown by its id, a
    UUID; with both, by the email alone, where audit-log products show who
    acted by name and email. As the command line's table: `Bo Example
    <bo@example.com>`, a name that would read otherwise quoted."""
    named = str(uuid.uuid4())
    with AuditClient(console_server.target, token=console_server.token(tenant)) as client:
        client.record(action="doc.named", actor_id=named, actor_display_name="Ann Example")
        client.record(action="doc.mailed", actor_id=named, actor_email="ann@example.com")
        client.record(
            action="doc.both", actor_id=named, actor_email="bo@example.com",
            actor_display_name="Bo Example",
        )  # fmt: skip
        client.record(
            action="doc.posing", actor_id=named, actor_email="eve@example.com",
            actor_display_name="Eve <ceo@example.com>",
        )  # fmt: skip
    sign_in(browser, console_url, console_server.token(tenant, "reader"))
    shown = wait_for_rows(browser, lambda r: len(r) == 4)
    assert "ann@example.com" in shown[2] and "Ann Example" in shown[3], shown
    assert "Bo Example <bo@example.com>" in shown[1], shown
    assert '"Eve <ceo@example.com>" <eve@example.com>' in shown[0], shown
    assert not [row for row in shown if named in row], shown


def test_sign_in_filter_and_share_the_view(
    browser: webdriver.Chrome,
    console_url: str,
    console_server: ServerThread,
    tenant: str,
    recorded: AuditClient,
) -> None:
    sign_in(browser, console_url, console_server.token(tenant, "reader"))
    shown = wait_for_rows(browser, lambda r: len(r) >= 3)
    assert not browser.find_element(By.ID, "signin").is_displayed()
    assert "user.login" in shown[0] and "api_key.create" in shown[-1]  # newest first
    assert "failure" in shown[0] and "198.51.100.4" in shown[0]
    form = browser.find_element(By.ID, "filters")
    form.find_element(By.NAME, "actions").send_keys("api_key.*")
    Select(form.find_element(By.NAME, "range")).select_by_value("24h")
    form.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    shown = wait_for_rows(browser, lambda r: len(r) == 1 and "api_key.create" in r[0])
    query = parse_qs(urlsplit(browser.current_url).query)
    assert query["actions"] == ["api_key.*"] and query["range"] == ["24h"]
    # The URL is the view: opened again, it shows the same rows.
    browser.get(browser.current_url)
    assert wait_for_rows(browser, lambda r: len(r) == 1) == shown
    assert browser.find_element(By.NAME, "actions").get_attribute("value") == "api_key.*"


def test_a_row_expands_into_every_field_the_diff_and_the_json(
    browser: webdriver.Chrome,
    console_url: str,
    console_server: ServerThread,
    tenant: str,
    recorded: AuditClient,
) -> None:
    sign_in(
        browser, console_url + "?actions=api_key.create", console_server.token(tenant, "reader")
    )
    wait_for_rows(browser, lambda r: len(r) == 1)
    row = browser.find_element(By.CSS_SELECTOR, "#events tbody tr.event")
    opener = row.find_element(By.CSS_SELECTOR, "button.opener")
    opener.send_keys(Keys.ENTER)  # keyboard, not only the mouse
    detail = wait(browser).until(
        seen.visibility_of_element_located((By.CSS_SELECTOR, "#events tr.detail"))
    )
    assert opener.get_attribute("aria-expanded") == "true"
    assert "ann@example.com" in detail.text and "key_7" in detail.text
    before = detail.find_element(By.CSS_SELECTOR, "td.before").text
    after = detail.find_element(By.CSS_SELECTOR, "td.after").text
    assert '"read"' in before and '"write"' not in before and '"write"' in after
    assert '"action": "api_key.create"' in detail.find_element(By.TAG_NAME, "pre").text
    title = row.find_element(By.CSS_SELECTOR, "td").get_attribute("title")
    assert title is not None and title.endswith("(UTC)")
    detail.find_element(By.XPATH, ".//button[contains(., 'Check inclusion proof')]").click()
    wait(browser).until(lambda b: "verified" in detail.text or "FAILED" in detail.text)
    assert "verified: in the log of" in detail.text
    # Signed by the key (its name), not by the log: the origin is no signer.
    assert f"of sealtrail.test/log/{tenant}; its checkpoint is signed by sealtrail.test/log," in (
        detail.text
    )
    assert "only a verifier key you pinned proves it" in detail.text


def test_an_actors_roles_are_shown_each_apart_quoted_as_the_command_lines_table_quotes_them(
    browser: webdriver.Chrome, console_url: str, console_server: ServerThread, tenant: str
) -> None:
    """The detail's `actor roles` were the roles joined by commas
    (`admin,bill,ing`): one role holding a comma read as two, an edge space
    was lost. Each is an item of its own, and one a reader would misread
    (a comma, a quote or bracket, an edge space) is quoted as `sealtrail
    query`'s actor cell quotes it (`_role_words`), markup as text."""
    roles = ["admin", "bill,ing", " edge", 'say "hi"', "ops (eu)", "<b data-xss=1>x</b>"]
    with AuditClient(console_server.target, token=console_server.token(tenant)) as client:
        client.record(action="doc.read", actor_id="u-ann", actor_roles=roles)
    sign_in(browser, console_url, console_server.token(tenant, "reader"))
    wait_for_rows(browser, lambda r: len(r) == 1)
    browser.find_element(By.CSS_SELECTOR, "#events tbody tr.event button.opener").click()
    detail = wait(browser).until(
        seen.visibility_of_element_located((By.CSS_SELECTOR, "#events tr.detail"))
    )
    items = detail.find_elements(By.CSS_SELECTOR, "dl.fields dd ul.roles > li")
    shown = [item.get_attribute("textContent") for item in items]
    assert shown == [_role_words(role) for role in roles], shown
    assert shown[:3] == ["admin", '"bill,ing"', '" edge"'], shown
    assert not browser.find_elements(By.CSS_SELECTOR, "[data-xss]")
    # The roles shown are the record's: the proof check compares them too.
    detail.find_element(By.XPATH, ".//button[contains(., 'Check inclusion proof')]").click()
    wait(browser).until(lambda b: "verified" in detail.text or "FAILED" in detail.text)
    assert "verified: in the log of" in detail.text


def test_the_events_shown_go_with_signing_out(
    browser: webdriver.Chrome,
    console_url: str,
    console_server: ServerThread,
    tenant: str,
    recorded: AuditClient,
) -> None:
    """The admin views were emptied, not the events: a signed-out tab held
    the rows and an open event's JSON, hidden, for whoever used it next."""
    sign_in(browser, console_url, console_server.token(tenant, "reader"))
    wait_for_rows(browser, lambda r: any("ann@example.com" in row for row in r))
    row = next(
        r
        for r in browser.find_elements(By.CSS_SELECTOR, "#events tbody tr.event")
        if "ann@example.com" in r.text
    )
    row.click()
    wait(browser).until(seen.visibility_of_element_located((By.CSS_SELECTOR, "#events tr.detail")))
    browser.find_element(By.ID, "signout").click()
    wait(browser).until(seen.visibility_of_element_located((By.ID, "token")))
    kept = browser.execute_script("return document.body.innerHTML")
    assert "ann@example.com" not in kept and "key_7" not in kept
    assert browser.find_elements(By.CSS_SELECTOR, "#events tbody tr") == []


def _sign_in_next(browser: webdriver.Chrome, console_server: ServerThread, tenant: str) -> None:
    """Signs the tab out, and in again as a reader of `tenant`: its next session."""
    browser.find_element(By.ID, "signout").click()
    field = wait(browser).until(seen.visibility_of_element_located((By.ID, "token")))
    field.send_keys(console_server.token(tenant, "reader"), Keys.ENTER)


def _searches(sql: psycopg.Connection[Any], tenant: str) -> list[Any]:
    """The filters of the searches `tenant`'s log recorded (`audit_log.queried`)."""
    return [
        record["details"]["filter"]
        for (record,) in sql.execute(
            "SELECT record::jsonb FROM events WHERE tenant_id = %s"
            " AND action = 'audit_log.queried'",
            [tenant],
        )
    ]


def test_the_search_goes_with_signing_out(
    browser: webdriver.Chrome,
    console_url: str,
    console_server: ServerThread,
    tenant: str,
    recorded: AuditClient,
    sql: psycopg.Connection[Any],
) -> None:
    """The search stayed in the page's URL and form after signing out: the
    tab's next session, another tenant's, ran it at its sign-in, and its own
    log kept the first tenant's search terms (`audit_log.queried`)."""
    sign_in(browser, console_url + "?actor=ann%40example.com", console_server.token(tenant))
    wait_for_rows(browser, lambda r: len(r) == 1)
    other = f"{tenant}-next"
    _sign_in_next(browser, console_server, other)
    wait(browser).until(lambda b: _searches(sql, other))  # the next session's first page
    assert "ann@example.com" not in str(_searches(sql, other))
    assert "ann%40example.com" not in browser.current_url
    assert browser.find_element(By.NAME, "actor").get_attribute("value") == ""


def test_back_after_the_next_sign_in_runs_no_search_of_the_session_before(
    browser: webdriver.Chrome,
    console_url: str,
    console_server: ServerThread,
    tenant: str,
    recorded: AuditClient,
    sql: psycopg.Connection[Any],
) -> None:
    """The tab's history outlives a session: after the next sign-in (another
    tenant's), Back went to the searches the session before had applied, ran
    them, and had them recorded in the next tenant's log. An entry another
    session made is not run: its address becomes this session's search."""
    sign_in(browser, console_url, console_server.token(tenant))
    wait_for_rows(browser, lambda r: len(r) > 1)
    apply_filter(browser, "user.login")
    wait_for_rows(browser, lambda r: len(r) == 1 and "user.login" in r[0])
    apply_filter(browser, "member.invite")
    wait_for_rows(browser, lambda r: len(r) == 1 and "member.invite" in r[0])
    other = f"{tenant}-after"
    _sign_in_next(browser, console_server, other)
    wait(browser).until(lambda b: _searches(sql, other))  # the next session's first page
    browser.back()  # to the first session's user.login
    wait(browser).until(lambda b: "user.login" not in b.current_url)
    assert browser.find_element(By.NAME, "actions").get_attribute("value") == ""
    assert "user.login" not in str(_searches(sql, other))


@pytest.mark.parametrize(
    ("forged", "shown", "named"),
    [
        (event_pb2.Event(description="nothing to see"), "nothing to see", "description"),
        (
            event_pb2.Event(actor=event_pb2.Actor(email="x@elsewhere.example")),
            "x@elsewhere",
            "actor.email",
        ),
        (event_pb2.Event(outcome=event_pb2.OUTCOME_DENIED), "OUTCOME_DENIED", "outcome"),
        (event_pb2.Event(actor=event_pb2.Actor(roles=["owner"])), "owner", "actor.roles"),
    ],
    ids=["description", "actor-email", "outcome", "actor-roles"],
)
def test_a_row_rewritten_in_the_database_fails_its_proof_check(
    browser: webdriver.Chrome,
    console_url: str,
    console_server: ServerThread,
    tenant: str,
    recorded: AuditClient,
    sql: psycopg.Connection[Any],
    forged: event_pb2.Event,
    shown: str,
    named: str,
) -> None:
    """The row shown is a stored view of the record: rewritten (its leaf hash
    kept), it showed a changed description beside "verified" (helper-65), and
    then a changed email or outcome, fields the check left out (helper-68),
    and the actor's roles, which the detail shows (helper-539)."""
    sql.execute("SET session_replication_role = replica")  # past the refusal of UPDATE
    sql.execute(
        "UPDATE events SET event_view = event_view || %s"
        " WHERE tenant_id = %s AND action = 'member.invite'",
        [forged.SerializeToString(), tenant],
    )
    sign_in(browser, console_url + "?actions=member.invite", console_server.token(tenant, "reader"))
    wait_for_rows(browser, lambda r: len(r) == 1)
    browser.find_element(By.CSS_SELECTOR, "#events tbody tr.event button.opener").send_keys(
        Keys.ENTER
    )
    detail = wait(browser).until(
        seen.visibility_of_element_located((By.CSS_SELECTOR, "#events tr.detail"))
    )
    assert shown in detail.text
    detail.find_element(By.XPATH, ".//button[contains(., 'Check inclusion proof')]").click()
    wait(browser).until(lambda b: "verified" in detail.text or "FAILED" in detail.text)
    assert f"FAILED: the row shown differs from the record the proof covers ({named})" in (
        detail.text
    )


def test_a_live_event_arrives_at_the_top(
    browser: webdriver.Chrome,
    console_url: str,
    console_server: ServerThread,
    tenant: str,
    recorded: AuditClient,
) -> None:
    sign_in(browser, console_url, console_server.token(tenant, "reader"))
    wait_for_rows(browser, lambda r: len(r) >= 3)
    browser.find_element(By.ID, "live").click()
    time.sleep(0.5)  # the stream is open once the first heartbeat or event arrives
    recorded.record(action="secret.read", actor_id="u-night", resource_type="production")
    shown = wait_for_rows(browser, lambda r: "secret.read" in r[0])
    assert "u-night" in shown[0]
    assert "fresh" in browser.find_element(By.CSS_SELECTOR, "#events tbody tr").get_attribute(
        "class"
    )


def test_live_events_are_announced_to_a_screen_reader(
    browser: webdriver.Chrome,
    console_url: str,
    console_server: ServerThread,
    tenant: str,
    recorded: AuditClient,
) -> None:
    """Rows added at the top said nothing to whoever does not see the table:
    a screen reader's user following Live heard nothing, ever (WCAG 4.1.3)."""
    sign_in(browser, console_url + "?actions=secret.*", console_server.token(tenant, "reader"))
    wait(browser).until(seen.visibility_of_element_located((By.ID, "empty")))
    browser.find_element(By.ID, "live").click()
    time.sleep(0.5)  # the stream is open once the first heartbeat or event arrives
    live = "[role=status], [aria-live=polite], [aria-live=assertive], [role=alert]"

    def said(b: webdriver.Chrome) -> list[str]:
        return [r.get_attribute("textContent") for r in b.find_elements(By.CSS_SELECTOR, live)]

    recorded.record(action="secret.read", actor_id="u-night")
    wait_for_rows(browser, lambda r: len(r) == 1)
    wait(browser).until(lambda b: any("1 new event" in words for words in said(b)))
    recorded.record(action="secret.write", actor_id="u-night")
    wait_for_rows(browser, lambda r: len(r) == 2)
    wait(browser).until(lambda b: any("2 new events" in words for words in said(b)))


def exported(browser: webdriver.Chrome, downloads: Path, format: str) -> tuple[str, bytes]:
    """Clicks the page's export button of `format`: what the page then says,
    and the file it saved."""
    # Shown once the page has signed in: clicked before, under load, it was not
    # yet interactable (a test that waits for no rows first).
    button = (By.ID, f"export-{format}")
    wait(browser).until(seen.element_to_be_clickable(button)).click()
    wait(browser).until(lambda b: "Exported" in b.find_element(By.ID, "status").text)
    saved = downloads / f"sealtrail-export.{format}"
    wait(browser).until(lambda b: saved.exists())
    return browser.find_element(By.ID, "status").text, saved.read_bytes()


def test_export_downloads_the_current_filter(
    browser: webdriver.Chrome,
    console_url: str,
    console_server: ServerThread,
    tenant: str,
    recorded: AuditClient,
    downloads: Path,
) -> None:
    sign_in(browser, console_url + "?actions=user.*", console_server.token(tenant, "exporter"))
    wait_for_rows(browser, lambda r: len(r) == 1)
    said, saved = exported(browser, downloads, "csv")
    lines = saved.decode().splitlines()
    assert len(lines) == 2 and "user.login" in lines[1] and "api_key" not in "\n".join(lines)
    assert said.startswith("Exported 1 event, "), said  # not "1 events"


def test_an_export_of_nothing_is_an_empty_file(
    browser: webdriver.Chrome,
    console_url: str,
    console_server: ServerThread,
    tenant: str,
    recorded: AuditClient,
    downloads: Path,
) -> None:
    """Its manifest's zero byte count is left out of the JSON: read as NaN, it
    failed as "does not match its manifest" (helper-68)."""
    sign_in(
        browser, console_url + "?actions=never.happened", console_server.token(tenant, "exporter")
    )
    said, saved = exported(browser, downloads, "ndjson")
    assert "Exported 0 events, 0 bytes" in said and saved == b""


def held_export(browser: webdriver.Chrome, *, corrupt: bool = False) -> None:
    """Puts the test between the page and its export: the answer's lines reach
    the page at once but its last (the manifest), which waits until the test
    sets `window.releaseExport`; `window.exportBytes` is the file's size. With
    `corrupt`, a byte of the file is changed on the way."""
    browser.execute_script(
        """
        const corrupt = arguments[0];
        window.releaseExport = false;
        const real = window.fetch;
        window.fetch = async (url, options) => {
          const response = await real(url, options);
          if (!String(url).startsWith("/api/export") || !response.ok) return response;
          const lines = (await response.text()).split("\\n").filter((line) => line);
          window.exportBytes = 0;
          for (const [index, line] of lines.entries()) {
            const parsed = JSON.parse(line);
            if (!parsed.chunk) continue;
            const bytes = Uint8Array.from(atob(parsed.chunk), (c) => c.charCodeAt(0));
            window.exportBytes += bytes.length;
            if (corrupt && index === 0) {
              bytes[0] ^= 1;
              lines[index] = JSON.stringify({ chunk: btoa(String.fromCharCode(...bytes)) });
            }
          }
          const manifest = lines.pop();
          const encoder = new TextEncoder();
          const body = new ReadableStream({
            async start(controller) {
              controller.enqueue(encoder.encode(lines.map((line) => line + "\\n").join("")));
              while (!window.releaseExport) await new Promise((done) => setTimeout(done, 20));
              controller.enqueue(encoder.encode(manifest + "\\n"));
              controller.close();
            },
          });
          return new Response(body, { status: response.status, headers: response.headers });
        };
        """,
        corrupt,
    )


def on_disk(downloads: Path) -> int:
    """The bytes the browser has written in `downloads`, in whatever files."""
    return sum(path.stat().st_size for path in downloads.iterdir() if path.is_file())


def _csv_rows(saved: bytes) -> list[str]:
    """The actions of a CSV export's rows, under its header."""
    header, *rows = saved.decode().splitlines()
    assert header.startswith("seq,")
    return ["doc.read" if "doc.read" in row else row for row in rows]


def _json_rows(saved: bytes) -> list[str]:
    """The actions of a JSON export's events (one array)."""
    return [event["action"] for event in json.loads(saved)]


@pytest.mark.parametrize(
    ("form", "said", "rows"), [("csv", "checked against its manifest", _csv_rows),
                               ("json", "(JSON)", _json_rows)]
)  # fmt: skip
def test_an_export_is_written_to_disk_as_it_arrives(
    browser: webdriver.Chrome,
    console_url: str,
    console_server: ServerThread,
    tenant: str,
    downloads: Path,
    form: str,
    said: str,
    rows: Callable[[bytes], list[str]],
) -> None:
    """The page gathered the whole file in the tab's memory (a Blob) and saved
    it only once the manifest had come: an export of a million events, some
    hundreds of MB, took the tab's memory or failed. It is a download now,
    written to disk as it arrives, and completed only once it matches its
    manifest; JSON too, which the page did not offer (helper-375)."""
    with AuditClient(console_server.target, token=console_server.token(tenant, "recorder")) as c:
        c.record_batch([build_event(action="doc.read", actor_id=f"u{n}") for n in range(300)])
    sign_in(browser, console_url + "?actions=doc.read", console_server.token(tenant, "exporter"))
    wait_for_rows(browser, lambda r: len(r) == 100)
    held_export(browser)
    browser.find_element(By.ID, f"export-{form}").click()
    wait(browser).until(lambda b: b.execute_script("return window.exportBytes") is not None)
    size = browser.execute_script("return window.exportBytes")
    # The manifest has not come: the file is on disk all the same, not yet complete.
    wait(browser).until(lambda b: on_disk(downloads) == size)
    assert "Exporting" in browser.find_element(By.ID, "status").text
    saved = downloads / f"sealtrail-export.{form}"
    assert not saved.exists()
    browser.execute_script("window.releaseExport = true")
    wait(browser).until(lambda b: "Exported" in b.find_element(By.ID, "status").text)
    status = browser.find_element(By.ID, "status").text
    assert status.startswith("Exported 300 events, ") and said in status, status
    wait(browser).until(lambda b: saved.exists())
    assert len(saved.read_bytes()) == size
    assert rows(saved.read_bytes()) == ["doc.read"] * 300


def test_an_export_that_does_not_match_its_manifest_is_no_download(
    browser: webdriver.Chrome,
    console_url: str,
    console_server: ServerThread,
    tenant: str,
    downloads: Path,
) -> None:
    """Written to disk as it arrives, a file that then fails its manifest's
    check is a failed download: never a file that looks complete, nor a
    part of one left behind."""
    with AuditClient(console_server.target, token=console_server.token(tenant, "recorder")) as c:
        c.record_batch([build_event(action="doc.read", actor_id=f"u{n}") for n in range(300)])
    sign_in(browser, console_url + "?actions=doc.read", console_server.token(tenant, "exporter"))
    wait_for_rows(browser, lambda r: len(r) == 100)
    held_export(browser, corrupt=True)
    browser.find_element(By.ID, "export-csv").click()
    wait(browser).until(lambda b: b.execute_script("return window.exportBytes") is not None)
    size = browser.execute_script("return window.exportBytes")
    wait(browser).until(lambda b: on_disk(downloads) == size)  # begun
    browser.execute_script("window.releaseExport = true")
    wait(browser).until(lambda b: "Export failed" in b.find_element(By.ID, "error").text)
    assert "does not match its manifest" in browser.find_element(By.ID, "error").text
    assert browser.find_element(By.ID, "status").text == ""
    # The browser ends the download as failed and removes what it had written.
    wait(browser).until(lambda b: not any(downloads.iterdir()))
    time.sleep(0.5)
    assert not any(downloads.iterdir()), list(downloads.iterdir())


def record_more_than_held(console_server: ServerThread, tenant: str) -> None:
    """Records `doc.edit` events whose export (about 15 MB) is more than the
    connections between the page and the API hold: one the page stops
    reading (`gated_export`) stops on the server too."""
    with AuditClient(console_server.target, token=console_server.token(tenant, "recorder")) as c:
        for _ in range(10):
            c.record_batch(
                [
                    build_event(action="doc.edit", actor_id="u", description="x" * 1500)
                    for _ in range(1000)
                ]
            )


def gated_export(browser: webdriver.Chrome) -> None:
    """Puts the test between the page and its export: the page reads its
    first 100 kB, then no more until the test sets `window.releaseExport`."""
    browser.execute_script(
        """
        window.releaseExport = false;
        const real = window.fetch;
        window.fetch = async (url, options) => {
          const response = await real(url, options);
          if (!String(url).startsWith("/api/export")) return response;
          let passed = 0;  // the page reads on once the test lets it
          const gate = new TransformStream({
            async transform(chunk, controller) {
              while (passed > 100000 && !window.releaseExport) {
                await new Promise((done) => setTimeout(done, 20));
              }
              passed += chunk.length;
              controller.enqueue(chunk);
            },
          });
          return new Response(response.body.pipeThrough(gate), { headers: response.headers });
        };
        """
    )


def test_a_download_cancelled_in_the_browser_ends_its_export(
    browser: webdriver.Chrome,
    console_url: str,
    console_server: ServerThread,
    tenant: str,
    downloads: Path,
) -> None:
    """A download the person cancels (the browser's downloads list) ends the
    export: the page stops, says so, and lets go of the answer, so the console
    ends the export's call at once. Left unread, the export held one of the
    tenant's few places among exports open until the server's stall timeout
    (five minutes) ended it."""

    async def exports_open() -> int:
        return console_server.service.resources()["exports"]

    record_more_than_held(console_server, tenant)
    sign_in(browser, console_url + "?actions=doc.edit", console_server.token(tenant, "exporter"))
    wait_for_rows(browser, lambda r: len(r) == 100)
    # Named by their ids on disk, which the browser's command to cancel one takes.
    browser.execute_cdp_cmd(
        "Browser.setDownloadBehavior",
        {"behavior": "allowAndName", "downloadPath": str(downloads), "eventsEnabled": True},
    )
    gated_export(browser)
    browser.find_element(By.ID, "export-csv").click()
    wait(browser).until(lambda b: on_disk(downloads) > 0)
    assert console_server.run(exports_open()) == 1
    [guid] = [path.name.removesuffix(".crdownload") for path in downloads.iterdir()]
    browser.execute_cdp_cmd("Browser.cancelDownload", {"guid": guid})
    browser.execute_script("window.releaseExport = true")
    wait(browser).until(lambda b: "Export failed" in b.find_element(By.ID, "error").text)
    assert "download was stopped" in browser.find_element(By.ID, "error").text
    deadline = time.monotonic() + 10
    while console_server.run(exports_open()):
        assert time.monotonic() < deadline, "the export is still open on the server"
        time.sleep(0.05)


DECODE_MEASURE = """
const done = arguments[arguments.length - 1];
Promise.all([import("/static/base64.js"), import("/static/vendor/noble-hashes/sha2.js")])
  .then(([{ fromBase64 }, { sha256 }]) => {
    // An export's chunk: 64 KiB (CHUNK_BYTES), every byte value, as the API sends it.
    const raw = new Uint8Array(64 * 1024).map((_, i) => (i * 7919 + (i >> 8)) & 255);
    let binary = "";
    for (const b of raw) binary += String.fromCharCode(b);
    const chunk = btoa(binary);
    const same = (a, b) => a.length === b.length && a.every((x, i) => x === b[i]);
    const wrong = [];
    const check = (label) => {
      if (!same(fromBase64(chunk), raw)) wrong.push(`${label}: a chunk`);
      if (fromBase64("").length !== 0) wrong.push(`${label}: empty`);
      if (!same(fromBase64("AP8="), [0, 255])) wrong.push(`${label}: padded`);
      try { fromBase64("not base64!"); wrong.push(`${label}: not base64 decoded`); } catch {}
    };
    check("as the browser has it");
    const native = Uint8Array.fromBase64;
    if (native) {  // and where the browser has no Uint8Array.fromBase64
      delete Uint8Array.fromBase64;
      try { check("without Uint8Array.fromBase64"); } finally { Uint8Array.fromBase64 = native; }
    }
    // The best of five rounds of twenty chunks each: decoded, decoded by atob
    // alone (to text), and hashed as the export hashes them.
    const best = (work) => {
      let least = Infinity;
      for (let round = 0; round < 5; round++) {
        const start = performance.now();
        for (let n = 0; n < 20; n++) work();
        least = Math.min(least, performance.now() - start);
      }
      return least;
    };
    const decoded = fromBase64(chunk);
    done({
      wrong,
      decode: best(() => fromBase64(chunk)),
      atob: best(() => atob(chunk)),
      hash: best(() => sha256.create().update(decoded).digest()),
    });
  })
  .catch((error) => done({ wrong: [String(error)] }));
"""


def test_an_exports_chunks_are_decoded_in_less_time_than_they_are_hashed(
    browser: webdriver.Chrome, console_url: str
) -> None:
    """The page decoded each base64 chunk of an export with a callback per
    byte (`Uint8Array.from(atob(chunk), (c) => c.charCodeAt(0))`): some six
    times the SHA-256 it computes of the same bytes (some 45 s of the tab's
    time over a 500 MB export, Chromium 156 on the test machine), and some
    300 times atob alone. Measured on the page, against the hash measured in
    the same run; correct with and without `Uint8Array.fromBase64`."""
    browser.get(console_url)
    measured = browser.execute_async_script(DECODE_MEASURE)
    assert measured["wrong"] == [], measured
    print(
        f"decode/hash {measured['decode'] / measured['hash']:.2f},"
        f" decode/atob {measured['decode'] / max(measured['atob'], 0.1):.1f}: {measured}"
    )
    assert measured["decode"] < measured["hash"], measured


def test_a_page_that_may_run_no_worker_still_exports(
    browser: webdriver.Chrome,
    console_url: str,
    console_server: ServerThread,
    tenant: str,
    recorded: AuditClient,
    downloads: Path,
) -> None:
    """Not a secure context (plain HTTP to another host), the page may run no
    service worker: it keeps the file in memory and saves it once checked."""
    sign_in(browser, console_url + "?actions=user.*", console_server.token(tenant, "exporter"))
    wait_for_rows(browser, lambda r: len(r) == 1)
    browser.execute_script("Object.defineProperty(window, 'isSecureContext', { value: false })")
    said, saved = exported(browser, downloads, "csv")
    assert said.startswith("Exported 1 event, ") and "checked against its manifest" in said
    assert len(saved.decode().splitlines()) == 2 and "user.login" in saved.decode()
    registered = browser.execute_async_script(
        "navigator.serviceWorker.getRegistrations().then((r) => arguments[0](r.length))"
    )
    assert registered == 0


def test_a_reader_may_not_export(
    browser: webdriver.Chrome,
    console_url: str,
    console_server: ServerThread,
    tenant: str,
    recorded: AuditClient,
) -> None:
    sign_in(browser, console_url, console_server.token(tenant, "reader"))
    wait_for_rows(browser, lambda r: len(r) >= 3)
    browser.find_element(By.ID, "export-ndjson").click()
    wait(browser).until(lambda b: "Export failed" in b.find_element(By.ID, "error").text)


def test_the_page_fits_a_360_pixel_screen(
    browser: webdriver.Chrome,
    console_url: str,
    console_server: ServerThread,
    tenant: str,
    recorded: AuditClient,
) -> None:
    browser.set_window_size(360, 800)
    sign_in(browser, console_url, console_server.token(tenant, "reader"))
    wait_for_rows(browser, lambda r: len(r) >= 3)
    wait(browser).until(seen.visibility_of_element_located((By.ID, "activity")))  # its chart too
    width = browser.execute_script("return document.documentElement.scrollWidth")
    viewport = browser.execute_script("return window.innerWidth")
    assert width <= viewport  # the table scrolls inside its own box; the page does not


def hooked(browser: webdriver.Chrome, hold: str = "") -> None:
    """Puts the test between the page and its server: the page's requests are
    kept in `window.requests`; one whose URL starts as a `window.fakes` entry
    [start, status, body] gets that answer instead (once); one whose URL holds
    `hold` is answered only once the test sets `window.release` (a slow page of
    a big tenant), and `window.released` is set once it was."""
    browser.execute_script(
        """
        window.requests = []; window.fakes = []; window.release = false; window.released = false;
        const hold = arguments[0];
        const real = window.fetch;
        window.fetch = async (url, options) => {
          url = String(url);
          window.requests.push(url);
          const fake = window.fakes.findIndex(([start]) => url.startsWith(start));
          if (fake >= 0) {
            const [, status, body] = window.fakes.splice(fake, 1)[0];
            return new Response(body, { status, headers: { "Content-Type": "application/json" } });
          }
          if (hold && url.includes(hold)) {
            while (!window.release) await new Promise((done) => setTimeout(done, 20));
            try { return await real(url, options); }  // refused at once if aborted meanwhile
            finally { setTimeout(() => { window.released = true; }, 200); }
          }
          return real(url, options);
        };
        """,
        hold,
    )


def requested(browser: webdriver.Chrome, start: str) -> list[str]:
    urls: list[str] = browser.execute_script("return window.requests")
    return [url for url in urls if url.startswith(start)]


def apply_filter(browser: webdriver.Chrome, actions: str) -> None:
    field = browser.find_element(By.NAME, "actions")
    field.clear()
    field.send_keys(actions, Keys.ENTER)


def test_a_filter_changed_while_a_page_loads_shows_the_new_filter_only(
    browser: webdriver.Chrome,
    console_url: str,
    console_server: ServerThread,
    tenant: str,
    recorded: AuditClient,
) -> None:
    """The old filter's page, answered late, filled the table under the new
    filter, whose Query was never sent (helper-150)."""
    sign_in(browser, console_url + "?actions=user.login", console_server.token(tenant, "reader"))
    wait_for_rows(browser, lambda r: len(r) == 1)
    hooked(browser, hold="actions=api_key")
    apply_filter(browser, "api_key.create")  # its page is held
    wait(browser).until(lambda b: requested(b, "/api/events"))
    apply_filter(browser, "member.invite")
    shown = wait_for_rows(browser, lambda r: len(r) == 1 and "member.invite" in r[0])
    browser.execute_script("window.release = true")
    wait(browser).until(lambda b: b.execute_script("return window.released"))
    assert rows(browser) == shown
    assert browser.execute_script("return !document.querySelector('#more').hidden") is False


def test_a_page_on_its_way_says_so_and_one_that_never_comes_is_an_error(
    browser: webdriver.Chrome,
    console_url: str,
    console_server: ServerThread,
    tenant: str,
    recorded: AuditClient,
) -> None:
    """While a slow server answered, the table was empty with nothing said:
    neither "No events match" nor any word of loading, no aria-busy for a
    screen reader, and no end to the wait: a server that never answered left
    the page so for good. The page now says "Loading…", marks the table busy,
    and gives up after PAGE_SECONDS (60 s, docs/console.md), saying so."""
    browser.get(console_url + "?actions=user.login")
    field = wait(browser).until(seen.visibility_of_element_located((By.ID, "token")))
    hooked(browser, hold="/api/events")
    field.send_keys(console_server.token(tenant, "reader"), Keys.ENTER)
    wait(browser).until(lambda b: requested(b, "/api/events"))
    loading = browser.find_element(By.ID, "loading")
    table = browser.find_element(By.ID, "events")
    wait(browser).until(lambda b: loading.is_displayed() and "Loading" in loading.text)
    assert table.get_attribute("aria-busy") == "true"
    assert not browser.find_element(By.ID, "empty").is_displayed()
    browser.execute_script("window.release = true")
    wait_for_rows(browser, lambda r: len(r) == 1)
    assert table.get_attribute("aria-busy") != "true" and not loading.is_displayed()

    # A server that never answers: the page's own clock is sped up 60 times
    # for its long waits, so its 60 s bound passes in one.
    browser.execute_script(
        """
        const real = window.setTimeout;
        window.setTimeout = (work, ms, ...rest) => real(work, ms >= 10e3 ? ms / 60 : ms, ...rest);
        """
    )
    hooked(browser, hold="/api/events")
    apply_filter(browser, "member.invite")
    wait(browser).until(lambda b: "did not answer" in b.find_element(By.ID, "error").text)
    said = browser.find_element(By.ID, "error").text
    assert "60 s" in said, said
    assert table.get_attribute("aria-busy") != "true" and not loading.is_displayed()
    assert not browser.find_element(By.ID, "empty").is_displayed()  # nothing is known to match
    # The next Apply asks again, and its answer is shown.
    browser.execute_script("window.release = true")
    apply_filter(browser, "user.login")
    wait_for_rows(browser, lambda r: len(r) == 1)
    assert browser.find_element(By.ID, "error").text == ""


def newest_seq(browser: webdriver.Chrome) -> int:
    seqs = browser.execute_script(
        "return [...document.querySelectorAll('#events tbody tr.event')].map((r) => r.dataset.seq)"
    )
    return max(int(seq) for seq in seqs)


def test_live_after_a_failed_page_does_not_replay_the_whole_log(
    browser: webdriver.Chrome,
    console_url: str,
    console_server: ServerThread,
    tenant: str,
    recorded: AuditClient,
) -> None:
    """With no page loaded, Live asked for `after_seq=0`: every event the
    tenant ever recorded, at the top as new (helper-150)."""
    # A filter the Query's own access records (audit_log.queried) do not match.
    sign_in(browser, console_url + "?actions=user.login", console_server.token(tenant, "reader"))
    wait_for_rows(browser, lambda r: len(r) == 1)
    live = browser.find_element(By.ID, "live")
    live.click()
    hooked(browser)
    browser.execute_script("window.fakes.push(['/api/events', 503, '{\"error\": \"busy\"}'])")
    browser.find_element(By.CSS_SELECTOR, "#filters button[type=submit]").click()
    wait(browser).until(lambda b: "busy" in b.find_element(By.ID, "error").text)
    assert not requested(browser, "/api/stream") and not live.is_selected()
    live.click()  # the page is asked for again, then Live starts after its newest event
    wait(browser).until(lambda b: requested(b, "/api/stream"))
    assert f"after_seq={newest_seq(browser)}" in requested(browser, "/api/stream")[0]
    # Nothing matched: Live starts with the next event recorded.
    apply_filter(browser, "never.happened")
    wait(browser).until(lambda b: len(requested(b, "/api/stream")) == 2)
    assert "after_seq" not in requested(browser, "/api/stream")[1]
    # A Live that stops on an error no longer says it is on.
    browser.execute_script("window.fakes.push(['/api/stream', 200, '{\"error\": \"revoked\"}\\n'])")
    apply_filter(browser, "user.login")
    wait(browser).until(
        lambda b: "Live updates stopped: revoked" in b.find_element(By.ID, "error").text
    )
    assert not live.is_selected()


def test_live_ticked_before_the_first_page_starts_after_it(
    browser: webdriver.Chrome,
    console_url: str,
    console_server: ServerThread,
    tenant: str,
    recorded: AuditClient,
) -> None:
    """Ticked while the first page loaded, Live asked for `after_seq=0`
    (helper-150)."""
    browser.get(console_url + "?actions=user.login")
    field = wait(browser).until(seen.visibility_of_element_located((By.ID, "token")))
    hooked(browser, hold="/api/events")
    field.send_keys(console_server.token(tenant, "reader"), Keys.ENTER)
    wait(browser).until(lambda b: requested(b, "/api/events"))
    wait(browser).until(seen.element_to_be_clickable((By.ID, "live"))).click()
    assert not requested(browser, "/api/stream")
    browser.execute_script("window.release = true")
    wait_for_rows(browser, lambda r: len(r) == 1)
    wait(browser).until(lambda b: requested(b, "/api/stream"))
    assert f"after_seq={newest_seq(browser)}" in requested(browser, "/api/stream")[0]


def test_live_events_recorded_together_arrive_newest_first(
    browser: webdriver.Chrome,
    console_url: str,
    console_server: ServerThread,
    tenant: str,
    recorded: AuditClient,
) -> None:
    """A batch read at once was put at the top oldest first (helper-150)."""
    sign_in(browser, console_url + "?actions=batch.*", console_server.token(tenant, "reader"))
    wait(browser).until(lambda b: b.find_element(By.ID, "empty").is_displayed())
    hooked(browser)
    browser.find_element(By.ID, "live").click()
    wait(browser).until(lambda b: requested(b, "/api/stream"))
    time.sleep(0.5)  # the stream is open once the first heartbeat or event arrives
    recorded.record_batch(
        [build_event(action=f"batch.n{n}", actor_id="u-batch") for n in (1, 2, 3)]
    )
    shown = wait_for_rows(browser, lambda r: len(r) == 3)
    assert ["batch.n3" in shown[0], "batch.n2" in shown[1], "batch.n1" in shown[2]] == [True] * 3


def test_live_under_a_custom_range_adds_only_events_inside_it(
    browser: webdriver.Chrome,
    console_url: str,
    console_server: ServerThread,
    tenant: str,
    recorded: AuditClient,
) -> None:
    """Live dropped a custom range's end: an event recorded now, after it,
    was added at the top of a view that Query and Export left it out of
    (helper-204)."""
    now = datetime.now(UTC)
    start, end = now - timedelta(hours=3), now - timedelta(hours=1)
    recorded.record(backdated("window.read", "u-first", now - timedelta(hours=2)))
    window = f"&from={instant(start)}&to={instant(end)}"
    sign_in(
        browser,
        console_url + "?actions=window.*&range=custom" + window,
        console_server.token(tenant, "reader"),
    )
    wait_for_rows(browser, lambda r: len(r) == 1)
    hooked(browser)
    browser.find_element(By.ID, "live").click()
    wait(browser).until(lambda b: requested(b, "/api/stream"))
    time.sleep(0.5)  # the stream is open once the first heartbeat or event arrives
    recorded.record(action="window.late", actor_id="u-after-the-end")
    # Sent after it, so shown after it had it been sent: a backdated event inside the window.
    recorded.record(backdated("window.read", "u-backdated", now - timedelta(minutes=90)))
    shown = wait_for_rows(browser, lambda r: len(r) == 2)
    assert "u-backdated" in shown[0] and "u-first" in shown[1]
    assert "occurred_before" in requested(browser, "/api/stream")[0]


def backdated(action: str, actor_id: str, occurred_at: datetime) -> event_pb2.Event:
    event = build_event(action=action, actor_id=actor_id)
    event.occurred_at.FromDatetime(occurred_at)
    return event


def instant(moment: datetime) -> str:
    """`moment` as the console's URL holds a custom range's end."""
    return quote(moment.isoformat(timespec="milliseconds").replace("+00:00", "Z"))


def queried(browser: webdriver.Chrome) -> list[dict[str, list[str]]]:
    """The query strings of the Queries the page made since it was opened."""
    urls = browser.execute_script(
        "return performance.getEntriesByType('resource').map((entry) => entry.name)"
    )
    return [parse_qs(urlsplit(url).query) for url in urls if "/api/events" in url]


def test_a_shared_custom_range_means_the_same_instants_in_every_zone(
    browser: webdriver.Chrome,
    console_url: str,
    console_server: ServerThread,
    tenant: str,
    recorded: AuditClient,
) -> None:
    """The URL held the author's wall-clock times, read in each viewer's own
    zone: the same link meant other hours in New York and Berlin (helper-150)."""
    browser.execute_cdp_cmd("Emulation.setTimezoneOverride", {"timezoneId": "America/New_York"})
    sign_in(browser, console_url, console_server.token(tenant, "reader"))
    wait_for_rows(browser, lambda r: len(r) >= 3)
    form = browser.find_element(By.ID, "filters")
    Select(form.find_element(By.NAME, "range")).select_by_value("custom")
    browser.execute_script(
        "const form = document.querySelector('#filters');"
        "form.elements.from.value = '2026-12-01T09:00';"
        "form.elements.to.value = '2026-12-01T17:00';"
    )
    form.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    wait(browser).until(lambda b: len(queried(b)) == 2)
    assert queried(browser)[1]["occurred_after"] == ["2026-12-01T14:00:00.000Z"]
    shared = browser.current_url
    browser.execute_cdp_cmd("Emulation.setTimezoneOverride", {"timezoneId": "Europe/Berlin"})
    browser.get(shared)
    wait(browser).until(lambda b: queried(b))
    assert queried(browser)[0]["occurred_after"] == ["2026-12-01T14:00:00.000Z"]
    assert queried(browser)[0]["occurred_before"] == ["2026-12-01T22:00:00.000Z"]
    shown = browser.find_element(By.NAME, "from").get_attribute("value")
    assert shown == "2026-12-01T15:00"  # in the viewer's own zone


def test_a_custom_range_says_its_zone_and_keeps_a_shared_links_seconds(
    browser: webdriver.Chrome,
    console_url: str,
    console_server: ServerThread,
    tenant: str,
    recorded: AuditClient,
) -> None:
    """From and To are the viewer's wall clock, but their labels named no
    zone: read as UTC (as the times beside them in a SIEM are), they were
    hours off. And a shared link's ends to the second (from=...T09:00:30.250Z)
    were shown to the minute, so Apply pressed again widened the window to
    09:00:00: events left out by the link's author came in."""
    browser.execute_cdp_cmd("Emulation.setTimezoneOverride", {"timezoneId": "America/New_York"})
    shared = "?range=custom&from=2026-12-01T09:00:30.250Z&to=2026-12-01T17:45:59.999Z"
    sign_in(browser, console_url + shared, console_server.token(tenant, "reader"))
    wait(browser).until(lambda b: queried(b))
    form = browser.find_element(By.ID, "filters")
    for name in ("from", "to"):
        label = form.find_element(By.XPATH, f".//label[.//input[@name='{name}']]")
        assert "America/New_York" in label.text, label.text
    assert (
        form.find_element(By.NAME, "from")
        .get_attribute("value")
        .startswith("2026-12-01T04:00:30.25")
    )
    form.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    wait(browser).until(lambda b: len(queried(b)) == 2)
    again = queried(browser)[1]
    assert again["occurred_after"] == ["2026-12-01T09:00:30.250Z"], again
    assert again["occurred_before"] == ["2026-12-01T17:45:59.999Z"], again
    assert parse_qs(urlsplit(browser.current_url).query)["from"] == ["2026-12-01T09:00:30.250Z"]


def test_each_time_shown_names_its_zone(
    browser: webdriver.Chrome, console_url: str, console_server: ServerThread, tenant: str
) -> None:
    """The times were the viewer's wall clock, with no zone said: a colleague
    in another office, a screenshot in a report, or a SIEM's UTC read 15:00
    as their own, hours off. The UTC was on hover only, which a keyboard or a
    touch screen never shows."""
    browser.execute_cdp_cmd("Emulation.setTimezoneOverride", {"timezoneId": "Asia/Kolkata"})
    moment = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(hours=2)
    admin = console_server.token(tenant, "admin")
    with AuditClient(console_server.target, token=admin) as client:
        client.record(backdated("door.open", "u-kim", moment))
    sign_in(browser, console_url + "?actions=door.open", admin)
    [shown] = wait_for_rows(browser, lambda r: len(r) == 1)
    local = moment + timedelta(hours=5, minutes=30)
    assert f"{local:%-I:%M}" in shown and "GMT+5:30" in shown
    browser.get(console_url + "#tokens")
    created = (By.CSS_SELECTOR, "#tokens-table tbody td:nth-child(4)")
    wait(browser).until(lambda b: "GMT+5:30" in b.find_element(*created).text)


def test_times_in_utc_is_a_switch_kept_in_the_url(
    browser: webdriver.Chrome, console_url: str, console_server: ServerThread, tenant: str
) -> None:
    """The times were in the viewer's zone only, UTC on hover: an
    investigation across offices (or beside a SIEM's UTC) converted each by
    hand. "Times in UTC" shows the rows' times in UTC, kept in the URL
    (`utc=1`) so that a shared link shows them so; off by default."""
    browser.execute_cdp_cmd("Emulation.setTimezoneOverride", {"timezoneId": "Asia/Kolkata"})
    moment = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(hours=2)
    reader = console_server.token(tenant, "reader")
    with AuditClient(console_server.target, token=console_server.token(tenant)) as client:
        client.record(backdated("door.open", "u-kim", moment))
    sign_in(browser, console_url + "?actions=door.open&utc=1", reader)
    [shown] = wait_for_rows(browser, lambda r: len(r) == 1)
    assert f"{moment:%-I:%M}" in shown and " UTC" in shown and "GMT" not in shown, shown
    switch = browser.find_element(By.ID, "utc")
    assert switch.is_selected()
    switch.click()  # off: the viewer's zone, as by default
    local = moment + timedelta(hours=5, minutes=30)
    wait(browser).until(lambda b: "GMT+5:30" in rows(b)[0])
    assert f"{local:%-I:%M}" in rows(browser)[0]
    assert "utc" not in parse_qs(urlsplit(browser.current_url).query)
    switch.click()  # on again: the address keeps it, the search as it was
    wait(browser).until(lambda b: " UTC" in rows(b)[0])
    kept = parse_qs(urlsplit(browser.current_url).query)
    assert kept["utc"] == ["1"] and kept["actions"] == ["door.open"], kept
    browser.refresh()
    [again] = wait_for_rows(browser, lambda r: len(r) == 1)
    assert f"{moment:%-I:%M}" in again and " UTC" in again, again
    assert browser.find_element(By.ID, "utc").is_selected()


def test_a_value_pasted_with_spaces_around_it_is_searched_for_without_them(
    browser: webdriver.Chrome,
    console_url: str,
    console_server: ServerThread,
    tenant: str,
    recorded: AuditClient,
) -> None:
    """An actor's email or a resource id pasted with a space after it (as a
    copy from a mail or a chat gives it) was searched for with the space:
    "No events match", for events there were. The alert rules' copy of the
    same fields already trimmed them."""
    sign_in(browser, console_url, console_server.token(tenant, "reader"))
    wait_for_rows(browser, lambda r: len(r) >= 3)
    form = browser.find_element(By.ID, "filters")
    form.find_element(By.NAME, "actor").send_keys(" ann@example.com ")
    form.find_element(By.NAME, "resource_id").send_keys(" key_7")
    form.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    wait(browser).until(lambda b: len(queried(b)) == 2)
    [shown] = wait_for_rows(browser, lambda r: len(r) == 1)
    assert "api_key.create" in shown
    query = parse_qs(urlsplit(browser.current_url).query)
    assert query["actor"] == ["ann@example.com"] and query["resource_id"] == ["key_7"], query


def test_a_search_by_details_finds_the_events_holding_each_of_them(
    browser: webdriver.Chrome, console_url: str, console_server: ServerThread, tenant: str
) -> None:
    """helper-508: `details_equals` (the API's, `--detail` the CLI's) had no
    field or parameter in the console. "Details" takes KEY=VALUE entries,
    comma-separated, all of them holding; the URL keeps it as `detail`."""
    with AuditClient(console_server.target, token=console_server.token(tenant)) as client:
        for environment, attempt in (("prod", 3), ("prod", 1), ("staging", 3)):
            client.record(
                action="api_key.read",
                actor_id="u-ann",
                details={"environment": environment, "attempt": attempt},
            )
        client.record(action="api_key.read", actor_id="u-bob", details={"environment": "prod,eu"})
    sign_in(browser, console_url, console_server.token(tenant, "reader"))
    wait_for_rows(browser, lambda r: len(r) == 4)
    form = browser.find_element(By.ID, "filters")
    form.find_element(By.NAME, "detail").send_keys("environment = prod, attempt=3")
    form.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    wait(browser).until(lambda b: parse_qs(urlsplit(b.current_url).query).get("detail"))
    [shown] = wait_for_rows(browser, lambda r: len(r) == 1)
    assert "u-ann" in shown
    assert queried(browser)[-1]["detail"] == ["environment = prod, attempt=3"]
    # The URL is the view: opened again, it shows the same event, the field filled.
    browser.get(browser.current_url)
    assert wait_for_rows(browser, lambda r: len(r) == 1) == [shown]
    field = browser.find_element(By.NAME, "detail")
    assert field.get_attribute("value") == "environment = prod, attempt=3"
    # One entry alone: each event holding it (`prod,eu` is not `prod`).
    field.clear()
    field.send_keys("environment=prod")
    form = browser.find_element(By.ID, "filters")
    form.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    assert len(wait_for_rows(browser, lambda r: len(r) == 2)) == 2


def test_a_url_filter_the_form_has_no_choice_for_is_shown_and_kept(
    browser: webdriver.Chrome,
    console_url: str,
    console_server: ServerThread,
    tenant: str,
    recorded: AuditClient,
) -> None:
    """A shared `categories=security,billing` filtered the rows while Category
    showed "Any", and the next Apply dropped it (helper-150)."""
    sign_in(
        browser,
        console_url + "?categories=security,billing&min_severity=WARNING",
        console_server.token(tenant, "reader"),
    )
    wait(browser).until(lambda b: queried(b))
    form = browser.find_element(By.ID, "filters")
    assert form.find_element(By.NAME, "categories").get_attribute("value") == "security,billing"
    assert form.find_element(By.NAME, "min_severity").get_attribute("value") == "WARNING"
    form.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    wait(browser).until(lambda b: len(queried(b)) == 2)
    assert queried(browser)[1]["categories"] == ["security,billing"]
    assert queried(browser)[1]["min_severity"] == ["WARNING"]


def test_api_requests_or_the_rest_are_chosen_and_kept_in_the_url(
    browser: webdriver.Chrome,
    console_url: str,
    console_server: ServerThread,
    tenant: str,
    recorded: AuditClient,
) -> None:
    """ "HTTP request": a shared `http_route_presence=present` is shown and
    sent; choosing "None" asks the events of no API request (helper-557)."""
    sign_in(
        browser,
        console_url + "?http_route_presence=present",
        console_server.token(tenant, "reader"),
    )
    wait(browser).until(lambda b: queried(b))
    assert queried(browser)[0]["http_route_presence"] == ["present"]
    form = browser.find_element(By.ID, "filters")
    chosen = Select(form.find_element(By.NAME, "http_route_presence"))
    assert chosen.first_selected_option.get_attribute("value") == "present"
    chosen.select_by_value("absent")
    form.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    wait(browser).until(lambda b: len(queried(b)) == 2)
    assert queried(browser)[1]["http_route_presence"] == ["absent"]
    assert "http_route_presence=absent" in browser.current_url


def test_more_shows_the_next_page_under_the_default_range(
    browser: webdriver.Chrome,
    console_url: str,
    console_server: ServerThread,
    tenant: str,
    downloads: Path,
) -> None:
    """Each page computed "the last 7 days" again from the clock: the next
    page's filter differed from the first's, so its page token was refused and
    no one could see past the first 100 events of the default view (helper-153)."""
    with AuditClient(console_server.target, token=console_server.token(tenant, "recorder")) as c:
        for start in range(0, 150, 50):
            c.record_batch(
                [
                    build_event(action="user.login", actor_id=f"u-{n}")
                    for n in range(start, start + 50)
                ]
            )
    sign_in(browser, console_url + "?actions=user.login", console_server.token(tenant, "exporter"))
    wait_for_rows(browser, lambda r: len(r) == 100)
    time.sleep(0.01)  # the clock moves on between the pages, as it does for a person reading
    browser.execute_script("document.querySelector('#more').click()")
    wait(browser).until(lambda b: len(rows(b)) == 150 or b.find_element(By.ID, "error").text)
    assert browser.find_element(By.ID, "error").text == ""
    assert len(rows(browser)) == 150 and len(set(rows(browser))) == 150
    first, second = queried(browser)
    assert "page_token" in second and second["occurred_after"] == first["occurred_after"]
    # The export is of the view shown: the same window, not one computed later.
    hooked(browser)
    _, saved = exported(browser, downloads, "csv")
    assert len(saved.decode().splitlines()) == 1 + 150
    assert (
        parse_qs(urlsplit(requested(browser, "/api/export")[0]).query)["occurred_after"]
        == first["occurred_after"]
    )


def quick_rows(browser: webdriver.Chrome) -> list[str]:
    """The rows' text in one call (`rows` asks for each row's: slow for 1,000)."""
    texts = browser.execute_script(
        "return [...document.querySelectorAll('#events tbody tr.event')].map((r) => r.innerText)"
    )
    return [str(text) for text in texts]


def test_the_table_holds_at_most_a_thousand_events_however_long_one_pages_or_follows(
    browser: webdriver.Chrome, console_url: str, console_server: ServerThread, tenant: str
) -> None:
    """Load more and Live added rows without end: a busy tenant followed
    live, or paged through, grew the page by every event until the tab gave
    out. The table keeps the newest 1,000 events: paging stops there, saying
    so, and live events push the oldest rows off, paging ending with them."""
    with AuditClient(console_server.target, token=console_server.token(tenant, "admin")) as admin:
        for _ in range(2):
            admin.record_batch([build_event(action="bulk.read", actor_id="u-1")] * 550)
        sign_in(browser, console_url + "?actions=bulk.*", console_server.token(tenant, "reader"))
        wait(browser).until(lambda b: len(quick_rows(b)) == 100)
        more = browser.find_element(By.ID, "more")
        for shown in range(200, 1001, 100):
            browser.execute_script("arguments[0].click()", more)
            wait(browser).until(lambda b, n=shown: len(quick_rows(b)) == n)
        note = browser.find_element(By.ID, "capped")
        wait(browser).until(lambda b: note.is_displayed())
        assert not more.is_displayed()
        assert "newest 1,000 events" in note.text and "export" in note.text, note.text
        time.sleep(0.5)  # the observer that loads on scrolling asks for no more either
        assert len(quick_rows(browser)) == 1000

        browser.find_element(By.ID, "live").click()
        time.sleep(0.5)  # the stream is open once the first heartbeat or event arrives
        admin.record_batch([build_event(action="bulk.write", actor_id="u-2")] * 30)
        wait(browser).until(lambda b: sum("bulk.write" in r for r in quick_rows(b)) == 30)
        shown = quick_rows(browser)
        assert len(shown) == 1000 and all("bulk.write" in row for row in shown[:30])
        assert (
            browser.execute_script("return document.querySelectorAll('#events tbody tr').length")
            == 1000
        )


def test_a_refusal_says_when_to_try_again(
    browser: webdriver.Chrome, migrated_database_url: str, tenant: str, downloads: Path
) -> None:
    """A 429's Retry-After was not shown: an exporter refused by the
    tenant's export rate ("at most 1 export per 60 s per tenant") was not
    told whether to wait a second or the whole window. The page says when,
    as the answer's Retry-After does."""
    limited = ServerThread(migrated_database_url, console_listen="127.0.0.1:0", export_rate_limit=1)
    try:
        with AuditClient(limited.target, token=limited.token(tenant, "recorder")) as c:
            c.record(action="door.open", actor_id="u-kim")
        url = f"http://127.0.0.1:{limited.service.console_port}/?actions=door.open"
        sign_in(browser, url, limited.token(tenant, "exporter"))
        wait_for_rows(browser, lambda r: len(r) == 1)
        said, _ = exported(browser, downloads, "csv")
        assert "Exported 1 event" in said
        browser.find_element(By.ID, "export-csv").click()
        error = browser.find_element(By.ID, "error")
        wait(browser).until(lambda b: "Export failed" in error.text)
        assert "at most 1 export per 60 s per tenant" in error.text, error.text
        waited = re.search(r"try again in (\d+) seconds?\b", error.text)
        assert waited and 1 <= int(waited[1]) <= 60, error.text
    finally:
        limited.close()


def test_back_and_forward_go_through_the_searches_applied(
    browser: webdriver.Chrome,
    console_url: str,
    console_server: ServerThread,
    tenant: str,
    recorded: AuditClient,
) -> None:
    """Each Apply replaced the page's address: Back left the console (to the
    page before it) rather than to the search before, and an analyst who
    narrowed a search lost the one it came from. Each search applied is now
    an entry of the tab's history: Back and Forward show each again, its
    rows and its form, a field it did not set emptied."""
    sign_in(browser, console_url + "?actions=user.login", console_server.token(tenant, "reader"))
    wait_for_rows(browser, lambda r: len(r) == 1 and "user.login" in r[0])
    form = browser.find_element(By.ID, "filters")
    form.find_element(By.NAME, "actor").send_keys("u-bob")
    apply_filter(browser, "member.invite")
    wait_for_rows(browser, lambda r: len(r) == 1 and "member.invite" in r[0])
    browser.back()
    wait_for_rows(browser, lambda r: len(r) == 1 and "user.login" in r[0])
    assert parse_qs(urlsplit(browser.current_url).query)["actions"] == ["user.login"]
    assert browser.find_element(By.NAME, "actions").get_attribute("value") == "user.login"
    assert browser.find_element(By.NAME, "actor").get_attribute("value") == ""
    browser.forward()
    wait_for_rows(browser, lambda r: len(r) == 1 and "member.invite" in r[0])
    assert browser.find_element(By.NAME, "actor").get_attribute("value") == "u-bob"
    assert parse_qs(urlsplit(browser.current_url).query)["actor"] == ["u-bob"]


def test_a_token_that_expires_signs_out_saying_why(
    browser: webdriver.Chrome,
    console_url: str,
    console_server: ServerThread,
    tenant: str,
    recorded: AuditClient,
) -> None:
    """A token the API stopped taking (expired, revoked) signed the tab out
    with no word: the sign-in form came back empty, as if the analyst had
    pressed Sign out, and nothing said the token was at fault. The form now
    says the API refused the tab's token, in the API's words."""
    expires = datetime.now(UTC) + timedelta(seconds=4)
    with AuditClient(console_server.target, token=console_server.token(tenant, "admin")) as c:
        reader = c.create_token("reader", name="expiring", expire_time=expires).secret
    sign_in(browser, console_url, reader)
    wait_for_rows(browser, lambda r: len(r) >= 3)
    time.sleep(max(0.0, (expires - datetime.now(UTC)).total_seconds()) + 0.5)
    # The search submitted as Enter would, without focusing the Action field:
    # its first focus counts the range's actions for its suggestions, a call
    # that signs the tab out too, and the keys typed then went to the sign-in
    # form ("Unknown or revoked token." for a token of "user.login").
    browser.execute_script("document.querySelector('#filters').requestSubmit()")
    wait(browser).until(seen.visibility_of_element_located((By.ID, "signin")))
    said = browser.find_element(By.ID, "signin-reason").text
    assert "Signed out" in said and "expired" in said, said
    assert rows(browser) == []
    # Signed in again, the words go.
    sign_in(browser, console_url, console_server.token(tenant, "reader"))
    wait_for_rows(browser, lambda r: len(r) >= 3)
    assert browser.find_element(By.ID, "signin-reason").get_attribute("textContent") == ""


def test_a_token_that_expires_while_the_action_field_is_typed_in_says_so(
    browser: webdriver.Chrome,
    console_url: str,
    console_server: ServerThread,
    tenant: str,
    recorded: AuditClient,
) -> None:
    """The Action field's first focus counts the range's actions for its
    suggestions: refused for the expired token, that call signed the tab out
    and put the focus in the token field while the analyst typed, so the rest
    of "user.login" and its Enter signed in with it, and the form said
    "Unknown or revoked token." instead of why the tab was signed out. The
    reason stays on the form, a failed sign-in beside it, and no key typed
    into the search becomes a token."""
    expires = datetime.now(UTC) + timedelta(seconds=4)
    with AuditClient(console_server.target, token=console_server.token(tenant, "admin")) as c:
        reader = c.create_token("reader", name="expiring", expire_time=expires).secret
    sign_in(browser, console_url, reader)
    wait_for_rows(browser, lambda r: len(r) >= 3)
    time.sleep(max(0.0, (expires - datetime.now(UTC)).total_seconds()) + 0.5)
    action = browser.find_element(By.NAME, "actions")
    action.click()
    wait(browser).until(seen.visibility_of_element_located((By.ID, "signin")))
    # The keys typed on: none reaches the token field.
    ActionChains(browser).send_keys("user.login", Keys.ENTER).perform()
    assert browser.find_element(By.ID, "token").get_attribute("value") == ""
    assert browser.find_element(By.ID, "signin-error").get_attribute("textContent") == ""
    reason = browser.find_element(By.ID, "signin-reason")
    assert "Your token expired" in reason.text and "sign in again" in reason.text, reason.text
    # A sign-in refused leaves the reason beside its own refusal.
    field = browser.find_element(By.ID, "token")
    field.send_keys("not-a-token", Keys.ENTER)
    error = browser.find_element(By.ID, "signin-error")
    wait(browser).until(lambda _: error.text.startswith("Malformed token: "))
    assert "Your token expired" in reason.text, reason.text
    field.clear()
    field.send_keys(console_server.token(tenant, "reader"), Keys.ENTER)
    wait_for_rows(browser, lambda r: len(r) >= 3)
    assert reason.get_attribute("textContent") == ""


def test_a_token_revoked_while_live_runs_signs_out_as_a_call_refused_would(
    browser: webdriver.Chrome,
    console_url: str,
    console_server: ServerThread,
    tenant: str,
    recorded: AuditClient,
    sql: psycopg.Connection[Any],
) -> None:
    """The API ends a revoked token's stream UNAUTHENTICATED: Live said
    "Live updates stopped" and left the tab signed in with a token the API
    no longer takes, where a call refused so (a 401) signs it out saying
    why. Its last line is now handled as that 401 is."""
    reader = console_server.token(tenant, "reader")
    sign_in(browser, console_url, reader)
    wait_for_rows(browser, lambda r: len(r) >= 3)
    browser.find_element(By.ID, "live").click()
    recorded.record(action="live.before", actor_id="u-live")
    wait_for_rows(browser, lambda r: "live.before" in r[0])  # the stream is open
    with AuditClient(console_server.target, token=console_server.token(tenant, "admin")) as c:
        c.revoke_token(token_id_of(sql, reader))  # at once for this server's streams
    recorded.record(action="live.after", actor_id="u-live")  # the stream's next message
    wait(browser).until(seen.visibility_of_element_located((By.ID, "signin")))
    reason = browser.find_element(By.ID, "signin-reason")
    assert reason.text.startswith(
        "Signed out: Your token was revoked (or is unknown here); sign in again with a valid"
        " token. (The server said: unknown or revoked token"
    ), reason.text
    assert browser.switch_to.active_element == reason
    assert browser.find_element(By.ID, "error").get_attribute("textContent") == ""
    assert not browser.find_element(By.ID, "live").is_selected()
    assert rows(browser) == []


def revoked(
    console_server: ServerThread, tenant: str, sql: psycopg.Connection[Any], token: str
) -> None:
    """`token` revoked by an admin: at once for this server's calls and streams."""
    with AuditClient(console_server.target, token=console_server.token(tenant, "admin")) as c:
        c.revoke_token(token_id_of(sql, token))


def test_an_export_refused_401_signs_the_tab_out(
    browser: webdriver.Chrome,
    console_url: str,
    console_server: ServerThread,
    tenant: str,
    recorded: AuditClient,
    sql: psycopg.Connection[Any],
) -> None:
    """An export refused 401 (its token revoked, expired, its session ended
    by the identity provider) said "Export failed: ..." and left the tab
    signed in with a token the API no longer takes; it signs out saying why,
    as any call refused so does."""
    exporter = console_server.token(tenant, "exporter")
    sign_in(browser, console_url, exporter)
    wait_for_rows(browser, lambda r: len(r) >= 3)
    revoked(console_server, tenant, sql, exporter)
    browser.find_element(By.ID, "export-csv").click()
    wait(browser).until(seen.visibility_of_element_located((By.ID, "signin")))
    reason = browser.find_element(By.ID, "signin-reason")
    assert reason.text.startswith("Signed out: Your token was revoked"), reason.text
    assert browser.find_element(By.ID, "error").get_attribute("textContent") == ""
    assert browser.find_element(By.ID, "status").get_attribute("textContent") == ""


def test_an_export_cut_unauthenticated_signs_the_tab_out(
    browser: webdriver.Chrome,
    console_url: str,
    console_server: ServerThread,
    tenant: str,
    downloads: Path,
    sql: psycopg.Connection[Any],
) -> None:
    """An export cut partway because its token no longer holds (revoked here;
    its session ended by the identity provider, rechecked as it runs) ends
    with a last line UNAUTHENTICATED: the tab signs out saying why, as a 401
    does, the download failed, never "Export failed" with the tab kept."""
    record_more_than_held(console_server, tenant)
    exporter = console_server.token(tenant, "exporter")
    sign_in(browser, console_url + "?actions=doc.edit", exporter)
    wait_for_rows(browser, lambda r: len(r) == 100)
    gated_export(browser)
    browser.find_element(By.ID, "export-csv").click()
    wait(browser).until(lambda b: on_disk(downloads) > 0)  # under way
    revoked(console_server, tenant, sql, exporter)
    browser.execute_script("window.releaseExport = true")
    wait(browser).until(seen.visibility_of_element_located((By.ID, "signin")))
    reason = browser.find_element(By.ID, "signin-reason")
    assert reason.text.startswith("Signed out: Your token was revoked"), reason.text
    assert browser.find_element(By.ID, "error").get_attribute("textContent") == ""
    wait(browser).until(lambda b: not any(downloads.iterdir()))  # no file that looks whole


UNREACHABLE = "could not reach the console's server"


def test_a_server_that_cannot_be_reached_is_said_in_the_consoles_words(
    browser: webdriver.Chrome, migrated_database_url: str, tenant: str
) -> None:
    """With the console's server stopped (or the network gone), Apply said
    "Failed to fetch", an export "Export failed: Failed to fetch", an admin
    view the same: the browser's words, which said neither what happened nor
    what to do. The page now says it could not reach the console's server,
    that it may be stopped or the network down, and to try again."""
    server = ServerThread(migrated_database_url, console_listen="127.0.0.1:0")
    try:
        with AuditClient(server.target, token=server.token(tenant, "recorder")) as c:
            c.record(action="door.open", actor_id="u-kim")
        url = f"http://127.0.0.1:{server.service.console_port}/?actions=door.open"
        sign_in(browser, url, server.token(tenant, "admin"))
        wait_for_rows(browser, lambda r: len(r) == 1)
    finally:
        server.close()
    error = browser.find_element(By.ID, "error")
    apply_filter(browser, "door.*")
    wait(browser).until(lambda b: error.text)
    assert UNREACHABLE in error.text and "try again" in error.text, error.text
    assert "fetch" not in error.text.lower(), error.text
    browser.find_element(By.ID, "export-csv").click()
    wait(browser).until(lambda b: error.text.startswith("Export failed"))
    assert UNREACHABLE in error.text and "fetch" not in error.text.lower(), error.text
    browser.find_element(By.LINK_TEXT, "Tokens").click()
    section = wait(browser).until(seen.visibility_of_element_located((By.ID, "admin-tokens")))
    said = section.find_element(By.CSS_SELECTOR, ".error")
    wait(browser).until(lambda b: said.text)
    assert UNREACHABLE in said.text and "fetch" not in said.text.lower(), said.text


def test_live_after_events_retention_removed_follows_on(
    browser: webdriver.Chrome, migrated_database_url: str, tenant: str
) -> None:
    """Live starts after the newest event shown. Where retention had removed
    the event after it (logins kept for good, the rest for 10 days, and no
    login since), the stream was refused: "Live updates stopped: the events
    after seq 1 were removed by retention; ... (resume with after_seq 3)",
    words for a program, and Live could not be turned on for that search
    at all. The console now asks the stream to announce what retention
    removed (ADR 0038) and passes over it: Live follows on, and the next
    login arrives."""
    clock = Clock()
    server = ServerThread(migrated_database_url, console_listen="127.0.0.1:0", clock=clock)
    try:
        with AuditClient(server.target, token=server.token(tenant, "admin")) as admin:
            login = build_event(action="user.login", actor_id="u-1", category="authentication")
            admin.record(login)
            for _ in range(2):
                admin.record(action="doc.edit", actor_id="u-1")
            admin.set_retention_policy(10, categories={"authentication": "forever"})
            clock.advance(11)
            assert server.service.purger is not None
            server.run(server.service.purger.run_once())
            assert not list(admin.query(build_filter(actions="doc.edit")))
            url = f"http://127.0.0.1:{server.service.console_port}/?range=all&actions=user.login"
            sign_in(browser, url, server.token(tenant, "reader"))
            wait_for_rows(browser, lambda r: len(r) == 1)
            browser.find_element(By.ID, "live").click()
            time.sleep(1)  # the stream is open once the first heartbeat arrives
            assert browser.find_element(By.ID, "error").text == ""
            assert browser.find_element(By.ID, "live").is_selected()
            admin.record(
                build_event(action="user.login", actor_id="u-2", category="authentication")
            )
            wait_for_rows(browser, lambda r: len(r) == 2 and "u-2" in r[0])
            assert browser.find_element(By.ID, "error").text == ""
    finally:
        server.close()


def test_actions_left_out_are_left_out_of_the_rows_and_kept_in_the_url(
    browser: webdriver.Chrome,
    console_url: str,
    console_server: ServerThread,
    tenant: str,
    recorded: AuditClient,
) -> None:
    """The page's own searches are recorded (audit_log.queried) and came first
    in the rows; "Leave out" `audit_log.*` shows the activity alone."""
    sign_in(browser, console_url, console_server.token(tenant, "reader"))
    wait_for_rows(browser, lambda r: len(r) >= 3)
    form = browser.find_element(By.ID, "filters")
    form.find_element(By.NAME, "exclude_actions").send_keys("audit_log.*, api_key.*")
    form.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    # Rows again, none of them left out (the table is empty while the search runs).
    shown = wait_for_rows(browser, lambda r: bool(r) and not any("api_key." in row for row in r))
    assert not any("audit_log." in row for row in shown)
    assert [any("user.login" in row for row in shown), len(shown)] == [True, 2]
    query = parse_qs(urlsplit(browser.current_url).query)
    assert query["exclude_actions"] == ["audit_log.*, api_key.*"]
    browser.get(browser.current_url)
    assert wait_for_rows(browser, lambda r: len(r) == len(shown)) == shown


@pytest.mark.parametrize(
    ("field", "recorded", "typed", "found"),
    [
        # The Country field: the sign-ins from one country, in any case (helper-369).
        ("country", {"u-fr": "FR", "u-kp": "KP"}, "kp", "u-kp"),
        # Several countries, comma-separated: any of them (helper-414).
        ("country", {"u-fr": "FR", "u-kp": "KP", "u-us": "US"}, "kp, us", "u-kp u-us"),
        # The "User agent" field: the calls of one client, in any case (helper-378).
        ("user_agent", {"u-curl": "curl/8.5.0", "u-tf": "Terraform/1.7.4"}, "TERRAFORM", "u-tf"),
    ],
)
def test_a_field_searched_is_searched_and_kept_in_the_url(
    browser: webdriver.Chrome,
    console_url: str,
    console_server: ServerThread,
    tenant: str,
    field: str,
    recorded: dict[str, str],
    typed: str,
    found: str,
) -> None:
    """A search field given a value typed in another case: the one event of
    it found, beside events without the field (`u-none`), kept in the URL
    and found again from it."""
    with AuditClient(console_server.target, token=console_server.token(tenant)) as client:
        for actor, value in recorded.items():
            client.record(action="user.login", actor_id=actor, **{field: value})
        client.record(action="user.login", actor_id="u-none")
    sign_in(browser, console_url, console_server.token(tenant, "reader"))
    wait_for_rows(browser, lambda r: any("u-none" in row for row in r))
    form = browser.find_element(By.ID, "filters")
    # The Country field is the list `countries` (one value, or several).
    named = {"country": "countries"}.get(field, field)
    form.find_element(By.NAME, named).send_keys(typed)
    form.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    each = found.split()
    shown = wait_for_rows(
        browser, lambda r: len(r) == len(each) and not any("u-none" in row for row in r)
    )
    assert sorted(actor for row in shown for actor in each if actor in row) == sorted(each)
    assert parse_qs(urlsplit(browser.current_url).query)[named] == [typed]
    browser.get(browser.current_url)
    assert wait_for_rows(browser, lambda r: len(r) == len(each)) == shown


def test_an_actor_email_domain_shows_its_people_and_is_kept_in_the_url(
    browser: webdriver.Chrome,
    console_url: str,
    console_server: ServerThread,
    tenant: str,
    recorded: AuditClient,
) -> None:
    """The field "Actor email domain", `EXAMPLE.com`: Ann (ann@example.com),
    not the others, and the URL keeps it (helper-371)."""
    recorded.record(action="doc.read", actor_id="u-eve", actor_email="eve@evilexample.com")
    sign_in(browser, console_url, console_server.token(tenant, "reader"))
    wait_for_rows(browser, lambda r: len(r) >= 4)
    form = browser.find_element(By.ID, "filters")
    form.find_element(By.NAME, "actor_email_domain").send_keys("EXAMPLE.com")
    form.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    shown = wait_for_rows(browser, lambda r: len(r) == 1)
    assert "ann@example.com" in shown[0]
    query = parse_qs(urlsplit(browser.current_url).query)
    assert query["actor_email_domain"] == ["EXAMPLE.com"]


@pytest.mark.parametrize(
    ("field", "recorded_as", "picked"),
    [
        ("severities", {"doc.warned": {"severity": "warning"},
                        "doc.failed": {"severity": "critical"}}, "warning"),
        ("actor_types", {"doc.warned": {"actor_type": "service"},
                         "doc.failed": {"actor_type": "api_key"}}, "service"),
    ],
)  # fmt: skip
def test_a_level_or_actor_type_is_picked_and_kept_in_the_url(
    browser: webdriver.Chrome,
    console_url: str,
    console_server: ServerThread,
    tenant: str,
    recorded: AuditClient,
    field: str,
    recorded_as: dict[str, dict[str, str]],
    picked: str,
) -> None:
    """ "Severity exactly" shows that level alone, where "Severity at least"
    showed it and every level above (helper-370); "Actor type" the events of
    that kind of actor alone: a service's, not an API key's (helper-409)."""
    for action, fields in recorded_as.items():
        recorded.record(action=action, actor_id="u-ann", **fields)
    sign_in(browser, console_url, console_server.token(tenant, "reader"))
    wait_for_rows(browser, lambda r: any("doc.failed" in row for row in r))
    form = browser.find_element(By.ID, "filters")
    Select(form.find_element(By.NAME, field)).select_by_visible_text(picked)
    form.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    shown = wait_for_rows(browser, lambda r: len(r) == 1 and "doc.warned" in r[0])
    assert parse_qs(urlsplit(browser.current_url).query)[field] == [picked]
    browser.get(browser.current_url)
    assert wait_for_rows(browser, lambda r: len(r) == 1) == shown
