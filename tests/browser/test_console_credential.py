"""The console's "Credential id" filter field finds the events of one API key
or token, exactly, and an event's detail shows its credential (kind, id,
`...hint`); a credential id or hint holding markup or bidi characters is
shown inert and escaped, as every other field of an event is."""

from __future__ import annotations

import json
from urllib.parse import parse_qs, quote, urlsplit

from selenium import webdriver
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as seen

from sealtrail import AuditClient, build_event
from tests.browser.test_console import sign_in, wait, wait_for_rows
from tests.browser.test_console_escaping import HIDDEN, MARKUP, injected
from tests.conftest import ServerThread

# A credential id whose markup would become elements and whose override
# would show it reversed: `key_` + markup, then `\u202e` before `cba`.
HOSTILE_ID = f"key_{MARKUP}\u202ecba"
HOSTILE_HINT = "<i>\u202e9z"


def _detail_fields(browser: webdriver.Chrome) -> dict[str, str]:
    """The opened event's fields, each name to its shown value (textContent)."""
    detail = wait(browser).until(
        seen.visibility_of_element_located((By.CSS_SELECTOR, "#events tr.detail"))
    )
    names = detail.find_elements(By.CSS_SELECTOR, "dl.fields dt")
    values = detail.find_elements(By.CSS_SELECTOR, "dl.fields dd")
    return {
        (n.get_attribute("textContent") or ""): (v.get_attribute("textContent") or "")
        for n, v in zip(names, values, strict=True)
    }


def test_the_credential_id_field_filters_and_the_detail_shows_the_credential(
    browser: webdriver.Chrome, console_server: ServerThread, console_url: str, tenant: str
) -> None:
    admin_token = console_server.token(tenant, "admin")
    with AuditClient(console_server.target, token=admin_token) as admin:
        # Two events of the key; then another key, a prefix of it, the same in
        # capitals and none at all: never matched.
        for action, credential_id, hint in (
            ("repo.read", "key_8f3a2c", "a1b2"),
            ("repo.write", "key_8f3a2c", ""),
            ("repo.list", "key_8f3a", ""),
            ("repo.copy", "KEY_8F3A2C", ""),
        ):
            admin.record(
                build_event(action=action, actor_id="u_ann", credential_kind="api_key",
                            credential_id=credential_id, credential_hint=hint)
            )  # fmt: skip
        admin.record(build_event(action="repo.view", actor_id="u_ann"))

    sign_in(browser, console_url + "?actions=repo.*", admin_token)
    wait_for_rows(browser, lambda r: len(r) == 5)
    form = browser.find_element(By.ID, "filters")
    form.find_element(By.NAME, "credential_id").send_keys("key_8f3a2c")
    form.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    shown = wait_for_rows(browser, lambda r: len(r) == 2)
    assert "repo.write" in shown[0] and "repo.read" in shown[1], shown
    query = parse_qs(urlsplit(browser.current_url).query)
    assert query["credential_id"] == ["key_8f3a2c"], query
    # The URL is the view: opened again, the same rows and the field filled.
    browser.get(browser.current_url)
    assert wait_for_rows(browser, lambda r: len(r) == 2) == shown
    field = browser.find_element(By.NAME, "credential_id")
    assert field.get_attribute("value") == "key_8f3a2c"

    browser.find_elements(By.CSS_SELECTOR, "#events tbody tr.event")[1].click()
    fields = _detail_fields(browser)
    assert fields["credential kind"] == "api_key", fields
    assert fields["credential id"] == "key_8f3a2c", fields
    assert fields["credential hint"] == "...a1b2", fields
    assert "actor credential" not in fields, fields  # not "[object Object]"
    pre = browser.find_element(By.CSS_SELECTOR, "#events tr.detail pre").text
    assert json.loads(pre)["actor"]["credential"] == {
        "kind": "api_key",
        "id": "key_8f3a2c",
        "hint": "a1b2",
    }


