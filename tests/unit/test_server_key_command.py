"""`sealtrail-server key show`: the verifier key auditors are told to trust."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner

from sealtrail_server.cli import main
from sealtrail_server.integrity.keys import load_signer

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
    assert result.output.strip() == made.verifier.text()
