"""The connection pool as OpenTelemetry's database client conventions measure
one (`db.client.connection.*`), and whether the database answers.

Read when a reader collects, on its thread: psycopg_pool's counters and the
database's are read as they stand, without a lock or a turn of the loop.
"used" is every connection the pool counts but has not free, including one
being opened (or retried, while the database is down)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

from opentelemetry.metrics import CallbackOptions, Meter, Observation

from .database import Database

POOL_NAME: Final = "sealtrail"
_POOL: Final = {"db.client.connection.pool.name": POOL_NAME}
_USED: Final = {**_POOL, "db.client.connection.state": "used"}
_IDLE: Final = {**_POOL, "db.client.connection.state": "idle"}

Callback = Callable[[CallbackOptions], list[Observation]]


def measure_pool(db: Database, meter: Meter) -> None:
    """Observe `db`'s pool through `meter` for as long as the meter lives."""

    def stat(name: str) -> int:
        return int(db.pool.get_stats().get(name, 0))

    def connections(_options: CallbackOptions) -> list[Observation]:
        stats = db.pool.get_stats()
        size, idle = stats.get("pool_size", 0), stats.get("pool_available", 0)
        return [Observation(size - idle, _USED), Observation(idle, _IDLE)]

    def one(read: Callable[[], int], attributes: dict[str, str] | None = None) -> Callback:
        return lambda _options: [Observation(read(), attributes)]

    meter.create_observable_up_down_counter(
        "db.client.connection.count",
        callbacks=[connections],
        unit="{connection}",
        description="Connections of the pool, used and idle.",
    )
    meter.create_observable_up_down_counter(
        "db.client.connection.max",
        callbacks=[one(lambda: db.pool.max_size, _POOL)],
        unit="{connection}",
        description="The most connections the pool may open.",
    )
    meter.create_observable_up_down_counter(
        "db.client.connection.pending_requests",
        callbacks=[one(lambda: stat("requests_waiting"), _POOL)],
        unit="{request}",
        description="Callers waiting for a connection of the pool now.",
    )
    meter.create_observable_counter(
        "db.client.connection.timeouts",
        callbacks=[one(lambda: db.checkout_timeouts, _POOL)],
        unit="{timeout}",
        description="Requests for a connection refused: none free in time, or too many waiting.",
    )
    meter.create_observable_gauge(
        "sealtrail.database.reachable",
        callbacks=[one(lambda: int(db.reachable))],
        unit="1",
        description="1 while the database answers the server's probe, 0 while it does not.",
    )
