"""Who may read and write the files the server's secrets and integrity rest
on: checked at start, each refusal one line naming the file, its mode and
owner, and the fix (docs/operations.md, File permissions).

The files the server writes itself are private already (keys 0600, the
signed-checkpoints directories 0700); these checks are for what an operator
provides, or what was copied, restored or mounted since.

A secret file (a key, a TLS private key, the development token) is judged
by what it names (`os.stat` follows a symlink: Kubernetes mounts each secret
as a link into its `..data` directory), as OpenSSH and PostgreSQL judge a
private key:

- owned by another user than the server's, root aside: refused (that user
  can replace it, or make it readable);
- writable by its group or others: refused, always (whoever writes the
  signing key signs in the deployment's name; the secrets or redaction key,
  what the deployment seals and hashes);
- readable by others, or by its group where the server's user owns it:
  refused, unless SEALTRAIL_ALLOW_READABLE_SECRETS, which turns each such
  refusal into one warning at start (never a writable one's).

Decided: no path is trusted for being a path (`/run/secrets`, `/var/run/
secrets`): a directory an orchestrator mounts read-only is not what keeps
others from reading a key, its mode is, and every orchestrator sets that
(Kubernetes `defaultMode: 0400`, Docker `mode: 0400`). A file root owns may
be readable by its group (0640, 0440), as PostgreSQL takes its `ssl_key_file`:
root gave that group read access deliberately (Debian's `ssl-cert`), and it
is how a secret reaches a process that does not run as root (Kubernetes
makes a secret volume `root:<fsGroup>` 0440; a 0400 file of root's, that
process could not read). The escape hatch is for the rest (Kubernetes'
default mode, 0644), named so that a deployment opts into it knowingly.

What the signing key signed (SEALTRAIL_SIGNED_CHECKPOINTS_DIR, ADR 0080) is
no secret, but whoever can rewrite it can erase what was signed and so let a
database restored from an older backup be signed again: that directory, and
every directory (one a key) and file under it, must be owned by the server's
user or root, and writable by neither group nor others (a directory with the
sticky bit aside, whose entries only their owners may replace).

Decided: where each is checked. The directory, each key's directory in it
and the key's own directories (`.erasures`, `.purges`, `.locks`) are few,
and checked when the key's directory is first used (at start, and by
`tenant erase`), before the first signature. A tenant's file is checked
where it is read, before each signature that rests on it (`kept_refusal` on
the descriptor `signed_sizes` opens to read it: one fstat, no second lookup
of the path): a file refused refuses that tenant's signatures, said once in
the log, and the others are served. Walked at start, every file was stat'ed
before the server served (1.7 s at 50,000 tenants, every start); checked in
the background batches that read them after start, a file loosened after its
tenant's batch went unseen, and a tenant signed before its batch came went
unchecked. Read before every signature, none is trusted unchecked.

And the directory each of these is in (only that one, not up to `/`): a
data dir, the directory of a configured key file, the directory holding the
signed-checkpoints directory. Whoever may write in it (group or others,
without the sticky bit), or owns it (another user than the server's or
root), can move the file or directory aside and put their own in its place:
refused alike (`chmod go-w DIR`).
"""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path
from typing import Final

log = logging.getLogger(__name__)

# The setting that lets secret files be readable by group or others.
ALLOW_READABLE = "SEALTRAIL_ALLOW_READABLE_SECRETS"


def _mode(info: os.stat_result) -> str:
    return f"{stat.S_IMODE(info.st_mode):04o}"


def _owner(info: os.stat_result) -> str | None:
    """Why the file's owner may not own it (None if they may)."""
    if info.st_uid in (os.geteuid(), 0):
        return None
    return f"owned by uid {info.st_uid}, not the server's user (uid {os.geteuid()}) nor root"


def _named(path: Path, named: str) -> str:
    """`named` (the setting, or what the file is), the path, and what a link names."""
    shown = f"{named}={path}" if named.startswith("SEALTRAIL_") else f"{path} ({named})"
    if path.is_symlink():
        shown += f" (a link to {path.resolve()})"
    return shown


def check_secret_file(path: Path, *, named: str, allow_readable: bool) -> None:
    """SystemExit if the secret file at `path` (`named`: its setting, or what
    it is) may be replaced or read by another user than the server's; a
    warning instead where it is readable and `allow_readable`. A file that
    is not there or cannot be stat'ed is left to its reader to name."""
    try:
        info = path.stat()
    except OSError:
        return
    if not stat.S_ISREG(info.st_mode):
        return  # a directory, a device: its reader says what it is
    for directory in _directories_of(path):
        if (why := _directory_refusal(directory)) is not None:
            raise SystemExit(f"{_named(path, named)}: its directory {directory} {why}")
    mode = _mode(info)
    if (owner := _owner(info)) is not None:
        raise SystemExit(
            f"{_named(path, named)}: {owner}, who can replace it; make it the server's user's"
            f" (chown {os.geteuid()} {path}) and chmod 600 {path}"
        )
    if info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise SystemExit(
            f"{_named(path, named)}: writable by group or others (mode {mode}), who can"
            f" replace it; chmod 600 {path}"
        )
    # A file root owns (and the server's user does not) may be its group's to
    # read: 0640, 0440 (the module's docstring says why).
    group_may_read = info.st_uid == 0 and os.geteuid() != 0
    readable = stat.S_IROTH | (0 if group_may_read else stat.S_IRGRP)
    if not info.st_mode & readable:
        return
    if allow_readable:
        log.warning(
            "%s: readable by group or others (mode %s), who can read the secret; taken as"
            " %s=1 allows: chmod 600 %s (or mount it with mode 0400) to end this warning",
            _named(path, named),
            mode,
            ALLOW_READABLE,
            path,
        )
        return
    raise SystemExit(
        f"{_named(path, named)}: readable by group or others (mode {mode}), who can read the"
        f" secret; chmod 600 {path} (an orchestrator's mount: mode 0400, docs/operations.md,"
        f" File permissions), or set {ALLOW_READABLE}=1 to start all the same"
    )


