"""`python -m bench.append_index`: what `events_duration_unread` (migration
0064, ADR 0149) costs an append, as ratios measured in one run, never
absolute times.

--templates events are recorded through RecordBatch (so every row is written
as the appender writes it: its record, view, columns), one in two with a
`context.duration_ms`. Then the SQL alone, as the appender's INSERT of many
rows: --rows rows copied from them (a tenant of their own, new seqs and
ids) inserted in one statement into `events`, under three forms of the
index, taking turns --turns times so that drift favours none:

- `unread index`: 0064's, whose predicate parses the record of each
  inserted row without a duration (`duration_ms IS NULL AND
  json_typeof((record::json -> 'context') -> 'duration_ms') = 'number'`);
- `no index`: none (the baseline);
- `NaN sentinel`: the alternative, a row without a duration written
  'NaN', so that the index's predicate is `duration_ms IS NULL` alone.

Each figure is the median of its turns' seconds, reported as a ratio to the
baseline's. Beside them, in the same turns, the predicate alone, less
exposed to the noise of a shared machine than an INSERT's whole cost: a
scan of the same --rows rows (in memory) evaluating 0064's predicate,
less the same scan testing `duration_ms IS NULL` alone, as a share of the
baseline's INSERT. The machine may be shared: read the ratios, not the
times."""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from typing import Any

import psycopg
from psycopg import sql

from sealtrail import AuditClient, EventFields, build_event

from . import environment

TEMPLATE_TENANT = "bench-append-index"
BATCH = 1000
UNREAD = (
    "CREATE INDEX events_duration_unread ON events (tenant_id, seq)"
    " WHERE duration_ms IS NULL"
    " AND json_typeof((record::json -> 'context') -> 'duration_ms') = 'number'"
)
SENTINEL = (
    "CREATE INDEX events_duration_unread ON events (tenant_id, seq) WHERE duration_ms IS NULL"
)
DROP = "DROP INDEX IF EXISTS events_duration_unread"
# Each form: the index made before its turn (None: none), and what a row
# without a duration holds in its column.
FORMS: dict[str, tuple[str | None, str]] = {
    "no index": (None, "NULL"),
    "unread index": (UNREAD, "NULL"),
    "NaN sentinel": (SENTINEL, "'NaN'::float8"),
}


def record_templates(client: AuditClient, count: int) -> None:
    """`count` events as a service records them, one in two with a duration."""
    for start in range(0, count, BATCH):
        events = []
        for n in range(start, min(count, start + BATCH)):
            fields: EventFields = {
                "action": f"api.call_{n % 40:02d}",
                "actor_id": f"user_{n % 50:04d}",
                "actor_email": f"user_{n % 50:04d}@example.com",
                "http_route": "/v1/things/{id}",
                "http_method": "GET",
                "http_status_code": 200,
                "ip": "203.0.113.7",
                "user_agent": "Mozilla/5.0 (X11; Linux x86_64) sealtrail-bench",
                "resource_type": "thing",
                "resource_id": f"thing_{n}",
                "request_id": f"00000000-0000-4000-8000-{n:012d}",
                "details": {"page": n % 7, "filter": "status:open"},
            }
            if n % 2:
                fields["duration_ms"] = float(1 + n % 997) / 4
            events.append(build_event(**fields))
        failed = [r for r in client.record_batch(events) if r.error is not None]
        if failed:
            raise RuntimeError(f"{len(failed)} events refused: {failed[0].error}")


