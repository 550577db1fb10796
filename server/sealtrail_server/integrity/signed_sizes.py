"""What the signing key signed, kept outside the database (ADR 0080).

For each tenant, the largest size at which a checkpoint of its log was signed
(or served) here, and the root signed at it: one small file a tenant, in a
directory of the key's own (`<dir>/<key id>/<tenant>`), written whole to a
temporary file, fsync'ed, renamed over the old one and the directory fsync'ed,
before the signature is released. A database restored from an older backup (or
a replica promoted that lagged) forgets the checkpoints signed after it; these
files do not, so the key never signs another root at a size it signed, nor a
log that does not extend what it signed.

Every process on one data dir shares the directory (each reads a tenant's file
afresh before it signs; the tenant's issuer lock in the database orders the
writes, and a lock on the tenant's file, `.locks/<tenant>`, the read and the
replacement of each write that grows it: a process frozen between the two loses the issuer
lock with its session). Processes on other hosts keep their own unless it is put on storage
they share (SEALTRAIL_SIGNED_CHECKPOINTS_DIR): docs/integrity.md.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import errno
import fcntl
import hashlib
import os
import secrets
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from sealtrail.tlog import Verifier

from ..config import Settings
from ..domain.access import valid_tenant_id
from ..file_modes import check_kept_directory, kept_refusal
from ..key_files import make_directories

# The file's one line: "<size> <base64 root>\n".
_MAX_FILE_BYTES = 256
# The directories (no tenant's name) of what the key stated of each log's
# purges, and of its erasure.
_PURGES = ".purges"
_ERASURES = ".erasures"
# The directory of each tenant's lock, held while its size is read and replaced.
_LOCKS = ".locks"
# How long a write waits for another process's write of the same tenant's
# file (milliseconds, but for a process frozen amid it, or an fsync hung on
# shared storage) before it fails, and its signature with it.
LOCK_WAIT_SECONDS = 10.0


# How a refusal of the files names the directory.
SETTING = "SEALTRAIL_SIGNED_CHECKPOINTS_DIR"


class SignedSizesError(Exception):
    """The directory cannot be read or written: nothing may be signed.
    `repeated`: a file another user may rewrite, refused before (and logged
    then): not to be logged again."""

    def __init__(self, message: str, *, repeated: bool = False) -> None:
        super().__init__(message)
        self.repeated = repeated


@dataclass(frozen=True, slots=True)
class KeptErasures:
    """What the key's `.erasures` directory says (`SignedSizes.erasures`)."""

    # Tenant: the final size and root of its erasure, signed and released.
    erased: dict[str, tuple[int, bytes]] = field(default_factory=dict)
    # Tenant: why its erasure's file cannot be read (whether the key signed
    # an erasure of it is not known).
    unreadable: dict[str, SignedSizesError] = field(default_factory=dict)


