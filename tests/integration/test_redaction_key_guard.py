"""Every process of a deployment must share its redaction key: a process
started without it generated one in its data dir with a warning and served,
its HMACs of secrets unlike the others' (HashSecret's searches missed them),
and a correct idempotent retry landing on it was refused ALREADY_EXISTS
(helper-203). Guarded as the signing and secrets keys are (docs/scaling.md):
the database keeps a fingerprint of the deployment's key, and a process whose
data dir's key is another refuses to start."""

from __future__ import annotations

import asyncio
import json
import secrets
import uuid
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import psycopg
import pytest
from google.protobuf import json_format

from sealtrail import AuditClient, build_filter
from sealtrail_server.app import Service
from sealtrail_server.domain.redaction import hmac_token, tenant_key
from tests.conftest import REDACTION_SECRET, ServerThread, database_of_its_own, run_operator
from tests.service_login import service_login_url


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


def test_the_operators_commands_refuse_another_redaction_key_as_serve_does(
    own_url: str, tmp_path: Path
) -> None:
    """`token create --name`, `tenant release-hold` and the `sink` commands
    redact what they record with the redaction key, as the service's login,
    whose roles could not read the deployment's fingerprint: run with another
    key, they recorded HMACs no server's match (equal secrets no longer
    correlate, HashSecret misses them). They refuse now, in serve's words for
    a data dir's key, before recording anything; with none recorded yet they
    say nothing, as serve does (helper-215)."""
    tenant = f"t-{uuid.uuid4().hex[:12]}"
    server = ServerThread(own_url)  # registers the deployment's key's fingerprint
    try:
        with AuditClient(server.target, token=server.token(tenant)) as admin:
            admin.set_redaction_mode("hmac")
            admin.set_legal_hold(True, reason="Case 9")
            _refused_with_another_key(own_url, tmp_path, tenant)
            assert admin.get_retention_policy().legal_hold.on
            recorded = [event.action for event in admin.query(order="oldest")]
            assert recorded == [
                "tenant.settings_updated",
                "retention.legal_hold_placed",
            ], recorded
            service = service_login_url(own_url)
            named = run_operator(service, *_TOKEN, tenant, "--name", "password=hunter22")
            assert named.exit_code == 0, named.output
            [created] = admin.query(build_filter(actions="api_token.created"))
            expected = hmac_token(tenant_key(REDACTION_SECRET, tenant), "hunter22")
            assert expected in json_format.MessageToDict(created.details)["name"]
    finally:
        server.close()
    with psycopg.connect(own_url, autocommit=True) as owner:  # as before any start registered one
        owner.execute("DELETE FROM deployment_markers WHERE name = 'redaction_key'")
    another = {"SEALTRAIL_REDACTION_KEY": secrets.token_hex(32)}
    unchecked = run_operator(service, *_TOKEN, tenant, "--name", "password=x", env=another)
    assert unchecked.exit_code == 0 and "redaction key" not in unchecked.output, unchecked.output


_TOKEN = ("token", "create", "--role", "reader", "--tenant")


def test_the_service_roles_read_the_redaction_keys_fingerprint_and_no_other_marker(
    own_url: str,
) -> None:
    """What migration 0044 grants, no more: the one fingerprint, through its view."""
    ServerThread(own_url).close()  # registers it
    with psycopg.connect(service_login_url(own_url), autocommit=True) as login:
        login.execute("SET ROLE sealtrail_system")
        [(fingerprint,)] = login.execute("SELECT * FROM redaction_key_fingerprint").fetchall()
        assert len(fingerprint) == 32
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            login.execute("SELECT name FROM deployment_markers")
        login.execute("SET ROLE sealtrail_service")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            login.execute("SELECT * FROM redaction_key_fingerprint")


def _refused_with_another_key(own_url: str, data_dir: Path, tenant: str) -> None:
    """Each command that redacts with the key, run with another one (a data
    dir's, then one configured), is refused saying so."""
    serve_said = _refused(own_url, data_dir)  # and the data dir keeps the key it made
    service = service_login_url(own_url)
    for env, said in (
        ({"SEALTRAIL_REDACTION_KEY": None, "SEALTRAIL_DATA_DIR": str(data_dir)}, serve_said),
        (
            {"SEALTRAIL_REDACTION_KEY": secrets.token_hex(32)},
            "the redaction key configured (SEALTRAIL_REDACTION_KEY or _FILE) is not the one"
            " this deployment's servers use",
        ),
    ):
        for command in (
            [*_TOKEN, tenant, "--name", "password=hunter22"],
            ["tenant", "release-hold", tenant, "--reason", "password=hunter22"],
            ["sink", "create", "soc", "--kind", "webhook", "--url", "http://127.0.0.1:9/hook",
             "--generate-secret"],
        ):  # fmt: skip
            refused = run_operator(service, *command, env=env)
            assert refused.exit_code == 1, (command, refused.output)
            assert said in " ".join(refused.output.split()), (command, refused.output)
    listed = run_operator(service, "sink", "list", "--format", "json")
    assert listed.exit_code == 0 and json.loads(listed.stdout) == [], listed.output
