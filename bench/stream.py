"""Issue 4's stream figure: how long StreamEvents takes to deliver an event
to its live subscribers once its write was acknowledged.

One run of it ("a phase") is:

- subscriber processes, each with some of the subscribers: every subscriber
  is one StreamEvents call (no filter, live start: the next event, events in
  batches as stream() asks for them) on its own connection, as separate tail
  clients would be, and notes time.time() as
  each event arrives; should its call fail, it resumes from its cursor
  (`after_seq`), as the clients' stream() does, and the error is counted;
- one recorder process: RecordBatch calls of `batch_size` events, started on
  a fixed schedule (open loop: a slow answer does not delay the next call)
  so `rate` events/s are recorded, noting time.time() at each acknowledgement
  and the seqs the answer gave its events.

The processes share this machine's clock, so an event's delivery latency to
a subscriber is its arrival time minus its acknowledgement time: both taken
on the client side, by the same clock, matched by seq. Only events whose
acknowledgement falls in the measured window count. Once the recorder is
done, the subscribers are told the last seq acknowledged and get up to
DRAIN_SECONDS to receive everything; what they have not received by then is
reported missing, and counted in the percentiles as arriving when they
stopped waiting (so with any missing, p99 is a lower bound).

The baseline, from the same window: the RecordBatch acknowledgements
themselves (latency from sending to the answer). They go through the same
server, under the same load, and carry the very events being delivered, so
delivery p99 / ack p99 says what the fan-out adds on top of recording.
"""

from __future__ import annotations

import asyncio
import collections
import multiprocessing
import time
from array import array
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any

import grpc

from sealtrail._convert import STREAM_EVENTS_PER_MESSAGE
from sealtrail.v1 import audit_service_pb2, audit_service_pb2_grpc

from . import cpu
from .events import EventFactory
from .load import CALL_TIMEOUT, Window
from .phases import PhaseResult, Timing, percentile_ms

# Events per message, as the clients' stream() asks for them.
BATCH = STREAM_EVENTS_PER_MESSAGE
DRAIN_SECONDS = 30.0  # after the last acknowledgement, for every delivery to arrive
_READY_TIMEOUT = 60.0
# One connection per subscriber: channels to one target share a connection
# unless told to keep their own.
_OWN_CONNECTION = [("grpc.use_local_subchannel_pool", 1)]


@dataclass(frozen=True)
class StreamLoad:
    target: str
    token: str
    subscribers: int  # StreamEvents calls in all
    processes: int  # subscriber processes they are spread over
    rate: int  # events/s recorded
    batch_size: int  # events per RecordBatch
    key_prefix: str


@dataclass
class Recorded:
    """What the recorder sent back: each event's seq and acknowledgement time,
    and each call's latency with the time it was sent."""

    seqs: array[int] = field(default_factory=lambda: array("q"))
    acked: array[float] = field(default_factory=lambda: array("d"))
    sent: array[float] = field(default_factory=lambda: array("d"))
    latencies: array[float] = field(default_factory=lambda: array("d"))
    late: int = 0  # calls started more than one interval behind the schedule
    errors: collections.Counter[str] = field(default_factory=collections.Counter)


@dataclass
class Received:
    """One subscriber's events: seqs and arrival times, in arrival order; the
    errors its calls ended with (after each, it resumed from its cursor); and
    when it stopped waiting."""

    seqs: array[int] = field(default_factory=lambda: array("q"))
    arrived: array[float] = field(default_factory=lambda: array("d"))
    errors: collections.Counter[str] = field(default_factory=collections.Counter)
    stopped: float = 0.0


def run(
    load: StreamLoad, timing: Timing, watched: cpu.Watched
) -> tuple[PhaseResult, PhaseResult, Window]:
    """One phase: delivery to the subscribers, the RecordBatch acks (its
    baseline), and the window they were measured in."""
    context = multiprocessing.get_context("spawn")
    processes: list[multiprocessing.process.BaseProcess] = []
    pipes: list[Connection] = []

    def start(target: Any, *args: Any) -> Connection:
        ours, theirs = context.Pipe()
        process = context.Process(target=target, args=(*args, theirs), daemon=True)
        process.start()
        theirs.close()
        processes.append(process)
        pipes.append(ours)
        return ours

    try:
        shares = [
            load.subscribers // load.processes + (i < load.subscribers % load.processes)
            for i in range(min(load.processes, load.subscribers))
        ]
        listeners = [start(_subscriber_main, load.target, load.token, n) for n in shares]
        recorder = start(recorder_main, load)
        for pipe in pipes:  # every subscriber is subscribed, the recorder connected
            if receive(pipe, _READY_TIMEOUT) != "ready":
                raise RuntimeError("a stream client process did not get ready")
        begin = time.time() + 0.2
        window = Window(begin, begin + timing.warmup, begin + timing.warmup + timing.duration)
        recorder.send(window)
        watched = cpu.Watched(
            watched.server, watched.postmaster, [p.pid for p in processes if p.pid]
        )
        usage = cpu.measure(window, watched)
        recorded: Recorded = receive(recorder, CALL_TIMEOUT + 10)
        last = max(recorded.seqs, default=0)
        for pipe in listeners:
            pipe.send(last)
        received: list[Received] = [
            item for pipe in listeners for item in receive(pipe, DRAIN_SECONDS + 30)
        ]
    except BaseException:
        for process in processes:
            process.terminate()
        raise
    finally:
        for process in processes:
            process.join(5)
            if process.is_alive():
                process.terminate()
                process.join(5)
    delivery = _delivery(load, window, recorded, received, usage)
    return delivery, acks_result(load, window, recorded, usage), window


