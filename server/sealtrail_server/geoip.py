"""Locating callers' clients: the country of an IP address, from a MaxMind DB
format file (SEALTRAIL_GEOIP_DB: GeoLite2 Country or City, DB-IP lite,
IPinfo, any whose record holds `country.iso_code`; ADR 0134).

The file is opened at start, where one that cannot be read refuses the
start, and looked at again when a lookup comes at least `check_seconds`
after the last look: a new modification time, size or inode (MaxMind updates
weekly; geoipupdate moves the new file into place) opens it anew and swaps
the reader in one assignment. A new file that cannot be opened keeps the
reader in use, and is said once in the log until the file changes again.

Lookups run inline on the event loop: the reader's C extension answers in
microseconds (docs/operations.md gives the measured cost of a Record). The
look at the file, the copy and the open of a new version run in a thread
(asyncio.to_thread), one at a time: the copy of a GeoLite2 City file took
about 50 ms, every call on the loop waiting meanwhile. Lookups go on with
the reader in use until the new one is swapped in, on the loop.
"""

from __future__ import annotations

import asyncio
import bisect
import ipaddress
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import maxminddb
from maxminddb.errors import InvalidDatabaseError

from .domain.event import COUNTRY_PATTERN, IpAddress, network_address

log = logging.getLogger(__name__)

SETTING: Final = "SEALTRAIL_GEOIP_DB"
# Seconds between looks at the file for a new version, at most.
CHECK_SECONDS: Final = 60.0
# The stamp of a file that is not there (or cannot be looked at).
_GONE: Final = (-1, -1, -1)


class GeoIpError(Exception):
    """The database cannot be opened or is not one this server can use."""


@dataclass(frozen=True, slots=True)
class _Opened:
    reader: Any  # maxminddb's Reader (the C extension's or the pure Python one)
    stamp: tuple[int, int, int]  # the file's (mtime_ns, size, inode) when opened


def _stamp(path: Path) -> tuple[int, int, int]:
    status = os.stat(path)
    return (status.st_mtime_ns, status.st_size, status.st_ino)


def _open(path: Path) -> _Opened:
    """The reader of the database at `path`, or GeoIpError saying why not.

    It reads a private copy, unlinked once opened: the C extension maps the
    file it opens (lookups of a microsecond; the pure Python reader of a file
    read whole took 80), and a file written over in place (`cp` onto it)
    would be read half old and half new, or end the process with SIGBUS where
    it shrank under the mapping."""
    try:
        stamp = _stamp(path)
        fd, copy = tempfile.mkstemp(prefix="sealtrail-geoip-", suffix=".mmdb")
        try:
            with os.fdopen(fd, "wb") as target, path.open("rb") as source:
                shutil.copyfileobj(source, target, 1024 * 1024)
            reader = maxminddb.open_database(copy, maxminddb.MODE_AUTO)
        finally:
            os.unlink(copy)
    except FileNotFoundError:
        raise GeoIpError(f"{path}: no such file") from None
    except (OSError, InvalidDatabaseError, ValueError) as error:
        raise GeoIpError(f"{path}: not a readable MaxMind DB file ({error})") from None
    return _Opened(reader, stamp)


def _ranges(*networks: str) -> tuple[list[int], list[int]]:
    """The first and last addresses of `networks` (of one IP version), sorted."""
    parsed = sorted(ipaddress.ip_network(network) for network in networks)
    return [int(n.network_address) for n in parsed], [int(n.broadcast_address) for n in parsed]


# Where no client of the public internet comes from (IANA's special-purpose
# registries, multicast and reserved space): never located, whatever a
# database says of them. ipaddress's `is_global` says as much, but took 60
# microseconds an address, more than the lookup.
_NOT_GLOBAL: Final = {
    4: _ranges(
        "0.0.0.0/8", "10.0.0.0/8", "100.64.0.0/10", "127.0.0.0/8", "169.254.0.0/16",
        "172.16.0.0/12", "192.0.0.0/24", "192.0.2.0/24", "192.168.0.0/16", "198.18.0.0/15",
        "198.51.100.0/24", "203.0.113.0/24", "224.0.0.0/3",
    ),
    6: _ranges(
        "::/96", "64:ff9b:1::/48", "100::/64", "2001::/23", "2001:db8::/32", "2002::/16",
        "3fff::/20", "fc00::/7", "fe80::/10", "fec0::/10", "ff00::/8",
    ),
}  # fmt: skip