class SignedSizes:
    def __init__(self, directory: Path, key: Verifier) -> None:
        self.directory = directory
        self._dir = directory / key.key_id.hex()
        self.key_directory = self._dir
        # The files refused for another user's to rewrite (file_modes.py),
        # said once each until one is taken again.
        self._refused: set[Path] = set()
        # A size's or erasure's file that could not be read: what was said of
        # it last (`_said_once`), until it reads again (`mended`).
        self._unread: dict[Path, str] = {}
        self._mended: list[Path] = []

    @classmethod
    def open(cls, directory: Path, key: Verifier) -> SignedSizes:
        """The key's directory, made (mode 0700, as `directory` is if it is
        made here) if it is not there; SystemExit naming it if it cannot be,
        or naming what another user than the server's may rewrite there:
        the directory it is in, it, each key's directory, this key's own
        (file_modes.check_kept_directory). Each file under them is checked
        as it is read (`_judged`)."""
        signed = cls(directory, key)
        try:
            make_directories(directory, mode=0o700)
            make_directories(signed._dir, mode=0o700)
            probe = signed._dir / ".writable"
            probe.write_bytes(b"")
            probe.unlink()
        except OSError as error:
            raise SystemExit(
                f"SEALTRAIL_SIGNED_CHECKPOINTS_DIR: cannot keep what the signing key signed"
                f" in {signed._dir}: {error}. The server signs no checkpoint it cannot"
                " note there first (docs/integrity.md)"
            ) from None
        check_kept_directory(directory, signed._dir, named=SETTING)
        return signed

    def _judged(self, path: Path, descriptor: int) -> None:
        """SignedSizesError if another user than the server's may rewrite the
        file open at `descriptor` (file_modes.kept_refusal): what it holds is
        not taken, and nothing is signed on it. `repeated` after the first."""
        try:
            why = kept_refusal(path, os.fstat(descriptor), named=SETTING)
        except OSError as error:
            raise SignedSizesError(f"{path}: {error}") from error
        if why is None:
            self._refused.discard(path)
            return
        repeated = path in self._refused
        self._refused.add(path)
        raise SignedSizesError(why, repeated=repeated)

    @contextlib.contextmanager
    def _said_once(self, path: Path) -> Iterator[None]:
        """A read of the file at `path`: its SignedSizesError `repeated` if
        the same was said of it last time, and it `mended` once it reads (or
        is gone) after one. A broken file (cut short, unreadable) was said
        at each attempt to sign, every few seconds, for as long as it stayed
        so; now once for each state it is in, as the health probe says a
        table it waits for."""
        try:
            yield
        except SignedSizesError as error:
            said = str(error)
            error.repeated = error.repeated or self._unread.get(path) == said
            self._unread[path] = said
            raise
        if self._unread.pop(path, None) is not None:
            self._mended.append(path)

    def mended(self) -> list[Path]:
        """The files refused at a read before that read again since the last
        call (each once)."""
        mended, self._mended = self._mended, []
        return mended

    def _file(self, tenant_id: str) -> Path:
        # Tenant ids are file names already ([a-z0-9][a-z0-9._-]*); any other
        # (never stored by the API) by its digest.
        if valid_tenant_id(tenant_id):
            return self._dir / tenant_id
        return self._dir / ("~" + hashlib.sha256(tenant_id.encode()).hexdigest())

    def read(self, tenant_id: str) -> tuple[int, bytes] | None:
        """The largest size signed of the tenant's log and its root, or None.
        SignedSizesError if its file cannot be read (`_said_once`)."""
        path = self._file(tenant_id)
        with self._said_once(path):
            text = _read_text(path, self._judged)
            if text is None:
                return None
            try:
                size, root = text.split()
                return int(size), base64.b64decode(root, validate=True)
            except ValueError as error:
                raise SignedSizesError(f"{path} holds no size and root: {text!r}") from error

    def write(self, tenant_id: str, size: int, root: bytes) -> None:
        """(`size`, `root`) kept as the tenant's, durably, if larger than the
        one kept (two processes that signed one after the other: the later
        one, which extends the other, stays)."""
        # Read and replaced under the tenant's file lock: the issuer lock in the
        # database alone let a process frozen between the two (its session
        # ended meanwhile, another process's larger size kept) put its smaller
        # size back over the larger once woken.
        # A size kept already needs no lock: what is kept only grows, under
        # it. Taken all the same, a log that had not grown (a fresh
        # checkpoint, an export, a proof of it) waited out another process
        # frozen amid its write and failed, as it failed on a read-only disk.
        kept = self.read(tenant_id)
        if kept is not None and kept[0] >= size:
            return
        with self._locked(tenant_id):
            kept = self.read(tenant_id)
            if kept is not None and kept[0] >= size:
                return
            _replace(self._file(tenant_id), f"{size} {base64.b64encode(root).decode()}\n")

    @contextlib.contextmanager
    def _locked(self, tenant_id: str) -> Iterator[None]:
        """The tenant's file lock (flock, let go when its holder ends, SIGKILL
        included), waited for LOCK_WAIT_SECONDS at most: SignedSizesError after."""
        path = self._dir / _LOCKS / self._file(tenant_id).name
        try:
            path.parent.mkdir(mode=0o700, exist_ok=True)
            descriptor = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as error:
            raise SignedSizesError(f"{path}: {error}") from error
        try:
            self._judged(path, descriptor)
            deadline = time.monotonic() + LOCK_WAIT_SECONDS
            while True:
                try:
                    fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() >= deadline:
                        raise SignedSizesError(
                            f"{path}: held by another process for {LOCK_WAIT_SECONDS:.0f} s"
                        ) from None
                    time.sleep(0.01)
                except OSError as error:
                    raise SignedSizesError(f"{path}: {error}") from error
            yield
        finally:
            os.close(descriptor)  # and with it the lock

    def read_erasure(self, tenant_id: str) -> tuple[int, bytes, bool] | None:
        """The final size and root of the tenant's log the key signed (or was
        about to sign) an erasure's receipt of, and whether the receipt was
        released (its erasure committed); None if none (ADR 0083).
        SignedSizesError if its file cannot be read (`_said_once`)."""
        path = self._dir / _ERASURES / self._file(tenant_id).name
        with self._said_once(path):
            text = _read_text(path, self._judged)
            if text is None:
                return None
            try:
                size, root, state = text.split()
                if state not in ("erasing", "erased"):
                    raise ValueError(state)
                return int(size), base64.b64decode(root, validate=True), state == "erased"
            except ValueError as error:
                raise SignedSizesError(f"{path} holds no erasure: {text!r}") from error

    def write_erasure(self, tenant_id: str, size: int, root: bytes, *, released: bool) -> None:
        """The tenant's erasure at (`size`, `root`) kept, durably: before its
        receipt is signed (not `released`), and once its erasure committed."""
        path = self._dir / _ERASURES / self._file(tenant_id).name
        try:
            path.parent.mkdir(mode=0o700, exist_ok=True)
        except OSError as error:
            raise SignedSizesError(f"{path.parent}: {error}") from error
        state = "erased" if released else "erasing"
        _replace(path, f"{size} {base64.b64encode(root).decode()} {state}\n")

    def keep_purge(self, tenant_id: str, purge_id: str, removed: str) -> str | None:
        """Note, durably, that the key states that purge `purge_id` of the
        tenant's log removed `removed` (its count and digest), before the
        statement is signed; or, if the key stated that purge otherwise
        before, what it stated then (and nothing is noted). One line a purge,
        "<purge id> <removed> .", in `<key dir>/.purges/<tenant>` (ADR 0083)."""
        path = self._dir / _PURGES / self._file(tenant_id).name
        try:
            try:
                with path.open("rb") as kept:
                    self._judged(path, kept.fileno())
                    text = kept.read().decode("ascii")
            except FileNotFoundError:
                text = ""
            for line in text.splitlines(keepends=True):
                # A line torn (by a crash or a full disk) was never fsync'ed, so
                # never signed: its end, " .", is missing, whatever follows it.
                if not line.endswith(" .\n"):
                    continue
                stated_id, _, stated = line.removesuffix(" .\n").partition(" ")
                if stated_id == purge_id:
                    return None if stated == removed else stated
            path.parent.mkdir(mode=0o700, exist_ok=True)
            # After a torn line, on a line of its own.
            line = ("\n" if text and not text.endswith("\n") else "") + f"{purge_id} {removed} .\n"
            descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
            try:
                _write_all(descriptor, line.encode())
                os.fsync(descriptor)
            finally:
                os.close(descriptor)
            if not text:  # the file new, perhaps its directory too
                _fsync_directory(path.parent)
                _fsync_directory(self._dir)
        except (OSError, UnicodeDecodeError) as error:
            raise SignedSizesError(f"{path}: {error}") from error
        return None

    async def read_erasure_async(self, tenant_id: str) -> tuple[int, bytes, bool] | None:
        return await asyncio.to_thread(self.read_erasure, tenant_id)

    async def write_erasure_async(
        self, tenant_id: str, size: int, root: bytes, *, released: bool
    ) -> None:
        await asyncio.to_thread(self.write_erasure, tenant_id, size, root, released=released)

    async def keep_purge_async(self, tenant_id: str, purge_id: str, removed: str) -> str | None:
        return await asyncio.to_thread(self.keep_purge, tenant_id, purge_id, removed)

    def tenants(self) -> list[str]:
        """The tenants with a size kept (of valid ids: those the files name)."""
        try:
            return [name for name in os.listdir(self._dir) if valid_tenant_id(name)]
        except OSError as error:
            raise SignedSizesError(f"{self._dir}: {error}") from error

    def erasures(self) -> KeptErasures:
        """The tenants whose erasure the key signed and released, with the
        final size and root; and those whose erasure's file cannot be read
        (refused, cut short, not ASCII), each with its SignedSizesError
        naming the file. SignedSizesError if the directory cannot be listed.
        One file that could not be read was SignedSizesError for them all:
        a start then checked no tenant's erasure (helper-422)."""
        kept_erasures = KeptErasures()
        try:
            names = os.listdir(self._dir / _ERASURES)
        except FileNotFoundError:
            return kept_erasures
        except OSError as error:
            raise SignedSizesError(f"{self._dir / _ERASURES}: {error}") from error
        for name in filter(valid_tenant_id, names):
            try:
                kept = self.read_erasure(name)
            except SignedSizesError as error:
                kept_erasures.unreadable[name] = error
                continue
            if kept is not None and kept[2]:
                kept_erasures.erased[name] = kept[:2]
        return kept_erasures

    async def read_async(self, tenant_id: str) -> tuple[int, bytes] | None:
        return await asyncio.to_thread(self.read, tenant_id)

    async def write_async(self, tenant_id: str, size: int, root: bytes) -> None:
        await asyncio.to_thread(self.write, tenant_id, size, root)


