"""Issue 4's export figure and its in-run baseline; each function here is
the part that is timed (by `phases.run_once`, like integrity.py's).

- Export: one Export RPC (CSV, no filter) of the export log, the client
  reading every chunk, then checking the manifest's row and byte counts.
  Its time includes what Export does before the first row: the rate-limit
  look-up, recording the `audit_log.exported` event and signing a checkpoint.
- raw cursor CSV: this process reads the same rows through a server-side
  cursor, as the server does (same query, same fetch size), and encodes each
  with the server's own CsvEncoder, counting the bytes; no gRPC, no asyncio.

The export log is a tenant of its own, not the integrity log: every export
records an event in the tenant it exports, which would change the log that
VerifyLog and the bundle are checked against.
"""

from __future__ import annotations

from typing import Any

import grpc
import psycopg

from sealtrail.v1 import audit_service_pb2, audit_service_pb2_grpc
from sealtrail_server.export.formats import CsvEncoder

from .integrity import LONG_CALL_TIMEOUT, Work
from .phases import FigureFailed

_FETCH_ROWS = 2000  # rows per server-side cursor fetch, as the server's Export fetches them
_READY_TIMEOUT = 60.0


def connect(target: str) -> grpc.Channel:
    """A channel to `target`, connected before any timing starts."""
    channel = grpc.insecure_channel(target)
    grpc.channel_ready_future(channel).result(timeout=_READY_TIMEOUT)
    return channel


def export_csv(channel: grpc.Channel, token: str) -> Work:
    """One Export of the whole log as CSV; counts rows (from the manifest)."""
    stub = audit_service_pb2_grpc.AuditLogServiceStub(channel)
    request = audit_service_pb2.ExportRequest(format=audit_service_pb2.EXPORT_FORMAT_CSV)
    metadata = (("authorization", f"Bearer {token}"),)

    def work(notes: dict[str, Any]) -> int:
        received = chunks = 0
        manifest = None
        for response in stub.Export(request, metadata=metadata, timeout=LONG_CALL_TIMEOUT):
            if response.HasField("chunk"):
                received += len(response.chunk)
                chunks += 1
            else:
                manifest = response.manifest
        notes["csv_bytes"] = received
        notes["chunks"] = chunks
        if manifest is None:
            raise FigureFailed("Export ended without a manifest")
        if manifest.byte_count != received:
            raise FigureFailed(f"manifest says {manifest.byte_count} bytes, got {received}")
        return int(manifest.row_count)

    return work


def raw_csv(conn: psycopg.Connection[Any], tenant: str) -> Work:
    """Baseline for Export: the tenant's rows through a server-side cursor,
    each encoded by the server's CsvEncoder in this process; counts rows."""

    def work(notes: dict[str, Any]) -> int:
        encoder = CsvEncoder()
        size = len(encoder.start())
        count = 0
        with conn.transaction(), conn.cursor(name="bench_raw_csv") as cursor:
            cursor.itersize = _FETCH_ROWS
            cursor.execute(
                "SELECT seq, record, leaf_hash FROM events WHERE tenant_id = %s ORDER BY seq",
                [tenant],
            )
            for _seq, record, leaf_hash in cursor:
                size += len(encoder.row(record, leaf_hash))
                count += 1
        notes["csv_bytes"] = size + len(encoder.end())
        return count

    return work
