"""What an investigator reads off the console without opening a row, in a
real headless Chromium: each row's description, the Breakdown panel's
largest values of a field (a value pressed narrows the search to it), and
the action field's suggestions of the tenant's actions."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

from selenium import webdriver
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support import expected_conditions as seen
from selenium.webdriver.support.ui import Select

from sealtrail import AuditClient
from tests.browser.test_console import hooked, requested, wait, wait_for_rows
from tests.conftest import ServerThread


def signed_in_hooked(browser: webdriver.Chrome, url: str, token: str, hold: str = "") -> None:
    """Signs in on `url` with the page's requests kept (`hooked`, those whose
    URL holds `hold` held) from the first."""
    browser.get(url)
    field = wait(browser).until(seen.visibility_of_element_located((By.ID, "token")))
    hooked(browser, hold)
    field.send_keys(token, Keys.ENTER)


def _breakdown_shown(browser: webdriver.Chrome, url: str, token: str, rows: int) -> WebElement:
    """Signs in on `url` (`signed_in_hooked`); the breakdown panel, once the
    search shows `rows` rows."""
    signed_in_hooked(browser, url, token)
    wait_for_rows(browser, lambda r: len(r) == rows)
    return wait(browser).until(seen.visibility_of_element_located((By.ID, "breakdown")))


def _record_credentials(client: AuditClient) -> None:
    """Four calls of `svc`: two with API key key_a (hint a1b2), one with key_b
    (no hint), one with no credential."""
    for key_id, hint in [("key_a", "a1b2"), ("key_a", "a1b2"), ("key_b", ""), ("", "")]:
        credential = {"credential_kind": "api_key", "credential_id": key_id} if key_id else {}
        credential |= {"credential_hint": hint} if hint else {}
        client.record(action="api.call", actor_id="svc", **credential)


def breakdown(browser: webdriver.Chrome) -> list[tuple[str, str]]:
    """The panel's values and their counts, as a screen reader reads them
    (an actor's id without who it is: `labels`)."""
    cells: list[list[str]] = browser.execute_script(
        "return [...document.querySelectorAll('#breakdown tbody tr')]"
        ".map((row) => [...row.cells].slice(0, 2).map((cell) => [...cell.childNodes]"
        ".filter((node) => !node.classList?.contains('label')).map((node) => node.textContent)"
        ".join('').trim()))"
    )
    return [(value, events) for value, events in cells]


def labels(browser: webdriver.Chrome) -> list[str]:
    """Who each actor the panel lists is, beside its id ("" for none)."""
    return list(
        browser.execute_script(
            "return [...document.querySelectorAll('#breakdown tbody tr')]"
            ".map((row) => row.cells[0].querySelector('.label')?.textContent ?? '')"
        )
    )


def test_a_row_shows_its_description_as_text_cut_on_one_line_whole_in_its_title(
    browser: webdriver.Chrome, console_url: str, console_server: ServerThread, tenant: str
) -> None:
    """The description was shown only in a row's detail: now in its own
    column, as text (whoever recorded the event wrote it: markup in it is
    shown, never obeyed), on one line cut with an ellipsis where long, and
    whole in the cell's title."""
    long = "New API key created: 'Production Key v2' " + "with scopes read, write " * 20
    markup = "<b>bold</b><img src=x onerror=\"document.title='owned'\">"
    with AuditClient(console_server.target, token=console_server.token(tenant, "recorder")) as c:
        c.record(action="api_key.create", actor_id="u-ann", description=long.strip())
        c.record(action="api_key.rotate", actor_id="u-ann", description=markup)
    browser.get(console_url + "?actions=api_key.*")
    field = wait(browser).until(seen.visibility_of_element_located((By.ID, "token")))
    field.send_keys(console_server.token(tenant, "reader"), Keys.ENTER)
    wait_for_rows(browser, lambda r: len(r) == 2)
    headers = [th.text for th in browser.find_elements(By.CSS_SELECTOR, "#events thead th")]
    assert headers == ["Time", "Action", "Actor", "Resource", "Description", "Outcome",
                       "Severity", "IP"]  # fmt: skip
    rotated, created = browser.find_elements(By.CSS_SELECTOR, "#events tbody td.description")
    assert created.get_attribute("title") == long.strip()
    assert rotated.get_attribute("title") == markup and rotated.text == markup
    assert rotated.find_elements(By.CSS_SELECTOR, "b, img") == []
    assert browser.title != "owned"
    cut = browser.execute_script(
        "const line = arguments[0].querySelector('span'); const style = getComputedStyle(line);"
        "return [line.scrollWidth > line.clientWidth, style.textOverflow, style.whiteSpace,"
        " arguments[0].getBoundingClientRect().height < 3 * parseFloat(style.lineHeight)]",
        created,
    )
    assert cut == [True, "ellipsis", "nowrap", True], cut
    # Expanded, the detail spans every column, the new one included.
    created.click()
    detail = wait(browser).until(
        seen.visibility_of_element_located((By.CSS_SELECTOR, "#events tr.detail td"))
    )
    assert detail.get_attribute("colspan") == "8"


def test_the_breakdown_lists_a_field_s_largest_values_and_a_value_narrows_the_search(
    browser: webdriver.Chrome, console_url: str, console_server: ServerThread, tenant: str
) -> None:
    """Under the chart, the actions of the filter and range shown, largest
    first; by actor on choosing it, one count each; an actor pressed narrows
    the search to it (its field filled, kept in the URL), and the panel
    counts the narrowed search in turn. Events without a country are listed
    as such, not as a value to press; an actor is listed with who it is."""
    with AuditClient(console_server.target, token=console_server.token(tenant, "recorder")) as c:
        for actor, action, country in [
            ("u-ann", "door.open", "FR"),
            ("u-ann", "door.open", "FR"),
            ("u-ann", "door.close", ""),
            ("u-bob", "door.open", "KP"),
            ("u-bob", "door.force", "KP"),
            ("u-cy", "window.open", "FR"),  # not matched: its action
        ]:
            named = {"actor_email": "ann@x.io", "actor_display_name": "Ann Lee"}
            c.record(
                action=action,
                actor_id=actor,
                **({"country": country} if country else {}),
                **(named if actor == "u-ann" else {}),
            )
    panel = _breakdown_shown(
        browser, console_url + "?actions=door.*", console_server.token(tenant, "reader"), 5
    )
    wait(browser).until(lambda b: breakdown(b))
    assert breakdown(browser) == [("door.open", "3"), ("door.close", "1"), ("door.force", "1")]
    assert "5 events in all, 3 actions" in panel.find_element(By.CLASS_NAME, "summary").text
    Select(browser.find_element(By.ID, "breakdown-by")).select_by_value("country")
    wait(browser).until(lambda b: breakdown(b) == [("FR", "2"), ("KP", "2"), ("(no country)", "1")])
    assert panel.find_elements(By.XPATH, ".//tbody/tr[3]//button") == []  # none to press
    Select(browser.find_element(By.ID, "breakdown-by")).select_by_value("actor")
    wait(browser).until(lambda b: breakdown(b) == [("u-ann", "3"), ("u-bob", "2")])
    # Who each actor is beside its id, as the count labels it (helper-567).
    assert labels(browser) == ["Ann Lee <ann@x.io>", ""]
    counts = requested(browser, "/api/counts")
    assert [
        sum(f"group_by={g}&" in url for url in counts) for g in ("action", "country", "actor")
    ] == [
        1,
        1,
        1,
    ], counts  # one count per panel load, none per value
    assert all("limit=10" in url and "actions=door.*" in url.replace("%2A", "*")
               for url in counts[1:]), counts  # fmt: skip
    panel.find_element(By.XPATH, ".//button[text()='u-bob']").click()
    wait_for_rows(browser, lambda r: len(r) == 2 and all("u-bob" in row for row in r))
    query = parse_qs(urlsplit(browser.current_url).query)
    assert query["actor"] == ["u-bob"] and query["actions"] == ["door.*"]
    assert browser.find_element(By.NAME, "actor").get_attribute("value") == "u-bob"
    # The narrowed search's own breakdown, by the field chosen.
    wait(browser).until(lambda b: breakdown(b) == [("u-bob", "2")])
    browser.back()  # an entry of the tab's history, as Apply's
    wait_for_rows(browser, lambda r: len(r) == 5)


def test_the_breakdown_follows_live_without_counting_again(
    browser: webdriver.Chrome, console_url: str, console_server: ServerThread, tenant: str
) -> None:
    """With Live on, the event list grew and the panel stayed as loaded: it
    now adds each event Live brings to its value's count, in the page, as the
    chart adds it to its bar (no count asked again: each would be recorded)."""
    with AuditClient(console_server.target, token=console_server.token(tenant, "recorder")) as c:
        c.record(action="door.open", actor_id="u-kim")
        signed_in_hooked(
            browser, console_url + "?actions=door.*", console_server.token(tenant, "reader")
        )
        wait_for_rows(browser, lambda r: len(r) == 1)
        wait(browser).until(lambda b: breakdown(b) == [("door.open", "1")])
        browser.find_element(By.ID, "live").click()
        wait(browser).until(
            lambda b: b.execute_script("return !!document.querySelector('#live').checked")
        )
        for action in ("door.close", "door.close", "door.open", "door.close"):
            c.record(action=action, actor_id="u-lee")
        wait_for_rows(browser, lambda r: len(r) == 5)
        wait(browser).until(lambda b: breakdown(b) == [("door.close", "3"), ("door.open", "2")])
        summary = browser.find_element(By.CSS_SELECTOR, "#breakdown .summary").text
        assert summary.startswith("5 events in all, 2 actions"), summary
        Select(browser.find_element(By.ID, "breakdown-by")).select_by_value("actor")
        wait(browser).until(lambda b: breakdown(b) == [("u-lee", "4"), ("u-kim", "1")])
        c.record(action="door.open", actor_id="u-max")
        wait(browser).until(
            lambda b: breakdown(b) == [("u-lee", "4"), ("u-kim", "1"), ("u-max", "1")]
        )
    # The chart's count and the panel's two (action, then actor): none per event.
    counts = requested(browser, "/api/counts")
    assert len(counts) == 3, counts


def test_the_action_field_suggests_the_tenant_s_actions_of_the_range_shown(
    browser: webdriver.Chrome, console_url: str, console_server: ServerThread, tenant: str
) -> None:
    """The action field lists the tenant's actions in the range shown, the
    most frequent first, from one count made when the field is first used,
    not asked again while the range stays the same."""
    with AuditClient(console_server.target, token=console_server.token(tenant, "recorder")) as c:
        for action, times in [("invoice.pay", 1), ("user.login", 3), ("api_key.create", 2)]:
            for _ in range(times):
                c.record(action=action, actor_id="u-ann")
    signed_in_hooked(browser, console_url + "?range=24h", console_server.token(tenant, "reader"))
    wait_for_rows(browser, lambda r: len(r) >= 6)
    wait(browser).until(lambda b: breakdown(b))  # the page's own counts done first
    field = browser.find_element(By.NAME, "actions")
    assert field.get_attribute("list") == "action-suggestions"
    field.click()

    def suggested(b: webdriver.Chrome) -> list[str]:
        return list(
            b.execute_script(
                "return [...document.querySelectorAll('#action-suggestions option')]"
                ".map((option) => option.value)"
            )
        )

    wait(browser).until(lambda b: "invoice.pay" in suggested(b))
    shown = suggested(browser)
    # The most frequent first; the records of the page's own searches and
    # counts (as many as user.login's, or more) are kept, after the others.
    assert shown == ["user.login", "api_key.create", "invoice.pay", "audit_log.queried"], shown
    labels = browser.execute_script(
        "return [...document.querySelectorAll('#action-suggestions option')]"
        ".map((option) => option.label)"
    )
    assert labels[0] == "3 events" and "the log's own reads" in labels[-1], labels
    asked = [url for url in requested(browser, "/api/counts") if "limit=100" in url]
    assert len(asked) == 1 and "group_by=action" in asked[0] and "occurred_after=" in asked[0]
    assert "actions=" not in asked[0]  # the range's actions, whatever the filter
    field.send_keys("user.login", Keys.ENTER)
    wait_for_rows(browser, lambda r: len(r) == 3)
    browser.find_element(By.NAME, "actions").click()  # the same range: not counted again
    wait(browser).until(lambda b: breakdown(b) == [("user.login", "3")])
    assert len([url for url in requested(browser, "/api/counts") if "limit=100" in url]) == 1


def test_a_country_pressed_under_a_search_of_several_narrows_it_to_that_one(
    browser: webdriver.Chrome, console_url: str, console_server: ServerThread, tenant: str
) -> None:
    """Under a search of several countries (`countries=FR,KP`), a country
    pressed in the panel narrows the search to it: the list field that held
    them now holds the one value, and the search sends one of `country` and
    `countries` (the API refuses both together), so the one country's rows
    are shown; the same for resource types."""
    with AuditClient(console_server.target, token=console_server.token(tenant, "recorder")) as c:
        for action, country, kind in [
            ("door.open", "FR", "door"),
            ("door.open", "FR", "gate"),
            ("door.close", "KP", "door"),
            ("door.force", "DE", "gate"),  # not matched: its country
        ]:
            c.record(action=action, actor_id="u-ann", country=country, resource_type=kind,
                     resource_id="r-1")  # fmt: skip
    panel = _breakdown_shown(
        browser,
        console_url + "?actions=door.*&countries=FR,KP&resource_types=door,gate",
        console_server.token(tenant, "reader"),
        3,
    )
    Select(browser.find_element(By.ID, "breakdown-by")).select_by_value("country")
    wait(browser).until(lambda b: breakdown(b) == [("FR", "2"), ("KP", "1")])
    panel.find_element(By.XPATH, ".//button[text()='KP']").click()
    wait_for_rows(browser, lambda r: len(r) == 1 and "door.close" in r[0])
    query = parse_qs(urlsplit(browser.current_url).query)
    assert "countries" not in query and query["country"] == ["KP"], query
    assert browser.find_element(By.NAME, "countries").get_attribute("value") == "KP"
    wait(browser).until(lambda b: breakdown(b) == [("KP", "1")])
    browser.back()
    wait_for_rows(browser, lambda r: len(r) == 3)
    Select(browser.find_element(By.ID, "breakdown-by")).select_by_value("resource_type")
    wait(browser).until(lambda b: breakdown(b) == [("door", "2"), ("gate", "1")])
    panel.find_element(By.XPATH, ".//button[text()='gate']").click()
    wait_for_rows(browser, lambda r: len(r) == 1)
    query = parse_qs(urlsplit(browser.current_url).query)
    assert "resource_types" not in query and query["resource_type"] == ["gate"], query
    assert browser.find_element(By.NAME, "resource_types").get_attribute("value") == "gate"


def test_the_actor_field_suggests_the_actors_starting_so_once_a_pause(
    browser: webdriver.Chrome, console_url: str, console_server: ServerThread, tenant: str
) -> None:
    """Typing in the Actor field lists the actors whose id starts with the
    text (as typed) or whose email does (in any case), the most active
    first, from one count when typing pauses, not one per key (helper-426)."""
    with AuditClient(console_server.target, token=console_server.token(tenant, "recorder")) as c:
        for actor_id, email, times in [
            ("alice", "", 1), ("u-9", "ALINA@example.com", 2), ("Alfred", "", 1), ("bob", "", 1),
        ]:  # fmt: skip
            for _ in range(times):
                c.record(action="doc.read", actor_id=actor_id, actor_email=email)
    signed_in_hooked(browser, console_url + "?range=24h", console_server.token(tenant, "reader"))
    wait_for_rows(browser, lambda r: len(r) >= 5)
    wait(browser).until(lambda b: breakdown(b))  # the page's own counts done first
    field = browser.find_element(By.NAME, "actor")
    assert field.get_attribute("list") == "actor-suggestions"

    def suggested(b: webdriver.Chrome) -> list[str]:
        return list(
            b.execute_script(
                "return [...document.querySelectorAll('#actor-suggestions option')]"
                ".map((option) => option.value)"
            )
        )

    def asked() -> list[str]:
        return [url for url in requested(browser, "/api/counts") if "actor_prefix=" in url]

    field.send_keys("ali")
    wait(browser).until(lambda b: suggested(b))
    assert suggested(browser) == ["u-9", "alice"]  # the most active first
    (only,) = asked()  # one count for the three keys
    assert "actor_prefix=ali&" in only and "group_by=actor" in only and "limit=20" in only
    field.send_keys(Keys.BACKSPACE, "f")  # "alf": ids as typed, so not Alfred
    wait(browser).until(lambda b: len(asked()) == 2)
    wait(browser).until(lambda b: suggested(b) == [])
    field.clear()
    field.send_keys("Al")
    wait(browser).until(lambda b: suggested(b) == ["u-9", "Alfred"])
    assert len(asked()) == 3


def test_the_breakdown_by_route_and_status_and_the_slower_than_field(
    browser: webdriver.Chrome, console_url: str, console_server: ServerThread, tenant: str
) -> None:
    """Which endpoints fail or are slow (helper-431): the panel by HTTP route
    lists routes, a route pressed narrowing the search to it as recorded
    (`http_routes`, helper-434), but one holding a comma, which the
    comma-separated parameter cannot carry, only read; by HTTP status codes,
    a code pressed narrowing the search to it; "Slower than"
    (`min_duration_ms`) keeps the requests that took at least that long, and
    the URL keeps it."""
    with AuditClient(console_server.target, token=console_server.token(tenant, "recorder")) as c:
        for route, code, ms in [("/v1/a", 200, 12.5), ("/v1/a", 503, 1000),
                                ("/v1/b", 503, 2500), ("/v1/b", 404, 3),
                                ("/v1/A", 503, 7), ("/v1/c,d", 200, 1)]:  # fmt: skip
            c.record(action="api.call", actor_id="k1", http_route=route, http_status_code=code,
                     duration_ms=ms)  # fmt: skip
    panel = _breakdown_shown(
        browser, console_url + "?actions=api.call", console_server.token(tenant, "reader"), 6
    )
    Select(browser.find_element(By.ID, "breakdown-by")).select_by_value("http_route")
    wait(browser).until(lambda b: len(breakdown(b)) == 4)
    assert sorted(breakdown(browser)) == [
        ("/v1/A", "1"),
        ("/v1/a", "2"),
        ("/v1/b", "2"),
        ("/v1/c,d", "1"),
    ]
    buttons = panel.find_elements(By.XPATH, ".//tbody//button")
    assert sorted(button.text for button in buttons) == ["/v1/A", "/v1/a", "/v1/b"]
    assert "6 events in all, 4 HTTP routes." in panel.find_element(By.CLASS_NAME, "summary").text
    panel.find_element(By.XPATH, ".//button[text()='/v1/a']").click()
    wait_for_rows(browser, lambda r: len(r) == 2)  # not /v1/A: no case folding
    assert parse_qs(urlsplit(browser.current_url).query)["http_routes"] == ["/v1/a"]
    form = browser.find_element(By.ID, "filters")
    assert form.find_element(By.NAME, "http_routes").get_attribute("value") == "/v1/a"
    Select(browser.find_element(By.ID, "breakdown-by")).select_by_value("http_status")
    wait(browser).until(lambda b: sorted(breakdown(b)) == [("200", "1"), ("503", "1")])
    browser.get(console_url + "?actions=api.call")
    wait_for_rows(browser, lambda r: len(r) == 6)
    Select(browser.find_element(By.ID, "breakdown-by")).select_by_value("http_status")
    wait(browser).until(lambda b: breakdown(b) == [("503", "3"), ("200", "2"), ("404", "1")])
    panel = browser.find_element(By.ID, "breakdown")  # the page's own, loaded again
    assert "3 HTTP statuses" in panel.find_element(By.CLASS_NAME, "summary").text
    panel.find_element(By.XPATH, ".//button[text()='503']").click()
    wait_for_rows(browser, lambda r: len(r) == 3)
    assert parse_qs(urlsplit(browser.current_url).query)["http_status_classes"] == ["503"]
    browser.get(console_url + "?actions=api.call")
    wait_for_rows(browser, lambda r: len(r) == 6)
    form = browser.find_element(By.ID, "filters")
    form.find_element(By.NAME, "min_duration_ms").send_keys("1000")
    form.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    wait_for_rows(browser, lambda r: len(r) == 2)
    assert parse_qs(urlsplit(browser.current_url).query)["min_duration_ms"] == ["1000"]


def test_the_breakdown_by_credential_shows_kind_id_and_hint_and_narrows_by_its_id(
    browser: webdriver.Chrome, console_url: str, console_server: ServerThread, tenant: str
) -> None:
    """Which key was used most (helper-443): the panel by credential lists
    each as the rows show it (kind, id, `...hint`), events without one as
    "(no credential)"; one pressed narrows the search by `credential_id`."""
    with AuditClient(console_server.target, token=console_server.token(tenant, "recorder")) as c:
        _record_credentials(c)
    panel = _breakdown_shown(
        browser, console_url + "?actions=api.call", console_server.token(tenant, "reader"), 4
    )
    Select(browser.find_element(By.ID, "breakdown-by")).select_by_value("credential")
    wait(browser).until(
        lambda b: (
            breakdown(b)
            == [("api_key key_a ...a1b2", "2"), ("(no credential)", "1"), ("api_key key_b", "1")]
        )
    )
    assert "4 events in all, 3 credentials" in panel.find_element(By.CLASS_NAME, "summary").text
    panel.find_element(By.XPATH, ".//button[text()='api_key key_a ...a1b2']").click()
    wait_for_rows(browser, lambda r: len(r) == 2)
    assert parse_qs(urlsplit(browser.current_url).query)["credential_id"] == ["key_a"]


def test_a_credential_pressed_narrows_the_search_to_its_kind_and_id(
    browser: webdriver.Chrome, console_url: str, console_server: ServerThread, tenant: str
) -> None:
    """Two credentials of one id but different kinds (an API key and a
    session both `key_a`) are two rows; one pressed narrows the search to
    its events alone, by `credential_kind` and `credential_id` both, the
    form's fields showing them: by the id alone it found the other's too."""
    with AuditClient(console_server.target, token=console_server.token(tenant, "recorder")) as c:
        for kind in ("api_key", "api_key", "session"):
            c.record(action="api.call", actor_id="svc", credential_kind=kind, credential_id="key_a")
    panel = _breakdown_shown(
        browser, console_url + "?actions=api.call", console_server.token(tenant, "reader"), 3
    )
    Select(browser.find_element(By.ID, "breakdown-by")).select_by_value("credential")
    wait(browser).until(lambda b: breakdown(b) == [("api_key key_a", "2"), ("session key_a", "1")])
    panel.find_element(By.XPATH, ".//button[text()='session key_a']").click()
    wait(browser).until(
        lambda b: parse_qs(urlsplit(b.current_url).query).get("credential_kind") == ["session"]
    )
    found = wait_for_rows(browser, lambda r: len(r) == 1)
    query = parse_qs(urlsplit(browser.current_url).query)
    assert (query["credential_kind"], query["credential_id"]) == (["session"], ["key_a"]), query
    assert browser.find_element(By.NAME, "credential_kind").get_attribute("value") == "session"
    assert browser.find_element(By.NAME, "credential_id").get_attribute("value") == "key_a"
    wait(browser).until(lambda b: breakdown(b) == [("session key_a", "1")])
    assert "svc" in found[0], found


def test_the_breakdown_by_credential_adds_live_s_events_to_their_credential_s_row(
    browser: webdriver.Chrome, console_url: str, console_server: ServerThread, tenant: str
) -> None:
    """The count groups a credential by kind and id, the hint the greatest
    its events record (helper-449): Live's event of a listed credential is
    added to its row whatever hint it records (none, another), the row's
    hint then the one a recount shows, never a second row of one credential."""
    with AuditClient(console_server.target, token=console_server.token(tenant, "recorder")) as c:
        _record_credentials(c)
        panel = _breakdown_shown(
            browser, console_url + "?actions=api.call", console_server.token(tenant, "reader"), 4
        )
        wait(browser).until(lambda b: breakdown(b))  # the action's first
        Select(browser.find_element(By.ID, "breakdown-by")).select_by_value("credential")
        listed = [("api_key key_a ...a1b2", "2"), ("(no credential)", "1"), ("api_key key_b", "1")]
        wait(browser).until(lambda b: breakdown(b) == listed)
        browser.find_element(By.ID, "live").click()
        wait(browser).until(
            lambda b: b.execute_script("return !!document.querySelector('#live').checked")
        )
        for key_id, hint in [("key_a", ""), ("key_b", "c3d4"), ("key_a", "0000")]:
            credential = {"credential_hint": hint} if hint else {}
            c.record(action="api.call", actor_id="svc", credential_kind="api_key",
                     credential_id=key_id, **credential)  # fmt: skip
        wait_for_rows(browser, lambda r: len(r) == 7)
        followed = [("api_key key_a ...a1b2", "4"), ("api_key key_b ...c3d4", "2"),
                    ("(no credential)", "1")]  # fmt: skip
        wait(browser).until(lambda b: breakdown(b) == followed)
    summary = panel.find_element(By.CLASS_NAME, "summary").text
    assert summary.startswith("7 events in all, 3 credentials."), summary
    # As a recount keys them.
    Select(browser.find_element(By.ID, "breakdown-by")).select_by_value("action")
    wait(browser).until(lambda b: breakdown(b) == [("api.call", "7")])
    Select(browser.find_element(By.ID, "breakdown-by")).select_by_value("credential")
    wait(browser).until(lambda b: breakdown(b) == followed)


def test_a_changed_field_pressed_in_a_row_s_detail_narrows_the_search_to_it(
    browser: webdriver.Chrome, console_url: str, console_server: ServerThread, tenant: str
) -> None:
    """An event's detail lists its changes: a field's name pressed narrows
    the search to the events that changed it (`changed_fields`, helper-444),
    exactly that name (`limits` is not `limits.rpm`); a name the
    comma-separated parameter cannot carry is text alone."""
    with AuditClient(console_server.target, token=console_server.token(tenant, "recorder")) as c:
        for description, fields in [
            ("rate and list", ("rate_limit", "a,b")),
            ("rate alone", ("rate_limit",)),
            ("rpm", ("limits.rpm",)),
            ("limits", ("limits",)),
        ]:
            c.record(action="plan.update", actor_id="u-ann", description=description,
                     changes=[(name, 1, 2) for name in fields])  # fmt: skip
    signed_in_hooked(
        browser, console_url + "?actions=plan.*", console_server.token(tenant, "reader")
    )
    wait_for_rows(browser, lambda r: len(r) == 4)
    opened = browser.find_elements(By.CSS_SELECTOR, "#events tbody tr.event")[-1]
    opened.find_element(By.CSS_SELECTOR, "button.opener").click()
    detail = wait(browser).until(
        seen.visibility_of_element_located((By.CSS_SELECTOR, "#events tr.detail table.diff"))
    )
    assert [b.text for b in detail.find_elements(By.CSS_SELECTOR, "button.value")] == ["rate_limit"]
    assert "a,b" in detail.text  # shown, not pressable
    detail.find_element(By.XPATH, ".//button[text()='rate_limit']").click()
    found = wait_for_rows(browser, lambda r: len(r) == 2)
    assert "rate alone" in found[0] and "rate and list" in found[1], found
    query = parse_qs(urlsplit(browser.current_url).query)
    assert query["changed_fields"] == ["rate_limit"], query
    assert browser.find_element(By.NAME, "changed_fields").get_attribute("value") == "rate_limit"
    browser.find_element(By.NAME, "changed_fields").clear()
    browser.find_element(By.NAME, "changed_fields").send_keys("limits", Keys.ENTER)
    found = wait_for_rows(browser, lambda r: len(r) == 1)
    assert "limits" in found[0] and "rpm" not in found[0], found


def test_the_breakdown_by_ip_follows_live_and_an_address_narrows_the_search(
    browser: webdriver.Chrome, console_url: str, console_server: ServerThread, tenant: str
) -> None:
    """From which IP (helper-445): the panel by IP address lists each address
    as the count keys it, Live's events added to it so too (one mapped into
    IPv6 to its IPv4 address's count, IPv6 as the database writes it); an
    address pressed narrows the search's "IP" to it; events without one are
    listed as such, nothing to press."""
    with AuditClient(console_server.target, token=console_server.token(tenant, "recorder")) as c:
        for ip in ("203.0.113.7", "203.0.113.7", ""):
            c.record(action="door.open", actor_id="u-ann", ip=ip)
        panel = _breakdown_shown(
            browser, console_url + "?actions=door.*", console_server.token(tenant, "reader"), 3
        )
        wait(browser).until(lambda b: breakdown(b))  # the action's first
        Select(browser.find_element(By.ID, "breakdown-by")).select_by_value("ip")
        wait(browser).until(
            lambda b: breakdown(b) == [("203.0.113.7", "2"), ("(no IP address)", "1")]
        )
        assert panel.find_elements(By.XPATH, ".//tbody/tr[2]//button") == []
        browser.find_element(By.ID, "live").click()
        wait(browser).until(
            lambda b: b.execute_script("return !!document.querySelector('#live').checked")
        )
        for ip in ("::FFFF:203.0.113.7", "2001:DB8:0::0:1"):
            c.record(action="door.open", actor_id="u-bob", ip=ip)
        wait_for_rows(browser, lambda r: len(r) == 5)
        wait(browser).until(
            lambda b: (
                breakdown(b)
                == [("203.0.113.7", "3"), ("(no IP address)", "1"), ("2001:db8::1", "1")]
            )
        )
    summary = panel.find_element(By.CLASS_NAME, "summary").text
    assert summary.startswith("5 events in all, 3 IP addresses. A value narrows"), summary
    assert len([url for url in requested(browser, "/api/counts") if "group_by=ip&" in url]) == 1
    panel.find_element(By.XPATH, ".//button[text()='203.0.113.7']").click()
    wait_for_rows(browser, lambda r: len(r) == 3)
    query = parse_qs(urlsplit(browser.current_url).query)
    assert query["ip"] == ["203.0.113.7"] and query["actions"] == ["door.*"], query
    assert browser.find_element(By.NAME, "ip").get_attribute("value") == "203.0.113.7"
    wait(browser).until(lambda b: breakdown(b) == [("203.0.113.7", "3")])


def test_a_resource_or_a_recording_token_pressed_narrows_the_search_to_it(
    browser: webdriver.Chrome, console_url: str, console_server: ServerThread, tenant: str
) -> None:
    """Who did it, to what (helper-445): by resource, each type and id listed
    apart ("repository: acme/web" is never "repository/acme: web") and one
    pressed sets "Resource type" and "Resource id" both; one recorded with a
    type and no id listed, nothing to press (no filter finds "no id"). By
    recording token, a token's id pressed sets "Recorded by" to it."""
    first, second = (console_server.token(tenant, "recorder") for _ in range(2))
    for token, kind, resource_id in [
        (first, "repository", "acme/web"),
        (first, "repository", "acme/web"),
        (first, "repository/acme", "web"),
        (first, "repository", ""),
        (second, "", ""),
    ]:
        with AuditClient(console_server.target, token=token) as c:
            c.record(action="doc.read", actor_id="u-ann", resource_type=kind,
                     resource_id=resource_id)  # fmt: skip
    panel = _breakdown_shown(
        browser, console_url + "?actions=doc.*", console_server.token(tenant, "reader"), 5
    )
    wait(browser).until(lambda b: breakdown(b))  # the action's first
    Select(browser.find_element(By.ID, "breakdown-by")).select_by_value("resource")
    wait(browser).until(
        lambda b: (
            breakdown(b)
            == [
                ("repository: acme/web", "2"),
                ("(no resource)", "1"),
                ("repository: (no id)", "1"),
                ("repository/acme: web", "1"),
            ]
        )
    )
    rows = panel.find_elements(By.CSS_SELECTOR, "tbody tr")
    assert [len(row.find_elements(By.TAG_NAME, "button")) for row in rows] == [1, 0, 0, 1]
    assert "4 resources" in panel.find_element(By.CLASS_NAME, "summary").text
    panel.find_element(By.XPATH, ".//button[normalize-space(.)='repository/acme: web']").click()
    wait_for_rows(browser, lambda r: len(r) == 1)
    query = parse_qs(urlsplit(browser.current_url).query)
    assert query["resource_type"] == ["repository/acme"] and query["resource_id"] == ["web"]
    assert browser.find_element(By.NAME, "resource_types").get_attribute("value") == (
        "repository/acme"
    )
    assert browser.find_element(By.NAME, "resource_id").get_attribute("value") == "web"
    wait(browser).until(lambda b: breakdown(b) == [("repository/acme: web", "1")])
    browser.back()
    wait_for_rows(browser, lambda r: len(r) == 5)
    Select(browser.find_element(By.ID, "breakdown-by")).select_by_value("recorded_by")
    wait(browser).until(lambda b: [n for _, n in breakdown(b)] == ["4", "1"])
    token_id = breakdown(browser)[0][0]
    assert "2 recording tokens" in panel.find_element(By.CLASS_NAME, "summary").text
    panel.find_element(By.XPATH, f".//button[text()='{token_id}']").click()
    wait_for_rows(browser, lambda r: len(r) == 4)
    assert parse_qs(urlsplit(browser.current_url).query)["recorded_by"] == [token_id]
    assert browser.find_element(By.NAME, "recorded_by").get_attribute("value") == token_id


def _measured_rows(browser: webdriver.Chrome) -> tuple[list[str], list[list[str]]]:
    """The panel's shown column heads, and each row's cells, as read."""
    heads: list[str] = browser.execute_script(
        "return [...document.querySelectorAll('#breakdown thead th')]"
        ".filter((head) => !head.hidden).map((head) => head.textContent)"
    )
    cells: list[list[str]] = browser.execute_script(
        "return [...document.querySelectorAll('#breakdown tbody tr')]"
        ".map((row) => [...row.cells].map((cell) => cell.textContent))"
    )
    return heads, cells


def test_a_duration_chosen_shows_each_value_s_figure_in_ms_and_how_many_were_measured(
    browser: webdriver.Chrome, console_url: str, console_server: ServerThread, tenant: str
) -> None:
    """Duration (none by default: the panel as before) adds a column of each
    value's request durations, the p95 exactly as CountEvents interpolates it,
    "-" for a route none of whose calls recorded a duration, and how many
    were measured; a route holding markup is text. None again: no column."""
    markup = "/v1/<img src=x onerror=\"document.title='owned'\">"
    with AuditClient(console_server.target, token=console_server.token(tenant, "recorder")) as c:
        for route, ms in [
            *[("/v1/a", ms) for ms in (10.0, 20.0, 30.0, 40.0, 0.0)],  # 0: none recorded
            ("/v1/b", 0.0),
            ("/v1/b", 0.0),
            (markup, 7.04),
        ]:
            c.record(action="api.call", actor_id="k1", http_route=route, duration_ms=ms)
    _breakdown_shown(
        browser, console_url + "?actions=api.call", console_server.token(tenant, "reader"), 8
    )
    wait(browser).until(lambda b: breakdown(b) == [("api.call", "8")])
    assert _measured_rows(browser) == (["Value", "Events", "Share"], [["api.call", "8", "100.0%"]])
    assert (
        Select(browser.find_element(By.ID, "breakdown-measure")).first_selected_option.text
        == "none"
    )
    Select(browser.find_element(By.ID, "breakdown-by")).select_by_value("http_route")
    wait(browser).until(lambda b: [key for key, _ in breakdown(b)] == ["/v1/a", "/v1/b", markup])
    Select(browser.find_element(By.ID, "breakdown-measure")).select_by_value("duration_p95")
    measured = (
        ["Value", "Events", "Share", "p95 duration", "Measured"],
        [
            ["/v1/a", "5", "62.5%", "38.5 ms", "4"],  # 10, 20, 30, 40: p95 38.5, interpolated
            ["/v1/b", "2", "25.0%", "-", "0"],
            [markup, "1", "12.5%", "7.0 ms", "1"],  # in ms to a tenth, as the CLI prints
        ],
    )
    wait(browser).until(lambda b: _measured_rows(b) == measured)
    assert browser.find_elements(By.CSS_SELECTOR, "#breakdown img") == []
    assert browser.title != "owned"
    summary = browser.find_element(By.CSS_SELECTOR, "#breakdown .summary").text
    assert "p95 duration of the events that have one" in summary, summary
    # Live's events are counted in the page, not measured (no percentile is added to).
    browser.find_element(By.ID, "live").click()
    wait(browser).until(
        lambda b: b.execute_script("return document.querySelector('#live').checked")
    )
    with AuditClient(console_server.target, token=console_server.token(tenant, "recorder")) as c:
        c.record(action="api.call", actor_id="k1", http_route="/v1/b", duration_ms=50.0)
    wait_for_rows(browser, lambda r: len(r) == 9)
    wait(browser).until(lambda b: _measured_rows(b)[1][1] == ["/v1/b", "3", "33.3%", "-", "0"])
    summary = browser.find_element(By.CSS_SELECTOR, "#breakdown .summary").text
    assert "(1 event Live added since counted, not measured)" in summary, summary
    browser.find_element(By.ID, "live").click()
    Select(browser.find_element(By.ID, "breakdown-measure")).select_by_value("")
    wait(browser).until(lambda b: len(_measured_rows(b)[0]) == 3)
    assert _measured_rows(browser)[1][0] == ["/v1/a", "5", "55.6%"]
    counts = requested(browser, "/api/counts")
    # The chart's, by action, by route, with p95, without: one count each.
    measures = [parse_qs(urlsplit(url).query).get("measure") for url in counts]
    assert measures == [None, None, None, ["duration_p95"], None], counts


def _choices(browser: webdriver.Chrome) -> tuple[str, str]:
    """The panel's grouping and measure, as chosen in its two lists."""
    by, measure = (
        Select(browser.find_element(By.ID, name)).first_selected_option.get_attribute("value")
        for name in ("breakdown-by", "breakdown-measure")
    )
    return by or "", measure or ""


def test_the_breakdown_s_grouping_and_measure_are_kept_in_the_url(
    browser: webdriver.Chrome, console_url: str, console_server: ServerThread, tenant: str
) -> None:
    """The grouping and the measure are in the page's URL (`breakdown`,
    `breakdown_measure`), as the filter is: a link shows the panel so, its
    count announced with the search's first page; a choice changed is
    written into the entry shown (no search of its own for Back to run); a
    reload, Apply and a value pressed keep them; one the lists have no
    choice for is the default. A tie rounds up, as `sealtrail stats` does:
    a mean of 7.0 and 7.5 is 7.3, of 0.15 alone 0.2."""
    with AuditClient(console_server.target, token=console_server.token(tenant, "recorder")) as c:
        for actor, route, ms in [
            ("k1", "/v1/a", 7.0),
            ("k1", "/v1/a", 7.5),
            ("k2", "/v1/b", 0.15),
            ("k2", "/v1/c", 1.0),
        ]:
            c.record(action="api.call", actor_id=actor, http_route=route, duration_ms=ms)
    link = console_url + "?actions=api.call&breakdown=http_route&breakdown_measure=duration_avg"
    _breakdown_shown(browser, link, console_server.token(tenant, "reader"), 4)
    by_route = [
        ["/v1/a", "2", "50.0%", "7.3 ms", "2"],
        ["/v1/b", "1", "25.0%", "0.2 ms", "1"],
        ["/v1/c", "1", "25.0%", "1.0 ms", "1"],
    ]
    wait(browser).until(lambda b: _measured_rows(b)[1] == by_route)
    assert _choices(browser) == ("http_route", "duration_avg")
    [first_page] = requested(browser, "/api/events")
    announced = [parse_qs(count) for count in parse_qs(urlsplit(first_page).query)["count"]]
    assert {"group_by": ["http_route"], "limit": ["10"], "measure": ["duration_avg"]} in announced
    entries = browser.execute_script("return history.length")
    Select(browser.find_element(By.ID, "breakdown-measure")).select_by_value("duration_max")
    wait(browser).until(lambda b: _measured_rows(b)[1][0][3] == "7.5 ms")
    query = parse_qs(urlsplit(browser.current_url).query)
    assert query["breakdown"] == ["http_route"] and query["breakdown_measure"] == ["duration_max"]
    assert browser.execute_script("return history.length") == entries
    assert len(requested(browser, "/api/events")) == 1  # the choice ran no search

    browser.refresh()
    wait_for_rows(browser, lambda r: len(r) == 4)
    wait(browser).until(
        lambda b: _measured_rows(b)[1][:1] == [["/v1/a", "2", "50.0%", "7.5 ms", "2"]]
    )
    assert _choices(browser) == ("http_route", "duration_max")

    field = browser.find_element(By.NAME, "actor")
    field.send_keys("k2", Keys.ENTER)  # Apply
    wait_for_rows(browser, lambda r: len(r) == 2)
    query = parse_qs(urlsplit(browser.current_url).query)
    assert query["actor"] == ["k2"] and query["breakdown"] == ["http_route"], query
    assert query["breakdown_measure"] == ["duration_max"]
    wait(browser).until(lambda b: [row[0] for row in _measured_rows(b)[1]] == ["/v1/b", "/v1/c"])
    Select(browser.find_element(By.ID, "breakdown-by")).select_by_value("action")
    Select(browser.find_element(By.ID, "breakdown-measure")).select_by_value("")
    wait(browser).until(lambda b: _measured_rows(b)[1] == [["api.call", "2", "100.0%"]])
    query = parse_qs(urlsplit(browser.current_url).query)
    assert "breakdown" not in query and "breakdown_measure" not in query, query  # the defaults

    browser.get(console_url + "?actions=api.call&breakdown=nope&breakdown_measure=duration_p90")
    wait_for_rows(browser, lambda r: len(r) == 4)
    wait(browser).until(lambda b: breakdown(b) == [("api.call", "4")])
    assert _choices(browser) == ("action", "")


def test_live_s_events_are_added_to_a_mean_and_a_longest_as_a_recount_would(
    browser: webdriver.Chrome, console_url: str, console_server: ServerThread, tenant: str
) -> None:
    """With the mean or the longest chosen, each event Live adds is measured
    in the page as the count measures it: the mean taken again over one more
    duration, the longest the greater; an event without a duration counted,
    not measured; a value Live lists first measured by its own events. The
    summary then says nothing was left unmeasured."""
    with AuditClient(console_server.target, token=console_server.token(tenant, "recorder")) as c:
        for route, ms in [("/v1/a", 10.0), ("/v1/a", 20.0), ("/v1/a", 30.0), ("/v1/a", 40.0),
                          ("/v1/b", 0.0)]:  # fmt: skip
            c.record(action="api.call", actor_id="k1", http_route=route, duration_ms=ms)
        _breakdown_shown(
            browser, console_url + "?actions=api.call", console_server.token(tenant, "reader"), 5
        )
        Select(browser.find_element(By.ID, "breakdown-by")).select_by_value("http_route")
        Select(browser.find_element(By.ID, "breakdown-measure")).select_by_value("duration_avg")
        wait(browser).until(
            lambda b: (
                _measured_rows(b)[1]
                == [["/v1/a", "4", "80.0%", "25.0 ms", "4"], ["/v1/b", "1", "20.0%", "-", "0"]]
            )
        )
        browser.find_element(By.ID, "live").click()
        wait(browser).until(
            lambda b: b.execute_script("return document.querySelector('#live').checked")
        )
        for route, ms in [("/v1/a", 55.0), ("/v1/b", 50.0), ("/v1/b", 0.0), ("/v1/c", 3.0)]:
            c.record(action="api.call", actor_id="k1", http_route=route, duration_ms=ms)
        wait_for_rows(browser, lambda r: len(r) == 9)
        mean = [
            ["/v1/a", "5", "55.6%", "31.0 ms", "5"],
            ["/v1/b", "3", "33.3%", "50.0 ms", "1"],
            ["/v1/c", "1", "11.1%", "3.0 ms", "1"],
        ]
        wait(browser).until(lambda b: _measured_rows(b)[1] == mean)
        summary = browser.find_element(By.CSS_SELECTOR, "#breakdown .summary").text
        assert "not measured" not in summary, summary
        # The longest: counted again (another choice), then Live's added to it.
        Select(browser.find_element(By.ID, "breakdown-measure")).select_by_value("duration_max")
        wait(browser).until(
            lambda b: _measured_rows(b)[1][0] == ["/v1/a", "5", "55.6%", "55.0 ms", "5"]
        )
        c.record(action="api.call", actor_id="k1", http_route="/v1/b", duration_ms=60.0)
        wait_for_rows(browser, lambda r: len(r) == 10)
        wait(browser).until(
            lambda b: _measured_rows(b)[1][1] == ["/v1/b", "4", "40.0%", "60.0 ms", "2"]
        )
    browser.find_element(By.ID, "live").click()
