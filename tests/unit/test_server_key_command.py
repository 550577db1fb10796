"""`sealtrail-server key show`: the verifier key auditors are told to trust."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner

from sealtrail_server.cli import main
from sealtrail_server.integrity.keys import load_signer
from sealtrail_server.integrity.signed_sizes import SignedSizes
from tests.command_output import own_lines, own_output

# Unset: the command must find the key where a server keeps it.
_NO_KEY = {"SEALTRAIL_SIGNING_KEY": None, "SEALTRAIL_SIGNING_KEY_FILE": None}


def test_key_show_makes_no_key_where_none_is(tmp_path: Path) -> None:
    """It generated one no server signs with, and printed it for `sealtrail
    verify --key`: an auditor on another machine trusted a stranger's key."""
    result = CliRunner().invoke(main, ["key", "show", "--data-dir", str(tmp_path)], env=_NO_KEY)
    assert result.exit_code != 0
    assert "no checkpoint signing key at" in result.output
    assert list(tmp_path.iterdir()) == []


def test_key_show_prints_the_key_a_server_made(tmp_path: Path) -> None:
    made = load_signer(key_text=None, key_file=None, data_dir=tmp_path, name="sealtrail.test/log")
    result = CliRunner().invoke(main, ["key", "show", "--data-dir", str(tmp_path)], env=_NO_KEY)
    assert result.exit_code == 0, result.output
    assert own_output(result.output).strip() == made.verifier.text()


def test_key_commands_fail_as_every_other_command_does(tmp_path: Path) -> None:
    """A failing `key show` or `key restored` (no key where named, one that is
    no key) printed its message bare, where every other operator command
    that fails says `Error: ...` (click's way) and exits 1."""
    gone = tmp_path / "gone"
    garbage = tmp_path / "garbage"
    garbage.write_text("c0ffee\n")
    garbage.chmod(0o600)
    for command in ("show", "restored"):
        for env, said in (
            (_NO_KEY, f"Error: no checkpoint signing key at {tmp_path / 'signing-key'}: "),
            (
                {**_NO_KEY, "SEALTRAIL_SIGNING_KEY": "garbage"},
                "Error: SEALTRAIL_SIGNING_KEY: not a checkpoint signing key (",
            ),
            (
                {**_NO_KEY, "SEALTRAIL_SIGNING_KEY_FILE": str(gone)},
                f"Error: SEALTRAIL_SIGNING_KEY_FILE={gone}: no such file; ",
            ),
            (
                {**_NO_KEY, "SEALTRAIL_SIGNING_KEY_FILE": str(garbage)},
                f"Error: SEALTRAIL_SIGNING_KEY_FILE={garbage}: not a checkpoint signing key (",
            ),
        ):
            failed = CliRunner().invoke(
                main, ["key", command, "--data-dir", str(tmp_path)], env=env
            )
            assert failed.exit_code == 1, (command, failed.output)
            assert failed.stdout == "", (command, failed.output)
            lines = own_lines(failed.stderr)
            assert len(lines) == 1 and lines[0].startswith(said), (command, lines)


def test_key_restored_says_a_file_it_cannot_read_as_every_other_refusal(tmp_path: Path) -> None:
    """A file of what the key signed that `key restored` could not read (an
    erasure's, cut short) was said `cannot read what the key signed: ...`,
    bare, where every other refusal of an operator command says `Error: ...`;
    it still exits 1, after what it could list."""
    signer = load_signer(key_text=None, key_file=None, data_dir=tmp_path, name="sealtrail.test/log")
    signed = SignedSizes.open(tmp_path / "signed", signer.verifier)
    signed.write_erasure("acme", 3, b"a" * 32, released=True)
    broken = signed.key_directory / ".erasures" / "acme"
    broken.write_text("3 q1X")  # cut short
    # No tenant left to ask of: the database is never reached.
    unused = "postgresql://sealtrail@127.0.0.1:1/unused"
    failed = CliRunner().invoke(
        main,
        ["key", "restored", "--data-dir", str(tmp_path), "--database-url", unused],
        env={**_NO_KEY, "SEALTRAIL_SIGNED_CHECKPOINTS_DIR": str(signed.directory)},
    )
    assert failed.exit_code == 1, failed.output
    lines = own_lines(failed.stderr)
    # Not "every tenant's log extends ...": acme's was not checked. On stdout,
    # where a listing says it has nothing to list (`tenant erasures`).
    assert failed.stdout == "every other tenant's log extends what this key signed of it\n"
    assert lines[-1].startswith(f"Error: cannot read what the key signed: {broken} "), lines
