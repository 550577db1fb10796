"""A start refuses secret files another user than the server's may read or
replace, and a signed-checkpoints directory another user may rewrite, in
one line naming the file, its mode and the fix (file_modes.py,
docs/operations.md "File permissions"). Nothing checked them: a signing key
readable by every local user let any of them forge checkpoints, and a
signed-checkpoints directory writable by them let them erase what the key
signed, and so have a rolled-back database signed (helper-412)."""

from __future__ import annotations

import asyncio
import base64
import logging
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from sealtrail import AuditClient, UnavailableError
from sealtrail.tlog import Signer
from sealtrail_server import cli
from sealtrail_server.app import Service
from tests.command_output import own_lines
from tests.conftest import (
    REDACTION_SECRET,
    SECRETS_KEY,
    SIGNING_KEY,
    ServerThread,
    run_operator,
)
from tests.private_files import write_private

# The checks come before the database is reached: a closed port will do.
_NO_DATABASE = "postgresql://sealtrail@127.0.0.1:1/sealtrail"
_SETTINGS = ("SIGNING_KEY", "SECRETS_KEY", "REDACTION_KEY", "TLS_KEY")
_AS_ROOT = pytest.mark.skipif(os.geteuid() != 0, reason="only root makes a file another's")
# Another user's uid, for files chowned to them (as root).
_STRANGER = 4242


def _serve(tmp_path: Path, env: dict[str, str | None]) -> Result:
    data_dir = tmp_path / "data"
    data_dir.mkdir(exist_ok=True)
    base: dict[str, str | None] = {
        "SEALTRAIL_DATABASE_URL": _NO_DATABASE,
        "SEALTRAIL_DATA_DIR": str(data_dir),
        "SEALTRAIL_ALLOW_READABLE_SECRETS": None,
    }
    return CliRunner().invoke(cli.main, ["serve"], env={**base, **env})


def _configured(tmp_path: Path, setting: str, mode: int) -> tuple[Path, dict[str, str | None]]:
    """A file of `mode` named by SEALTRAIL_<setting>_FILE (holding no key)."""
    path = write_private(tmp_path / setting.lower(), "c0ffee\n", mode=mode)
    env: dict[str, str | None] = {f"SEALTRAIL_{setting}_FILE": str(path)}
    if setting == "TLS_KEY":
        env["SEALTRAIL_TLS_CERT_FILE"] = str(write_private(tmp_path / "cert", "c0ffee\n"))
    else:
        env[f"SEALTRAIL_{setting}"] = None
    return path, env


def _own_lines(said: str) -> list[str]:
    """The command's lines: its own log lines name file_modes."""
    return own_lines(said, loggers=("sealtrail_server.file_modes",))


def _refused_in_one_line(started: Result) -> str:
    said = started.output
    assert started.exit_code == 1 and "Traceback" not in said, said
    own = _own_lines(said)
    assert len(own) == 1, said
    return own[0] + "\n"


@pytest.mark.parametrize("setting", _SETTINGS)
@pytest.mark.parametrize("mode", [0o644, 0o604, 0o640])
def test_a_secret_file_others_can_read_is_refused_unless_allowed(
    tmp_path: Path, setting: str, mode: int
) -> None:
    """Readable by others, or by its group where the server's user owns it
    (as OpenSSH refuses a private key): refused, naming the fix; with
    SEALTRAIL_ALLOW_READABLE_SECRETS=1 the start goes on to read it."""
    path, env = _configured(tmp_path, setting, mode)
    said = _refused_in_one_line(_serve(tmp_path, env))
    assert said.startswith(
        f"SEALTRAIL_{setting}_FILE={path}: readable by group or others (mode {mode:04o}), "
    ), said
    assert f"chmod 600 {path}" in said and "mode 0400" in said, said
    assert "SEALTRAIL_ALLOW_READABLE_SECRETS=1" in said, said

    allowed = _serve(tmp_path, {**env, "SEALTRAIL_ALLOW_READABLE_SECRETS": "1"})
    warning, refusal = _own_lines(allowed.output)  # on to what the file holds: no key
    assert allowed.exit_code == 1, allowed.output
    assert (
        f"WARNING sealtrail_server.file_modes: SEALTRAIL_{setting}_FILE={path}: readable" in warning
    )
    assert "not a " in refusal or "is not PEM" in refusal, refusal