def _replace(path: Path, text: str) -> None:
    """`path` holding `text`, durably: written whole to a temporary file,
    fsync'ed, renamed over it, and its directory fsync'ed."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    try:
        descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            _write_all(descriptor, text.encode())
            os.fsync(descriptor)
        finally:
            os.close(descriptor)
        os.replace(temporary, path)
    except OSError as error:
        # Not left behind: a full disk would gather one at each attempt.
        with contextlib.suppress(OSError):
            temporary.unlink()
        raise SignedSizesError(f"{path}: {error}") from error
    try:
        _fsync_directory(path.parent)
    except OSError as error:
        raise SignedSizesError(f"{path}: {error}") from error


def _read_text(path: Path, judged: Callable[[Path, int], None]) -> str | None:
    """The small file's text (its first _MAX_FILE_BYTES), None if there is
    none; SignedSizesError naming it if it cannot be read as ASCII, or if
    `judged` (given its descriptor) refuses it."""
    # os.open and os.read rather than Path.open (a buffered file object): a
    # third of the time a file, which `key restored` pays once a tenant.
    try:
        descriptor = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return None
    except OSError as error:
        raise SignedSizesError(f"{path}: {error}") from error
    try:
        judged(path, descriptor)
        data = b""
        while len(data) < _MAX_FILE_BYTES:
            piece = os.read(descriptor, _MAX_FILE_BYTES - len(data))
            if not piece:
                break
            data += piece
        return data.decode("ascii")
    except (OSError, UnicodeDecodeError) as error:
        raise SignedSizesError(f"{path}: {error}") from error
    finally:
        os.close(descriptor)


def _fsync_directory(directory: Path) -> None:
    """What `directory` lists made durable (a file renamed or made in it)."""
    handle = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(handle)
    finally:
        os.close(handle)


def _write_all(descriptor: int, data: bytes) -> None:
    """All of `data`, or OSError: a disk nearly full (or a network file
    system) takes part of a write without failing it, and what it took,
    fsync'ed, read as a size and a root cut short."""
    while data:
        written = os.write(descriptor, data)
        if written <= 0:
            raise OSError(errno.ENOSPC, "nothing written")
        data = data[written:]


DIR_NAME = "signed-checkpoints"


def open_signed_sizes(settings: Settings, key: Verifier) -> SignedSizes:
    """`key`'s sizes in SEALTRAIL_SIGNED_CHECKPOINTS_DIR, else the data dir's."""
    return SignedSizes.open(settings.signed_checkpoints_dir or settings.data_dir / DIR_NAME, key)
