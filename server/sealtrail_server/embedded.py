"""The embedded default: a PostgreSQL server run by the `pgserver` package in
`<data_dir>/postgres`, reused across restarts, used when no database URL is
configured. It listens on a Unix socket only and stops when the last process
using it exits cleanly."""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

log = logging.getLogger(__name__)


def start_embedded_postgres(data_dir: Path) -> str:
    """Start (or join) the embedded server; return its connection URL."""
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
    except OSError as error:  # a file, or a directory under one
        raise SystemExit(
            f"SEALTRAIL_DATA_DIR={str(data_dir)!r}: not a directory that can be made"
            f" ({error.strerror})"
        ) from None
    with warnings.catch_warnings():
        # platformdirs warns when XDG_RUNTIME_DIR is unset, as on most servers.
        warnings.simplefilter("ignore", UserWarning)
        import pgserver
    get_server = pgserver.get_server  # type: ignore[attr-defined]
    server = get_server(data_dir / "postgres", cleanup_mode="stop")
    url: str = server.get_uri()
    log.info("embedded PostgreSQL in %s", data_dir / "postgres")
    return url
