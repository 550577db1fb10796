"""An export is written to a temporary file beside its target and renamed only
once it matches its manifest: whatever fails, nothing that looks like an export
is left, and no temporary file either."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import stat
import threading
from pathlib import Path
from typing import Any

import pytest

from sealtrail import AsyncAuditClient, AuditClient, ExportError
from sealtrail._export import ExportFile
from sealtrail.v1 import audit_service_pb2 as pb


def _chunk(data: bytes) -> pb.ExportResponse:
    return pb.ExportResponse(chunk=data, rows_so_far=1)


def _manifest(data: bytes) -> pb.ExportResponse:
    manifest = pb.ExportManifest(
        row_count=1, byte_count=len(data), sha256=hashlib.sha256(data).digest()
    )
    return pb.ExportResponse(manifest=manifest)


class _FullDisk:
    """The file as a full disk leaves it: what it buffered cannot be written."""

    def __init__(self, file: Any) -> None:
        self._file = file
        self.closed = False

    def write(self, data: bytes) -> int:
        return len(data)  # buffered

    def close(self) -> None:
        self._file.close()
        self.closed = True
        raise OSError(28, "No space left on device")


def test_a_whole_export_is_renamed_into_place(tmp_path: Path) -> None:
    with ExportFile(tmp_path / "out.csv") as target:
        target.receive(_chunk(b"a,b\n"))
        target.receive(_manifest(b"a,b\n"))
    assert [p.name for p in tmp_path.iterdir()] == ["out.csv"]
    assert (tmp_path / "out.csv").read_bytes() == b"a,b\n"


def test_an_export_without_its_manifest_leaves_nothing(tmp_path: Path) -> None:
    with pytest.raises(ExportError), ExportFile(tmp_path / "out.csv") as target:
        target.receive(_chunk(b"a,b\n"))
        target.result()
    assert list(tmp_path.iterdir()) == []


def test_a_file_that_cannot_be_closed_leaves_no_temporary_file(tmp_path: Path) -> None:
    """Closing flushes what was buffered, and fails on a full disk: the
    temporary file, perhaps of gigabytes, was left on that full disk."""
    with pytest.raises(OSError, match="No space"), ExportFile(tmp_path / "out.csv") as target:
        target._file = _FullDisk(target._file)  # type: ignore[assignment]
        target.receive(_chunk(b"a,b\n"))
        raise ConnectionError("the export was cut off")
    assert list(tmp_path.iterdir()) == []


def test_an_export_has_the_mode_a_plain_write_would_give_it(tmp_path: Path) -> None:
    """A new file gets 0666 less the umask, and a file replaced keeps its
    mode: the temporary file's 0600 was renamed into place, so an export to a
    shared directory was readable by its writer only (helper-137)."""
    old = os.umask(0o027)
    try:
        with ExportFile(tmp_path / "new.csv") as target:
            target.receive(_manifest(b""))
        (tmp_path / "kept.csv").write_bytes(b"old")
        (tmp_path / "kept.csv").chmod(0o604)
        with ExportFile(tmp_path / "kept.csv") as target:
            target.receive(_chunk(b"a,b\n"))
            target.receive(_manifest(b"a,b\n"))
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "new.csv").stat().st_mode) == 0o640
    assert stat.S_IMODE((tmp_path / "kept.csv").stat().st_mode) == 0o604
    assert (tmp_path / "kept.csv").read_bytes() == b"a,b\n"


def test_an_export_replacing_a_private_file_is_never_readable_by_others(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The temporary file was created 0666 less the umask, then given the
    replaced file's 0600: readable by anyone in between, as the export was
    written (helper-147). Its mode as created is looked at here."""
    created: list[int] = []
    chmod = os.chmod

    def watched(path: Any, mode: int, **options: Any) -> None:
        if Path(path).name.startswith(".private.ndjson."):  # the temporary file
            created.append(stat.S_IMODE(os.stat(path).st_mode))
        chmod(path, mode, **options)

    monkeypatch.setattr(os, "chmod", watched)
    (tmp_path / "private.ndjson").write_bytes(b"old")
    (tmp_path / "private.ndjson").chmod(0o600)
    old = os.umask(0o022)
    try:
        with ExportFile(tmp_path / "private.ndjson") as target:
            target.receive(_manifest(b""))
    finally:
        os.umask(old)
    assert created and all(mode & ~0o600 == 0 for mode in created), [oct(m) for m in created]


