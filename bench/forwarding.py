"""Issue 8's figures: forwarding to a webhook on this machine.

- forward: a sink created `from_beginning` on the export log delivers all of
  it to a local endpoint; events/s from CreateSink to the last arrival.
  Baseline (rawpost): this process reads the same rows from the database,
  builds the same webhook requests with the server's own encoder (signature
  included) and POSTs them one after another to the same endpoint: the work
  with no cursor, lease, Sealtrail process or asyncio around it.
- forward-lag: paced RecordBatch calls record --stream-rate events/s on a
  tenant with a webhook sink; each event's lag is its arrival at the endpoint
  minus its acknowledgement (both this machine's clock). Baseline
  (forward-ack), from the same window: the RecordBatch acknowledgements.

The endpoint is a process of its own (ThreadingHTTPServer) that parses each
batch and notes every event's seq and arrival time."""

from __future__ import annotations

import base64
import http.client
import json
import multiprocessing
import threading
import time
from array import array
from collections.abc import Callable
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from multiprocessing.connection import Connection
from typing import Any
from urllib.parse import urlsplit

import psycopg

from sealtrail import AuditClient, build_sink
from sealtrail_server.forward.destinations import LIMITS, PendingEvent, Sender, requests

from . import cpu, stream
from .integrity import Work
from .load import CALL_TIMEOUT, Window
from .phases import FigureFailed, PhaseResult, Timing, percentile_ms

SECRET = "whsec_" + base64.b64encode(b"sealtrail-bench-forwarding-key!!").decode()
DELIVERY_TIMEOUT = 300.0  # for the whole export log to arrive
DRAIN_SECONDS = 30.0


class Endpoint:
    """The receiving process: start, ask, stop."""

    def __init__(self) -> None:
        context = multiprocessing.get_context("spawn")
        self._pipe, theirs = context.Pipe()
        self.process = context.Process(target=_endpoint_main, args=(theirs,), daemon=True)
        self.process.start()
        theirs.close()
        self.url: str = self._pipe.recv()

    def count(self) -> int:
        self._pipe.send("count")
        return int(self._pipe.recv())

    def arrivals(self) -> tuple[array[int], array[float]]:
        self._pipe.send("arrivals")
        seqs, times = self._pipe.recv()
        return seqs, times

    def wait_for(self, count: int, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while self.count() < count:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.02)
        return True

    def close(self) -> None:
        self._pipe.send("stop")
        self.process.join(5)
        if self.process.is_alive():
            self.process.terminate()


def _endpoint_main(pipe: Connection) -> None:
    seqs: array[int] = array("q")
    times: array[float] = array("d")
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as a real receiver would

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            arrived = time.time()
            events = json.loads(body)["data"]["events"]
            with lock:
                for event in events:
                    seqs.append(event["seq"])
                    times.append(arrived)
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    pipe.send(f"http://127.0.0.1:{server.server_address[1]}")
    while True:
        asked = pipe.recv()
        if asked == "count":
            with lock:
                pipe.send(len(seqs))
        elif asked == "arrivals":
            with lock:
                pipe.send((array("q", seqs), array("d", times)))
        else:
            server.shutdown()
            return


def forward_log(target: str, token: str, size: int, endpoint: Endpoint) -> Work:
    """A sink delivering the whole log of `size`+ events; timed to the last arrival."""

    def work(notes: dict[str, Any]) -> int:
        with AuditClient(target, token=token) as client:
            sink = client.create_sink(
                build_sink("bench", "webhook", url=endpoint.url, secrets=[SECRET]),
                from_beginning=True,
            ).sink
            try:
                if not endpoint.wait_for(size, DELIVERY_TIMEOUT):
                    raise FigureFailed(f"only {endpoint.count():,} of {size:,} events arrived")
                state = client.get_sink(sink.id).state
            finally:
                client.delete_sink(sink.id)
        notes["requests_failed"] = state.consecutive_failures
        notes["dead_letters"] = state.dead_letters
        return endpoint.count()

    return work


