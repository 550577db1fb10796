"""TLS and mutual TLS, with certificates made for the test by a CA of its own:
a client that trusts the CA connects, a plaintext one does not, and with a
client CA configured only a client holding a certificate it signed gets in."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from sealtrail import AuditClient, UnavailableError
from sealtrail_server.config import Settings
from sealtrail_server.tls import server_credentials
from tests.conftest import ServerThread
from tests.pki import Authority
from tests.private_files import write_private


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("pki")
    ca, stranger = Authority("sealtrail test CA"), Authority("another CA")
    server = ca.issue("sealtrail server", server=True)
    expired = ca.issue("sealtrail server", server=True, expired=True)
    client = ca.issue("billing-service", server=False)
    foreign = stranger.issue("billing-service", server=False)
    files = {
        "ca": ca.pem,
        "server.crt": server.cert,
        "server.key": server.key,
        "expired.crt": expired.cert,
        "expired.key": expired.key,
        "client.crt": client.cert,
        "client.key": client.key,
        "foreign.crt": foreign.cert,
        "foreign.key": foreign.key,
    }
    paths = {}
    for name, content in files.items():
        paths[name] = folder / name
        write_private(paths[name], content)  # keys private, as the server requires
    return paths


@pytest.fixture
def tls_server(migrated_database_url: str, pki: dict[str, Path]) -> Iterator[ServerThread]:
    server = ServerThread(
        migrated_database_url,
        tls_cert_file=pki["server.crt"],
        tls_key_file=pki["server.key"],
    )
    yield server
    server.close()


@pytest.fixture
def mtls_server(migrated_database_url: str, pki: dict[str, Path]) -> Iterator[ServerThread]:
    server = ServerThread(
        migrated_database_url,
        tls_cert_file=pki["server.crt"],
        tls_key_file=pki["server.key"],
        tls_client_ca_file=pki["ca"],
    )
    yield server
    server.close()


def _record(server: ServerThread, tenant: str, **tls: object) -> str:
    with AuditClient(
        server.target, token=server.token(tenant), max_attempts=1, timeout=5, **tls
    ) as client:
        return client.record(action="tls.test", actor_id="u").event.id


def test_a_client_trusting_the_ca_connects_over_tls(
    tls_server: ServerThread, tenant: str, pki: dict[str, Path]
) -> None:
    assert _record(tls_server, tenant, root_certificates=pki["ca"].read_bytes())


def test_plaintext_and_untrusting_clients_are_refused(
    tls_server: ServerThread, tenant: str, pki: dict[str, Path]
) -> None:
    with pytest.raises(UnavailableError):
        _record(tls_server, tenant)  # plaintext against TLS
    with pytest.raises(UnavailableError):
        _record(tls_server, tenant, root_certificates=pki["foreign.crt"].read_bytes())


def test_mutual_tls_lets_in_only_certificates_of_the_client_ca(
    mtls_server: ServerThread, tenant: str, pki: dict[str, Path]
) -> None:
    ca = pki["ca"].read_bytes()
    assert _record(
        mtls_server,
        tenant,
        root_certificates=ca,
        client_certificate=pki["client.crt"].read_bytes(),
        client_key=pki["client.key"].read_bytes(),
    )
    with pytest.raises(UnavailableError):
        _record(mtls_server, tenant, root_certificates=ca)  # no client certificate
    with pytest.raises(UnavailableError):
        _record(
            mtls_server,
            tenant,
            root_certificates=ca,
            client_certificate=pki["foreign.crt"].read_bytes(),
            client_key=pki["foreign.key"].read_bytes(),
        )


def test_the_cli_speaks_mutual_tls(
    mtls_server: ServerThread, tenant: str, pki: dict[str, Path]
) -> None:
    common = [
        str(Path(sys.executable).parent / "sealtrail"),
        "--server",
        mtls_server.target,
        "--token",
        mtls_server.token(tenant),
        "--ca-file",
        str(pki["ca"]),
    ]
    record = ["record", "--action", "tls.cli", "--actor-id", "ops"]
    refused = subprocess.run([*common, *record], capture_output=True, text=True, timeout=60)
    assert refused.returncode != 0 and "UNAVAILABLE" in refused.stderr
    mutual = ["--cert-file", str(pki["client.crt"]), "--key-file", str(pki["client.key"])]
    allowed = subprocess.run(
        [*common, *mutual, *record],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert allowed.returncode == 0, allowed.stderr


def test_an_incomplete_tls_configuration_is_refused_at_start(pki: dict[str, Path]) -> None:
    with pytest.raises(SystemExit, match="go together"):
        server_credentials(Settings(tls_cert_file=pki["server.crt"]))
    with pytest.raises(SystemExit, match="needs a server certificate"):
        server_credentials(Settings(tls_client_ca_file=pki["ca"]))
    not_pem = pki["ca"].parent / "server.der"
    not_pem.write_bytes(b"\x30\x82\x01\x0a")
    with pytest.raises(SystemExit, match=r"the TLS certificate .* is not PEM"):
        # gRPC refused the port, and the address was blamed (helper-125).
        server_credentials(Settings(tls_cert_file=not_pem, tls_key_file=pki["server.key"]))
    with pytest.raises(SystemExit, match="cannot read the TLS key"):
        server_credentials(
            Settings(tls_cert_file=pki["server.crt"], tls_key_file=pki["ca"].parent / "missing")
        )


@pytest.mark.parametrize(
    ("cert", "key", "client_ca", "named"),
    [
        ("server.crt", "client.key", None, "SEALTRAIL_TLS_CERT_FILE and SEALTRAIL_TLS_KEY_FILE"),
        ("server.key", "server.crt", None, "SEALTRAIL_TLS_CERT_FILE and SEALTRAIL_TLS_KEY_FILE"),
        ("server.crt", "server.key", "client.key", "SEALTRAIL_TLS_CLIENT_CA_FILE"),
    ],
)
def test_a_key_that_is_not_its_certificates_is_named_not_the_address(
    pki: dict[str, Path], cert: str, key: str, client_ca: str | None, named: str
) -> None:
    """A key of another certificate, or the two files swapped, passed the PEM
    check; gRPC then refused the port, after the migrations, and the address
    was blamed: "in use or invalid" (helper-140)."""
    settings = Settings(
        tls_cert_file=pki[cert],
        tls_key_file=pki[key],
        tls_client_ca_file=pki[client_ca] if client_ca else None,
    )
    wrong = pki[client_ca or key].name
    with pytest.raises(SystemExit, match=f"^{named} .*{wrong}"):
        server_credentials(settings)


def test_an_expired_server_certificate_is_refused_at_start(pki: dict[str, Path]) -> None:
    """It served, and every client refused it ("certificate has expired"),
    health checks over the port failing as well, the server saying nothing
    of why (helper-296)."""
    settings = Settings(tls_cert_file=pki["expired.crt"], tls_key_file=pki["expired.key"])
    named = r"^SEALTRAIL_TLS_CERT_FILE \(.*expired\.crt\): its certificate expired at "
    with pytest.raises(SystemExit, match=named):
        server_credentials(settings)
