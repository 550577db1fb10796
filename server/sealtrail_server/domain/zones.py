"""IANA time zones, as requests name them: an alert rule's working hours
(off_hours) and the days and hours a count groups by (CountEvents)."""

from __future__ import annotations

import functools
from typing import Final
from zoneinfo import available_timezones

# Files of the time zone database that are not zones: the host's own zone,
# whatever it is, and placeholders.
_NOT_ZONES: Final = frozenset({"localtime", "Factory", "posixrules", "posix", "right"})


@functools.cache
def _time_zones() -> frozenset[str]:
    """The IANA time zones a request may name: read once, as each read walks
    the zone files (5 to 40 ms, at every validation, in the event loop)."""
    return frozenset(available_timezones() - _NOT_ZONES)


def is_time_zone(name: str) -> bool:
    """Whether `name` is an IANA time zone, spelt as the database spells it
    (`Europe/Paris`, not `europe/paris`; no offsets such as `UTC+5`)."""
    return name == "UTC" or name in _time_zones()


def not_a_time_zone(name: str) -> str:
    """The description of a field violation for a `name` that is none."""
    return f"{name!r} is not an IANA time zone such as Europe/Paris"
