"""Load generator processes. Each runs one `Workload` (gRPC calls through a
grpc.aio channel, or raw COPY transactions) from a common start time, warms
up, and counts only what completes inside the measurement window.

They are separate processes started with `spawn`, so neither the server
(another process) nor the other clients share their GIL.
"""

from __future__ import annotations

import asyncio
import collections
import multiprocessing
import random
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any

import grpc
import psycopg
from grpc_health.v1 import health_pb2, health_pb2_grpc

from sealtrail.v1 import audit_service_pb2, audit_service_pb2_grpc, integrity_pb2
from sealtrail_server.store.appender import _COPY_EVENTS as COPY_EVENTS

from .events import EventFactory, RowFactory
from .tracing import traceparent

CALL_TIMEOUT = 60.0
_READY_TIMEOUT = 60.0
_CHANNEL_OPTIONS = [
    ("grpc.max_receive_message_length", 64 * 1024 * 1024),
    ("grpc.max_send_message_length", 64 * 1024 * 1024),
]


@dataclass(frozen=True)
class Workload:
    """What one client process does. `kind` is empty, record, batch, copy or
    proof (GetInclusionProof of a random seq at `tree_size`, a checkpoint's).
    `details` adds that many small details to each event (see EventFactory)."""

    kind: str
    in_flight: int = 1
    batch_size: int = 1
    target: str = ""
    token: str = ""
    database_url: str = ""
    tenant: str = ""
    key_prefix: str = ""
    tree_size: int = 0
    # Each call sends a new sampled traceparent and x-request-id, as a traced caller does.
    traced: bool = False
    details: int = 0


@dataclass(frozen=True)
class Window:
    """Load starts at `begin`; what completes in [start, end) is counted."""

    begin: float
    start: float
    end: float

    @property
    def seconds(self) -> float:
        return self.end - self.start


@dataclass
class Tally:
    """One client process's counts inside the window."""

    calls: int = 0
    events: int = 0
    latencies: list[float] = field(default_factory=list)  # seconds, per call
    errors: collections.Counter[str] = field(default_factory=collections.Counter)

    def add(self, events: int, latency: float) -> None:
        self.calls += 1
        self.events += events
        self.latencies.append(latency)


# --- the parent's side -------------------------------------------------------


@dataclass
class Clients:
    """Started client processes, ready and waiting for their window."""

    processes: list[multiprocessing.process.BaseProcess]
    pipes: list[Connection]

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self.processes if p.pid is not None]


def start_clients(workloads: list[Workload]) -> Clients:
    """Start one process per workload and wait until each is connected."""
    context = multiprocessing.get_context("spawn")
    clients = Clients([], [])
    for workload in workloads:
        ours, theirs = context.Pipe()
        process = context.Process(target=_worker_main, args=(workload, theirs), daemon=True)
        process.start()
        theirs.close()
        clients.processes.append(process)
        clients.pipes.append(ours)
    for pipe in clients.pipes:
        if _receive(clients, pipe, _READY_TIMEOUT) != "ready":
            raise RuntimeError("a client process did not get ready")
    return clients


def go(clients: Clients, warmup: float, duration: float) -> Window:
    """Start every client's load at once; returns the measurement window."""
    begin = time.time() + 0.2
    window = Window(begin, begin + warmup, begin + warmup + duration)
    for pipe in clients.pipes:
        pipe.send(window)
    return window


def collect(clients: Clients, window: Window) -> list[Tally]:
    """Every client's tally, once its load has ended."""
    timeout = max(0.0, window.end - time.time()) + CALL_TIMEOUT + 10
    tallies = [_receive(clients, pipe, timeout) for pipe in clients.pipes]
    for process in clients.processes:
        process.join(10)
    return tallies


def stop_clients(clients: Clients) -> None:
    for process in clients.processes:
        if process.is_alive():
            process.terminate()
            process.join(5)


def _receive(clients: Clients, pipe: Connection, timeout: float) -> Any:
    if not pipe.poll(timeout):
        stop_clients(clients)
        raise RuntimeError(f"a client process sent nothing for {timeout:.0f} s")
    try:
        return pipe.recv()
    except EOFError:
        stop_clients(clients)
        raise RuntimeError("a client process died (see its traceback above)") from None


# --- the client process's side -----------------------------------------------


def _worker_main(workload: Workload, pipe: Connection) -> None:
    if workload.kind == "copy":
        pipe.send(_copy_worker(workload, pipe))
    else:
        pipe.send(asyncio.run(_grpc_worker(workload, pipe)))
    pipe.close()


def _wait_for_window(pipe: Connection) -> Window:
    pipe.send("ready")
    window: Window = pipe.recv()
    time.sleep(max(0.0, window.begin - time.time()))
    return window


