"""A key or secret file as an operator keeps one: readable by its owner
alone (mode 0600), which the server requires of it at start (file_modes.py).
Written under the tests' umask (022), it was 0644, and refused."""

from __future__ import annotations

import os
from pathlib import Path


def write_private(path: Path, data: str | bytes, *, mode: int = 0o600) -> Path:
    """`data` (text as UTF-8) in `path`, replacing what it held, with `mode`."""
    path.write_bytes(data.encode() if isinstance(data, str) else data)
    os.chmod(path, mode)
    return path