def test_an_export_kept_for_an_auditor_has_its_manifest_beside_it(tmp_path: Path) -> None:
    data = b"a,b\n"
    manifest = pb.ExportManifest(
        row_count=1,
        byte_count=len(data),
        sha256=hashlib.sha256(data).digest(),
        tree_size=7,
        first_seq=3,
        last_seq=3,
        root_hash=bytes(range(32)),
        checkpoint="origin/t\n7\nroot\n\n\u2014 origin sig\n",
        export_event_id="0193",
        media_type="text/csv",
    )
    with ExportFile(tmp_path / "out.csv", manifest_beside=True) as target:
        target.receive(_chunk(data))
        target.receive(pb.ExportResponse(manifest=manifest))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.csv", "out.csv.manifest.json"]
    written = json.loads((tmp_path / "out.csv.manifest.json").read_text(encoding="utf-8"))
    assert written == {
        "format": "sealtrail-export-manifest",
        "version": 1,
        "file": "out.csv",
        "media_type": "text/csv",
        "row_count": 1,
        "byte_count": 4,
        "sha256": hashlib.sha256(data).hexdigest(),
        "first_seq": 3,
        "last_seq": 3,
        "tree_size": 7,
        "root_hash": base64.b64encode(bytes(range(32))).decode(),
        "checkpoint": manifest.checkpoint,
        "export_event_id": "0193",
    }