def receive(pipe: Connection, timeout: float) -> Any:
    if not pipe.poll(timeout):
        raise RuntimeError(f"a stream client process sent nothing for {timeout:.0f} s")
    try:
        return pipe.recv()
    except EOFError:
        raise RuntimeError("a stream client process died (see its traceback above)") from None


# --- the figures -------------------------------------------------------------


def _delivery(
    load: StreamLoad,
    window: Window,
    recorded: Recorded,
    received: list[Received],
    usage: dict[str, float],
) -> PhaseResult:
    """Latency of every (subscriber, event) pair whose ack is in the window;
    a pair never delivered counts as arriving when its subscriber stopped
    waiting (a lower bound). The rate is of deliveries that arrived in the
    window, whatever their ack."""
    acked = {
        seq: at
        for seq, at in zip(recorded.seqs, recorded.acked, strict=True)
        if window.start <= at < window.end
    }
    expected = len(acked)
    latencies: list[float] = []
    counts: list[int] = []
    duplicates = disorders = arrived_in_window = 0
    errors: collections.Counter[str] = collections.Counter()
    for subscriber in received:
        seen: set[int] = set()
        previous = 0
        for seq, arrived in zip(subscriber.seqs, subscriber.arrived, strict=True):
            duplicates += seq in seen
            disorders += seq < previous
            seen.add(seq)
            previous = seq
            if seq in acked:
                latencies.append(arrived - acked[seq])
            arrived_in_window += window.start <= arrived < window.end
        missing = acked.keys() - seen
        latencies.extend(subscriber.stopped - acked[seq] for seq in missing)
        counts.append(expected - len(missing))
        errors.update(subscriber.errors)
    latencies.sort()
    return PhaseResult(
        name=f"StreamEvents, {load.subscribers} subs, {load.rate:,} ev/s",
        unit="deliveries/s",
        clients=load.processes,
        in_flight=load.subscribers,
        seconds=window.seconds,
        calls=load.subscribers,
        events=arrived_in_window,
        rate=arrived_in_window / window.seconds,
        latency_p50_ms=percentile_ms(latencies, 0.50),
        latency_p99_ms=percentile_ms(latencies, 0.99),
        latency_p95_ms=percentile_ms(latencies, 0.95),
        errors=dict(errors),
        cpu=usage,
        notes={
            "deliveries_measured": len(latencies),
            "events_acked_in_window": expected,
            "events_acked_in_run": len(recorded.seqs),
            "subscribers_with_all": sum(count == expected for count in counts),
            "fewest_received": min(counts, default=0),
            # Counted in the latencies as arriving when the wait ended.
            "missing_deliveries": expected * len(received) - sum(counts),
            "duplicate_deliveries": duplicates,
            "out_of_order_deliveries": disorders,
            # Reached the subscriber before the recorder had the answer: the
            # NOTIFY fan-out overtook the RecordBatch response.
            "deliveries_before_ack": sum(1 for latency in latencies if latency < 0),
            "latency_max_ms": 1000 * latencies[-1] if latencies else None,
        },
    )


def acks_result(
    load: StreamLoad, window: Window, recorded: Recorded, usage: dict[str, float]
) -> PhaseResult:
    """The RecordBatch calls that were answered inside the window."""
    latencies = sorted(
        latency
        for sent, latency in zip(recorded.sent, recorded.latencies, strict=True)
        if window.start <= sent + latency < window.end
    )
    events = len(latencies) * load.batch_size
    return PhaseResult(
        name=f"RecordBatch acks ({load.batch_size}/call, paced)",
        unit="events/s",
        clients=1,
        in_flight=0,  # open loop: as many as the schedule and the answers make
        seconds=window.seconds,
        calls=len(latencies),
        events=events,
        rate=events / window.seconds,
        latency_p50_ms=percentile_ms(latencies, 0.50),
        latency_p99_ms=percentile_ms(latencies, 0.99),
        latency_p95_ms=percentile_ms(latencies, 0.95),
        errors=dict(recorded.errors),
        cpu=usage,
        notes={"calls_started_late": recorded.late},
    )


# --- the recorder process ----------------------------------------------------


def recorder_main(load: StreamLoad, pipe: Connection) -> None:
    pipe.send(asyncio.run(_record(load, pipe)))
    pipe.close()