@pytest.mark.parametrize("setting", _SETTINGS)
@pytest.mark.parametrize("mode", [0o620, 0o602, 0o666])
def test_a_secret_file_others_can_write_is_refused_even_when_readable_is_allowed(
    tmp_path: Path, setting: str, mode: int
) -> None:
    path, env = _configured(tmp_path, setting, mode)
    for allowed in (None, "1"):
        started = _serve(tmp_path, {**env, "SEALTRAIL_ALLOW_READABLE_SECRETS": allowed})
        said = _refused_in_one_line(started)
        assert said.startswith(
            f"SEALTRAIL_{setting}_FILE={path}: writable by group or others (mode {mode:04o}), "
        ), said
        assert said.rstrip().endswith(f"chmod 600 {path}"), said


@pytest.mark.parametrize(
    ("name", "what"),
    [
        ("signing-key", "the data dir's checkpoint signing key"),
        ("secrets-key", "the data dir's secrets key"),
        ("redaction-key", "the data dir's redaction key"),
        ("dev-admin-token", "the development admin token"),
    ],
)
def test_a_secret_file_of_the_data_dir_is_checked_too(tmp_path: Path, name: str, what: str) -> None:
    """Checked whether or not a setting names another key: a data dir's key
    readable by others is given out all the same."""
    (tmp_path / "data").mkdir()
    kept = write_private(tmp_path / "data" / name, "c0ffee\n", mode=0o644)
    said = _refused_in_one_line(_serve(tmp_path, {}))
    assert said.startswith(f"{kept} ({what}): readable by group or others (mode 0644)"), said
    assert f"chmod 600 {kept}" in said, said


