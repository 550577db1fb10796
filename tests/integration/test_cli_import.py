"""`sealtrail import` against a real server: how it reads its file while it records."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest
from click.testing import CliRunner

from sealtrail import AuditClient, _cli_import, build_filter
from sealtrail import _cli as cli
from sealtrail.v1 import event_pb2
from tests.conftest import ServerThread


def test_an_import_reads_its_next_batch_while_the_service_records_the_last(
    server: ServerThread,
    tenant: str,
    client: AuditClient,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A batch's lines were read, parsed and checked only once the call
    before it had answered, the service idle meanwhile: an import ran at half
    the rate of a plain RecordBatch loop of the same events. The next batch
    is read while a call is in flight: line 4 (not an event, refused as it is
    read) is met while the first batch's call waits for it."""
    met = threading.Event()
    refuse = _cli_import._refuse

    def noting(tally: _cli_import._Tally, number: int, why: str) -> None:
        if number == 4:
            met.set()
        refuse(tally, number, why)

    waited: list[bool] = []

    class Waiting(AuditClient):
        def record_batch(self, events: list[event_pb2.Event]) -> list[object]:  # type: ignore[override]
            if not waited:
                waited.append(met.wait(timeout=5))
            return list(super().record_batch(events))

    monkeypatch.setattr(_cli_import, "_refuse", noting)
    monkeypatch.setattr(cli, "AuditClient", Waiting)
    event = json.dumps({"action": "import.ahead", "actor": {"id": "u"}})
    lines = tmp_path / "events.ndjson"
    lines.write_text("\n".join([event, event, event, "not json", event]) + "\n")
    env = {"SEALTRAIL_SERVER": server.target, "SEALTRAIL_TOKEN": server.token(tenant)}
    shown = CliRunner().invoke(cli.main, ["import", "--batch-size", "2", str(lines)], env=env)
    assert shown.exit_code == 3, shown.output
    assert waited == [True]
    assert shown.stdout == f"recorded 4 events from {lines}; 1 line refused\n"
    assert shown.stderr.startswith("line 4: not an Event")
    assert sum(1 for _ in client.query(build_filter(actions="import.ahead"))) == 4
