"""The activity chart above the events (ADR 0108), in a real headless
Chromium: the search's events per day or hour of the browser's zone, a bar
that narrows the search to its period, a table for screen readers, and a
count the API refuses said as the search's errors are."""

from __future__ import annotations

import json
import re
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta
from datetime import time as wall
from typing import Any
from urllib.parse import parse_qs, urlsplit
from zoneinfo import ZoneInfo

import psycopg
import pytest
from google.protobuf import json_format
from psycopg import sql as pgsql
from selenium import webdriver
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support import expected_conditions as seen

from sealtrail import AuditClient, build_event, build_filter
from sealtrail_server.store import counts as store_counts
from tests.browser.test_console import hooked, requested, sign_in, wait, wait_for_rows
from tests.conftest import ServerThread

KOLKATA = ZoneInfo("Asia/Kolkata")


def chart_table(browser: webdriver.Chrome) -> list[tuple[str, int]]:
    """The chart's table, as a screen reader reads it: each period and its count."""
    cells: list[list[str]] = browser.execute_script(
        "return [...document.querySelectorAll('#activity tbody tr')]"
        ".map((row) => [...row.cells].map((cell) => cell.textContent))"
    )
    return [(period, int(events.replace(",", ""))) for period, events in cells]


def bar_labels(browser: webdriver.Chrome) -> list[str]:
    return [
        str(bar.get_attribute("aria-label"))
        for bar in browser.find_elements(By.CSS_SELECTOR, "#activity .bars button")
    ]


def test_the_chart_counts_the_search_per_day_and_a_bar_narrows_it_to_its_hours(
    browser: webdriver.Chrome, console_url: str, console_server: ServerThread, tenant: str
) -> None:
    """The events of the last 7 days per day of the browser's zone (Kolkata's
    days start at 18:30 UTC), the days without any drawn too; a bar pressed
    narrows the search to its day, which is then drawn per hour."""
    browser.execute_cdp_cmd("Emulation.setTimezoneOverride", {"timezoneId": "Asia/Kolkata"})
    today = datetime.now(KOLKATA).date()

    def noon(days_ago: int) -> datetime:  # far from any day's edge
        return datetime.combine(today - timedelta(days=days_ago), wall(12), KOLKATA)

    with AuditClient(console_server.target, token=console_server.token(tenant, "recorder")) as c:
        for days_ago, action in [(1, "chart.read"), (1, "chart.write"), (3, "chart.read"),
                                 (6, "chart.read"), (9, "chart.read")]:  # fmt: skip
            event = build_event(action=action, actor_id="u-chart")
            event.occurred_at.FromDatetime(noon(days_ago))
            c.record(event)
    sign_in(browser, console_url + "?actions=chart.*", console_server.token(tenant, "reader"))
    wait_for_rows(browser, lambda r: len(r) == 4)
    chart = wait(browser).until(seen.visibility_of_element_located((By.ID, "activity")))
    caption = chart.find_element(By.TAG_NAME, "figcaption").text
    assert "per day, your time (Asia/" in caption and "4 events in all" in caption, caption
    # (Chromium names the zone as ICU does: Asia/Calcutta, which the API takes too.)
    # Seven days back from now: from a part of the eighth day before today, to today.
    days = chart_table(browser)
    assert [n for _, n in days] == [0, 1, 0, 0, 1, 0, 2, 0], days
    labels = bar_labels(browser)
    assert len(labels) == 8 and labels[6].endswith(": 2 events"), labels
    assert labels[0].endswith(": 0 events"), labels
    assert days[6][0] in labels[6]  # the bar says what its row says
    assert sum(n for _, n in days) == 4

    # Yesterday's bar: the search narrowed to that day of Kolkata's, per hour.
    chart.find_elements(By.CSS_SELECTOR, ".bars button")[6].click()
    wait_for_rows(browser, lambda r: len(r) == 2)
    query = parse_qs(urlsplit(browser.current_url).query)
    yesterday = datetime.combine(today - timedelta(days=1), wall(0), KOLKATA)
    assert query["range"] == ["custom"] and query["actions"] == ["chart.*"]
    assert [datetime.fromisoformat(query[end][0]) for end in ("from", "to")] == [
        yesterday,
        yesterday + timedelta(days=1),
    ]
    wait(browser).until(lambda b: "per hour" in b.find_element(By.ID, "activity-title").text)
    hours = chart_table(browser)
    assert len(hours) == 24 and [n for _, n in hours] == [0] * 12 + [2] + [0] * 11, hours
    # The keyboard is where it was: on the chart, whose arrows move along its bars.
    focused = browser.switch_to.active_element
    assert focused.get_attribute("aria-label") == bar_labels(browser)[-1]
    focused.send_keys(Keys.HOME)
    for _ in range(12):
        browser.switch_to.active_element.send_keys(Keys.ARROW_RIGHT)
    focused = browser.switch_to.active_element
    assert str(focused.get_attribute("aria-label")).endswith(": 2 events")
    assert focused.get_attribute("tabindex") == "0"
    focused.send_keys(Keys.ENTER)  # its hour: 12:00 to 13:00
    wait(browser).until(
        lambda b: parse_qs(urlsplit(b.current_url).query)["to"][0].startswith(
            f"{(today - timedelta(days=1)).isoformat()}T07:30:00"
        )
    )
    wait_for_rows(browser, lambda r: len(r) == 2)


