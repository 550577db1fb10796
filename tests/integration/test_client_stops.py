"""A caller that stops reading a stream or an export, or is interrupted in
one, ends its call there and then: the server gives back the stream's place
among the tenant's streams and its subscription, the export's place among
those open, without waiting for the garbage collector (off here) to find
the call."""

from __future__ import annotations

import _thread
import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from sealtrail import AsyncAuditClient, AuditClient, _export, build_event
from tests.conftest import ServerThread


def _held(server: ServerThread) -> dict[str, int]:
    async def read() -> dict[str, int]:
        return server.service.resources()

    return server.run(read())


def _back_to(server: ServerThread, what: str, count: int, *, within: float = 3.0) -> None:
    """`what` (subscribers, exports) back to `count` on the server within
    `within` seconds: the time a cancellation takes to reach it."""
    deadline = time.monotonic() + within
    while (now := _held(server))[what] != count:
        assert time.monotonic() < deadline, f"still held: {now}"
        time.sleep(0.02)


def _reached(server: ServerThread, what: str, count: int) -> None:
    deadline = time.monotonic() + 10
    while _held(server)[what] != count:
        assert time.monotonic() < deadline, f"never reached {count} {what}: {_held(server)}"
        time.sleep(0.02)


def _a_long_log(token: str, server: ServerThread) -> None:
    """About 3 MB of log: more than an export's flow-control window, so that
    an export whose reader stops stays open on the server."""
    with AuditClient(server.target, token=token) as client:
        for _ in range(3):
            client.record_batch(
                [
                    build_event(action="doc.edit", actor_id="u", description="x" * 1000)
                    for _ in range(1000)
                ]
            )


async def test_an_async_stream_or_export_left_or_closed_ends_its_call_at_once(
    server: ServerThread, tenant: str, no_collector: None
) -> None:
    """`async for ...: break` and `aclose()` (or `contextlib.aclosing`) ended
    the generator, not its gRPC call: the server kept the stream subscribed,
    the export open, until the client's channel was closed (the collector's
    runs, when on, made no difference)."""
    token = server.token(tenant)
    _a_long_log(token, server)
    await asyncio.to_thread(_reached, server, "subscribers", 0)
    async with AsyncAuditClient(server.target, token=token) as client:
        stream = client.stream(after_seq=0)
        async for _ in stream:
            break
        await asyncio.to_thread(_reached, server, "subscribers", 1)
        await stream.aclose()
        await asyncio.to_thread(_back_to, server, "subscribers", 0)

        async with contextlib.aclosing(client.stream(after_seq=0)) as events:
            async for _ in events:
                break
            await asyncio.to_thread(_reached, server, "subscribers", 1)
        await asyncio.to_thread(_back_to, server, "subscribers", 0)

        # Left unreferenced: the event loop closes the generator, which ends its call.
        async for _ in client.stream(after_seq=0):
            break
        await asyncio.to_thread(_back_to, server, "subscribers", 0)

        exports_before = _held(server)["exports"]
        chunks = client.export_stream(format="csv")
        async for _ in chunks:
            break
        await asyncio.to_thread(_reached, server, "exports", exports_before + 1)
        await chunks.aclose()
        await asyncio.to_thread(_back_to, server, "exports", exports_before)


