"""SIGTERM while Record calls are in flight: every call the server accepted
is answered and stored, later calls are refused with UNAVAILABLE (never
hung), and the process exits cleanly within its grace period."""

from __future__ import annotations

import math
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable
from contextlib import closing
from typing import Any, cast

import grpc
import psycopg
import pytest
from google.rpc import error_details_pb2, status_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc

from sealtrail import AuditClient, RpcFailedError, UnavailableError, build_event
from sealtrail.v1 import audit_service_pb2, audit_service_pb2_grpc
from sealtrail_server.api.export import StallWatch
from tests.conftest import ServerThread
from tests.processes import ServerProcess
from tests.silent_proxy import SilentProxy, database_upstream, through


def _record_7_mb(client: AuditClient) -> None:
    """600 events of 12 KB each: an export of them outlasts a reader's window."""
    blob = "x" * 12_000
    for start in range(0, 600, 200):
        results = client.record_batch(
            [
                build_event(action="bulk.item", actor_id="u", details={"b": blob, "n": n})
                for n in range(start, start + 200)
            ]
        )
        assert all(result.error is None for result in results)


def test_sigterm_finishes_what_is_in_flight_and_refuses_the_rest(
    migrated_database_url: str, tenant: str, sql: psycopg.Connection[Any], server: Any
) -> None:
    token = server.token(tenant, "recorder")
    process = ServerProcess(migrated_database_url)
    acknowledged: dict[str, str] = {}
    refused: list[str] = []
    cancelled: list[str] = []
    failures: list[tuple[str, float, BaseException]] = []  # key, seconds after SIGTERM, error
    stop = threading.Event()
    began = math.inf

    def write(worker: int) -> None:
        # No retries: each call's own fate is what this test looks at.
        with AuditClient(process.target, token=token, max_attempts=1, timeout=10) as client:
            n = 0
            while not stop.is_set():
                key = f"{worker}-{n}"
                n += 1
                sent = time.monotonic()
                try:
                    result = client.record(
                        build_event(action="doc.edit", actor_id="u", idempotency_key=key)
                    )
                except UnavailableError:
                    refused.append(key)
                    time.sleep(0.01)
                    continue
                except RpcFailedError as error:
                    # A call caught as the server stops may be cancelled: never
                    # acknowledged, so the client retries it (same key), as below.
                    if error.code != grpc.StatusCode.CANCELLED:
                        failures.append((key, sent - began, error))
                        return
                    cancelled.append(key)
                    continue
                except Exception as error:  # the test fails on anything else
                    failures.append((key, sent - began, error))
                    return
                acknowledged[key] = result.event.id

    writers = [threading.Thread(target=write, args=(w,)) for w in range(8)]
    for writer in writers:
        writer.start()
    # Busy before the signal, and refused after it: waited for, not slept for
    # (1.5 s of writes and 0.5 s of refusals, which a loaded machine's writers
    # may not have got going in).
    _until(lambda: len(acknowledged) >= 100 or bool(failures), "100 events acknowledged")
    before = len(acknowledged)
    began = time.monotonic()
    status = process.terminate(timeout=30)
    took = time.monotonic() - began
    _until(lambda: bool(refused) or bool(failures), "a call refused after the stop")
    stop.set()
    for writer in writers:
        writer.join(30)
    assert status == 0 and took < 15  # shutdown_grace is 10 s; it needed far less
    # Nothing hung or broke: answered, or refused cleanly. (Once on a loaded CI machine a
    # Record sent just before SIGTERM waited out its 10 s deadline: said in full if again.)
    assert failures == [], (took, failures, "".join(process.stderr[-40:]))
    assert before > 0 and refused  # it was busy, then refused
    rows = dict(
        sql.execute(
            "SELECT idempotency_key, id::text FROM events WHERE tenant_id = %s", [tenant]
        ).fetchall()
    )
    assert {key: rows.get(key) for key in acknowledged} == acknowledged
    # A cancelled call may or may not have been stored; a retry (same key) would
    # find it: never twice.
    assert len(rows) == len(set(rows))