def _running(database_url: str, marker: str) -> bool:
    with psycopg.connect(database_url, autocommit=True) as conn:
        [(running,)] = conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE state = 'active'"
            " AND query LIKE %s AND pid <> pg_backend_pid()",
            [f"%{marker}%"],
        ).fetchall()
    return bool(running)


def test_a_count_the_api_refuses_is_said_with_when_to_count_again(
    browser: webdriver.Chrome,
    console_url: str,
    console_server: ServerThread,
    tenant: str,
    migrated_database_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A tenant runs one count at a time: the chart's count, while another
    runs, is refused (429, RESOURCE_EXHAUSTED with a retry delay). The page
    says so where the search's errors are, with the Retry-After, and draws
    nothing; Apply, once the other count ended, draws the chart."""
    running = store_counts.count_statement

    def slow(tenant_id: str, *args: Any, **kwargs: Any) -> Any:  # a count of a large log
        query, params = running(tenant_id, *args, **kwargs)
        if tenant_id != tenant:
            return query, params
        held = pgsql.SQL("SELECT q.* FROM ({}) AS q CROSS JOIN pg_sleep(4.25)")
        return held.format(query), params

    with AuditClient(console_server.target, token=console_server.token(tenant, "recorder")) as c:
        c.record(action="door.open", actor_id="u-kim")
    reader = console_server.token(tenant, "reader")
    monkeypatch.setattr(store_counts, "count_statement", slow)
    with (
        AuditClient(console_server.target, token=reader, max_attempts=1) as other,
        ThreadPoolExecutor(1) as pool,
    ):
        held = pool.submit(other.count_events)
        deadline = time.monotonic() + 20
        while not _running(migrated_database_url, "pg_sleep(4.25)"):
            assert time.monotonic() < deadline and not held.done()
            time.sleep(0.05)
        sign_in(browser, console_url + "?actions=door.open", reader)
        wait_for_rows(browser, lambda r: len(r) == 1)
        error = browser.find_element(By.ID, "error")
        wait(browser).until(lambda b: "activity chart" in error.text)
        assert "one count at a time" in error.text, error.text
        assert "(try again in 1 second)." in error.text, error.text
        assert not browser.find_element(By.ID, "activity").is_displayed()
        held.result(timeout=30)
    monkeypatch.setattr(store_counts, "count_statement", running)
    browser.find_element(By.CSS_SELECTOR, "#filters button[type=submit]").click()
    wait(browser).until(seen.visibility_of_element_located((By.ID, "activity")))
    assert error.text == ""
    assert [n for _, n in chart_table(browser)][-1] == 1


def test_a_zone_the_database_does_not_know_is_counted_in_utc(
    browser: webdriver.Chrome, console_url: str, console_server: ServerThread, tenant: str
) -> None:
    """A browser's zone the API refuses (one newer than the database's copy of
    the zone data: America/Coyhaique on an older PostgreSQL) is no error: the
    chart counts UTC's days, and says so."""
    with AuditClient(console_server.target, token=console_server.token(tenant, "recorder")) as c:
        c.record(action="door.open", actor_id="u-kim")
    browser.execute_cdp_cmd("Emulation.setTimezoneOverride", {"timezoneId": "Asia/Kolkata"})
    browser.get(console_url + "?actions=door.open")
    field = wait(browser).until(seen.visibility_of_element_located((By.ID, "token")))
    hooked(browser)
    refusal = {
        "error": "time_zone: 'Asia/Kolkata' is not an IANA time zone such as Europe/Paris",
        "code": "INVALID_ARGUMENT",
        "fields": [{"field": "time_zone", "description": "not an IANA time zone"}],
    }
    fake = "window.fakes.push(['/api/counts', 400, arguments[0]])"
    browser.execute_script(fake, json.dumps(refusal))
    field.send_keys(console_server.token(tenant, "reader"), Keys.ENTER)
    wait_for_rows(browser, lambda r: len(r) == 1)
    chart = wait(browser).until(seen.visibility_of_element_located((By.ID, "activity")))
    assert "per day, UTC:" in chart.find_element(By.TAG_NAME, "figcaption").text
    assert browser.find_element(By.ID, "error").text == ""
    asked, again = [url for url in requested(browser, "/api/counts") if "group_by=day" in url]
    assert "time_zone=Asia%2F" in asked and "time_zone" not in again
    days = chart_table(browser)
    assert len(days) == 8 and days[-1][1] == 1, days


