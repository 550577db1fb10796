"""FairShare: the forwarder's outbound connections handed out fairly among
the tenants that want them, so that a few tenants with slow destinations
cannot hold them all, and none stays idle while a tenant could use it."""

from __future__ import annotations

import asyncio
import contextlib

import pytest

from sealtrail_server.fair_share import FairShare


class Request:
    """Holds one of a key's slots, once given, until it ends."""

    def __init__(self, share: FairShare, key: str) -> None:
        self.sending = asyncio.Event()
        self._answered = asyncio.Event()
        self.task = asyncio.create_task(self._run(share, key))

    async def _run(self, share: FairShare, key: str) -> None:
        async with share.slot(key):
            self.sending.set()
            await self._answered.wait()

    def answer(self) -> None:
        self._answered.set()


async def settle() -> None:
    """Lets every task that can run do so."""
    for _ in range(5):
        await asyncio.sleep(0)


async def requests(share: FairShare, key: str, count: int) -> list[Request]:
    made = [Request(share, key) for _ in range(count)]
    await settle()
    return made


def sending(made: list[Request]) -> int:
    return sum(request.sending.is_set() for request in made)


async def answer(*made: Request) -> None:
    for request in made:
        request.answer()
    await settle()


async def finish(share: FairShare, *groups: list[Request]) -> None:
    everything = [request for group in groups for request in group]
    await answer(*everything)
    await asyncio.gather(*(request.task for request in everything))
    assert (share.in_use(), share.queued()) == (0, 0)


async def test_a_key_alone_takes_up_to_its_cap() -> None:
    share = FairShare(capacity=10, per_key=4)
    alone = await requests(share, "alone", 6)
    assert sending(alone) == 4 and share.held("alone") == 4
    await answer(alone[0])
    assert sending(alone) == 5  # the next one went in
    await finish(share, alone)
    assert share.held("alone") == 0


async def test_a_slot_given_back_goes_to_the_key_under_its_share() -> None:
    """A slow key holds every slot and wants more; the slot it gives back goes
    to the key that came, not to its own queue, until shares are even."""
    share = FairShare(capacity=6, per_key=6)
    slow = await requests(share, "slow", 9)
    assert sending(slow) == 6
    new = await requests(share, "new", 4)
    assert sending(new) == 0 and share.share() == 3
    await answer(slow[0])
    assert (sending(new), share.held("slow")) == (1, 5)
    await answer(*slow[1:3])
    assert (sending(new), share.held("slow")) == (3, 3)  # even: 3 each
    await answer(slow[3])
    assert (share.held("new"), share.held("slow")) == (3, 3)  # its own queue's turn
    await finish(share, slow, new)


async def test_no_slot_stays_idle_while_a_key_could_use_it() -> None:
    """Shares are what each key may count on, not a cap: a key takes free
    slots past its share while no key under its share waits."""
    share = FairShare(capacity=6, per_key=6)
    light = await requests(share, "light", 1)
    busy = await requests(share, "busy", 8)
    assert share.share() == 3
    assert (sending(light), sending(busy)) == (1, 5)  # all six in use
    await finish(share, light, busy)


async def test_shares_grow_back_when_a_key_is_done() -> None:
    share = FairShare(capacity=4, per_key=4)
    one = await requests(share, "one", 2)
    two = await requests(share, "two", 4)
    assert (sending(one), sending(two)) == (2, 2)
    await answer(*one)
    assert sending(two) == 4 and share.share() == 4
    await finish(share, one, two)


async def test_a_cancelled_wait_gives_its_turn_on() -> None:
    share = FairShare(capacity=2, per_key=2)
    held = await requests(share, "held", 2)
    gone = await requests(share, "gone", 1)
    later = await requests(share, "later", 1)
    gone[0].task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await gone[0].task
    await answer(held[0])
    assert sending(later) == 1 and share.held("gone") == 0
    await finish(share, held, later)


@pytest.mark.parametrize("given_first", [False, True], ids=["then given back", "once given"])
async def test_a_wait_cancelled_as_a_slot_is_given_back_passes_it_on(given_first: bool) -> None:
    """Cancelling a task cancels its wait at once, but its task runs (and
    leaves the queue) only later. A slot given back just after goes on to
    the next waiter; one given to it just before, it gives on itself."""
    share = FairShare(capacity=1, per_key=1)
    async with share.slot("a"):
        second = await requests(share, "b", 1)
        third = await requests(share, "c", 1)
        if not given_first:
            second[0].task.cancel()
    if given_first:
        second[0].task.cancel()  # leaving the block gave the slot to "b"
    with contextlib.suppress(asyncio.CancelledError):
        await second[0].task
    await settle()
    assert (sending(second), sending(third)) == (0, 1)
    await finish(share, third)


async def test_keys_under_their_share_take_turns() -> None:
    """With more keys than slots, a slot given back goes to the key given one
    longest ago: not back to the key that gave it, over one that came."""
    share = FairShare(capacity=2, per_key=2)
    first = await requests(share, "first", 3)
    second = await requests(share, "second", 3)
    assert (share.held("first"), share.held("second")) == (2, 0)  # "first" came alone
    await answer(first[0])
    assert (share.held("first"), share.held("second")) == (1, 1)  # even at one each
    third = await requests(share, "third", 2)
    assert share.share() == 1
    await answer(second[0])
    assert share.held("third") == 1  # never given one, where "second" just was
    await answer(first[1])
    # Both hold none now: "first" was given its last slot before "second" was.
    assert (share.held("first"), share.held("second")) == (1, 0)
    await finish(share, first, second, third)


async def test_a_slot_goes_past_a_share_when_nobody_under_theirs_waits() -> None:
    share = FairShare(capacity=4, per_key=4)
    many = await requests(share, "many", 2)
    few = await requests(share, "few", 2)
    more = await requests(share, "many", 2)
    assert (share.held("many"), share.held("few"), share.share()) == (2, 2, 2)
    await answer(few[0])
    assert share.held("many") == 3  # over its share of 2: "few" wants no more
    await finish(share, many, few, more)


def test_a_share_needs_a_slot_to_split() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        FairShare(capacity=0, per_key=1)


async def test_a_slot_taken_now_or_not_at_all_goes_ahead_of_no_waiter() -> None:
    """slot_now (the counts and previews of store/long_reads.py): a slot if
    one is free, none else, and never one a waiting request is owed."""
    share = FairShare(capacity=2, per_key=2)
    with share.slot_now("a") as taken:
        assert taken and share.in_use() == 1
        held = await requests(share, "b", 2)  # one given, one waits
        assert sending(held) == 1 and share.queued() == 1
        with share.slot_now("c") as full:
            assert not full and share.in_use() == 2
    await settle()
    assert sending(held) == 2  # the slot given back went to the waiter
    await answer(held[0])
    with share.slot_now("b") as behind_none:
        assert behind_none
    await finish(share, held)
