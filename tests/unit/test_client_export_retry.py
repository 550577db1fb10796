"""When the clients retry an export: before its first message, as a call is
(the server's delay, then max_attempts), but never a refusal for the export
rate, and nothing once a message has arrived. Against grpcio-testing's fake
channel (the sync client) and a scripted server (the async one)."""

from __future__ import annotations

import asyncio
import hashlib
import random
import threading
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import grpc_testing
import pytest
from google.rpc import error_details_pb2, status_pb2

from sealtrail import AsyncAuditClient, AuditClient, ResourceExhaustedError, UnavailableError
from sealtrail.v1 import audit_service_pb2
from tests.fake_channel import retrying_client
from tests.rpc_status import retry_info, status_of, status_trailers
from tests.scripted_service import scripted

SERVICE = audit_service_pb2.DESCRIPTOR.services_by_name["AuditLogService"]
EXPORT = SERVICE.methods_by_name["Export"]
CONTENT = b'{"seq":1}\n'


def _refusal(code: grpc.StatusCode, reason: str, retry_after: float) -> status_pb2.Status:
    info = error_details_pb2.ErrorInfo(reason=reason, domain="sealtrail")
    return status_of(code, f"refused: {reason}", info, retry_info(retry_after))


TOO_MANY = _refusal(grpc.StatusCode.RESOURCE_EXHAUSTED, "TOO_MANY_EXPORTS", 5.0)
RATE = _refusal(grpc.StatusCode.RESOURCE_EXHAUSTED, "EXPORT_RATE_LIMITED", 50.0)
STOPPING = _refusal(grpc.StatusCode.UNAVAILABLE, "SERVER_STOPPING", 1.0)


def _chunk() -> audit_service_pb2.ExportResponse:
    return audit_service_pb2.ExportResponse(chunk=CONTENT, rows_so_far=1)


def _manifest() -> audit_service_pb2.ExportResponse:
    return audit_service_pb2.ExportResponse(
        manifest=audit_service_pb2.ExportManifest(
            row_count=1, byte_count=len(CONTENT), sha256=hashlib.sha256(CONTENT).digest()
        ),
        rows_so_far=1,
    )


@pytest.fixture
def client(channel: grpc_testing.Channel, sleeps: list[float]) -> Iterator[AuditClient]:
    with retrying_client(channel, sleeps) as client:
        yield client


def _refuse(channel: grpc_testing.Channel, status: status_pb2.Status) -> bytes:
    _, request, rpc = channel.take_unary_stream(EXPORT)
    rpc.terminate(status_trailers(status), grpc.StatusCode(_code(status)), status.message)
    return bytes(request.SerializeToString())


def _code(status: status_pb2.Status) -> grpc.StatusCode:
    return next(code for code in grpc.StatusCode if code.value[0] == status.code)


def test_an_export_refused_for_the_exports_open_is_retried_after_the_servers_delay(
    client: AuditClient, channel: grpc_testing.Channel, sleeps: list[float], tmp_path: Path
) -> None:
    """TOO_MANY_EXPORTS comes before the export is recorded, with the delay
    after which a place may be free: it was raised at once, and a bundle
    failed with it (helper-214). It is retried as a call is."""
    with ThreadPoolExecutor(max_workers=1) as pool:
        exported = pool.submit(client.export, tmp_path / "out.ndjson")
        first = _refuse(channel, TOO_MANY)
        _, request, rpc = channel.take_unary_stream(EXPORT)
        assert request.SerializeToString() == first  # the same export asked again
        rpc.send_response(_chunk())
        rpc.send_response(_manifest())
        rpc.terminate((), grpc.StatusCode.OK, "")
        assert exported.result(timeout=10).row_count == 1
    assert (tmp_path / "out.ndjson").read_bytes() == CONTENT
    assert len(sleeps) == 1 and 5.0 < sleeps[0] <= 5.1  # the server's delay, and jitter


def test_an_export_closed_from_another_thread_while_it_waits_to_retry_ends_there(
    channel: grpc_testing.Channel,
) -> None:
    """Its generator's close() from another thread, while its reader waited
    inside it to retry, raised ValueError ("generator already executing"),
    and the export went on to its next attempt. Now the closing thread's
    close() returns, and the reader's loop ends after its wait, with no
    other attempt made (one would wait here for an answer never sent)."""
    waiting, go_on = threading.Event(), threading.Event()

    def wait_to_retry(seconds: float) -> None:
        waiting.set()
        go_on.wait(10)

    read: list[object] = []
    with AuditClient("unused", token="s3cret", channel=channel, sleep=wait_to_retry) as client:
        chunks = client.export_stream()
        # A daemon: one that made another attempt waits for its answer for good.
        reader = threading.Thread(target=lambda: read.extend(chunks), daemon=True)
        reader.start()
        _refuse(channel, TOO_MANY)
        assert waiting.wait(10)
        try:
            chunks.close()
        finally:
            go_on.set()
        reader.join(5)
        assert not reader.is_alive(), "the export made another attempt after its close()"
        assert read == []


def test_an_export_still_refused_after_max_attempts_says_it_was_retried(
    client: AuditClient, channel: grpc_testing.Channel, sleeps: list[float]
) -> None:
    with ThreadPoolExecutor(max_workers=1) as pool:
        exported = pool.submit(lambda: list(client.export_stream()))
        for _ in range(3):
            _refuse(channel, TOO_MANY)
        with pytest.raises(ResourceExhaustedError) as refused:
            exported.result(timeout=10)
    assert refused.value.reason == "TOO_MANY_EXPORTS" and refused.value.retried
    assert len(sleeps) == 2