def insert_statement(
    conn: psycopg.Connection[Any], rows: int, templates: int, absent: str
) -> sql.Composed:
    """An INSERT of `rows` rows copied from the `templates` template rows
    into a tenant of its own (`%s`), a row without a duration given `absent`."""
    columns = [
        str(row[0])
        for row in conn.execute(
            "SELECT attname FROM pg_attribute WHERE attrelid = 'events'::regclass"
            " AND attnum > 0 AND NOT attisdropped AND attgenerated = '' ORDER BY attnum"
        )
    ]
    fresh = {
        "tenant_id": sql.SQL("%s"),
        "seq": sql.SQL("row_number() OVER ()"),
        "id": sql.SQL("gen_random_uuid()"),
        "idempotency_key": sql.NULL,
        "duration_ms": sql.SQL("coalesce(e.duration_ms, {})").format(sql.SQL(absent)),
    }
    values = [fresh.get(name, sql.SQL("e.") + sql.Identifier(name)) for name in columns]
    return sql.SQL(
        "INSERT INTO events ({columns}) SELECT {values} FROM events AS e"
        " CROSS JOIN generate_series(1, {copies}) AS g"
        " WHERE e.tenant_id = {template} LIMIT {rows}"
    ).format(
        columns=sql.SQL(", ").join(map(sql.Identifier, columns)),
        values=sql.SQL(", ").join(values),
        copies=sql.Literal(-(-rows // templates)),
        template=sql.Literal(TEMPLATE_TENANT),
        rows=sql.Literal(rows),
    )


def _scan(rows: int, templates: int, predicate: str) -> sql.Composed:
    """A count of `rows` rows copied from the template rows (as the INSERT
    copies them) that satisfy `predicate`."""
    return sql.SQL(
        "SELECT count(*) FROM (SELECT e.record, e.duration_ms FROM events AS e"
        " CROSS JOIN generate_series(1, {copies}) AS g WHERE e.tenant_id = {template}"
        " LIMIT {rows}) AS r WHERE {predicate}"
    ).format(
        copies=sql.Literal(-(-rows // templates)),
        template=sql.Literal(TEMPLATE_TENANT),
        rows=sql.Literal(rows),
        predicate=sql.SQL(predicate),
    )


# The scans: 0064's predicate, and its first condition alone.
SCANS = {
    "scan, predicate": "r.duration_ms IS NULL"
    " AND json_typeof((r.record::json -> 'context') -> 'duration_ms') = 'number'",
    "scan, IS NULL alone": "r.duration_ms IS NULL",
}


def measure(
    conn: psycopg.Connection[Any], rows: int, templates: int, turns: int
) -> dict[str, float]:
    """Each form's median seconds to insert `rows` rows, the forms in turns."""
    statements = {
        name: insert_statement(conn, rows, templates, absent) for name, (_, absent) in FORMS.items()
    }
    inserted = 0

    def insert(name: str) -> Callable[[], float]:
        def run() -> float:
            nonlocal inserted
            inserted += 1
            started = time.perf_counter()
            conn.execute(statements[name], [f"bench-append-{inserted}"])
            return time.perf_counter() - started

        return run

    times: dict[str, list[float]] = {name: [] for name in [*FORMS, *SCANS]}
    for turn in range(turns + 1):  # the first turn warms the caches, unmeasured
        for name, (index, _) in FORMS.items():
            conn.execute(DROP)
            if index is not None:
                conn.execute(index)
            conn.execute("CHECKPOINT")
            taken = insert(name)()
            if turn:
                times[name].append(taken)
            print(f"  turn {turn}: {name}: {taken:.3f} s", flush=True)
        for name, predicate in SCANS.items():
            started = time.perf_counter()
            conn.execute(_scan(rows, templates, predicate))
            if turn:
                times[name].append(time.perf_counter() - started)
    conn.execute(DROP)
    conn.execute(UNREAD)  # as migration 0064 left it
    return {name: statistics.median(taken) for name, taken in times.items()}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.append_index", description=__doc__)
    parser.add_argument("--templates", type=int, default=2000, help="events recorded first")
    parser.add_argument("--rows", type=int, default=20_000, help="rows a turn's INSERT writes")
    parser.add_argument("--turns", type=int, default=5, help="measured turns of each form")
    options = parser.parse_args(argv)
    if options.templates < 2 or options.rows < 1 or options.turns < 1:
        parser.error("--templates must be at least 2, --rows and --turns at least 1")
    with environment.temp_dir() as workdir, environment.database(workdir) as database:
        with environment.server(database.url, workdir) as server:
            token = environment.create_token(database.url, TEMPLATE_TENANT)
            with AuditClient(server.target, token=token) as client:
                print(f"recording {options.templates:,} template events ...", flush=True)
                record_templates(client, options.templates)
        with psycopg.connect(database.url, autocommit=True) as conn:
            conn.execute("VACUUM ANALYZE events")
            seconds = measure(conn, options.rows, options.templates, options.turns)
    baseline = seconds["no index"]
    print(f"{'figure':<20} {'ratio':>7}  baseline (same run)")
    for name, taken in seconds.items():
        print(f"{name:<20} {taken / baseline:>7.3f}  no index, {options.rows:,} rows an INSERT")
    parse = seconds["scan, predicate"] - seconds["scan, IS NULL alone"]
    print(f"{'predicate parse':<20} {parse / baseline:>7.3f}  no index (the two scans' difference)")


if __name__ == "__main__":
    main()