def test_a_sync_stream_or_export_interrupted_ends_its_call_though_its_error_is_kept(
    server: ServerThread, tenant: str, no_collector: None
) -> None:
    """A KeyboardInterrupt (or a callback's error) raised inside the stream
    left its call open for as long as the error lived: its traceback holds
    the generator's frame, and that frame the call (an interactive session
    keeps the last one, a Future the error it was given)."""
    token = server.token(tenant)
    _a_long_log(token, server)
    _reached(server, "subscribers", 0)
    kept: list[BaseException] = []
    with AuditClient(server.target, token=token) as client:
        # A live stream waiting for its next event, interrupted as Ctrl-C would.
        live = client.stream()
        started = threading.Event()
        interrupter = threading.Thread(
            target=lambda: (started.wait(10), _reached(server, "subscribers", 1),
                            _thread.interrupt_main()),
        )  # fmt: skip
        interrupter.start()
        try:
            started.set()
            for _ in live:
                pytest.fail("no event was recorded")
        except KeyboardInterrupt as interrupted:
            kept.append(interrupted)
        interrupter.join()
        _back_to(server, "subscribers", 0)

        # A callback's error, raised inside the stream.
        def refuse(cursor: int) -> None:
            raise RuntimeError(f"heartbeat at {cursor}")

        with pytest.raises(RuntimeError) as refused:
            for _ in client.stream(after_seq=3000, on_heartbeat=refuse):
                pytest.fail("no event was recorded")
        kept.append(refused.value)
        _back_to(server, "subscribers", 0)

        exports_before = _held(server)["exports"]
        chunks = client.export_stream(format="csv")
        next(chunks)
        _reached(server, "exports", exports_before + 1)
        with pytest.raises(KeyboardInterrupt) as interrupted_export:
            chunks.throw(KeyboardInterrupt())  # as Ctrl-C while it waits for a chunk
        kept.append(interrupted_export.value)
        _back_to(server, "exports", exports_before)
    assert len(kept) == 3


def test_a_sync_stream_closed_from_another_thread_ends_its_call_and_its_reader(
    server: ServerThread, tenant: str, no_collector: None
) -> None:
    """A stream read in a worker thread, closed by another while it waited
    for its next event (a service stopping its tail), raised ValueError
    ("generator already executing") in the closing thread and went on: its
    call open on the server, its reader waiting for good. Likewise an export
    closed while it waited to retry (refused for the exports open at once)."""
    token = server.token(tenant)
    _reached(server, "subscribers", 0)
    read: list[object] = []

    def read_all(items: Iterator[Any]) -> None:
        try:
            read.extend(items)
        except BaseException as exc:  # what the reader saw, reported
            read.append(exc)

    with AuditClient(server.target, token=token) as client:
        live = client.stream()  # waits for an event no one records
        reader = threading.Thread(target=read_all, args=(live,), name="stream-reader")
        reader.start()
        _reached(server, "subscribers", 1)
        live.close()  # from this thread, while the reader waits inside it
        _back_to(server, "subscribers", 0)
        reader.join(5)
        assert not reader.is_alive(), "the reader still waits in a closed stream"
        assert read == []  # ended, as a stream closed between events ends


def test_a_sync_stream_read_on_while_another_thread_closes_it_ends_its_readers_loop(
    server: ServerThread, tenant: str, no_collector: None
) -> None:
    """A reader back for its next event while another thread's close() was
    still running the stream's generator (its call cancelled there) was told
    ValueError ("generator already executing"), not that the stream ended:
    a worker thread reading a tail died of it as the tail was stopped. Its
    loop ends, as after a close between events. The close is held in the
    generator (at its GeneratorExit) until the reader has asked."""
    token = server.token(tenant)
    _reached(server, "subscribers", 0)
    got_one, closing, asked = threading.Event(), threading.Event(), threading.Event()
    read: list[object] = []

    def read_on(items: Iterator[Any]) -> None:
        try:
            for item in items:
                read.append(item)
                got_one.set()
                assert closing.wait(10), "the close never reached the generator"
        except BaseException as exc:  # what the reader saw, reported
            read.append(exc)
        finally:
            asked.set()

    def held_at_its_generator_exit(frame: Any, event: str, arg: Any) -> Any:
        if event == "call" and frame.f_code.co_name == "_stream_events":
            return held_at_its_generator_exit
        if event == "exception" and arg[0] is GeneratorExit:
            closing.set()
            asked.wait(10)  # the reader asks while the close runs the generator
        return None if event == "call" else held_at_its_generator_exit

    def close(items: Any) -> None:
        sys.settrace(held_at_its_generator_exit)
        try:
            items.close()
        finally:
            sys.settrace(None)

    with AuditClient(server.target, token=token) as client:
        live = client.stream()
        reader = threading.Thread(target=read_on, args=(live,), name="stream-reader")
        reader.start()
        _reached(server, "subscribers", 1)
        client.record(action="doc.edit", actor_id="u")
        assert got_one.wait(10), "the stream delivered nothing"
        closer = threading.Thread(target=close, args=(live,), name="stream-closer")
        closer.start()
        closer.join(15)
        reader.join(15)
        assert not reader.is_alive() and not closer.is_alive()
        assert closing.is_set()
        _back_to(server, "subscribers", 0)
    assert [type(item).__name__ for item in read] == ["Event"], read