def post_log(database_url: str, tenant: str, endpoint: Endpoint) -> Work:
    """Baseline: the same rows read, encoded and POSTed by this process."""
    max_events = LIMITS["webhook"][0]
    sender = Sender(tenant, "bench", "webhook", "sealtrail_json", {
        "url": endpoint.url, "secrets": [SECRET],
    })  # fmt: skip
    parts = urlsplit(endpoint.url)

    def work(notes: dict[str, Any]) -> int:
        sent = 0
        connection = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=60)
        with psycopg.connect(database_url) as conn, conn.cursor(name="rawpost") as cursor:
            cursor.execute(
                "SELECT seq, record, leaf_hash FROM events WHERE tenant_id = %s ORDER BY seq",
                [tenant],
            )
            while rows := cursor.fetchmany(max_events):
                events = [PendingEvent(seq, record, bytes(leaf)) for seq, record, leaf in rows]
                for outgoing in requests(sender, events, now=datetime.now(UTC)):
                    connection.request("POST", parts.path or "/", outgoing.body,
                                       dict(outgoing.headers))  # fmt: skip
                    answer = connection.getresponse()
                    answer.read()
                    if answer.status != 200:
                        raise FigureFailed(f"the endpoint answered {answer.status}")
                    sent += len(outgoing.seqs)
        connection.close()
        if not endpoint.wait_for(sent, DRAIN_SECONDS):
            raise FigureFailed("the endpoint did not count every event")
        return sent

    return work


def lag(
    target: str,
    token: str,
    load: stream.StreamLoad,
    timing: Timing,
    watched: cpu.Watched,
    endpoint: Endpoint,
) -> tuple[PhaseResult, PhaseResult, Window]:
    """Paced recording into a tenant with a webhook sink: the lag from each
    acknowledgement to the event's arrival, and the acks (its baseline)."""
    with AuditClient(target, token=token) as client:
        sink = client.create_sink(
            build_sink("bench-lag", "webhook", url=endpoint.url, secrets=[SECRET])
        ).sink
        try:
            recorded, window, usage = _record(load, timing, watched)
            last = max(recorded.seqs, default=0)
            _wait(lambda: max(endpoint.arrivals()[0], default=0) >= last, DRAIN_SECONDS)
        finally:
            client.delete_sink(sink.id)
    seqs, times = endpoint.arrivals()
    arrival: dict[int, float] = {}
    for seq, at in zip(seqs, times, strict=True):
        arrival.setdefault(seq, at)
    lags = []
    missing = 0
    for seq, acked in zip(recorded.seqs, recorded.acked, strict=True):
        if window.start <= acked < window.end:
            if seq in arrival:
                lags.append(max(0.0, arrival[seq] - acked))
            else:
                missing += 1
    lags.sort()
    delivery = PhaseResult(
        name=f"forwarded to a webhook ({load.rate:,}/s recorded)",
        unit="events/s",
        clients=1,
        in_flight=1,
        seconds=window.seconds,
        calls=len(lags),
        events=len(lags),
        rate=len(lags) / window.seconds,
        latency_p50_ms=percentile_ms(lags, 0.50),
        latency_p99_ms=percentile_ms(lags, 0.99),
        latency_p95_ms=percentile_ms(lags, 0.95),
        errors={"never arrived": missing} if missing else {},
        cpu=usage,
    )
    return delivery, stream.acks_result(load, window, recorded, usage), window


def _record(
    load: stream.StreamLoad, timing: Timing, watched: cpu.Watched
) -> tuple[stream.Recorded, Window, dict[str, float]]:
    context = multiprocessing.get_context("spawn")
    ours, theirs = context.Pipe()
    process = context.Process(target=stream.recorder_main, args=(load, theirs), daemon=True)
    process.start()
    theirs.close()
    try:
        if stream.receive(ours, 60) != "ready":
            raise RuntimeError("the recorder did not get ready")
        begin = time.time() + 0.2
        window = Window(begin, begin + timing.warmup, begin + timing.warmup + timing.duration)
        ours.send(window)
        usage = cpu.measure(window, cpu.Watched(watched.server, watched.postmaster,
                                                [process.pid or 0]))  # fmt: skip
        recorded: stream.Recorded = stream.receive(ours, CALL_TIMEOUT + 10)
    finally:
        process.join(5)
        if process.is_alive():
            process.terminate()
    return recorded, window, usage


def _wait(done: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not done() and time.monotonic() < deadline:
        time.sleep(0.05)