def _global(address: IpAddress) -> bool:
    starts, ends = _NOT_GLOBAL[address.version]
    number = int(address)
    index = bisect.bisect_right(starts, number) - 1
    return index < 0 or number > ends[index]


def locatable(ip: str) -> bool:
    """Whether an address can have a country: not private, loopback,
    link-local, reserved, multicast, shared (carrier-grade NAT) or for
    documentation. An IPv4-mapped IPv6 address is its IPv4 address."""
    address = network_address(ip)
    return address is not None and _global(address)


class CountryLocator:
    """The country of an IP address, from a MaxMind DB format file that is
    reopened when it changes."""

    def __init__(
        self,
        path: Path,
        *,
        check_seconds: float = CHECK_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """Open `path`; GeoIpError if it cannot be."""
        self._path = path
        self._check_seconds = check_seconds
        self._clock = clock
        self._opened = _open(path)
        self._checked_at = clock()
        # The stamp of a new file that could not be opened, said once.
        self._refused: tuple[int, int, int] | None = None
        # The look at the file under way in a thread, if any.
        self._reloading: asyncio.Task[None] | None = None
        self._closed = False

    @classmethod
    def at_start(cls, path: Path, **kwargs: Any) -> CountryLocator:
        """The locator, or SystemExit naming the setting."""
        try:
            return cls(path, **kwargs)
        except GeoIpError as error:
            raise SystemExit(f"{SETTING}: {error}") from None

    def country(self, ip: str) -> str | None:
        """The ISO 3166-1 alpha-2 code (upper case) of `ip`'s country, or
        None: an address that cannot have one, one the database does not
        know, or a record without a well-formed `country.iso_code`."""
        self._reopen_if_changed()
        address = network_address(ip)
        if address is None or not _global(address):
            return None
        try:
            record = self._opened.reader.get(address)
        except (ValueError, InvalidDatabaseError):
            return None  # an IPv6 address in an IPv4-only database; a corrupt node
        if not isinstance(record, dict):
            return None
        country = record.get("country")
        code = country.get("iso_code") if isinstance(country, dict) else None
        if not isinstance(code, str) or not COUNTRY_PATTERN.fullmatch(code):
            return None
        return code.upper()

    def _reopen_if_changed(self) -> None:
        """Once `check_seconds` have passed, a look at the file (and the open
        of a new version) begun in a thread; inline where no loop runs."""
        now = self._clock()
        if now - self._checked_at < self._check_seconds or self._reloading is not None:
            return
        self._checked_at = now
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self._take(self._look())
            return
        self._reloading = loop.create_task(self._reload(), name="sealtrail-geoip-reload")

    async def _reload(self) -> None:
        try:
            looked = await asyncio.to_thread(self._look)
        finally:
            self._reloading = None
        self._take(looked)  # on the loop: no lookup runs meanwhile

    def _look(self) -> _Opened | tuple[tuple[int, int, int], str] | None:
        """The file's new version opened; or its stamp and why it cannot be;
        or None if it has not changed (nor changed since it was refused)."""
        try:
            stamp = _stamp(self._path)
        except OSError as error:
            return _GONE, f"{self._path}: {error.strerror or error}"
        if stamp in (self._opened.stamp, self._refused):
            return None
        try:
            return _open(self._path)
        except GeoIpError as error:
            return stamp, str(error)

    def _take(self, looked: _Opened | tuple[tuple[int, int, int], str] | None) -> None:
        if looked is None:
            return
        if not isinstance(looked, _Opened):
            self._refuse(*looked)
            return
        if self._closed:  # opened while the server stopped
            looked.reader.close()
            return
        old, self._opened, self._refused = self._opened, looked, None
        old.reader.close()
        log.info("geoip: opened the new version of %s", self._path)

    def _refuse(self, stamp: tuple[int, int, int], why: str) -> None:
        """Keep the reader in use; say so once per version of the file."""
        if stamp == self._refused:
            return
        self._refused = stamp
        log.warning("geoip: kept the database in use; %s: %s", SETTING, why)

    def close(self) -> None:
        """The reader closed; a new version being opened is closed once open."""
        self._closed = True
        self._opened.reader.close()