async def test_an_async_stream_closed_from_another_task_ends_its_call_and_its_reader(
    server: ServerThread, tenant: str, no_collector: None
) -> None:
    """A stream read in one task, closed by another while it waited for its
    next event (a service stopping its tail): `aclose()` raised RuntimeError
    ("asynchronous generator is already running") and did nothing, the call
    open on the server, the reader waiting for good. Now its call ends, and
    the reader's loop, as one closed between events ends."""
    token = server.token(tenant)
    await asyncio.to_thread(_reached, server, "subscribers", 0)
    read: list[object] = []
    async with AsyncAuditClient(server.target, token=token) as client:
        live = client.stream()  # waits for an event no one records

        async def read_all() -> None:
            async for event in live:
                read.append(event)

        reader = asyncio.create_task(read_all(), name="stream-reader")
        try:
            await asyncio.to_thread(_reached, server, "subscribers", 1)
            await live.aclose()  # from this task, while the reader waits inside it
            await asyncio.to_thread(_back_to, server, "subscribers", 0)
            done, _ = await asyncio.wait([reader], timeout=5)
            assert done, "the reader still waits in a closed stream"
            await reader  # ended, not cancelled nor failed
        finally:
            reader.cancel()
    assert read == []


async def test_an_async_export_cancelled_leaves_no_thread_at_its_file_nor_a_temporary_file(
    server: ServerThread, tenant: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The async export writes its file in worker threads, which a task's
    cancellation does not stop: cancelled while one created the temporary
    file, the export raised at once and the file stayed, open, for good;
    cancelled while one wrote or synced it (a large file's fsync takes
    seconds), the export removed the file under that thread, still working
    on it after the caller was told the export was over. Now a cancellation
    waits for the thread's step, then cleans up and is raised."""
    token = server.token(tenant)
    with AuditClient(server.target, token=token) as client:
        client.record_batch([build_event(action="doc.edit", actor_id="u") for _ in range(20)])
    out = tmp_path / "audit.csv"
    slow = threading.Event()
    busy = threading.Semaphore(0)  # released as a slowed step starts
    working = 0  # threads inside the export's file steps
    count = threading.Lock()

    def slowed(step: Callable[..., Any]) -> Callable[..., Any]:
        def run(*args: Any, **kwargs: Any) -> Any:
            nonlocal working
            with count:
                working += 1
            try:
                result = step(*args, **kwargs)
                busy.release()
                slow.wait(10)  # the disk, slow
                return result
            finally:
                with count:
                    working -= 1

        return run

    async def cancelled_in_a_step() -> None:
        slow.clear()
        async with AsyncAuditClient(server.target, token=token) as audit:
            task = asyncio.create_task(audit.export(out, format="csv", manifest_file=True))
            await asyncio.to_thread(busy.acquire, True, 10)
            task.cancel()
            asyncio.get_running_loop().call_later(0.3, slow.set)
            with pytest.raises(asyncio.CancelledError):
                await task
            assert working == 0, "a thread still at the export's file after its cancellation"

    # Cancelled while the temporary file is made.
    monkeypatch.setattr(_export, "_temporary_beside", slowed(_export._temporary_beside))
    await cancelled_in_a_step()
    await asyncio.to_thread(time.sleep, 0.5)  # what a thread still running would do
    assert list(tmp_path.iterdir()) == [], "a temporary file left behind"
    monkeypatch.undo()

    # Cancelled while a chunk is written.
    monkeypatch.setattr(_export.ExportFile, "receive", slowed(_export.ExportFile.receive))
    await cancelled_in_a_step()
    await asyncio.to_thread(time.sleep, 0.5)
    left = sorted(p.name for p in tmp_path.iterdir())
    assert left in ([], ["audit.csv", "audit.csv.manifest.json"]), left


# The CLI in a process of its own. With HOLD_MARK, its export holds its first
# message (as a slow disk would) after saying so in that file: a SIGINT then
# lands mid-export, every time.
_CLI = """
import os, sys, time

if os.environ.get("HOLD_MARK"):
    from sealtrail._export import ExportFile

    received = ExportFile.receive

    def held(self, message):
        with open(os.environ["HOLD_MARK"], "w") as mark:
            mark.write("held")
        time.sleep(30)
        received(self, message)

    ExportFile.receive = held

from sealtrail._cli import main
main(sys.argv[1:], prog_name="sealtrail")
"""


def _cli_held(
    script: str, args: list[str], env: dict[str, str], mark: Path, what: str
) -> subprocess.Popen[str]:
    """`script` (the CLI, held as it says) run with `args` in a process of its
    own, once it has written `mark`: held where a signal is to land."""
    process = subprocess.Popen(
        [sys.executable, "-c", script, *args],
        env={**env, "HOLD_MARK": str(mark)},
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    deadline = time.monotonic() + 30
    while not mark.exists():
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, f"{what} was never held"
        time.sleep(0.02)
    return process


def _interrupted(
    process: subprocess.Popen[str], signum: int = signal.SIGINT
) -> tuple[int, str, float]:
    """SIGINT, as Ctrl-C sends it (or `signum`): the exit status, stderr, and
    how long it took."""
    process.send_signal(signum)
    sent = time.monotonic()
    _, err = process.communicate(timeout=30)
    return process.returncode, err, time.monotonic() - sent


def test_sealtrail_tail_and_export_interrupted_exit_at_once_saying_so(
    server: ServerThread, tenant: str, tmp_path: Path
) -> None:
    """Ctrl-C in `sealtrail export` printed click's bare `Aborted!` and exited
    1, as any failure does, without a word of the file; `sealtrail tail`
    exited 130, as a shell reports a command Ctrl-C ended. Both exit 130 at
    once now, without a traceback, the export saying it left no partial
    file (and leaving none)."""
    token = server.token(tenant)
    with AuditClient(server.target, token=token) as client:
        client.record_batch([build_event(action="doc.edit", actor_id="u") for _ in range(20)])
    env = {**os.environ, "SEALTRAIL_SERVER": server.target, "SEALTRAIL_TOKEN": token}
    work = tmp_path / "out"
    work.mkdir()

    tail = subprocess.Popen(
        [sys.executable, "-c", _CLI, "tail", "--from-seq", "0"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert tail.stdout is not None
    assert json.loads(tail.stdout.readline())["seq"] == "1"  # streaming
    code, err, took = _interrupted(tail)
    assert (code, took < 5) == (130, True), err
    assert "Traceback" not in err, err

    mark = tmp_path / "held"
    out = work / "audit.csv"
    export = _cli_held(_CLI, ["export", "-o", str(out)], env, mark, "the export")
    code, err, took = _interrupted(export)
    assert "Traceback" not in err, err
    assert (code, took < 5) == (130, True), err
    assert f"export interrupted: no partial file was left at {out}" in err, err
    assert list(work.iterdir()) == []


def _tailing(env: dict[str, str], *options: str) -> subprocess.Popen[str]:
    """`sealtrail tail` with `options`, in a process of its own."""
    return subprocess.Popen(
        [sys.executable, "-c", _CLI, "tail", *options],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


def _printed_seq(tail: subprocess.Popen[str]) -> int:
    """The seq of the next event `tail` prints (waited for: it streams)."""
    assert tail.stdout is not None
    line = tail.stdout.readline()
    assert line, tail.communicate()
    return int(json.loads(line)["seq"])


def test_sealtrail_tail_interrupted_says_where_it_stopped_and_how_to_resume(
    server: ServerThread, tenant: str
) -> None:
    """Ctrl-C in `sealtrail tail` exited 130 without a word: whoever ran it
    could not tell where it had stopped, and resumed either with a gap (from
    now) or with duplicates (from the start). It says the last seq it
    printed, and the option that resumes after it, in a line on stderr;
    resumed so, the next event is the first printed, none twice."""
    token = server.token(tenant)
    env = {**os.environ, "SEALTRAIL_SERVER": server.target, "SEALTRAIL_TOKEN": token}
    with AuditClient(server.target, token=token) as client:
        client.record_batch([build_event(action="doc.edit", actor_id="u") for _ in range(3)])
        tail = _tailing(env, "--action", "doc.edit", "--from-seq", "0")
        first = [_printed_seq(tail) for _ in range(3)]
        code, err, took = _interrupted(tail)
        last = first[-1]
        assert (code, took < 5) == (130, True), err
        assert err == f"stopped by SIGINT after seq {last}; resume with --from-seq {last}\n"

        client.record_batch([build_event(action="doc.edit", actor_id="u") for _ in range(2)])
        resumed = _tailing(env, "--action", "doc.edit", "--from-seq", str(last))
        again = [_printed_seq(resumed) for _ in range(2)]
        code, err, _ = _interrupted(resumed)
    assert len(set(first + again)) == 5 and again[0] > last, (first, again)
    assert (code, err) == (130, f"stopped by SIGINT after seq {again[-1]};"
                           f" resume with --from-seq {again[-1]}\n")  # fmt: skip


@pytest.mark.parametrize(
    "command",
    [["bundle"], ["export", "--format", "bundle"]],
    ids=["bundle", "export-as-bundle"],
)
def test_sealtrail_bundle_interrupted_exits_130_saying_it_left_nothing(
    server: ServerThread, tenant: str, tmp_path: Path, command: list[str]
) -> None:
    """Ctrl-C in `sealtrail bundle` (and `export --format bundle`, which runs
    it) printed click's bare `Aborted!` and exited 1, as any failure does,
    without a word of the directory. It exits 130 now, saying no partial
    bundle was left, and leaves none: the directory it made is gone, one
    given empty is left empty."""
    with AuditClient(server.target, token=server.token(tenant)) as client:
        client.record_batch([build_event(action="doc.edit", actor_id="u") for _ in range(20)])
    token = server.token(tenant, "exporter")
    env = {**os.environ, "SEALTRAIL_SERVER": server.target, "SEALTRAIL_TOKEN": token}
    for made in (True, False):
        mark = tmp_path / "held"
        mark.unlink(missing_ok=True)
        out = tmp_path / f"bundle-{made}"
        if not made:
            out.mkdir()
        process = _cli_held(_CLI, [*command, "-o", str(out)], env, mark, "the bundle's export")
        assert any(out.iterdir())  # the export's temporary file: under way
        code, err, took = _interrupted(process)
        assert "Traceback" not in err and "Aborted!" not in err, err
        assert (code, took < 5) == (130, True), err
        assert f"bundle interrupted: no partial bundle was left at {out}" in err, err
        if made:
            assert not out.exists(), list(out.iterdir())
        else:
            assert list(out.iterdir()) == []


@pytest.mark.parametrize(
    ("command", "signum"),
    [
        (["export"], signal.SIGTERM),
        (["export"], signal.SIGHUP),
        (["bundle"], signal.SIGTERM),
        (["export", "--format", "bundle"], signal.SIGHUP),
    ],
    ids=["export-SIGTERM", "export-SIGHUP", "bundle-SIGTERM", "export-as-bundle-SIGHUP"],
)
def test_sealtrail_export_and_bundle_stopped_by_a_signal_leave_nothing_behind(
    server: ServerThread, tenant: str, tmp_path: Path, command: list[str], signum: int
) -> None:
    """SIGTERM (`timeout`, `kill`, a CI job or a systemd unit stopped) or SIGHUP
    (the terminal closed) ended `sealtrail export` and `bundle` where they
    were, cleaning up nothing: the export's hidden temporary file was left,
    as large as it had grown (16 MB after 1.5 s), and so was the partial
    bundle (records and proofs without bundle.json), which `verify` failed
    and a `bundle` into the same directory refused as not empty. They clean
    up as after Ctrl-C now, say so, and exit 128 plus the signal's number,
    as a shell reports a command a signal ended."""
    with AuditClient(server.target, token=server.token(tenant)) as client:
        client.record_batch([build_event(action="doc.edit", actor_id="u") for _ in range(20)])
    token = server.token(tenant, "exporter")
    env = {**os.environ, "SEALTRAIL_SERVER": server.target, "SEALTRAIL_TOKEN": token}
    mark = tmp_path / "held"
    work = tmp_path / "work"
    work.mkdir()
    out = work / ("audit.csv" if command == ["export"] else "bundle")
    process = _cli_held(_CLI, [*command, "-o", str(out)], env, mark, "the export")
    assert any(work.iterdir())  # under way
    code, err, took = _interrupted(process, signum)
    assert "Traceback" not in err and "Aborted!" not in err, err
    assert (code, took < 5) == (128 + signum, True), err
    assert f"no partial {'file' if command == ['export'] else 'bundle'} was left" in err, err
    assert list(work.iterdir()) == []


# The CLI in a process of its own, whose query holds after the answer's first
# event (as a slow server would) once it said so in HOLD_MARK.
_HELD_QUERY_CLI = """
import os, sys, time

from sealtrail._client import AuditClient

queried = AuditClient.query

def held(self, *args, **kwargs):
    for event in queried(self, *args, **kwargs):
        yield event
        with open(os.environ["HOLD_MARK"], "w") as mark:
            mark.write("held")
        time.sleep(30)

AuditClient.query = held

from sealtrail._cli import main
main(sys.argv[1:], prog_name="sealtrail")
"""


@pytest.mark.parametrize(
    "command",
    [["query"], ["query", "--format", "jsonl", "--limit", "0"]],
    ids=["table", "jsonl"],
)
def test_sealtrail_query_interrupted_exits_130_as_the_others_do(
    server: ServerThread, tenant: str, tmp_path: Path, command: list[str]
) -> None:
    """Ctrl-C in `sealtrail query` (and in every command but export, bundle,
    tail and import) printed click's bare `Aborted!` and exited 1, as any
    failure does, where those exit 130, as a shell reports a command Ctrl-C
    ended, and SIGTERM 143. It exits 130 too now, saying so in a line."""
    token = server.token(tenant)
    with AuditClient(server.target, token=token) as client:
        client.record_batch([build_event(action="doc.edit", actor_id="u") for _ in range(20)])
    env = {**os.environ, "SEALTRAIL_SERVER": server.target, "SEALTRAIL_TOKEN": token}
    mark = tmp_path / "held"
    process = _cli_held(_HELD_QUERY_CLI, command, env, mark, "the query")
    code, err, took = _interrupted(process)
    assert (code, err, took < 5) == (130, "stopped by SIGINT\n", True)
