"""The run facts a bench report is formatted with, for tests of bench/report.py."""

from __future__ import annotations

from typing import Any

FACTS: dict[str, Any] = {
    "duration": 8.0,
    "warmup": 2.0,
    "rounds": 1,
    "concurrency": 64,
    "clients": 1,
    "cpus": 2,
    "database": {"server_version": "16", "fsync": "on", "synchronous_commit": "on"},
}
