"""The tables the `sealtrail` commands print, drawn by rich: imported by a
command as it prints one, so that the others (and --help) never import rich
(tests/unit/test_cli_startup_imports.py)."""

from __future__ import annotations

import sys
from typing import Any

from rich.console import Console, RenderableType
from rich.table import Table
from rich.text import Text

from sealtrail._terminal import terminal_safe


class PlainTable(Table):
    """A table whose text cells are shown as they are: never read as rich's
    markup (`[link=...]` made a link), their control characters escaped."""

    def add_row(self, *renderables: RenderableType | None, **options: Any) -> None:
        super().add_row(
            *(Text(terminal_safe(cell)) if isinstance(cell, str) else cell for cell in renderables),
            **options,
        )


def print_table(table: Table) -> None:
    """A table on stdout; piped, it is not cut to 80 columns: every value stays whole."""
    Console(width=None if sys.stdout.isatty() else 1000).print(table)
