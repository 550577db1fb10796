"""The server's TLS credentials, from the configured PEM files: none (plaintext),
TLS, or mutual TLS when a client CA is configured."""

from __future__ import annotations

import ssl
from datetime import UTC, datetime
from pathlib import Path

import grpc
from cryptography import x509

from .config import Settings


def _read(path: Path, what: str) -> bytes:
    try:
        pem = path.read_bytes()
    except OSError as error:
        raise SystemExit(f"cannot read the {what} {path}: {error.strerror}") from None
    if b"-----BEGIN " not in pem:
        # Else gRPC refused the port, and the address was blamed.
        raise SystemExit(f"the {what} {path} is not PEM")
    return pem


def server_credentials(settings: Settings) -> grpc.ServerCredentials | None:
    """None for plaintext; SystemExit for an incomplete or unreadable configuration."""
    cert, key, client_ca = (
        settings.tls_cert_file,
        settings.tls_key_file,
        settings.tls_client_ca_file,
    )
    if cert is None and key is None:
        if client_ca is not None:
            raise SystemExit("SEALTRAIL_TLS_CLIENT_CA_FILE needs a server certificate and key")
        return None
    if cert is None or key is None:
        raise SystemExit("SEALTRAIL_TLS_CERT_FILE and SEALTRAIL_TLS_KEY_FILE go together")
    pair = (_read(key, "TLS key"), _read(cert, "TLS certificate"))
    _refuse_expired(cert, pair[1])
    if client_ca is None:
        _check(cert, key, None)
        return grpc.ssl_server_credentials([pair])
    root_certificates = _read(client_ca, "client CA")
    _check(cert, key, client_ca)
    return grpc.ssl_server_credentials(
        [pair], root_certificates=root_certificates, require_client_auth=True
    )


def _check(cert: Path, key: Path, client_ca: Path | None) -> None:
    """SystemExit naming the settings when the files are PEM of the wrong
    things (a key of another certificate, the two swapped, a client CA with no
    certificate): else gRPC refused the port, and the address was blamed."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        # An encrypted key is refused (gRPC takes none), never asked for at a terminal.
        context.load_cert_chain(cert, key, password=lambda: b"")
    except ssl.SSLError as error:
        raise SystemExit(
            f"SEALTRAIL_TLS_CERT_FILE and SEALTRAIL_TLS_KEY_FILE ({cert}, {key})"
            f" are not a certificate and its unencrypted key: {error.reason or error}"
        ) from None
    if client_ca is None:
        return
    try:
        context.load_verify_locations(client_ca)
    except ssl.SSLError as error:
        raise SystemExit(
            f"SEALTRAIL_TLS_CLIENT_CA_FILE ({client_ca}) holds no CA certificate:"
            f" {error.reason or error}"
        ) from None


def _refuse_expired(path: Path, pem: bytes) -> None:
    """SystemExit when the server's certificate (the chain's first) has
    expired: it served, and every client refused it at the handshake
    ("certificate has expired"), the server saying nothing (helper-296).
    One that will expire while serving is the operator's to renew."""
    try:
        leaf = x509.load_pem_x509_certificate(pem)
    except ValueError:
        return  # not a certificate: _check names it
    expired_at = leaf.not_valid_after_utc
    if expired_at < datetime.now(UTC):
        raise SystemExit(
            f"SEALTRAIL_TLS_CERT_FILE ({path}): its certificate expired at"
            f" {expired_at:%Y-%m-%d %H:%M:%S} UTC; every client would refuse it: renew it"
        )
