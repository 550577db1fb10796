"""Issue 9's figure: how soon the console shows its first rows with 1 million
events in the tenant, in a real headless Chromium (Debian's).

- console-load: LOADS page loads of the console (default view: the last 7
  days, newest first), signed in; each load's time is the page's own
  `sealtrail-first-rows` performance mark, from the start of navigation to
  the first rows in the table (page, script, sign-in check, Query, render).
- console-query (its baseline): the same Query (last 7 days, 100 events) as a
  gRPC call from this process, one at a time."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from selenium import webdriver
from selenium.webdriver.chrome.service import Service as DriverService
from selenium.webdriver.support.ui import WebDriverWait

from sealtrail import AuditClient, build_filter

from . import cpu
from .phases import PhaseResult, percentile_ms

EVENTS = 1_000_000
LOADS = 20
CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")


def _result(name: str, unit: str, latencies: list[float], usage: dict[str, float]) -> PhaseResult:
    latencies.sort()
    seconds = sum(latencies)
    return PhaseResult(
        name=name,
        unit=unit,
        clients=1,
        in_flight=1,
        seconds=seconds,
        calls=len(latencies),
        events=len(latencies),
        rate=len(latencies) / seconds,
        latency_p50_ms=percentile_ms(latencies, 0.50),
        latency_p99_ms=percentile_ms(latencies, 0.99),
        latency_p95_ms=percentile_ms(latencies, 0.95),
        errors={},
        cpu=usage,
    )


def first_rows(console_url: str, token: str, watched: cpu.Watched) -> PhaseResult:
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage"):
        options.add_argument(argument)
    driver = webdriver.Chrome(options=options, service=DriverService(str(CHROMEDRIVER)))
    latencies = []
    try:
        driver.get(console_url)
        driver.execute_script("sessionStorage.setItem('sealtrail.token', arguments[0])", token)
        driver.get(console_url + "?range=7d")  # warm: page, script and connections cached
        with cpu.Meter(watched) as meter:
            for _ in range(LOADS):
                driver.get(console_url + "?range=7d")
                mark = WebDriverWait(driver, 30).until(
                    lambda d: d.execute_script(
                        "const m = performance.getEntriesByName('sealtrail-first-rows');"
                        "return m.length ? m[0].startTime : null"
                    )
                )
                latencies.append(float(mark) / 1000)
    finally:
        driver.quit()
    return _result("console, first rows (1M events)", "loads/s", latencies, meter.usage)


def query_page(target: str, token: str, watched: cpu.Watched) -> PhaseResult:
    latencies = []
    with AuditClient(target, token=token) as client, cpu.Meter(watched) as meter:
        for _ in range(LOADS + 1):
            since = datetime.now(UTC) - timedelta(days=7)
            begun = time.perf_counter()
            client.query_page(build_filter(since=since), page_size=100)
            latencies.append(time.perf_counter() - begun)
    return _result(
        "Query, first page of 7 days (1M events)", "queries/s", latencies[1:], meter.usage
    )