def test_an_export_past_the_rate_is_raised_at_once(
    client: AuditClient, channel: grpc_testing.Channel, sleeps: list[float]
) -> None:
    """The rate's delay runs to its window's end (a minute, up to a day): the
    caller decides, and a bundle proves its records one by one instead."""
    with ThreadPoolExecutor(max_workers=1) as pool:
        exported = pool.submit(lambda: list(client.export_stream()))
        _refuse(channel, RATE)
        with pytest.raises(ResourceExhaustedError) as refused:
            exported.result(timeout=10)
    assert refused.value.reason == "EXPORT_RATE_LIMITED" and not refused.value.retried
    assert refused.value.retry_after == 50.0 and sleeps == []


def test_an_export_that_fails_after_its_first_message_is_not_retried(
    client: AuditClient, channel: grpc_testing.Channel, sleeps: list[float], tmp_path: Path
) -> None:
    """Under way, an export is not begun again: what was received would come
    again, and the caller has it."""
    taken = threading.Event()
    with ThreadPoolExecutor(max_workers=1) as pool:
        exported = pool.submit(
            client.export, tmp_path / "out.ndjson", progress=lambda rows, size: taken.set()
        )
        _, _, rpc = channel.take_unary_stream(EXPORT)
        rpc.send_response(_chunk())
        assert taken.wait(10)  # received (a status set before drops what is unread)
        rpc.terminate(status_trailers(STOPPING), grpc.StatusCode.UNAVAILABLE, STOPPING.message)
        with pytest.raises(UnavailableError) as failed:
            exported.result(timeout=10)
    assert not failed.value.retried and sleeps == []
    assert not (tmp_path / "out.ndjson").exists()


async def test_the_async_client_retries_an_export_before_its_first_message_only(
    tmp_path: Path,
) -> None:
    """The same with the async client: refused for the exports open, then
    exported; then an export failing after its first message, not retried."""
    attempts: list[audit_service_pb2.ExportRequest] = []
    waited: list[float] = []

    async def sleep(seconds: float) -> None:
        waited.append(seconds)

    async def export(
        request: bytes, context: grpc.aio.ServicerContext[bytes, bytes]
    ) -> AsyncIterator[bytes]:
        attempts.append(audit_service_pb2.ExportRequest.FromString(request))
        if len(attempts) == 1:
            await context.abort(
                grpc.StatusCode.RESOURCE_EXHAUSTED, TOO_MANY.message, status_trailers(TOO_MANY)
            )
        yield _chunk().SerializeToString()
        if len(attempts) == 3:
            await context.abort(
                grpc.StatusCode.UNAVAILABLE, STOPPING.message, status_trailers(STOPPING)
            )
        yield _manifest().SerializeToString()

    handler = grpc.unary_stream_rpc_method_handler(export)
    async with (
        scripted({"Export": handler}) as target,
        AsyncAuditClient(target, token="s3cret", sleep=sleep, rng=random.Random(0)) as client,
    ):
        manifest = await client.export(tmp_path / "out.ndjson")
        assert manifest.row_count == 1 and len(attempts) == 2
        assert len(waited) == 1 and 5.0 < waited[0] <= 5.1
        with pytest.raises(UnavailableError) as failed:
            await client.export(tmp_path / "again.ndjson")
        assert not failed.value.retried and len(attempts) == 3 and len(waited) == 1


async def test_an_async_export_closed_from_another_task_waiting_to_retry_ends_there() -> None:
    """Its `aclose()` from another task, while its reader waited inside it to
    retry, raised RuntimeError ("asynchronous generator is already running"),
    and the export went on to its next attempt. Now the closing task's
    aclose() returns, and the reader's loop ends after its wait, with no
    other attempt made."""
    attempts = 0
    waiting, go_on = asyncio.Event(), asyncio.Event()

    async def wait_to_retry(seconds: float) -> None:
        waiting.set()
        await go_on.wait()

    async def export(
        request: bytes, context: grpc.aio.ServicerContext[bytes, bytes]
    ) -> AsyncIterator[bytes]:
        nonlocal attempts
        attempts += 1
        await context.abort(
            grpc.StatusCode.RESOURCE_EXHAUSTED, TOO_MANY.message, status_trailers(TOO_MANY)
        )
        yield b""  # never: a generator, as an Export handler is

    read: list[object] = []
    handler = grpc.unary_stream_rpc_method_handler(export)
    async with (
        scripted({"Export": handler}) as target,
        AsyncAuditClient(target, token="s3cret", sleep=wait_to_retry) as client,
    ):
        chunks = client.export_stream()

        async def read_all() -> None:
            async for chunk in chunks:
                read.append(chunk)

        reader = asyncio.create_task(read_all())
        try:
            await asyncio.wait_for(waiting.wait(), 10)
            try:
                await chunks.aclose()
            finally:
                go_on.set()
            done, _ = await asyncio.wait([reader], timeout=5)
            assert done, "the export still runs after its aclose()"
            await reader  # ended, not cancelled nor failed
        finally:
            reader.cancel()
    assert read == [] and attempts == 1
