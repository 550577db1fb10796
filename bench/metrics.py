"""A server's metrics scraped as Prometheus would, while a figure runs."""

from __future__ import annotations

import contextlib
import threading
import time
import urllib.request
from collections.abc import Iterator, Mapping
from dataclasses import dataclass


def metrics_settings() -> Mapping[str, str]:
    """The OTEL_* variables of a server serving its metrics for Prometheus on
    a free port of 127.0.0.1 (it prints which)."""
    return {
        "OTEL_METRICS_EXPORTER": "prometheus",
        "OTEL_EXPORTER_PROMETHEUS_HOST": "127.0.0.1",
        "OTEL_EXPORTER_PROMETHEUS_PORT": "0",
        "OTEL_SERVICE_NAME": "sealtrail-bench",
    }


@dataclass
class Scrapes:
    count: int = 0
    longest: float = 0.0  # seconds
    size: int = 0  # bytes of the last


@contextlib.contextmanager
def metrics_scraped(url: str, *, every: float) -> Iterator[Scrapes]:
    """`url` fetched every `every` seconds on a thread, meanwhile; a failed
    scrape ends the figure with its error."""
    scrapes = Scrapes()
    stop = threading.Event()
    failures: list[BaseException] = []

    def scrape() -> None:
        while not stop.wait(every):
            started = time.perf_counter()
            try:
                with urllib.request.urlopen(url, timeout=10) as answer:
                    scrapes.size = len(answer.read())
            except OSError as error:
                failures.append(error)
                return
            scrapes.longest = max(scrapes.longest, time.perf_counter() - started)
            scrapes.count += 1

    scraper = threading.Thread(target=scrape, name="bench-scraper", daemon=True)
    scraper.start()
    try:
        yield scrapes
    finally:
        stop.set()
        scraper.join()
    if failures:
        raise RuntimeError(f"scraping {url} failed: {failures[0]}")
