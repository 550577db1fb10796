"""What the signing key signed, kept outside the database (ADR 0080)."""

from __future__ import annotations

import fcntl
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from sealtrail.tlog import generate_signer_key
from sealtrail_server.integrity import signed_sizes as signed_sizes_module
from sealtrail_server.integrity.signed_sizes import KeptErasures, SignedSizes, SignedSizesError

KEY = generate_signer_key("sealtrail.test/log").verifier


def test_the_largest_size_stays_and_each_key_keeps_its_own(tmp_path: Path) -> None:
    signed = SignedSizes.open(tmp_path, KEY)
    assert signed.read("acme") is None
    signed.write("acme", 10, b"a" * 32)
    signed.write("acme", 7, b"b" * 32)  # a process behind another: the larger stays
    assert signed.read("acme") == (10, b"a" * 32)
    signed.write("acme", 12, b"c" * 32)
    assert SignedSizes.open(tmp_path, KEY).read("acme") == (12, b"c" * 32)  # a restart
    assert signed.tenants() == ["acme"]
    other = SignedSizes.open(tmp_path, generate_signer_key("sealtrail.test/log").verifier)
    assert other.read("acme") is None
    # No temporaries; each write took the tenant's lock beside.
    assert sorted(p.name for p in (tmp_path / KEY.key_id.hex()).iterdir()) == [".locks", "acme"]