async def _record(load: StreamLoad, pipe: Connection) -> Recorded:
    metadata = (("authorization", f"Bearer {load.token}"),)
    factory = EventFactory(load.key_prefix)
    recorded = Recorded()
    interval = load.batch_size / load.rate

    async def one_call(stub: audit_service_pb2_grpc.AuditLogServiceStub) -> None:
        request = audit_service_pb2.RecordBatchRequest()
        for _ in range(load.batch_size):
            factory.make(request.events.add())
        sent = time.time()
        try:
            response = await stub.RecordBatch(request, metadata=metadata, timeout=CALL_TIMEOUT)
        except grpc.aio.AioRpcError as error:
            recorded.errors[error.code().name] += 1
            return
        acked = time.time()
        recorded.sent.append(sent)
        recorded.latencies.append(acked - sent)
        for result in response.results:
            if result.HasField("error"):
                recorded.errors["batch entry error"] += 1
            else:
                recorded.seqs.append(result.event.seq)
                recorded.acked.append(acked)

    async with grpc.aio.insecure_channel(load.target) as channel:
        await asyncio.wait_for(channel.channel_ready(), _READY_TIMEOUT)
        stub = audit_service_pb2_grpc.AuditLogServiceStub(channel)
        pipe.send("ready")
        window: Window = pipe.recv()
        calls = []
        for number in range(int((window.end - window.begin) / interval)):
            due = window.begin + number * interval
            await asyncio.sleep(max(0.0, due - time.time()))
            recorded.late += time.time() - due > interval
            calls.append(asyncio.create_task(one_call(stub)))
        await asyncio.gather(*calls)
    return recorded


# --- the subscriber processes ------------------------------------------------


def _subscriber_main(target: str, token: str, count: int, pipe: Connection) -> None:
    pipe.send(asyncio.run(_subscribe(target, token, count, pipe)))
    pipe.close()


async def _subscribe(target: str, token: str, count: int, pipe: Connection) -> list[Received]:
    """`count` subscribers: subscribed, then reading until told the last seq
    acknowledged and every one has it (or DRAIN_SECONDS have passed)."""
    metadata = (("authorization", f"Bearer {token}"),)
    channels = [grpc.aio.insecure_channel(target, options=_OWN_CONNECTION) for _ in range(count)]
    subscribers = [
        _Subscriber(audit_service_pb2_grpc.AuditLogServiceStub(channel), metadata)
        for channel in channels
    ]
    for subscriber in subscribers:
        await asyncio.wait_for(subscriber.subscribe(), _READY_TIMEOUT)
    readers = [asyncio.create_task(subscriber.read()) for subscriber in subscribers]
    pipe.send("ready")
    last = await asyncio.get_running_loop().run_in_executor(None, pipe.recv)
    deadline = time.monotonic() + DRAIN_SECONDS
    while time.monotonic() < deadline and any(s.cursor < last for s in subscribers):
        await asyncio.sleep(0.05)
    for subscriber in subscribers:
        subscriber.stop()
    await asyncio.gather(*readers)
    for channel in channels:
        await channel.close()
    return [subscriber.received for subscriber in subscribers]


class _Subscriber:
    """One StreamEvents subscriber (no filter) that resumes from its cursor
    (`after_seq`) when its call fails, as the clients' stream() does."""

    def __init__(self, stub: audit_service_pb2_grpc.AuditLogServiceStub, metadata: Any) -> None:
        self._stub = stub
        self._metadata = metadata
        self._call: Any = None
        self._stopped = False
        self.cursor = 0  # every event up to this seq has been received
        self.received = Received()

    def _open(self, request: audit_service_pb2.StreamEventsRequest) -> None:
        self._call = self._stub.StreamEvents(request, metadata=self._metadata)

    async def subscribe(self) -> None:
        """Live start (the next event); subscribed once the first message, a
        heartbeat with the start cursor, has come."""
        self._open(audit_service_pb2.StreamEventsRequest(max_events_per_message=BATCH))
        first = await self._call.read()
        if first is grpc.aio.EOF or not first.HasField("heartbeat"):
            raise RuntimeError(f"StreamEvents did not start with a heartbeat: {first}")
        self.cursor = first.heartbeat.cursor

    async def read(self) -> None:
        """Note each event's seq and arrival time until stopped."""
        clock, seqs, arrived = time.time, self.received.seqs, self.received.arrived
        while True:
            try:
                while (response := await self._call.read()) is not grpc.aio.EOF:
                    now = clock()
                    if response.HasField("events"):
                        for event in response.events.events:
                            seqs.append(event.seq)
                            arrived.append(now)
                        self.cursor = seqs[-1]
                    else:
                        self.cursor = response.heartbeat.cursor
                failure = "stream ended by the server"
            except grpc.aio.AioRpcError as error:
                failure = error.code().name
            except asyncio.CancelledError:  # grpc.aio's word for our own cancel
                failure = "cancelled"
            if self._stopped:
                return
            self.received.errors[failure] += 1
            await asyncio.sleep(0.1)
            if self._stopped:
                return
            self._open(
                audit_service_pb2.StreamEventsRequest(
                    after_seq=self.cursor, max_events_per_message=BATCH
                )
            )

    def stop(self) -> None:
        self._stopped = True
        self.received.stopped = time.time()
        self._call.cancel()
