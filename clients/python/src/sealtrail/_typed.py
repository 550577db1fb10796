"""A parameter's text as the user typed it, kept by the types that convert
it (a duration, a time, a seq range) for an error that quotes it: the
server's refusal of `expire_time` said as `--expires-in 3y`. Below the
command line's modules (`_cli` and each `_cli_*`), which all use it, so
that any of them imports first (tests/unit/test_cli_modules_import_alone.py)."""

from __future__ import annotations

import shlex
from typing import Any, Final

import click

# ctx.meta's key of parameters' text as typed (`remember_typed`).
_TYPED: Final = "sealtrail.typed"


def remember_typed(ctx: click.Context | None, param: click.Parameter | None, value: Any) -> None:
    """Keeps `value`, a parameter's text as typed, for `typed`: what a type
    converts (a duration, a time) it cannot give back as it was written."""
    if ctx is not None and param is not None and param.name and isinstance(value, str):
        ctx.meta.setdefault(_TYPED, {})[param.name] = value


def typed(ctx: click.Context, name: str) -> str | None:
    """Parameter `name`'s text as typed, if its type kept it (`remember_typed`)."""
    value: str | None = ctx.meta.get(_TYPED, {}).get(name)
    return value


def given_words(option: str, value: str) -> str:
    """An option (or argument) and its value as typed: `--action 'rag.*=5'`."""
    return f"{option} {shlex.quote(value)}"