def test_a_write_waits_for_the_tenants_lock_and_fails_past_its_wait(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another process amid a write of the tenant's file (frozen there, say)
    holds its lock: a write waits for it, LOCK_WAIT_SECONDS at most, then
    fails rather than replace what the other may be writing."""
    monkeypatch.setattr(signed_sizes_module, "LOCK_WAIT_SECONDS", 0.3)
    signed = SignedSizes.open(tmp_path, KEY)
    signed.write("acme", 10, b"a" * 32)
    lock = tmp_path / KEY.key_id.hex() / ".locks" / "acme"
    with lock.open("a") as other:  # another open file: flock refuses this one's
        fcntl.flock(other, fcntl.LOCK_EX)
        started = time.monotonic()
        with pytest.raises(SignedSizesError, match="held by another process"):
            signed.write("acme", 12, b"c" * 32)
        assert time.monotonic() - started >= 0.3
        signed.write("beta", 3, b"b" * 32)  # another tenant's is not held up
        threading.Timer(0.1, fcntl.flock, (other, fcntl.LOCK_UN)).start()
        signed.write("acme", 12, b"c" * 32)  # once let go
    assert signed.read("acme") == (12, b"c" * 32)


def test_a_kept_size_that_cannot_be_read_or_written_is_an_error(tmp_path: Path) -> None:
    signed = SignedSizes.open(tmp_path, KEY)
    (tmp_path / KEY.key_id.hex() / "acme").write_text("not a size\n")
    with pytest.raises(SignedSizesError, match="holds no size and root"):
        signed.read("acme")
    (tmp_path / KEY.key_id.hex() / "beta").mkdir()
    with pytest.raises(SignedSizesError):
        signed.read("beta")
    with pytest.raises(SignedSizesError):
        signed.write("beta", 3, b"r" * 32)


def test_a_directory_that_cannot_be_made_stops_the_start(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    with pytest.raises(SystemExit, match="SEALTRAIL_SIGNED_CHECKPOINTS_DIR"):
        SignedSizes.open(tmp_path / "file", KEY)


def test_what_the_key_stated_of_a_purge_is_kept_and_never_stated_otherwise(
    tmp_path: Path,
) -> None:
    signed = SignedSizes.open(tmp_path, KEY)
    assert signed.keep_purge("acme", "p-1", "5 d5") is None
    assert signed.keep_purge("acme", "p-1", "5 d5") is None  # the same again: a retry
    assert signed.keep_purge("acme", "p-1", "3 d3") == "5 d5"
    assert signed.keep_purge("beta", "p-1", "3 d3") is None  # another log
    assert signed.tenants() == []  # no tenant's name
    kept = tmp_path / KEY.key_id.hex() / ".purges" / "acme"
    with kept.open("a") as file:
        file.write("p-2 7 d")  # torn: never fsync'ed, so never signed
    assert signed.keep_purge("acme", "p-2", "2 d2") is None
    assert signed.keep_purge("acme", "p-2", "7 d7") == "2 d2"
    assert SignedSizes.open(tmp_path, KEY).keep_purge("acme", "p-1", "3 d3") == "5 d5"


_FILL_THE_DISK = """
import resource, sys
from pathlib import Path
from sealtrail.tlog import Verifier
from sealtrail_server.integrity.signed_sizes import KeptErasures, SignedSizes, SignedSizesError
signed = SignedSizes.open(Path(sys.argv[1]), Verifier.parse(sys.argv[2]))
# What the disk can still take: {room} bytes more of any file (a short write,
# then EFBIG, as a full disk gives ENOSPC).
resource.setrlimit(resource.RLIMIT_FSIZE, ({room}, {room}))
try:
    {call}
except SignedSizesError as error:
    print("refused:", error)
else:
    print("kept")
"""


@pytest.mark.parametrize("room", [0, 19])
def test_a_size_the_disk_cannot_take_whole_is_not_kept_and_leaves_nothing_behind(
    tmp_path: Path, room: int
) -> None:
    """A disk that takes part of the line (a short write: the call does not
    fail) kept a size with a root cut short: a 12-byte root at size 10 that
    no log holds, refused for ever as a restore. One that takes none of it
    left its temporary file, one more at each attempt."""
    script = _FILL_THE_DISK.format(room=room, call='signed.write("acme", 10, b"r" * 32)')
    done = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path), KEY.text()],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert done.stdout.startswith("refused:"), done.stdout
    assert SignedSizes.open(tmp_path, KEY).read("acme") is None
    assert [p.name for p in (tmp_path / KEY.key_id.hex()).iterdir()] == [".locks"]


def test_a_purge_the_disk_cannot_take_whole_is_not_kept(tmp_path: Path) -> None:
    """A line appended in part is no statement kept: the purge is not to be
    signed (the call fails), and the line counts for nothing."""
    call = 'signed.keep_purge("acme", "p-1", "5 " + "d" * 64)'
    done = subprocess.run(
        [sys.executable, "-c", _FILL_THE_DISK.format(room=40, call=call), str(tmp_path),
         KEY.text()],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )  # fmt: skip
    assert done.stdout.startswith("refused:"), done.stdout
    assert SignedSizes.open(tmp_path, KEY).keep_purge("acme", "p-1", "3 d3") is None


def test_an_erasure_is_kept_about_to_be_signed_then_released(tmp_path: Path) -> None:
    signed = SignedSizes.open(tmp_path, KEY)
    assert signed.read_erasure("acme") is None
    signed.write_erasure("acme", 5, b"r" * 32, released=False)
    assert signed.read_erasure("acme") == (5, b"r" * 32, False)
    assert signed.erasures() == KeptErasures()  # never released: it refuses nothing
    signed.write_erasure("acme", 5, b"r" * 32, released=True)
    assert SignedSizes.open(tmp_path, KEY).erasures() == KeptErasures({"acme": (5, b"r" * 32)})
    assert signed.tenants() == []


def test_an_erasure_file_that_cannot_be_read_is_said_and_the_others_are_read(
    tmp_path: Path,
) -> None:
    """One file that could not be read was SignedSizesError for them all:
    a start checked no tenant's erasure (helper-422). Each is said, naming
    its file; the others read."""
    signed = SignedSizes.open(tmp_path, KEY)
    signed.write_erasure("acme", 5, b"r" * 32, released=True)
    signed.write_erasure("beta", 7, b"s" * 32, released=False)
    erasures = signed.key_directory / ".erasures"
    (erasures / "cut").write_text("5 q1X")
    (erasures / "garbled").write_bytes(b"5 \xff erased\n")
    (erasures / "a-directory").mkdir()
    writable = erasures / "writable"
    writable.write_text(f"5 {'A' * 44} erased\n")
    writable.chmod(0o620)
    (erasures / ".acme.1.ab.tmp").write_text("not a tenant's")  # a write's, left
    kept = signed.erasures()
    assert kept.erased == {"acme": (5, b"r" * 32)}
    assert sorted(kept.unreadable) == ["a-directory", "cut", "garbled", "writable"]
    for name, error in kept.unreadable.items():
        assert str(erasures / name) in str(error), error
    assert "holds no erasure: '5 q1X'" in str(kept.unreadable["cut"])
    assert "writable by group or others (mode 0620)" in str(kept.unreadable["writable"])


def test_a_file_that_cannot_be_read_is_said_once_for_each_state_it_is_in(tmp_path: Path) -> None:
    """A broken erasure's file (cut short, say) was SignedSizesError not
    `repeated` at each read, and the checkpointer logged it at each attempt to
    sign, every few seconds, for as long as it stayed broken. Said once for
    each state it is in (`repeated` after); again when its state changes, and
    when it reads once more (`mended`), as are a tenant's signed size's."""
    signed = SignedSizes.open(tmp_path, KEY)
    signed.write_erasure("acme", 5, b"r" * 32, released=True)
    signed.write("acme", 5, b"r" * 32)
    erasure = signed.key_directory / ".erasures" / "acme"
    size = signed.key_directory / "acme"

    def repeated(read: Callable[[str], object]) -> list[bool]:
        said = []
        for _ in range(3):
            with pytest.raises(SignedSizesError) as refused:
                read("acme")
            said.append(refused.value.repeated)
        return said

    for path, read in ((erasure, signed.read_erasure), (size, signed.read)):
        path.write_text("5 q1X")  # cut short
        assert repeated(read) == [False, True, True]
        path.write_text("5 q1X erase")  # another state: said again, once
        assert repeated(read) == [False, True, True]
        assert signed.mended() == []
        path.write_text(f"5 {'cg' * 22} erased\n" if path == erasure else f"5 {'cg' * 22}\n")
        assert read("acme") is not None
        assert signed.mended() == [path]  # once
        assert read("acme") is not None
        assert signed.mended() == []
        path.write_text("5 q1X")  # broken again: said again
        assert repeated(read)[0] is False
