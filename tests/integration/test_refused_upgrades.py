"""A new release's process refused for its own settings leaves the shared
database as it was: it applied its migrations first, then stopped, and every
process of the running release was refused its restart ("migrated by a newer
release"), one misconfigured pod keeping the fleet from restarting
(helper-203). Here the release is this one plus a migration more (9999), on a
database this one migrated."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from click.testing import CliRunner
from psycopg.conninfo import make_conninfo
from psycopg.sql import SQL, Identifier, Literal

from sealtrail.tlog import Signer
from sealtrail_server import cli
from sealtrail_server.app import Service
from sealtrail_server.config import Settings
from sealtrail_server.domain.sealing import SecretBox
from sealtrail_server.store import migrations
from sealtrail_server.store.database import RolesMissing
from tests.command_output import own_lines
from tests.conftest import (
    REDACTION_SECRET,
    SECRETS_KEY,
    SIGNING_KEY,
    ServerThread,
    database_of_its_own,
)
from tests.integration.test_sealed_secrets import _add_sink
from tests.service_login import service_login_url

_NEW = 9999


@pytest.fixture
def own(migrated_database_url: str) -> Iterator[str]:
    """A database this release migrated."""
    with database_of_its_own(migrated_database_url, "refused_upgrade") as url:
        yield url


@pytest.fixture
def url(own: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """`own`, the release started a newer one."""
    _a_newer_release(tmp_path, monkeypatch)
    return own


def _a_newer_release(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    newer = tmp_path / "migrations"
    newer.mkdir()
    for path in migrations.MIGRATIONS_DIR.glob("*.sql"):
        (newer / path.name).symlink_to(path)
    (newer / f"{_NEW}_a_column_more.sql").write_text("ALTER TABLE events ADD COLUMN noted text;\n")
    monkeypatch.setattr(migrations, "MIGRATIONS_DIR", newer)


def _applied(url: str) -> set[int]:
    with psycopg.connect(url) as conn:
        return {row[0] for row in conn.execute("SELECT version FROM schema_migrations")}


def _settings(tmp_path: Path, **changed: object) -> Settings:
    defaults: dict[str, object] = {
        "listen": "127.0.0.1:0",
        "signing_key": SIGNING_KEY,
        "redaction_key": REDACTION_SECRET.hex(),
        "secrets_key": SECRETS_KEY.hex(),
        "log_origin": "sealtrail.test/log",
        "data_dir": tmp_path / "data",
        "retention_interval": 0,
    }
    return Settings(**{**defaults, **changed})  # type: ignore[arg-type]


def _start(settings: Settings, *, database_url: str, owner_url: str) -> str:
    """What stopped the start of a server with `settings`."""
    refused = Service(settings, database_url=database_url, owner_database_url=owner_url)
    with pytest.raises((SystemExit, RolesMissing)) as stopped:
        asyncio.run(refused.start())
    return str(stopped.value)


def test_a_new_release_whose_service_login_is_refused_leaves_the_schema_as_it_was(
    url: str, tmp_path: Path
) -> None:
    """A mistyped login (the embedded test cluster trusts every password: a
    mistyped user name is refused at connect as a mistyped password is): the
    start's error is the database's refusal, not the pool's "initialization
    incomplete after 5.0 sec", the reason left in warnings."""
    mistyped = make_conninfo(service_login_url(url), user="sealtrail_test_typo")
    env = {
        "SEALTRAIL_OWNER_DATABASE_URL": url,
        "SEALTRAIL_DATABASE_URL": mistyped,
        "SEALTRAIL_DATA_DIR": str(tmp_path),
    }
    started = CliRunner().invoke(cli.main, ["serve", "--listen", "127.0.0.1:0"], env=env)
    assert started.exit_code == 1, started.output
    said = own_lines(started.output)[-1]  # the reason, not only in warnings before it
    assert said.startswith("Error: ") and "Traceback" not in started.output, started.output
    assert 'role "sealtrail_test_typo" does not exist' in said, said
    assert _NEW not in _applied(url)


def test_a_new_release_whose_login_lacks_the_roles_leaves_the_schema_as_it_was(
    url: str, tmp_path: Path
) -> None:
    outsider = "sealtrail_test_no_roles"
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            SQL(
                "DO $$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = {}) THEN"
                " CREATE ROLE {} LOGIN; END IF; END $$"
            ).format(Literal(outsider), Identifier(outsider))
        )
    said = _start(
        _settings(tmp_path), database_url=make_conninfo(url, user=outsider), owner_url=url
    )
    assert "cannot work as sealtrail_system" in said, said
    assert _NEW not in _applied(url)


def test_a_new_release_with_a_signing_key_of_its_own_leaves_the_schema_as_it_was(
    url: str, tmp_path: Path
) -> None:
    """Deployed without the deployment's signing key, on a data dir of its own."""
    deployments = Signer.parse(SIGNING_KEY).verifier
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO signing_keys (key_name, key_id, verifier) VALUES (%s, %s, %s)",
            [deployments.name, deployments.key_id, deployments.text()],
        )
    settings = _settings(tmp_path, signing_key=None)
    said = _start(settings, database_url=service_login_url(url), owner_url=url)
    assert "is none of the signing keys of this database" in said, said
    assert _NEW not in _applied(url)


def test_a_new_release_with_a_secrets_key_of_its_own_leaves_the_schema_as_it_was(
    url: str, tmp_path: Path
) -> None:
    """Deployed without the deployment's secrets key, beside a sink sealed under it."""
    _add_sink(url, f"t-{uuid.uuid4().hex[:8]}", SecretBox([SECRETS_KEY]))
    settings = _settings(tmp_path, secrets_key=None)
    said = _start(settings, database_url=service_login_url(url), owner_url=url)
    assert "Set SEALTRAIL_SECRETS_KEY" in said, said
    assert _NEW not in _applied(url)


def test_a_new_release_with_a_redaction_key_of_its_own_leaves_the_schema_as_it_was(
    own: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Deployed without the deployment's redaction key, which its servers used."""
    ServerThread(own).close()  # the running release, the deployment's key configured
    _a_newer_release(tmp_path, monkeypatch)
    settings = _settings(tmp_path, redaction_key=None)
    said = _start(settings, database_url=service_login_url(own), owner_url=own)
    assert "SEALTRAIL_REDACTION_KEY" in said, said
    assert _NEW not in _applied(own)


def test_a_new_release_refused_nothing_migrates_and_serves(url: str, tmp_path: Path) -> None:
    """The checks made before the migrations pass a process set up right."""
    service = Service(
        _settings(tmp_path), database_url=service_login_url(url), owner_database_url=url
    )

    async def start_and_stop() -> None:
        await service.start()
        await service.stop(grace=0)

    asyncio.run(start_and_stop())
    assert _NEW in _applied(url)
