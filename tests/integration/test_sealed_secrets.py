"""Rotating the secrets key (docs/forwarding.md): with the new key first and
the old one after it, a start seals every sink secret again under the new key,
and the first start of all seals those older versions left in the clear. It
reports those it cannot open (or finds planted in the clear later), leaving
them as they are. On a database of its own: the pass reads every tenant's
sinks."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
import pytest

from sealtrail_server.app import Service
from sealtrail_server.config import Settings
from sealtrail_server.domain.sealing import SecretBox
from sealtrail_server.store.sinks import _place, reseal_secrets
from tests.conftest import REDACTION_SECRET, SIGNING_KEY, ServerThread, database_of_its_own
from tests.private_files import write_private

OLD, NEW, LOST = bytes(range(32)), bytes(range(32, 64)), bytes(range(64, 96))


@pytest.fixture
def own_url(migrated_database_url: str) -> Iterator[str]:
    with database_of_its_own(migrated_database_url, "sealing") as url:
        yield url


def _add_sink(url: str, tenant: str, seal: SecretBox | None) -> tuple[str, str]:
    """A webhook sink whose secret is sealed by `seal` (None: in the clear)."""
    sink_id, secret = str(uuid.uuid4()), f"whsec_{uuid.uuid4().hex}"
    destination: dict[str, Any] = {"url": "https://siem.example.com"}
    place = _place(tenant, sink_id, "webhook", destination, "secrets")
    destination["secrets"] = [secret if seal is None else seal.seal(secret, place=place)]
    now = datetime.now(UTC)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO sinks (tenant_id, id, name, kind, format, filter, destination,"
            " created_at, updated_at, cursor_seq)"
            " VALUES (%s, %s, 'hook', 'webhook', 'sealtrail_json', '{}', %s, %s, %s, 0)",
            [tenant, sink_id, json.dumps(destination), now, now],
        )
    return sink_id, secret


def _stored_secret(url: str, sink_id: str) -> str:
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT destination FROM sinks WHERE id = %s", [sink_id]).fetchone()
    assert row is not None
    return str(row[0]["secrets"][0])


def test_a_rotation_seals_everything_again_under_the_new_key(own_url: str) -> None:
    sealed_old = _add_sink(own_url, "t1", SecretBox([OLD]))
    in_clear = _add_sink(own_url, "t2", None)
    lost_id, _ = _add_sink(own_url, "t2", SecretBox([LOST]))
    lost_before = _stored_secret(own_url, lost_id)

    rotating = SecretBox([NEW, OLD])
    changed, opened, unopenable = asyncio.run(reseal_secrets(own_url, rotating))
    assert changed == opened == 2
    assert len(unopenable) == 1 and unopenable[0].startswith(f"t2/{lost_id}: sealed under key")

    new_only = SecretBox([NEW])
    for tenant, (sink_id, secret) in (("t1", sealed_old), ("t2", in_clear)):
        stored = _stored_secret(own_url, sink_id)
        assert new_only.is_current(stored) and secret not in stored
        place = _place(tenant, sink_id, "webhook", {"url": "https://siem.example.com"}, "secrets")
        assert new_only.open(stored, place=place) == secret
    assert _stored_secret(own_url, lost_id) == lost_before  # left for its admin to set again

    # Once done, another start changes nothing; and a secret put in the clear
    # after the first start was planted: it is reported, not sealed.
    assert asyncio.run(reseal_secrets(own_url, rotating)) == (0, 2, unopenable)
    planted_id, planted = _add_sink(own_url, "t3", None)
    changed, _, unopenable = asyncio.run(reseal_secrets(own_url, rotating))
    assert changed == 0 and any(
        p.startswith(f"t3/{planted_id}: stored in the clear") for p in unopenable
    )
    assert _stored_secret(own_url, planted_id) == planted


def test_a_server_that_generates_a_secrets_key_beside_sinks_sealed_under_another_refuses(
    own_url: str, tmp_path: Path
) -> None:
    """A second process set up as docs/scaling.md said (no secrets key named)
    generated a key of its own and served: every sink whose lease it took
    delivered nothing (helper-157). It stops, saying to configure the
    deployment's key; the key it made stays (another process may have read
    it), and every start with it says so."""
    _add_sink(own_url, "t1", SecretBox([OLD]))
    settings = _data_dir_settings(tmp_path)
    for _ in range(2):
        second = Service(settings, database_url=own_url, owner_database_url=own_url)
        with pytest.raises(SystemExit, match="Set SEALTRAIL_SECRETS_KEY") as refused:
            asyncio.run(second.start())
        assert "1 sink" in str(refused.value) and "docs/scaling.md" in str(refused.value)
        assert (tmp_path / "secrets-key").exists()


def _data_dir_settings(tmp_path: Path) -> Settings:
    return Settings(
        listen="127.0.0.1:0",
        signing_key=SIGNING_KEY,
        redaction_key=REDACTION_SECRET.hex(),
        secrets_key=None,
        data_dir=tmp_path,
        retention_interval=0,
    )


def test_a_server_that_reads_a_key_another_just_generated_refuses_too(
    own_url: str, tmp_path: Path
) -> None:
    """Two processes start together on one data dir, beside a sink sealed
    under the deployment's key: one generates the key, the other reads it
    (helper-170). Neither serves, and the key file is never removed from
    under the one that read it."""
    _add_sink(own_url, "t1", SecretBox([OLD]))
    generated = LOST.hex()
    write_private(tmp_path / "secrets-key", generated + "\n")  # the other process's, just made
    reader = Service(_data_dir_settings(tmp_path), database_url=own_url, owner_database_url=own_url)
    with pytest.raises(SystemExit, match="Set SEALTRAIL_SECRETS_KEY") as refused:
        asyncio.run(reader.start())
    assert "1 sink" in str(refused.value)
    assert (tmp_path / "secrets-key").read_text().strip() == generated


def test_a_data_dir_key_that_opens_a_sink_serves_beside_one_it_cannot_open(
    own_url: str, tmp_path: Path
) -> None:
    """The data dir's key is the deployment's when a sink opens under it: a
    sink sealed under a lost key is reported, not a reason to stop."""
    _add_sink(own_url, "t1", SecretBox([OLD]))
    _add_sink(own_url, "t1", SecretBox([LOST]))
    write_private(tmp_path / "secrets-key", OLD.hex() + "\n")
    server = ServerThread(own_url, secrets_key=None, data_dir=tmp_path)
    try:
        assert server.port
    finally:
        server.close()