def check_key_read(
    *,
    text: str | None,
    file: Path | None,
    data_dir: Path,
    name: str,
    setting: str,
    what: str,
    allow_readable: bool,
) -> None:
    """For an operator command that reads a key outside a start (`key`,
    `token create`, `tenant release-hold`, `sink`): the file it reads, `file`
    (`setting`_FILE) or else the data dir's `name` (`what`, as a start names
    it), and the data dir, checked as a start checks them: SystemExit naming
    what another user may replace or read; a warning instead for one readable
    where `allow_readable` (SEALTRAIL_ALLOW_READABLE_SECRETS). Nothing where
    the key is given as text (`text`, the setting's), which is read first."""
    if text:
        return
    check_data_dir(data_dir)
    check_secret_file(
        file or data_dir / name,
        named=f"{setting}_FILE" if file else f"the data dir's {what}",
        allow_readable=allow_readable,
    )


def _directories_of(path: Path) -> list[Path]:
    """The directory `path` is in, and, for a link, the one what it names is
    in: whoever may replace either replaces what is read."""
    directories = [path.absolute().parent]
    if path.is_symlink():
        target = path.resolve().parent
        if target not in directories:
            directories.append(target)
    return directories


def _directory_refusal(directory: Path, *, moved: str = "it") -> str | None:
    """Why another user than the server's may move what `directory` holds
    (`moved`) aside and put their own in its place, said after the
    directory's name; None if no one may, or it cannot be stat'ed (its
    reader names that)."""
    try:
        info = directory.stat()
    except OSError:
        return None
    if (owner := _owner(info)) is not None:
        return (
            f"is {owner}, who can move {moved} aside and put their own;"
            f" chown {os.geteuid()} {directory} and chmod go-w {directory}"
        )
    if info.st_mode & (stat.S_IWGRP | stat.S_IWOTH) and not info.st_mode & stat.S_ISVTX:
        return (
            f"is writable by group or others (mode {_mode(info)}, no sticky bit), who can"
            f" move {moved} aside and put their own; chmod go-w {directory}"
        )
    return None


def check_data_dir(data_dir: Path) -> None:
    """SystemExit if another user than the server's may replace the keys the
    data dir holds, or will (`_directory_refusal`)."""
    if (why := _directory_refusal(data_dir, moved="its keys")) is not None:
        raise SystemExit(f"SEALTRAIL_DATA_DIR={data_dir} {why}")


# The key's own directories, under its directory in the signed-checkpoints one.
KEY_SUBDIRECTORIES: Final = (".erasures", ".purges", ".locks")


def check_kept_directory(directory: Path, key_directory: Path, *, named: str) -> None:
    """SystemExit naming the first of the directory `directory` is in,
    `directory`, each entry of `directory` (each key's directory) and
    `key_directory`'s own directories (KEY_SUBDIRECTORIES) that another user
    than the server's may rewrite: owned by another user (root aside), or
    writable by group or others (a directory with the sticky bit aside). A
    tenant's file is checked where it is read (`kept_refusal`); one not
    there, or that cannot be listed, is left to its reader to name."""
    try:
        info = directory.stat()
    except OSError:
        return
    parent = directory.absolute().parent
    if (why := _directory_refusal(parent)) is not None:
        raise SystemExit(f"{named}={directory}: its directory {parent} {why}")
    _check_kept(directory, info, named=named)
    try:
        entries = [Path(entry.path) for entry in os.scandir(directory)]
    except OSError:
        return
    for path in [*entries, *(key_directory / name for name in KEY_SUBDIRECTORIES)]:
        try:
            info = path.stat()  # what a link names
        except OSError:
            continue  # not there, a link to nothing, removed meanwhile
        _check_kept(path, info, named=named)


def _check_kept(path: Path, info: os.stat_result, *, named: str) -> None:
    if (why := kept_refusal(path, info, named=named)) is not None:
        raise SystemExit(why)


def kept_refusal(path: Path, info: os.stat_result, *, named: str) -> str | None:
    """Why another user than the server's may rewrite `path` (of `info`), a
    directory or file of the signed-checkpoints directory; None if none may."""
    is_dir = stat.S_ISDIR(info.st_mode)
    fix = f"chmod {'700' if is_dir else '600'} {path}"
    if (owner := _owner(info)) is not None:
        return (
            f"{named}: {path} is {owner}, who can erase what the signing key signed;"
            f" chown {os.geteuid()} {path} and {fix}"
        )
    writable = info.st_mode & (stat.S_IWGRP | stat.S_IWOTH)
    if writable and not (is_dir and info.st_mode & stat.S_ISVTX):
        return (
            f"{named}: {path} is writable by group or others (mode {_mode(info)}), who can"
            f" erase what the signing key signed; {fix}"
        )
    return None