def chart_total(browser: webdriver.Chrome) -> int:
    """The number of events the chart's title says it counts in all."""
    title = browser.find_element(By.ID, "activity-title").text
    said = re.search(r"([\d,]+) events? in all", title)
    assert said, title
    return int(said[1].replace(",", ""))


def test_live_events_are_added_to_the_chart_without_counting_again(
    browser: webdriver.Chrome, console_url: str, console_server: ServerThread, tenant: str
) -> None:
    """The chart was counted once, when the rows came: the events Live then
    added to the table were in no bar, and the chart and the table disagreed
    until the search was run again. Each one Live brings is now added to its
    bar in the page, with no count asked again; one the count had counted
    already (seq up to its `tree_size`: the search's own record, which Live
    brings as it began before the count) is not counted twice."""
    with AuditClient(console_server.target, token=console_server.token(tenant, "recorder")) as c:
        c.record(action="door.open", actor_id="u-kim")
        browser.get(console_url + "?actions=door.*,audit_log.queried")
        field = wait(browser).until(seen.visibility_of_element_located((By.ID, "token")))
        hooked(browser)
        # Live from the start: its events come while the count is on its way.
        browser.execute_script("document.querySelector('#live').checked = true")
        field.send_keys(console_server.token(tenant, "reader"), Keys.ENTER)
        # The door's event, then Live's: the search's record, which says the
        # chart's count and the Breakdown panel's (ADR 0137: none of their own).
        wait_for_rows(browser, lambda r: len(r) == 2)
        wait(browser).until(seen.visibility_of_element_located((By.ID, "activity")))
        wait(browser).until(lambda b: chart_total(b) == 2)
        for actor in ("u-lee", "u-max"):
            c.record(action="door.open", actor_id=actor)
        wait_for_rows(browser, lambda r: len(r) == 4)
        wait(browser).until(lambda b: chart_total(b) == 4)
        assert sum(n for _, n in chart_table(browser)) == 4, chart_table(browser)
        assert [label.rsplit(": ", 1)[1] for label in bar_labels(browser)] == [
            f"{n} event{'s' * (n != 1)}" for _, n in chart_table(browser)
        ]
        # One count of the chart's and one of the panel's: none asked per event.
        counts = requested(browser, "/api/counts")
        assert len(counts) == 2 and "group_by=action" in counts[1], counts
        assert all("view=" in url for url in counts), counts


