"""Database URLs as the service connects with them."""

from __future__ import annotations

import os
from typing import Final

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo

# libpq waits for a connection as long as TCP does (about two minutes to a
# host that drops packets; for good to one that accepts and never answers):
# a start, or a reconnect after an outage, held that long.
CONNECT_TIMEOUT_SECONDS: Final = 10

# And on a connection whose database went silent (a partition, a dropped NAT
# or load-balancer entry: no reply and no reset), a statement waits the 15
# minutes TCP takes to give up on data sent and not acknowledged, holding its
# call (and a stop) all along; an idle one, as the stream hub's LISTEN, for
# good. With these, a statement fails after 30 s of silence and an idle
# connection is found dead within 30 s. libpq ignores them on Unix sockets.
SILENCE_LIMITS: Final = {
    "keepalives": 1,
    "keepalives_idle": 15,
    "keepalives_interval": 5,
    "keepalives_count": 3,
    "tcp_user_timeout": 30_000,  # milliseconds
}


# psycopg reads a time PostgreSQL writes in ISO only: in another DateStyle
# ('SQL, DMY', 'German', 'Postgres', set for the database or a role) every
# statement that read one failed (NotImplementedError), after a start had
# migrated. Every connection asks for ISO, as a startup parameter of its own:
# libpq sends PGDATESTYLE as `datestyle`, which PostgreSQL applies over the
# URL's and PGOPTIONS' options and the database's and role's settings, and
# which poolers pass on (PgBouncer tracks DateStyle). Asked in `options`,
# every connection through a PgBouncer before 1.20 (Debian 12's 1.18) was
# refused: "unsupported startup parameter: options".
ISO_DATES: Final = "ISO"


def ask_for_iso_dates() -> None:
    """Every connection of this process from now on asks for DateStyle ISO
    (PGDATESTYLE, unless it asks for an ISO one already, as `ISO, DMY`)."""
    if not os.environ.get("PGDATESTYLE", "").strip().upper().startswith(ISO_DATES):
        os.environ["PGDATESTYLE"] = ISO_DATES


def with_connection_limits(url: str) -> str:
    """`url` with libpq's `connect_timeout` (CONNECT_TIMEOUT_SECONDS) and the
    keepalive and TCP timeout settings of SILENCE_LIMITS, each unless the URL
    sets it, or a service file may (a `service` named, or PGSERVICE), or for
    the first, PGCONNECT_TIMEOUT does. A URL libpq cannot read is returned as
    it is, for the connection to name what is wrong with it. Whatever the
    URL, its connections ask for DateStyle ISO (`ask_for_iso_dates`)."""
    ask_for_iso_dates()
    if "PGSERVICE" in os.environ:
        return url
    try:
        given = conninfo_to_dict(url)
    except psycopg.ProgrammingError:
        return url
    if "service" in given:
        return url
    limits: dict[str, int] = {"connect_timeout": CONNECT_TIMEOUT_SECONDS, **SILENCE_LIMITS}
    if "PGCONNECT_TIMEOUT" in os.environ:
        del limits["connect_timeout"]
    missing = {k: v for k, v in limits.items() if k not in given}
    # Nothing missing: the URL as it is (the commands compare URLs this returned).
    return make_conninfo(url, **missing) if missing else url