def _actor_cells(browser: webdriver.Chrome) -> list[tuple[str, str]]:
    """Each listed event's actor cell: its whole text, and its credential's line."""
    cells = []
    for row in browser.find_elements(By.CSS_SELECTOR, "#events tbody tr.event"):
        actor = row.find_elements(By.TAG_NAME, "td")[2]
        lines = actor.find_elements(By.CSS_SELECTOR, ".credential")
        line = (lines[0].get_attribute("textContent") or "") if lines else ""
        cells.append((actor.get_attribute("textContent") or "", line))
    return cells


def test_the_event_list_shows_each_events_credential_under_its_actor(
    browser: webdriver.Chrome, console_server: ServerThread, console_url: str, tenant: str
) -> None:
    """Which key acted, seen in the list without opening each event: kind, id
    and `...hint` under the actor; nothing for an event without one."""
    admin_token = console_server.token(tenant, "admin")
    with AuditClient(console_server.target, token=admin_token) as admin:
        admin.record(build_event(action="repo.read", actor_id="u_ann", credential_kind="api_key",
                                 credential_id="key_8f3a2c", credential_hint="a1b2"))  # fmt: skip
        admin.record(build_event(action="repo.list", actor_id="u_bob", credential_kind="session",
                                 credential_id="sess_9"))  # fmt: skip
        admin.record(build_event(action="repo.view", actor_id="u_cy"))
    sign_in(browser, console_url + "?actions=repo.*", admin_token)
    wait_for_rows(browser, lambda r: len(r) == 3)
    assert _actor_cells(browser) == [
        ("u_cy", ""),
        ("u_bobsession sess_9", "session sess_9"),
        ("u_annapi_key key_8f3a2c ...a1b2", "api_key key_8f3a2c ...a1b2"),
    ]
    # On a line of its own, under the actor.
    row = browser.find_elements(By.CSS_SELECTOR, "#events tbody tr.event")[2]
    line = row.find_element(By.CSS_SELECTOR, ".credential")
    assert line.value_of_css_property("display") == "block"


def test_a_credentials_markup_and_bidi_characters_are_shown_inert(
    browser: webdriver.Chrome, console_server: ServerThread, console_url: str, tenant: str
) -> None:
    admin_token = console_server.token(tenant, "admin")
    with AuditClient(console_server.target, token=admin_token) as admin:
        admin.record(
            build_event(
                action="repo.read",
                actor_id="u_ann",
                credential_kind="api_key",
                credential_id=HOSTILE_ID,
                credential_hint=HOSTILE_HINT,
            )
        )
        admin.record(build_event(action="repo.read", actor_id="u_ann"))
    # Found by its id, markup and override and all, from the URL.
    sign_in(browser, f"{console_url}?credential_id={quote(HOSTILE_ID)}", admin_token)
    wait_for_rows(browser, lambda r: len(r) == 1)
    assert browser.find_element(By.NAME, "credential_id").get_attribute("value") == HOSTILE_ID
    browser.find_element(By.CSS_SELECTOR, "#events tbody tr.event").click()
    fields = _detail_fields(browser)
    assert fields["credential id"] == f"key_{MARKUP}\\u202ecba", ascii(fields)
    assert fields["credential hint"] == "...<i>\\u202e9z", ascii(fields)
    for text in fields.values():
        assert not HIDDEN.search(text), ascii(text)
    [(_, line)] = _actor_cells(browser)  # in the list too
    assert line == f"api_key key_{MARKUP}\\u202ecba ...<i>\\u202e9z", ascii(line)
    pre = browser.find_element(By.CSS_SELECTOR, "#events tr.detail pre")
    shown = pre.get_attribute("textContent") or ""
    assert not HIDDEN.search(shown.replace("\n", "")), ascii(shown)
    assert json.loads(shown)["actor"]["credential"]["id"] == HOSTILE_ID  # as recorded
    assert injected(browser) == []
    assert browser.find_elements(By.CSS_SELECTOR, "#events i") == []