def test_a_live_event_dated_before_the_first_bar_gets_its_own(
    browser: webdriver.Chrome, console_url: str, console_server: ServerThread, tenant: str
) -> None:
    """Over all time the chart starts at the oldest event's day: a backdated
    event Live brings, dated days earlier, is drawn on its own day, the days
    between drawn empty, as a count would draw them."""
    browser.execute_cdp_cmd("Emulation.setTimezoneOverride", {"timezoneId": "UTC"})
    now = datetime.now(ZoneInfo("UTC"))
    with AuditClient(console_server.target, token=console_server.token(tenant, "recorder")) as c:
        c.record(action="door.open", actor_id="u-kim")
        reader = console_server.token(tenant, "reader")
        sign_in(browser, console_url + "?range=all&actions=door.open", reader)
        wait_for_rows(browser, lambda r: len(r) == 1)
        wait(browser).until(seen.visibility_of_element_located((By.ID, "activity")))
        assert [n for _, n in chart_table(browser)] == [1]
        browser.find_element(By.ID, "live").click()
        time.sleep(0.5)  # the stream is open once the first heartbeat or event arrives
        event = build_event(action="door.open", actor_id="u-old")
        event.occurred_at.FromDatetime(datetime.combine(now.date() - timedelta(days=3), wall(12)))
        c.record(event)
        wait_for_rows(browser, lambda r: len(r) == 2)
        wait(browser).until(lambda b: chart_total(b) == 2)
        assert [n for _, n in chart_table(browser)] == [1, 0, 0, 1], chart_table(browser)


def test_live_events_under_a_filter_that_matched_nothing_draw_the_chart(
    browser: webdriver.Chrome, console_url: str, console_server: ServerThread, tenant: str
) -> None:
    """A filter that matched nothing is not counted: followed live, its chart
    now appears with the first event Live adds, the range's other days empty."""
    sign_in(browser, console_url + "?actions=secret.*", console_server.token(tenant, "reader"))
    wait(browser).until(seen.visibility_of_element_located((By.ID, "empty")))
    browser.find_element(By.ID, "live").click()
    time.sleep(0.5)  # the stream is open once the first heartbeat or event arrives
    with AuditClient(console_server.target, token=console_server.token(tenant, "recorder")) as c:
        c.record(action="secret.read", actor_id="u-night")
    wait_for_rows(browser, lambda r: len(r) == 1)
    wait(browser).until(seen.visibility_of_element_located((By.ID, "activity")))
    days = chart_table(browser)
    assert len(days) == 8 and sum(n for _, n in days) == 1 and chart_total(browser) == 1, days


def test_times_in_utc_counts_the_chart_per_utc_day_with_one_count_per_switch(
    browser: webdriver.Chrome, console_url: str, console_server: ServerThread, tenant: str
) -> None:
    """With "Times in UTC" on, the rows' times changed, not the chart's: it counted
    the viewer's days, so an investigator reading UTC saw bars for days that
    were not the rows' days (two events of one UTC day in two of Kolkata's).
    With it on, the chart counts UTC's days (no `time_zone` asked) and names
    UTC on its bars; switched, it is counted again, once."""
    browser.execute_cdp_cmd("Emulation.setTimezoneOverride", {"timezoneId": "Asia/Kolkata"})
    day = datetime.now(ZoneInfo("UTC")).date() - timedelta(days=3)
    with AuditClient(console_server.target, token=console_server.token(tenant, "recorder")) as c:
        # One UTC day: Kolkata's day before it (17:30 there), then its own (01:30).
        for hour in (12, 20):
            event = build_event(action="split.day", actor_id="u-kim")
            event.occurred_at.FromDatetime(datetime.combine(day, wall(hour), ZoneInfo("UTC")))
            c.record(event)
    browser.get(console_url + "?actions=split.day&utc=1")
    field = wait(browser).until(seen.visibility_of_element_located((By.ID, "token")))
    hooked(browser)
    field.send_keys(console_server.token(tenant, "reader"), Keys.ENTER)
    wait_for_rows(browser, lambda r: len(r) == 2)
    chart = wait(browser).until(seen.visibility_of_element_located((By.ID, "activity")))
    caption = chart.find_element(By.TAG_NAME, "figcaption")
    assert "per day, UTC:" in caption.text, caption.text
    [announced] = [url for url in requested(browser, "/api/events") if "group_by%3Dday" in url]
    assert "time_zone" not in announced, announced
    [asked] = [url for url in requested(browser, "/api/counts") if "group_by=day" in url]
    assert "time_zone" not in asked, asked
    assert [n for _, n in chart_table(browser) if n] == [2], chart_table(browser)
    labels = bar_labels(browser)
    assert all("UTC" in label for label in labels), labels
    titles = [
        bar.get_attribute("title") for bar in chart.find_elements(By.CSS_SELECTOR, ".bars button")
    ]
    assert titles == labels, titles
    assert "UTC" in chart.find_element(By.CSS_SELECTOR, ".first").text

    # The Breakdown panel's count, after the chart's: none is made again when switched.
    wait(browser).until(lambda b: any("group_by=action" in u for u in requested(b, "/api/counts")))
    counted = len(requested(browser, "/api/counts"))
    browser.find_element(By.ID, "utc").click()  # off: the viewer's days, counted again once
    wait(browser).until(lambda b: "your time (Asia/" in caption.text)
    wait(browser).until(lambda b: [n for _, n in chart_table(b) if n] == [1, 1])
    [again] = requested(browser, "/api/counts")[counted:]
    assert "group_by=day" in again and "time_zone=Asia%2F" in again, again
    assert not any("UTC" in label for label in bar_labels(browser)), bar_labels(browser)

    browser.find_element(By.ID, "utc").click()  # on again: UTC's day, once more
    wait(browser).until(lambda b: "per day, UTC:" in caption.text)
    wait(browser).until(lambda b: [n for _, n in chart_table(b) if n] == [2])
    [last] = requested(browser, "/api/counts")[counted + 1 :]
    assert "group_by=day" in last and "time_zone" not in last, last