def test_an_export_whose_manifest_cannot_be_written_leaves_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Not the file without what proves it, nor a temporary file."""
    with ExportFile(tmp_path / "out.csv", manifest_beside=True) as target:
        target.receive(_chunk(b"a,b\n"))
        (tmp_path / "out.csv.manifest.json").mkdir()  # the name taken by a directory
        with pytest.raises(OSError):
            target.receive(_manifest(b"a,b\n"))
    assert [p.name for p in tmp_path.iterdir()] == ["out.csv.manifest.json"]


def test_an_export_whose_file_cannot_take_its_name_leaves_no_manifest_either(
    tmp_path: Path,
) -> None:
    """The manifest was kept first, then the content renamed: a rename that
    failed left a manifest of an export that is not there, beside whatever
    has the name (helper-197's suspicion)."""
    (tmp_path / "out.csv").mkdir()  # the name taken by a directory
    with ExportFile(tmp_path / "out.csv", manifest_beside=True) as target:
        target.receive(_chunk(b"a,b\n"))
        with pytest.raises(OSError):
            target.receive(_manifest(b"a,b\n"))
    assert [p.name for p in tmp_path.iterdir()] == ["out.csv"]


def test_a_re_export_whose_manifest_cannot_take_its_name_puts_the_old_file_back(
    tmp_path: Path,
) -> None:
    """The file being replaced is moved aside before the new manifest takes
    its name: a manifest that then cannot, the old file is back as it was."""
    (tmp_path / "out.csv").write_bytes(b"old\n")
    with ExportFile(tmp_path / "out.csv", manifest_beside=True) as target:
        target.receive(_chunk(b"a,b\n"))
        (tmp_path / "out.csv.manifest.json").mkdir()  # the name taken by a directory
        with pytest.raises(OSError):
            target.receive(_manifest(b"a,b\n"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.csv", "out.csv.manifest.json"]
    assert (tmp_path / "out.csv").read_bytes() == b"old\n"


async def test_an_export_in_a_format_unknown_is_refused_naming_the_formats(
    tmp_path: Path,
) -> None:
    """`format="CSV"` raised KeyError: 'CSV', where an unknown query order is
    a ValueError naming the ones known (helper-197's suspicion). Refused
    before any call, leaving nothing; the async client alike."""
    target = tmp_path / "events.csv"
    with (
        AuditClient("127.0.0.1:9", token="t", max_attempts=1) as client,
        pytest.raises(ValueError, match=r"format: expected 'csv', 'ndjson' or 'json', got 'CSV'"),
    ):
        client.export(target, format="CSV")  # type: ignore[arg-type]
    async with AsyncAuditClient("127.0.0.1:9", token="t", max_attempts=1) as aclient:
        with pytest.raises(ValueError, match=r"format: expected .* got 'CSV'"):
            await aclient.export(target, format="CSV")  # type: ignore[arg-type]
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("interrupted_at", [1, 2, 3])
def test_a_re_export_interrupted_between_its_renames_keeps_the_old_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, interrupted_at: int
) -> None:
    """A Ctrl-C (KeyboardInterrupt, not an OSError) between the renames of an
    export over an earlier one deleted the old file, moved aside, where a
    kill keeps it and a failed step puts it back: the previous export lost,
    its manifest left alone or the new one beside nothing. Now it is put
    back as for a failed step; once the new file has its name, the new pair
    stands."""
    out = tmp_path / "out.csv"
    out.write_bytes(b"old\n")
    (tmp_path / "out.csv.manifest.json").write_text('{"old": true}\n', encoding="utf-8")
    renames = 0
    real_replace = os.replace

    # This thread's renames alone: a test server's loop in this process renames
    # its kept checkpoints meanwhile, and an interrupt raised there ended that
    # server's loop for every later test on the worker (ci-s59a).
    mine = threading.get_ident()

    def replace(source: Any, target: Any) -> None:
        nonlocal renames
        if threading.get_ident() != mine:
            return real_replace(source, target)
        renames += 1
        if renames == interrupted_at:
            raise KeyboardInterrupt
        real_replace(source, target)

    monkeypatch.setattr(os, "replace", replace)
    real_rename = os.rename

    def rename(source: Any, target: Any) -> None:  # the old file moved aside, or back
        nonlocal renames
        if Path(source) == out and threading.get_ident() == mine:
            renames += 1
            if renames == interrupted_at:
                raise KeyboardInterrupt
        real_rename(source, target)

    monkeypatch.setattr(os, "rename", rename)
    with ExportFile(out, manifest_beside=True) as target:
        target.receive(_chunk(b"a,b\n"))
        with pytest.raises(KeyboardInterrupt):
            target.receive(_manifest(b"a,b\n"))
    names = sorted(p.name for p in tmp_path.iterdir())
    assert out.read_bytes() == b"old\n", names
    # The old manifest, or none (the new one removed): never one beside a file it does not describe.
    assert names in (["out.csv"], ["out.csv", "out.csv.manifest.json"]), names
    kept = tmp_path / "out.csv.manifest.json"
    assert not kept.exists() or json.loads(kept.read_text(encoding="utf-8")) == {"old": True}


def test_a_re_export_interrupted_once_its_file_has_its_name_keeps_the_new_pair(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Interrupted just after the new file took its name, the new pair stands:
    neither the manifest removed from beside it nor the old file back."""
    out = tmp_path / "out.csv"
    out.write_bytes(b"old\n")
    real_replace = os.replace

    def replace(source: Any, target: Any) -> None:
        real_replace(source, target)
        if Path(target) == out:
            raise KeyboardInterrupt

    monkeypatch.setattr(os, "replace", replace)
    with ExportFile(out, manifest_beside=True) as target:
        target.receive(_chunk(b"a,b\n"))
        with pytest.raises(KeyboardInterrupt):
            target.receive(_manifest(b"a,b\n"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.csv", "out.csv.manifest.json"]
    assert out.read_bytes() == b"a,b\n"
    kept = json.loads((tmp_path / "out.csv.manifest.json").read_text(encoding="utf-8"))
    assert kept["sha256"] == hashlib.sha256(b"a,b\n").hexdigest()


@pytest.mark.parametrize(
    "failure", [PermissionError(1, "Operation not permitted"), KeyboardInterrupt()]
)
def test_an_export_whose_temporary_file_cannot_be_set_up_leaves_none(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, failure: BaseException
) -> None:
    """The temporary file was made, then given the mode of the file it
    replaces: a chmod refused (a mount that keeps no modes) or a Ctrl-C
    between the two left it, open, for good: no ExportFile was made to
    remove it."""
    out = tmp_path / "out.csv"
    out.write_bytes(b"old\n")

    def chmod(*args: Any, **kwargs: Any) -> None:
        raise failure

    monkeypatch.setattr(os, "chmod", chmod)
    with pytest.raises(type(failure)):
        ExportFile(out)
    assert [p.name for p in tmp_path.iterdir()] == ["out.csv"]


def _special_files(tmp_path: Path) -> list[Path]:
    """Names that are no regular file: a pipe, a name linked to one (as
    /dev/stdout is to the process's output), and where this may make one (as
    root), a character device as /dev/null is."""
    os.mkfifo(tmp_path / "pipe")
    (tmp_path / "stdout").symlink_to(tmp_path / "pipe")
    names = [tmp_path / "pipe", tmp_path / "stdout"]
    try:
        os.mknod(tmp_path / "null", stat.S_IFCHR | 0o666, os.makedev(1, 3))
    except PermissionError:
        pass
    else:
        names.append(tmp_path / "null")
    return names


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no named pipes")
def test_an_export_to_a_device_or_a_pipe_is_refused_and_leaves_it_be(tmp_path: Path) -> None:
    """`sealtrail export -o /dev/null` (a trial run) or `-o /dev/stdout` (to
    pipe it on) renamed the checked export over the name: /dev/null, as root,
    became a regular file holding the audit events, readable and writable by
    everyone (it took the device's mode), with a manifest beside it in /dev;
    /dev/stdout's link was replaced and nothing reached the output. It is
    refused before anything is written, naming the file."""
    names = _special_files(tmp_path)
    before = {path: os.lstat(path) for path in names}
    for path in names:
        for beside in (False, True):
            with pytest.raises(ExportError, match="not a regular file") as refused:
                ExportFile(path, manifest_beside=beside)
            assert str(path) in str(refused.value)
    assert sorted(tmp_path.iterdir()) == sorted(names)  # no temporary file, no manifest
    for path, was in before.items():
        now = os.lstat(path)
        assert (now.st_mode, now.st_ino, now.st_rdev) == (was.st_mode, was.st_ino, was.st_rdev)