def _until(condition: Callable[[], bool], what: str, *, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"not within {seconds} s: {what}"
        time.sleep(0.01)


def test_a_stopped_server_refuses_with_unavailable(migrated_database_url: str, server: Any) -> None:
    process = ServerProcess(migrated_database_url)
    target = process.target
    process.terminate()
    with grpc.insecure_channel(target) as channel:
        stub = channel.unary_unary("/sealtrail.v1.AuditLogService/Record")
        try:
            stub(b"", timeout=5)
        except grpc.RpcError as error:
            assert error.code() == grpc.StatusCode.UNAVAILABLE
        else:  # pragma: no cover
            raise AssertionError("a stopped server answered")


def test_a_health_watch_ends_as_the_server_stops(migrated_database_url: str, server: Any) -> None:
    """gRPC's client-side health checking keeps a Watch open: told NOT_SERVING,
    it was held open, and with it the stop, for the whole grace (helper-140)."""
    process = ServerProcess(migrated_database_url, env={"SEALTRAIL_SHUTDOWN_GRACE": "300"})
    try:
        with grpc.insecure_channel(process.target) as channel:
            watch = health_pb2_grpc.HealthStub(channel).Watch(
                health_pb2.HealthCheckRequest(service=""), timeout=30
            )
            serving = health_pb2.HealthCheckResponse
            assert next(watch).status == serving.SERVING
            process.proc.send_signal(signal.SIGTERM)
            assert next(watch).status == serving.NOT_SERVING  # then ended, for another server
            with pytest.raises(grpc.RpcError) as ended:
                next(watch)
            assert ended.value.code() == grpc.StatusCode.UNAVAILABLE
            assert process.proc.wait(30) == 0  # not after the grace of 300 s
    finally:
        process.kill()


def test_a_collector_that_does_not_answer_holds_a_stop_for_seconds_at_most(
    migrated_database_url: str, tenant: str, server: Any
) -> None:
    """The metrics' last export, then the spans', each waited the exporter's
    whole timeout (10 s by default, 40 s here) for a hung collector (helper-140)."""

    def stop_seconds(env: dict[str, str]) -> float:
        process = ServerProcess(migrated_database_url, env=env)
        try:
            with AuditClient(process.target, token=server.token(tenant)) as client:
                client.record(build_event(action="doc.edit", actor_id="u"))  # spans to export
            began = time.monotonic()
            assert process.terminate(timeout=90) == 0
            return time.monotonic() - began
        finally:
            process.kill()

    baseline = stop_seconds({})
    with socket.create_server(("127.0.0.1", 0)) as mute:  # listens, never answers
        hung = stop_seconds(
            {
                "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{mute.getsockname()[1]}",
                "OTEL_EXPORTER_OTLP_TIMEOUT": "40",
            }
        )
    assert hung < baseline + 20, (baseline, hung)


def test_a_second_signal_ends_the_calls_in_flight_at_once(
    migrated_database_url: str, tenant: str, server: Any
) -> None:
    """An export to a client that reads no further holds a stop for its whole
    grace; a second signal (an operator's second Ctrl-C) ends it at once."""
    process = ServerProcess(migrated_database_url, env={"SEALTRAIL_SHUTDOWN_GRACE": "300"})
    token = server.token(tenant)
    # No BDP probe: the client's window stays at 64 KiB and no more of the
    # export is sent ahead of what it reads.
    options = [("grpc.http2.bdp_probe", 0)]
    try:
        with (
            AuditClient(process.target, token=token, timeout=60) as client,
            grpc.insecure_channel(process.target, options=options) as channel,
        ):
            _record_7_mb(client)
            export = audit_service_pb2_grpc.AuditLogServiceStub(channel).Export(
                audit_service_pb2.ExportRequest(format=audit_service_pb2.EXPORT_FORMAT_NDJSON),
                metadata=[("authorization", f"Bearer {token}")],
            )
            assert next(export).chunk
            process.proc.send_signal(signal.SIGTERM)
            with pytest.raises(subprocess.TimeoutExpired):
                process.proc.wait(3)  # held by the export, the grace being 300 s
            began = time.monotonic()
            process.proc.send_signal(signal.SIGINT)
            assert process.proc.wait(30) == 0
            assert time.monotonic() - began < 30
            with pytest.raises(grpc.RpcError) as ended:
                for _ in export:
                    pass
            assert ended.value.code() == grpc.StatusCode.UNAVAILABLE  # resumable elsewhere
        said = "".join(process.stderr)
        assert "ending in-flight calls now" in said
    finally:
        process.kill()


def test_a_third_signal_exits_though_the_stop_waits_on_the_database(
    migrated_database_url: str, tenant: str, server: Any
) -> None:
    """With the calls ended, a stop can still wait: here on a database that
    takes what is sent and never answers (a hung server or pooler; TCP, its
    bytes acknowledged, never gives up). A third signal exits at once, and
    nothing unacknowledged is kept."""
    token = server.token(tenant, "recorder")
    with closing(SilentProxy(database_upstream(migrated_database_url))) as proxy:
        process = ServerProcess(
            through(proxy, migrated_database_url), env={"SEALTRAIL_SHUTDOWN_GRACE": "300"}
        )
        try:
            with AuditClient(process.target, token=token, max_attempts=1, timeout=60) as client:
                client.record(action="doc.edit", actor_id="u")
                proxy.partition()
                failed: list[BaseException] = []

                def write() -> None:
                    try:
                        client.record(action="doc.unanswered", actor_id="u")
                    except BaseException as error:  # ended unanswered, as it should
                        failed.append(error)

                writer = threading.Thread(target=write)
                writer.start()
                time.sleep(1)  # the write waits for the silent database
                for signum in (signal.SIGTERM, signal.SIGINT):
                    process.proc.send_signal(signum)
                    with pytest.raises(subprocess.TimeoutExpired):
                        process.proc.wait(3)  # held: by the call, then by the database
                began = time.monotonic()
                process.proc.send_signal(signal.SIGTERM)
                assert process.proc.wait(30) == 1
                assert time.monotonic() - began < 30
                writer.join(30)
                assert failed, "a write no one committed was answered"
            assert "exiting now" in "".join(process.stderr)
        finally:
            process.kill()
    # The proxy closed, the database ends the silent sessions' transactions.
    with psycopg.connect(migrated_database_url) as conn:
        [(kept,)] = conn.execute(
            "SELECT count(*) FROM events WHERE tenant_id = %s AND action = 'doc.unanswered'",
            [tenant],
        ).fetchall()
    assert kept == 0


def _details(error: grpc.RpcError) -> tuple[error_details_pb2.ErrorInfo, float | None]:
    """The ErrorInfo of a call's status, and its RetryInfo's delay (None: none)."""
    call = cast(grpc.Call, error)
    found = dict(call.trailing_metadata() or ()).get("grpc-status-details-bin")
    info, delay = error_details_pb2.ErrorInfo(), None
    if found is None:
        return info, delay
    status = status_pb2.Status.FromString(cast(bytes, found))
    for detail in status.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            detail.Unpack(info)
        elif detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
            retry = error_details_pb2.RetryInfo()
            detail.Unpack(retry)
            delay = retry.retry_delay.ToNanoseconds() / 1e9
    return info, delay


def test_an_export_the_grace_cannot_hold_ends_as_streams_do_before_it_runs_out(
    migrated_database_url: str, tenant: str, server: Any
) -> None:
    """An export still read (slowly) as the grace ran out ended UNAVAILABLE in
    gRPC's words ("Cancelling all calls"), with no reason and no retry delay.
    It ends SERVER_STOPPING, with RetryInfo, before the grace runs out, saying
    how to export the rest; an export that finishes within the grace is not cut."""
    grace = 4.0
    process = ServerProcess(migrated_database_url, env={"SEALTRAIL_SHUTDOWN_GRACE": f"{grace:g}"})
    token = server.token(tenant)
    metadata = [("authorization", f"Bearer {token}")]
    # No BDP probe: the client's window stays at 64 KiB, and the export is sent
    # only as fast as it is read.
    options = [("grpc.http2.bdp_probe", 0)]
    try:
        with (
            AuditClient(process.target, token=token, timeout=60) as client,
            grpc.insecure_channel(process.target, options=options) as channel,
        ):
            _record_7_mb(client)
            stub = audit_service_pb2_grpc.AuditLogServiceStub(channel)
            ndjson = audit_service_pb2.EXPORT_FORMAT_NDJSON
            slow = stub.Export(audit_service_pb2.ExportRequest(format=ndjson), metadata=metadata)
            quick = stub.Export(
                audit_service_pb2.ExportRequest(format=ndjson, first_seq=1, last_seq=40),
                metadata=metadata,
            )
            content = bytearray(next(slow).chunk)
            assert content
            first = next(quick)
            process.proc.send_signal(signal.SIGTERM)
            began = time.monotonic()
            rest = list(quick)  # read at once: done well within the grace
            assert rest[-1].HasField("manifest") and rest[-1].manifest.row_count == 40
            assert first.chunk
            # 64 KiB every 0.1 s: the 7 MB would take some 11 s, past the grace.
            with pytest.raises(grpc.RpcError) as ended:
                for response in slow:
                    content += response.chunk
                    time.sleep(0.1)
            took = time.monotonic() - began
            assert ended.value.code() == grpc.StatusCode.UNAVAILABLE, ended.value.details()
            info, delay = _details(ended.value)
            assert info.reason == "SERVER_STOPPING", ended.value.details()
            assert delay is not None and delay > 0
            assert took < grace, took  # before the grace ran out
            # It says how to export the rest: after the last seq received, up to
            # the end of what it was exporting.
            received = [
                int(line.split(b'"seq":')[-1].split(b",")[0]) for line in content.split(b"\n")[:-1]
            ]
            assert received == list(range(1, len(received) + 1))
            resume_to = int(info.metadata["last_seq"])
            assert resume_to > received[-1]
            said = ended.value.details() or ""
            assert "first_seq" in said and f"last_seq {resume_to}" in said, said
            assert process.proc.wait(30) == 0
    finally:
        process.kill()


def test_a_stream_or_export_refused_as_the_server_stops_records_nothing(
    migrated_database_url: str, tenant: str, sql: psycopg.Connection[Any]
) -> None:
    """A call that reaches its handler as the server stops (its headers came
    before gRPC refused new calls) is refused, SERVER_STOPPING, as is any
    stream once streams are told to end and any export once exports are cut:
    a StreamEvents was recorded (`audit_log.streamed`) before it ended so, and
    an export would have been recorded, then cut by gRPC as the grace ran out."""
    server = ServerThread(migrated_database_url)
    try:
        token = server.token(tenant)
        metadata = [("authorization", f"Bearer {token}")]

        async def stopping() -> None:  # as a stop does, before gRPC's own stop
            hub, servicer = server.service._hub, server.service._servicer
            assert hub is not None and servicer is not None
            hub.end_streams()
            servicer.exports_open.cut_for_stop()

        server.run(stopping())
        with grpc.insecure_channel(server.target) as channel:
            stub = audit_service_pb2_grpc.AuditLogServiceStub(channel)
            calls = {
                "stream": lambda: list(
                    stub.StreamEvents(
                        audit_service_pb2.StreamEventsRequest(), metadata=metadata, timeout=30
                    )
                ),
                "stream after_seq": lambda: list(
                    stub.StreamEvents(
                        audit_service_pb2.StreamEventsRequest(after_seq=0),
                        metadata=metadata,
                        timeout=30,
                    )
                ),
                "export": lambda: list(
                    stub.Export(
                        audit_service_pb2.ExportRequest(
                            format=audit_service_pb2.EXPORT_FORMAT_NDJSON
                        ),
                        metadata=metadata,
                        timeout=30,
                    )
                ),
            }
            for name, call in calls.items():
                with pytest.raises(grpc.RpcError) as refused:
                    call()
                assert refused.value.code() == grpc.StatusCode.UNAVAILABLE, name
                info, delay = _details(refused.value)
                assert info.reason == "SERVER_STOPPING" and delay, (name, refused.value.details())
        recorded = sql.execute(
            "SELECT action FROM events WHERE tenant_id = %s AND action LIKE 'audit_log.%%'",
            [tenant],
        ).fetchall()
        assert recorded == []
    finally:
        server.close()


@pytest.mark.parametrize("cut_first", [False, True], ids=["handed, then cut", "cut, then handed"])
def test_an_export_that_handed_its_manifest_is_not_cut_by_a_stop(
    migrated_database_url: str, tenant: str, monkeypatch: pytest.MonkeyPatch, cut_first: bool
) -> None:
    """Exports cut for a stop a moment after one handed its manifest (its last
    response) to gRPC, before gRPC finished its call, or just before (the cut
    comes a loop pass later): it was ended UNAVAILABLE (`SERVER_STOPPING`), so
    its client, which got every row and the manifest, then an error, reported
    a complete export as failed. It ends OK."""
    server = ServerThread(migrated_database_url)
    try:
        token = server.token(tenant)
        servicer = server.service._servicer
        assert servicer is not None
        handing = StallWatch.handing
        cut: list[bool] = []

        def and_cut(watch: StallWatch, response: audit_service_pb2.ExportResponse) -> None:
            if not cut_first:
                handing(watch, response)
            if response.HasField("manifest"):  # the stop's cut comes now
                servicer.exports_open.cut_for_stop()
                cut.append(True)
            if cut_first:
                handing(watch, response)

        monkeypatch.setattr(StallWatch, "handing", and_cut)
        with AuditClient(server.target, token=token, timeout=30) as client:
            client.record_batch(
                [build_event(action="doc.edit", actor_id="u", details={"n": n}) for n in range(3)]
            )
        with grpc.insecure_channel(server.target) as channel:
            stub = audit_service_pb2_grpc.AuditLogServiceStub(channel)
            responses = stub.Export(
                audit_service_pb2.ExportRequest(format=audit_service_pb2.EXPORT_FORMAT_NDJSON),
                metadata=[("authorization", f"Bearer {token}")],
                timeout=30,
            )
            received: list[audit_service_pb2.ExportResponse] = []
            try:
                received.extend(responses)
            except grpc.RpcError as error:
                manifest = any(response.HasField("manifest") for response in received)
                got = "the manifest" if manifest else "no manifest"
                raise AssertionError(f"{got}, then {error.code()}: {error.details()}") from None
        assert cut == [True]
        assert received[-1].HasField("manifest") and received[-1].manifest.row_count == 4
        content = b"".join(response.chunk for response in received)
        assert content.count(b"\n") == 4
        assert responses.code() == grpc.StatusCode.OK
    finally:
        server.close()
