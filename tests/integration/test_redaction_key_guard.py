"""Every process of a deployment must share its redaction key: a process
started without it generated one in its data dir with a warning and served,
its HMACs of secrets unlike the others' (HashSecret's searches missed them),
and a correct idempotent retry landing on it was refused ALREADY_EXISTS
(helper-203). Guarded as the signing and secrets keys are (docs/scaling.md):
the database keeps a fingerprint of the deployment's key, and a process whose
data dir's key is another refuses to start."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from sealtrail_server.app import Service
from tests.conftest import ServerThread, database_of_its_own


@pytest.fixture
def own_url(migrated_database_url: str) -> Iterator[str]:
    with database_of_its_own(migrated_database_url, "redaction_key") as url:
        yield url


def _serves(url: str, **settings: object) -> None:
    """A server with `settings` starts (and is stopped again)."""
    ServerThread(url, **settings).close()


def _refused(url: str, data_dir: Path) -> str:
    """Why a server with no redaction key configured, on `data_dir`, did not start."""
    server = ServerThread(url)  # the deployment's key, configured
    server.close()
    settings = replace(server.settings, redaction_key=None, data_dir=data_dir)
    refused = Service(settings, database_url=server.settings.database_url, owner_database_url=url)
    with pytest.raises(SystemExit) as stopped:
        asyncio.run(refused.start())
    return str(stopped.value)


def test_a_process_that_generates_a_redaction_key_beside_the_deployments_refuses(
    own_url: str, tmp_path: Path
) -> None:
    """It names the setting and where to read what to do; the key it made
    stays (another process may have read it), and every start with it says so."""
    for _ in range(2):
        said = _refused(own_url, tmp_path)
        assert "SEALTRAIL_REDACTION_KEY" in said and "docs/scaling.md" in said, said
        assert str(tmp_path / "redaction-key") in said
        assert (tmp_path / "redaction-key").exists()


def test_a_single_process_keeps_the_redaction_key_its_data_dir_made(
    own_url: str, tmp_path: Path
) -> None:
    """The default of one process: made on the first start, used by the next."""
    for _ in range(2):
        _serves(own_url, redaction_key=None, data_dir=tmp_path)
    assert (tmp_path / "redaction-key").exists()


def test_a_redaction_key_named_deliberately_becomes_the_deployments(
    own_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The deployment's key lost: the refused start's key, named once with
    SEALTRAIL_REDACTION_KEY_FILE, is the deployment's from then on, which the
    start says (as it does a rotation, or a process configured otherwise)."""
    _refused(own_url, tmp_path)
    key_file = tmp_path / "redaction-key"
    _serves(own_url, redaction_key=None, redaction_key_file=key_file, data_dir=tmp_path)
    assert "is the deployment's from now on" in caplog.text
    _serves(own_url, redaction_key=None, data_dir=tmp_path)  # the data dir's, now the one
