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


def with_connect_timeout(url: str) -> str:
    """`url` with libpq's `connect_timeout` (CONNECT_TIMEOUT_SECONDS) unless it
    sets one, or PGCONNECT_TIMEOUT does, or a service file may (a `service`
    named, or PGSERVICE); a URL libpq cannot read is returned as it is, for
    the connection to name what is wrong with it."""
    if "PGCONNECT_TIMEOUT" in os.environ or "PGSERVICE" in os.environ:
        return url
    try:
        if {"connect_timeout", "service"} & conninfo_to_dict(url).keys():
            return url
        return make_conninfo(url, connect_timeout=CONNECT_TIMEOUT_SECONDS)
    except psycopg.ProgrammingError:
        return url
