"""What the tests of one filter field check in more than one place: the
events a query finds, a filter refused by query and count alike, what a live
stream opened at a log's end follows, an export's signed filter, what a
sink's changed filter is recorded as, and what the CLI's query finds; and
the setup they share: a test's events recorded, two pages of a query, the
CLI's environment and its commands run."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Final

import pytest
from click.testing import CliRunner

from sealtrail import AuditClient, InvalidArgumentError, check_export
from sealtrail import _cli as cli
from sealtrail.v1 import event_pb2
from tests.conftest import ServerThread
from tests.integration.test_export_check import KEY

# What `refiltered` (tests/integration/test_weakening_warnings.py) answers for
# a sink's filter changed to match as many events or more, and to match fewer.
NOT_NARROWED: Final = (event_pb2.SEVERITY_INFO, [])
NARROWED: Final = (event_pb2.SEVERITY_WARNING, ["filter_narrowed"])


def having_recorded(
    client: AuditClient, make: Callable[..., event_pb2.Event], rows: Iterable[tuple[Any, ...]]
) -> AuditClient:
    """`client`, once it has recorded `make(*row)` for each of `rows` in one batch."""
    client.record_batch([make(*row) for row in rows])
    return client


def two_pages(
    client: AuditClient, event_filter: event_pb2.EventFilter, *, page_size: int
) -> tuple[list[str], str, str]:
    """The descriptions of the events on the first two pages (of `page_size`,
    oldest first) of what `event_filter` finds, the first page's
    next_page_token and the second's."""
    first = client.query_page(event_filter, page_size=page_size, order="oldest")
    rest = client.query_page(
        event_filter, page_size=page_size, order="oldest", page_token=first.next_page_token
    )
    found = [e.description for e in (*first.events, *rest.events)]
    return found, first.next_page_token, rest.next_page_token


def token_refused(
    client: AuditClient, event_filter: event_pb2.EventFilter, token: str, *, page_size: int
) -> None:
    """Asserts a page `token` refused for `event_filter`, another filter than
    the one it was given for (a token holds to its filter)."""
    with pytest.raises(Exception, match="page_token"):
        client.query_page(event_filter, page_size=page_size, order="oldest", page_token=token)


@contextmanager
def live_from_now(
    client: AuditClient, event_filter: event_pb2.EventFilter
) -> Iterator[Iterator[event_pb2.Event]]:
    """A live stream of the events `event_filter` matches, recorded after the
    log's current end (a fresh checkpoint's tree size); closed on leaving."""
    tree_size = client.get_checkpoint(fresh=True).tree_size
    live = client.stream(event_filter, after_seq=tree_size)
    try:
        yield live
    finally:
        live.close()


def descriptions_found(client: AuditClient, event_filter: event_pb2.EventFilter) -> list[str]:
    """The descriptions of the events `event_filter` finds, oldest first (a
    test's events each described by a name of its own)."""
    return [e.description for e in client.query(event_filter, order="oldest")]


def violations_refused(
    client: AuditClient, event_filter: event_pb2.EventFilter
) -> list[tuple[str, str]]:
    """The field violations (field, description) a query of `event_filter`
    is refused with, a count of it refused too (INVALID_ARGUMENT both)."""
    with pytest.raises(InvalidArgumentError) as caught:
        list(client.query(event_filter))
    with pytest.raises(InvalidArgumentError):
        client.count_events(event_filter)
    return list(caught.value.field_violations)


def exported_and_checked(
    client: AuditClient, path: Path, event_filter: event_pb2.EventFilter
) -> tuple[list[str], str, Path]:
    """Exports what `event_filter` finds to `path` with a manifest file, and
    checks the manifest offline: the descriptions exported (oldest first),
    the filter it signed (EventFilter JSON, as signed), and the manifest's path (for
    `refused_when_told`). The export is asserted filtered."""
    client.export(path, manifest_file=True, filter=event_filter)
    lines = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    kept = path.with_name(path.name + ".manifest.json")
    checked = check_export(kept, key=KEY)
    assert checked.filtered and checked.filter is not None
    return [line["description"] for line in lines], checked.filter, kept


def cli_descriptions(env: dict[str, str], *options: str) -> list[str]:
    """The descriptions of the events `sealtrail query *options` prints, oldest
    first (as JSON lines), the command asserted to succeed."""
    found = CliRunner().invoke(
        cli.main, ["query", "--format", "jsonl", "--order", "oldest", *options], env=env
    )
    assert found.exit_code == 0, found.output
    return [json.loads(line)["description"] for line in found.output.splitlines()]


def cli_env(server: ServerThread, tenant: str) -> dict[str, str]:
    """The environment the CLI reaches `server` in, with an API token of `tenant`'s."""
    return {"SEALTRAIL_SERVER": server.target, "SEALTRAIL_TOKEN": server.token(tenant)}


def cli_output(env: dict[str, str], *arguments: str, exit_code: int = 0) -> str:
    """What `sealtrail *arguments` prints, its exit code asserted (2: a usage
    error, a refused option's)."""
    ran = CliRunner().invoke(cli.main, list(arguments), env=env)
    assert ran.exit_code == exit_code, ran.output
    return ran.output