def test_a_secret_readable_by_others_serves_when_allowed_with_one_warning(
    migrated_database_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    key_file = write_private(tmp_path / "signing-key", SIGNING_KEY + "\n", mode=0o644)
    caplog.set_level(logging.WARNING, logger="sealtrail_server.file_modes")
    with ServerThread(
        migrated_database_url,
        signing_key=None,
        signing_key_file=key_file,
        allow_readable_secrets=True,
    ) as running:
        assert running.port
    warned = [r.getMessage() for r in caplog.records if r.name == "sealtrail_server.file_modes"]
    assert len(warned) == 1, warned
    assert f"SEALTRAIL_SIGNING_KEY_FILE={key_file}: readable by group or others" in warned[0]
    assert "mode 0644" in warned[0] and f"chmod 600 {key_file}" in warned[0]


def _kubernetes_mount(directory: Path, name: str, text: str, *, mode: int) -> Path:
    """A secret as Kubernetes mounts it: `name` a link to `..data/name`,
    `..data` a link to the directory of this version of the secret."""
    version = directory / "..2026_12_06_22_54_00.123456789"
    version.mkdir(parents=True)
    write_private(version / name, text, mode=mode)
    (directory / "..data").symlink_to(version.name)
    (directory / name).symlink_to(Path("..data") / name)
    return directory / name


def test_a_secret_mounted_as_a_link_is_judged_by_what_it_names(
    migrated_database_url: str, server: ServerThread, tmp_path: Path
) -> None:
    link = _kubernetes_mount(tmp_path / "secrets", "signing-key", SIGNING_KEY + "\n", mode=0o400)
    with ServerThread(migrated_database_url, signing_key=None, signing_key_file=link) as running:
        assert running.port  # 0400 behind two links: served
    target = link.resolve()
    target.chmod(0o444)  # Kubernetes' default mode, near enough
    refused = Service(
        replace(server.settings, signing_key=None, signing_key_file=link),
        database_url=server.settings.database_url,
        owner_database_url=migrated_database_url,
    )
    with pytest.raises(SystemExit) as stopped:
        asyncio.run(refused.start())
    said = str(stopped.value)
    assert said.startswith(
        f"SEALTRAIL_SIGNING_KEY_FILE={link} (a link to {target}): readable by group or"
        " others (mode 0444)"
    ), said


@_AS_ROOT
def test_a_secret_file_another_user_owns_is_refused(tmp_path: Path) -> None:
    path, env = _configured(tmp_path, "SIGNING_KEY", 0o600)
    os.chown(path, _STRANGER, _STRANGER)
    said = _refused_in_one_line(_serve(tmp_path, {**env, "SEALTRAIL_ALLOW_READABLE_SECRETS": "1"}))
    assert said.startswith(
        f"SEALTRAIL_SIGNING_KEY_FILE={path}: owned by uid {_STRANGER}, not the server's user"
        f" (uid {os.geteuid()}) nor root, "
    ), said
    assert f"chown {os.geteuid()} {path}" in said, said


@_AS_ROOT
@pytest.mark.parametrize(("mode", "taken"), [(0o440, True), (0o640, True), (0o444, False)])
def test_a_server_not_root_takes_a_secret_root_lets_its_group_read(mode: int, taken: bool) -> None:
    """As PostgreSQL takes its ssl_key_file, and as Kubernetes mounts a
    secret for a process not run as root (`root:<fsGroup>` 0440): a file of
    root's its group may read is taken; one others may read is not. Checked
    in a process that runs as another user (nobody) once started: only root
    makes that file, and the interpreter is root's."""
    folder = Path(tempfile.mkdtemp(prefix="sealtrail-modes-"))
    try:
        folder.chmod(0o755)
        key = write_private(folder / "signing-key", "c0ffee\n", mode=mode)
        checked = subprocess.run(
            [
                sys.executable,
                "-c",
                "import os, sys; from pathlib import Path;"
                " from sealtrail_server.file_modes import check_secret_file;"
                " os.setegid(65534); os.seteuid(65534);"
                " check_secret_file(Path(sys.argv[1]), named='SEALTRAIL_SIGNING_KEY_FILE',"
                " allow_readable=False)",
                str(key),
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
    finally:
        shutil.rmtree(folder)
    if taken:
        assert checked.returncode == 0, checked.stderr
    else:
        assert checked.returncode == 1, checked.stderr
        assert f"readable by group or others (mode {mode:04o})" in checked.stderr


def _start_refused(server: ServerThread, url: str, signed: Path) -> str:
    refused = Service(
        replace(server.settings, signed_checkpoints_dir=signed),
        database_url=server.settings.database_url,
        owner_database_url=url,
    )
    with pytest.raises(SystemExit) as stopped:
        asyncio.run(refused.start())
    return str(stopped.value)


_KEY_DIR = Signer.parse(SIGNING_KEY).verifier.key_id.hex()
# The tests' signing key is made anew in each test process, so its directory is
# named in the cases as KEY (a test's id must be the same in every process).
_THE_KEY = "KEY"


@pytest.mark.parametrize(
    ("where", "mode"),
    [
        ("", 0o777),  # the directory itself, its key's made in it now
        ("", 0o770),
        (_THE_KEY, 0o707),
        ("0123456789abcdef", 0o775),  # another key's
        (f"{_THE_KEY}/.erasures", 0o757),  # the key's own
        (f"{_THE_KEY}/.locks", 0o770),
    ],
)
def test_a_signed_checkpoints_dir_others_can_rewrite_is_refused(
    server: ServerThread,
    migrated_database_url: str,
    tmp_path: Path,
    where: str,
    mode: int,
) -> None:
    signed = tmp_path / "signed"
    signed.mkdir(mode=0o700)
    where = where.replace(_THE_KEY, _KEY_DIR)
    path = signed / where if where else signed
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    path.chmod(mode)
    said = _start_refused(server, migrated_database_url, signed)
    assert said == (
        f"SEALTRAIL_SIGNED_CHECKPOINTS_DIR: {path} is writable by group or others"
        f" (mode {mode:04o}), who can erase what the signing key signed; chmod 700 {path}"
    ), said


def _signing_refused(
    running: ServerThread, tenant: str, kept: Path, caplog: pytest.LogCaptureFixture
) -> str:
    """What refusing to sign `tenant` answers, asked twice, and the one log
    line naming `kept`; then, the file made the server's alone, it signs."""
    caplog.set_level(logging.ERROR, logger="sealtrail_server.integrity.checkpointer")
    with AuditClient(running.target, token=running.token(tenant), max_attempts=1) as client:
        client.record(action="modes.signed", actor_id="ann")
        answered = []
        for _ in range(2):
            with pytest.raises(UnavailableError) as refused:
                client.get_checkpoint(fresh=True)
            answered.append(refused.value.message)
        assert answered[0] == answered[1], answered
        said = [r.getMessage() for r in caplog.records if str(kept) in r.getMessage()]
        assert len(said) == 1, said  # once, not at each attempt
        kept.chmod(0o600)
        os.chown(kept, os.geteuid(), os.getegid())
        assert client.get_checkpoint(fresh=True).tree_size >= 1
    assert answered[0].startswith(f"refusing to sign sealtrail.test/log/{tenant}: "), answered
    return said[0]


@pytest.mark.parametrize(("where", "mode"), [("", 0o666), (".erasures", 0o620)])
def test_a_tenants_signed_file_others_can_rewrite_refuses_its_signatures_alone(
    migrated_database_url: str,
    tmp_path: Path,
    tenant: str,
    caplog: pytest.LogCaptureFixture,
    where: str,
    mode: int,
) -> None:
    """A tenant's file is checked where it is read, before each signature
    resting on it, not walked at start (1.7 s at 50,000 tenants): the start
    serves, that tenant's checkpoints are refused, UNAVAILABLE, said once in
    the log, until the file is the server's alone again."""
    signed = tmp_path / "signed"
    with ServerThread(migrated_database_url, signed_checkpoints_dir=signed) as running:
        kept = signed / _KEY_DIR / where / tenant
        with AuditClient(running.target, token=running.token(tenant)) as client:
            client.record(action="modes.signed", actor_id="ann")
            assert client.get_checkpoint(fresh=True).tree_size == 1
        if where:  # an erasure begun and never released: it refuses nothing
            kept.parent.mkdir(mode=0o700)
            write_private(kept, f"1 {base64.b64encode(bytes(32)).decode()} erasing\n")
        kept.chmod(mode)
        said = _signing_refused(running, tenant, kept, caplog)
    assert said.endswith(
        f"SEALTRAIL_SIGNED_CHECKPOINTS_DIR: {kept} is writable by group or others"
        f" (mode {mode:04o}), who can erase what the signing key signed; chmod 600 {kept}"
    ), said


def test_a_signed_checkpoints_dir_with_the_sticky_bit_is_taken(
    migrated_database_url: str, tmp_path: Path
) -> None:
    """Like /tmp: only an entry's owner may remove or replace it."""
    signed = tmp_path / "signed"
    signed.mkdir()
    signed.chmod(0o1777)
    with ServerThread(migrated_database_url, signed_checkpoints_dir=signed) as running:
        assert running.port
    assert (signed / _KEY_DIR).stat().st_mode & 0o777 == 0o700


@_AS_ROOT
def test_a_signed_checkpoints_file_another_user_owns_refuses_its_signatures(
    migrated_database_url: str, tmp_path: Path, tenant: str, caplog: pytest.LogCaptureFixture
) -> None:
    signed = tmp_path / "signed"
    (signed / _KEY_DIR).mkdir(mode=0o700, parents=True)
    with ServerThread(migrated_database_url, signed_checkpoints_dir=signed) as running:
        with AuditClient(running.target, token=running.token(tenant)) as client:
            client.record(action="modes.signed", actor_id="ann")
            assert client.get_checkpoint(fresh=True).tree_size == 1
        kept = signed / _KEY_DIR / tenant
        os.chown(kept, _STRANGER, _STRANGER)
        said = _signing_refused(running, tenant, kept, caplog)
    assert (
        f"SEALTRAIL_SIGNED_CHECKPOINTS_DIR: {kept} is owned by uid {_STRANGER}, not the"
        f" server's user (uid {os.geteuid()}) nor root, who can erase what the signing key"
    ) in said, said
    assert said.endswith(f"chown {os.geteuid()} {kept} and chmod 600 {kept}"), said


def _key_command(tmp_path: Path, command: str, env: dict[str, str | None]) -> Result:
    data_dir = tmp_path / "data"
    data_dir.mkdir(exist_ok=True)
    base: dict[str, str | None] = {
        "SEALTRAIL_DATABASE_URL": _NO_DATABASE,
        "SEALTRAIL_DATA_DIR": str(data_dir),
        "SEALTRAIL_SIGNING_KEY": None,
        "SEALTRAIL_SIGNING_KEY_FILE": None,
        "SEALTRAIL_ALLOW_READABLE_SECRETS": None,
        # The data dir's, empty: the session's (tests/conftest.py) holds what
        # other tests' erasures had the key sign, and `key restored` then
        # asked the database of them, none here (exit 1 after those tests).
        "SEALTRAIL_SIGNED_CHECKPOINTS_DIR": None,
    }
    return CliRunner().invoke(cli.main, ["key", command], env={**base, **env})


@pytest.mark.parametrize("command", ["show", "restored"])
@pytest.mark.parametrize("configured", [True, False])
def test_key_commands_check_the_key_file_as_a_start_does(
    tmp_path: Path, command: str, configured: bool
) -> None:
    """`key show` and `key restored` read the signing key: a file others
    may read is refused unless allowed (then a warning), one they may write
    always."""
    (tmp_path / "data").mkdir()
    path = tmp_path / "data" / "signing-key"
    env: dict[str, str | None] = {}
    if configured:
        path = tmp_path / "the-key"
        env["SEALTRAIL_SIGNING_KEY_FILE"] = str(path)
    shown = f"SEALTRAIL_SIGNING_KEY_FILE={path}" if configured else f"{path} (the data dir's"
    write_private(path, SIGNING_KEY + "\n", mode=0o644)
    said = _refused_in_one_line(_key_command(tmp_path, command, env))
    assert said.startswith(f"Error: {shown}"), said  # as every other command's refusal
    assert "readable by group or others (mode 0644)" in said and f"chmod 600 {path}" in said

    allowed = _key_command(tmp_path, command, {**env, "SEALTRAIL_ALLOW_READABLE_SECRETS": "1"})
    assert f"WARNING sealtrail_server.file_modes: {shown}" in allowed.output, allowed.output
    assert allowed.exit_code == 0, allowed.output
    if command == "show":
        assert Signer.parse(SIGNING_KEY).verifier.text() in allowed.output
    else:  # the key signed nothing here yet
        # On stdout, as every listing with nothing to list says it.
        assert allowed.stdout == "every tenant's log extends what this key signed of it\n"

    path.chmod(0o646)
    said = _refused_in_one_line(
        _key_command(tmp_path, command, {**env, "SEALTRAIL_ALLOW_READABLE_SECRETS": "1"})
    )
    assert said.startswith(f"Error: {shown}") and "writable by group or others (mode 0646)" in said


def test_key_restored_checks_the_signed_checkpoints_directory(tmp_path: Path) -> None:
    signed = tmp_path / "signed"
    (signed / _KEY_DIR).mkdir(mode=0o700, parents=True)
    (signed / _KEY_DIR).chmod(0o777)
    key = write_private(tmp_path / "the-key", SIGNING_KEY + "\n")
    env = {"SEALTRAIL_SIGNING_KEY_FILE": str(key), "SEALTRAIL_SIGNED_CHECKPOINTS_DIR": str(signed)}
    said = _refused_in_one_line(_key_command(tmp_path, "restored", env))
    assert said.startswith(
        f"Error: SEALTRAIL_SIGNED_CHECKPOINTS_DIR: {signed / _KEY_DIR} is writable by group or"
        " others"
    ), said


_REPLACEABLE = [(0o777, "mode 0777, no sticky bit"), (0o775, "mode 0775, no sticky bit")]


@pytest.mark.parametrize(("mode", "why"), _REPLACEABLE)
def test_a_data_dir_others_can_write_in_is_refused(tmp_path: Path, mode: int, why: str) -> None:
    """Whoever may write in the data dir can move its keys aside and put
    their own (or, before the first start, put their own first)."""
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    data_dir.chmod(mode)
    # A start says it alone, as a server's; `key show` as every command's refusal.
    for started, head in (
        (_serve(tmp_path, {}), ""),
        (_key_command(tmp_path, "show", {}), "Error: "),
    ):
        said = _refused_in_one_line(started)
        assert said == (
            f"{head}SEALTRAIL_DATA_DIR={data_dir} is writable by group or others ({why}), who can"
            f" move its keys aside and put their own; chmod go-w {data_dir}\n"
        ), said


def test_a_data_dir_with_the_sticky_bit_is_taken(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    (tmp_path / "data").chmod(0o1777)
    said = _refused_in_one_line(_serve(tmp_path, {}))  # on to the database
    assert "SEALTRAIL_DATA_DIR" not in said and "sticky" not in said, said


@pytest.mark.parametrize("setting", _SETTINGS)
@pytest.mark.parametrize(("mode", "why"), _REPLACEABLE)
def test_a_key_files_directory_others_can_write_in_is_refused(
    tmp_path: Path, setting: str, mode: int, why: str
) -> None:
    folder = tmp_path / "keys"
    folder.mkdir()
    path, env = _configured(folder, setting, 0o600)
    folder.chmod(mode)
    said = _refused_in_one_line(_serve(tmp_path, env))
    assert said == (
        f"SEALTRAIL_{setting}_FILE={path}: its directory {folder} is writable by group or"
        f" others ({why}), who can move it aside and put their own; chmod go-w {folder}\n"
    ), said


def test_the_signed_checkpoints_dirs_directory_others_can_write_in_is_refused(
    server: ServerThread, migrated_database_url: str, tmp_path: Path
) -> None:
    folder = tmp_path / "shared"
    (folder / "signed").mkdir(mode=0o700, parents=True)
    folder.chmod(0o777)
    said = _start_refused(server, migrated_database_url, folder / "signed")
    assert said == (
        f"SEALTRAIL_SIGNED_CHECKPOINTS_DIR={folder / 'signed'}: its directory {folder} is"
        f" writable by group or others (mode 0777, no sticky bit), who can move it aside and"
        f" put their own; chmod go-w {folder}"
    ), said


@_AS_ROOT
def test_a_key_files_directory_another_user_owns_is_refused(tmp_path: Path) -> None:
    folder = tmp_path / "keys"
    folder.mkdir()
    path, env = _configured(folder, "SIGNING_KEY", 0o600)
    os.chown(folder, _STRANGER, _STRANGER)
    said = _refused_in_one_line(_serve(tmp_path, env))
    assert said.startswith(
        f"SEALTRAIL_SIGNING_KEY_FILE={path}: its directory {folder} is owned by uid {_STRANGER},"
    ), said
    assert said.rstrip().endswith(f"chown {os.geteuid()} {folder} and chmod go-w {folder}")


# A command of the `sink`s that reads both keys, then finds no such sink.
_SINK_DELETE = ["sink", "delete", "no-such-sink", "--confirm", "no-such-sink"]
# Each key a `sink` command reads: the setting, the data dir's file, what a
# start calls that file, and the deployment's key (the tests').
_SINK_KEYS = [
    ("SECRETS_KEY", "secrets-key", "secrets key", SECRETS_KEY),
    ("REDACTION_KEY", "redaction-key", "redaction key", REDACTION_SECRET),
]


@pytest.mark.parametrize(("setting", "name", "what", "secret"), _SINK_KEYS)
@pytest.mark.parametrize("configured", [True, False])
def test_sink_commands_check_the_key_files_as_a_start_does(
    server: ServerThread,
    tmp_path: Path,
    setting: str,
    name: str,
    what: str,
    secret: bytes,
    configured: bool,
) -> None:
    """The `sink` commands read the secrets key (to seal a sink's secrets)
    and the redaction key (to fingerprint its URL and secrets) without the
    check a start makes: a key file others could read, or write, served them.
    Now checked as a start does, SEALTRAIL_ALLOW_READABLE_SECRETS alike."""
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    env: dict[str, str | None] = {
        "SEALTRAIL_DATA_DIR": str(data_dir),
        "SEALTRAIL_ALLOW_READABLE_SECRETS": None,
        f"SEALTRAIL_{setting}": None,
    }
    path = data_dir / name
    if configured:
        path = tmp_path / "the-key"
        env[f"SEALTRAIL_{setting}_FILE"] = str(path)
    shown = f"SEALTRAIL_{setting}_FILE={path}" if configured else f"{path} (the data dir's {what})"
    write_private(path, secret.hex() + "\n", mode=0o644)
    url = server.settings.database_url
    said = _refused_in_one_line(run_operator(url, *_SINK_DELETE, env=env))
    assert said.startswith(f"Error: {shown}"), said  # as every operator command's refusal
    assert "readable by group or others (mode 0644)" in said and f"chmod 600 {path}" in said

    env["SEALTRAIL_ALLOW_READABLE_SECRETS"] = "1"
    allowed = run_operator(url, *_SINK_DELETE, env=env)
    assert f"WARNING sealtrail_server.file_modes: {shown}" in allowed.output, allowed.output
    assert "no-such-sink" in allowed.output, allowed.output  # read, and on to the sinks

    path.chmod(0o646)
    said = _refused_in_one_line(run_operator(url, *_SINK_DELETE, env=env))
    assert said.startswith(f"Error: {shown}") and "writable by group or others (mode 0646)" in said


def test_token_create_checks_redaction_key_file_as_a_start_does(
    server: ServerThread, tenant: str, tmp_path: Path
) -> None:
    """`token create --name` redacts the name as the tenant's events are: in
    hmac mode, with the redaction key, read without the check a start makes.
    Now checked as a start does, SEALTRAIL_ALLOW_READABLE_SECRETS alike
    (`tenant release-hold`, which reads it alike, too)."""
    with AuditClient(server.target, token=server.token(tenant)) as admin:
        admin.set_redaction_mode("hmac")
    path = write_private(tmp_path / "the-key", REDACTION_SECRET.hex() + "\n", mode=0o640)
    env: dict[str, str | None] = {
        "SEALTRAIL_REDACTION_KEY": None,
        "SEALTRAIL_REDACTION_KEY_FILE": str(path),
        "SEALTRAIL_ALLOW_READABLE_SECRETS": None,
    }
    args = ["token", "create", "--role", "reader", "--tenant", tenant, "--name", "password=x"]
    said = _refused_in_one_line(run_operator(server.settings.database_url, *args, env=env))
    assert said.startswith(f"Error: SEALTRAIL_REDACTION_KEY_FILE={path}: readable by group"), said

    env["SEALTRAIL_ALLOW_READABLE_SECRETS"] = "1"
    allowed = run_operator(server.settings.database_url, *args, env=env)
    assert allowed.exit_code == 0, allowed.output
    assert f"WARNING sealtrail_server.file_modes: SEALTRAIL_REDACTION_KEY_FILE={path}" in (
        allowed.output
    )


# The operator commands that may redact a text with the redaction key (a
# token's name, a hold's reasons), on a tenant no database is asked about.
_REDACTING = [
    ["token", "create", "--role", "reader", "--tenant", "acme", "--name", "password=x"],
    ["tenant", "release-hold", "acme", "--reason", "case closed"],
    ["token", "revoke", "00000000-0000-4000-8000-000000000000"],
]


@pytest.mark.parametrize("args", _REDACTING, ids=lambda args: " ".join(args[:2]))
def test_a_redaction_key_file_is_checked_before_the_database_is_reached(
    tmp_path: Path, args: list[str]
) -> None:
    """The commands that read the redaction key checked its file only after
    connecting, and only for a tenant in hmac mode: a key file others can read
    went unsaid where the database was down, or the tenant in replace mode,
    until the day the tenant's mode was hmac. Now said first, whatever the
    tenant's mode, before anything connects (here no database listens)."""
    path = write_private(tmp_path / "the-key", REDACTION_SECRET.hex() + "\n", mode=0o640)
    env: dict[str, str | None] = {
        "SEALTRAIL_REDACTION_KEY": None,
        "SEALTRAIL_REDACTION_KEY_FILE": str(path),
        "SEALTRAIL_ALLOW_READABLE_SECRETS": None,
    }
    said = _refused_in_one_line(run_operator(_NO_DATABASE, *args, env=env))
    assert said.startswith(f"Error: SEALTRAIL_REDACTION_KEY_FILE={path}: readable by group"), said


def test_a_command_that_reads_no_redaction_key_requires_none(
    server: ServerThread, tenant: str, tmp_path: Path
) -> None:
    """A tenant in replace mode redacts without the key, and a token without
    a name has nothing to redact: neither reads the key file, and neither
    requires it, however it is (missing where configured, readable by others)."""
    url = server.settings.database_url
    gone = tmp_path / "gone"
    missing: dict[str, str | None] = {
        "SEALTRAIL_REDACTION_KEY": None,
        "SEALTRAIL_REDACTION_KEY_FILE": str(gone),
    }
    named = ["token", "create", "--role", "reader", "--tenant", tenant, "--name", "password=x"]
    created = run_operator(url, *named, env=missing)
    assert created.exit_code == 0, created.output
    readable = write_private(tmp_path / "the-key", REDACTION_SECRET.hex() + "\n", mode=0o640)
    unnamed = ["token", "create", "--role", "reader", "--tenant", tenant]
    created = run_operator(
        url,
        *unnamed,
        env={
            "SEALTRAIL_REDACTION_KEY": None,
            "SEALTRAIL_REDACTION_KEY_FILE": str(readable),
            "SEALTRAIL_ALLOW_READABLE_SECRETS": None,
        },
    )
    assert created.exit_code == 0, created.output