def test_times_in_utc_switched_back_while_its_count_is_on_its_way_counts_once(
    browser: webdriver.Chrome, console_url: str, console_server: ServerThread, tenant: str
) -> None:
    """Switched off and on again before the chart's count came back, the chart
    was counted twice: the count of the zone no longer shown went on to the
    server (a read recorded in the log, and the tenant's one count at a time
    spent on it) and only then was the shown zone's asked. A switch now drops
    the chart's count under way: one not yet sent never reaches the server."""
    browser.execute_cdp_cmd("Emulation.setTimezoneOverride", {"timezoneId": "Asia/Kolkata"})
    with AuditClient(console_server.target, token=console_server.token(tenant, "recorder")) as c:
        c.record(action="flip.day", actor_id="u-kim")
    browser.get(console_url + "?actions=flip.day&utc=1")
    field = wait(browser).until(seen.visibility_of_element_located((By.ID, "token")))
    hooked(browser, hold="time_zone=Asia")  # the count of the viewer's days, switched off
    field.send_keys(console_server.token(tenant, "reader"), Keys.ENTER)
    wait_for_rows(browser, lambda r: len(r) == 1)
    chart = wait(browser).until(seen.visibility_of_element_located((By.ID, "activity")))
    caption = chart.find_element(By.TAG_NAME, "figcaption")
    assert "per day, UTC:" in caption.text, caption.text
    # The Breakdown panel's count, after the chart's.
    wait(browser).until(lambda b: any("group_by=action" in u for u in requested(b, "/api/counts")))

    switch = browser.find_element(By.ID, "utc")
    switch.click()  # off: the viewer's days, its count held on its way
    wait(browser).until(lambda b: any("time_zone=Asia" in u for u in requested(b, "/api/counts")))
    switch.click()  # on again before it came back
    browser.execute_script("window.release = true")
    wait(browser).until(lambda b: b.execute_script("return window.released"))
    wait(browser).until(lambda b: "per day, UTC:" in caption.text)
    assert [n for _, n in chart_table(browser) if n] == [1], chart_table(browser)

    with AuditClient(console_server.target, token=console_server.token(tenant, "reader")) as c:
        recorded = c.query(build_filter(actions="audit_log.queried"), order="oldest")
        reads = [json_format.MessageToDict(event.details) for event in recorded]
    days = [read for read in reads if read.get("group_by") == "day"]
    # The first chart's count is its search's (ADR 0137): the switches' alone are recorded.
    assert [read.get("time_zone") for read in days] == [None], days
