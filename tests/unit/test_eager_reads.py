"""An eager connection's waits (store/eager.py): a wait to read goes on at once
while the socket has data, and goes to the event loop when it has none, or once
the connection has read for its budget without a turn of the loop."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from typing import TypeVar

import pytest
from psycopg.abc import PQGen
from psycopg.waiting import Ready, Wait

from sealtrail_server.store.eager import read_eagerly

# A budget no pause of a loaded machine exhausts, for the tests of what the
# budget does not decide.
_AMPLE = 60.0


_Pair = tuple[socket.socket, socket.socket]
T = TypeVar("T")


@pytest.fixture
def pair() -> Iterator[_Pair]:
    """A connected pair: what is sent on the first is read on the second."""
    ours, theirs = socket.socketpair()
    theirs.setblocking(False)
    with ours, theirs:
        yield ours, theirs


def _reads(sock: socket.socket, chunks: int, got: list[Ready | int]) -> PQGen[bytes]:
    """Like psycopg's generators: wait to read before each of `chunks` reads of
    at most 4 bytes (each needs a wait of its own), keeping what each wait got."""
    data = b""
    for _ in range(chunks):
        got.append((yield Wait.R))
        data += sock.recv(4)
    return data


def _run(gen: PQGen[T], answers: list[Ready]) -> tuple[list[Wait], T]:
    """Drive `gen` as the event loop would, answering its waits in turn: the
    waits it yielded, and its result."""
    yielded: list[Wait] = []
    try:
        yielded.append(next(gen))
        for answer in answers:
            yielded.append(gen.send(answer))
    except StopIteration as done:
        return yielded, done.value
    raise AssertionError(f"still waiting after {yielded}")


def test_reads_what_has_arrived_without_a_turn_of_the_loop(pair: _Pair) -> None:
    ours, theirs = pair
    ours.sendall(b"abcdefghijkl")  # three reads' worth, all there
    got: list[Ready | int] = []
    gen = read_eagerly(_reads(theirs, 3, got), theirs.fileno(), budget=_AMPLE)
    yielded, data = _run(gen, [])
    assert (yielded, data) == ([], b"abcdefghijkl")
    assert got == [Ready.R] * 3


def test_waits_on_the_loop_for_what_has_not_arrived(pair: _Pair) -> None:
    ours, theirs = pair
    ours.sendall(b"abcd")  # the first read's worth
    got: list[Ready | int] = []
    gen = read_eagerly(_reads(theirs, 3, got), theirs.fileno(), budget=_AMPLE)
    assert next(gen) == Wait.R  # the first read went on at once; nothing for the second
    assert got == [Ready.R]
    ours.sendall(b"efghijkl")  # the loop then finds the socket readable
    with pytest.raises(StopIteration) as done:
        gen.send(Ready.R)
    assert done.value.value == b"abcdefghijkl"
    assert got == [Ready.R] * 3  # the loop's answer passed on, then the third read at once


def test_yields_to_the_loop_once_its_budget_is_spent(pair: _Pair) -> None:
    ours, theirs = pair
    ours.sendall(b"abcdefghijkl")
    got: list[Ready | int] = []
    gen = read_eagerly(_reads(theirs, 3, got), theirs.fileno(), budget=0.0)
    yielded, data = _run(gen, [Ready.R, Ready.R, Ready.R])
    assert yielded == [Wait.R] * 3
    assert data == b"abcdefghijkl"


def test_other_waits_go_to_the_loop_as_they_are(pair: _Pair) -> None:
    _, theirs = pair

    def writes() -> PQGen[str]:
        ready = yield Wait.W
        both = yield Wait.RW
        return f"{ready}/{both}"

    yielded, result = _run(read_eagerly(writes(), theirs.fileno()), [Ready.W, Ready.RW])
    assert yielded == [Wait.W, Wait.RW]
    assert result == f"{Ready.W}/{Ready.RW}"


def test_a_generator_that_never_waits_returns_at_once(pair: _Pair) -> None:
    _, theirs = pair

    def done_already() -> PQGen[int]:
        return 7
        yield Wait.R  # a generator all the same

    assert _run(read_eagerly(done_already(), theirs.fileno()), []) == ([], 7)


def test_the_generators_failure_comes_out_as_it_is(pair: _Pair) -> None:
    ours, theirs = pair
    ours.sendall(b"abcd")

    def fails() -> PQGen[None]:
        yield Wait.R
        raise ValueError("the server said no")

    with pytest.raises(ValueError, match="the server said no"):
        next(read_eagerly(fails(), theirs.fileno(), budget=_AMPLE))


def test_closing_it_closes_the_generator_waiting_on_the_loop(pair: _Pair) -> None:
    _, theirs = pair
    closed: list[bool] = []

    def waits() -> PQGen[None]:
        try:
            yield Wait.R
        except GeneratorExit:
            closed.append(True)
            raise

    gen = read_eagerly(waits(), theirs.fileno())
    assert next(gen) == Wait.R  # nothing has arrived
    gen.close()  # as when the task waiting on it is cancelled
    assert closed == [True]


def test_a_closed_socket_is_left_to_the_loop_to_report() -> None:
    """poll() answers POLLNVAL, not POLLIN, for a descriptor no file is open
    on: that is not data to read (resuming would make libpq fail on it, and go
    on failing until the budget ran out); the loop's own wait reports it."""
    # The highest a process may have: descriptors are handed out lowest first,
    # so no thread of the test process opens this one meanwhile.
    fileno = os.sysconf("SC_OPEN_MAX") - 1
    got: list[Ready | int] = []

    def reads_nothing() -> PQGen[None]:
        got.append((yield Wait.R))

    gen = read_eagerly(reads_nothing(), fileno, budget=_AMPLE)
    assert next(gen) == Wait.R
    assert got == []