async def _grpc_worker(workload: Workload, pipe: Connection) -> Tally:
    async with grpc.aio.insecure_channel(workload.target, options=_CHANNEL_OPTIONS) as channel:
        await asyncio.wait_for(channel.channel_ready(), _READY_TIMEOUT)
        call = _make_call(workload, channel)
        window = _wait_for_window(pipe)
        tally = Tally()
        await asyncio.gather(*(_call_loop(call, window, tally) for _ in range(workload.in_flight)))
        return tally


Call = Callable[[], Awaitable[int]]  # makes one call; returns the events it stored


class EntriesFailed(Exception):
    """Some entries of a RecordBatch came back with an error instead of an event."""

    def __init__(self, *, stored: int, count: int) -> None:
        super().__init__(f"{count} batch entries failed")
        self.stored = stored
        self.count = count


async def _call_loop(call: Call, window: Window, tally: Tally) -> None:
    """One call in flight at a time, back to back, until the window ends."""
    while True:
        started = time.perf_counter()
        try:
            events = await call()
        except grpc.aio.AioRpcError as error:
            tally.errors[error.code().name] += 1
            await asyncio.sleep(0.01)  # do not spin on a failing server
            events = -1
        except EntriesFailed as error:
            tally.errors["batch entry error"] += error.count
            events = error.stored
        now = time.time()
        if now >= window.end:
            return
        if now >= window.start and events >= 0:
            tally.add(events, time.perf_counter() - started)


def _make_call(workload: Workload, channel: grpc.aio.Channel) -> Call:
    """The one call this workload repeats: same channel, same metadata."""
    metadata = (("authorization", f"Bearer {workload.token}"),)
    if workload.kind == "empty":
        health = health_pb2_grpc.HealthStub(channel)
        check = health_pb2.HealthCheckRequest()

        async def empty_call() -> int:
            await health.Check(check, metadata=metadata, timeout=CALL_TIMEOUT)
            return 1

        return empty_call

    stub = audit_service_pb2_grpc.AuditLogServiceStub(channel)
    if workload.kind == "proof":
        size = workload.tree_size

        async def inclusion_proof() -> int:
            request = integrity_pb2.GetInclusionProofRequest(
                seq=random.randint(1, size), tree_size=size
            )
            await stub.GetInclusionProof(request, metadata=metadata, timeout=CALL_TIMEOUT)
            return 1

        return inclusion_proof

    factory = EventFactory(workload.key_prefix, details=workload.details)
    if workload.kind == "record":
        traced = workload.traced

        async def record() -> int:
            request = audit_service_pb2.RecordRequest()
            factory.make(request.event)
            if traced:  # the event leaves its correlation to the call, as most callers do
                request.event.context.ClearField("request_id")
                call_metadata = (
                    *metadata,
                    ("traceparent", traceparent()),
                    ("x-request-id", str(uuid.uuid4())),
                )
            else:
                call_metadata = metadata
            await stub.Record(request, metadata=call_metadata, timeout=CALL_TIMEOUT)
            return 1

        return record

    if workload.kind == "batch":
        size = workload.batch_size

        async def record_batch() -> int:
            request = audit_service_pb2.RecordBatchRequest()
            for _ in range(size):
                factory.make(request.events.add())
            response = await stub.RecordBatch(request, metadata=metadata, timeout=CALL_TIMEOUT)
            failed = sum(1 for result in response.results if result.HasField("error"))
            if failed:
                raise EntriesFailed(stored=size - failed, count=failed)
            return size

        return record_batch

    raise ValueError(f"unknown workload {workload.kind!r}")


def batch_bytes(workload: Workload) -> int:
    """The encoded size of one of the RecordBatch requests a batch `workload` sends."""
    factory = EventFactory(workload.key_prefix, details=workload.details)
    request = audit_service_pb2.RecordBatchRequest()
    for _ in range(workload.batch_size):
        factory.make(request.events.add())
    return request.ByteSize()


def _copy_worker(workload: Workload, pipe: Connection) -> Tally:
    """Transactions of one COPY of `batch_size` rows each, on one connection."""
    rows = RowFactory(workload.tenant, workload.key_prefix)
    tally = Tally()
    with psycopg.connect(workload.database_url, autocommit=True) as conn:
        window = _wait_for_window(pipe)
        while True:
            started = time.perf_counter()
            with conn.transaction(), conn.cursor().copy(COPY_EVENTS) as copy:
                # Rows are made while earlier ones stream, as a lean producer would.
                for row in rows.batch(workload.batch_size):
                    copy.write_row(row)
            now = time.time()
            if now >= window.end:
                return tally
            if now >= window.start:
                tally.add(workload.batch_size, time.perf_counter() - started)
