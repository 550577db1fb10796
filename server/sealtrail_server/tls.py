"""The server's TLS credentials, from the configured PEM files: none (plaintext),
TLS, or mutual TLS when a client CA is configured."""

from __future__ import annotations

from pathlib import Path

import grpc

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
    if client_ca is None:
        return grpc.ssl_server_credentials([pair])
    return grpc.ssl_server_credentials(
        [pair], root_certificates=_read(client_ca, "client CA"), require_client_auth=True
    )
