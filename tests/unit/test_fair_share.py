"""FairShare: the forwarder's outbound connections split among the tenants
that want them, so that a few tenants with slow destinations cannot hold
them all."""

from __future__ import annotations

import asyncio
import contextlib

import pytest

from sealtrail_server.forward.fair_share import FairShare


class Holder:
    """Holds one of a key's slots until released."""

    def __init__(self, share: FairShare, key: str) -> None:
        self.holding = asyncio.Event()
        self._release = asyncio.Event()
        self.task = asyncio.create_task(self._run(share, key))

    async def _run(self, share: FairShare, key: str) -> None:
        async with share.slot(key):
            self.holding.set()
            await self._release.wait()

    async def release(self) -> None:
        self._release.set()
        await self.task


async def settle() -> None:
    """Lets every task that can run do so."""
    for _ in range(5):
        await asyncio.sleep(0)


async def holders(share: FairShare, key: str, count: int) -> list[Holder]:
    made = [Holder(share, key) for _ in range(count)]
    await settle()
    return made


def holding(made: list[Holder]) -> int:
    return sum(holder.holding.is_set() for holder in made)


async def test_a_key_alone_takes_up_to_its_cap() -> None:
    share = FairShare(capacity=10, per_key=4)
    slow = await holders(share, "slow", 6)
    assert holding(slow) == 4 and share.held("slow") == 4
    await slow[0].release()
    await settle()
    assert holding(slow) == 5  # the next one went in
    for holder in slow:
        holder._release.set()
    await asyncio.gather(*(holder.task for holder in slow))
    assert share.held("slow") == 0


async def test_keys_that_come_get_their_share_of_a_full_capacity() -> None:
    """Two slow tenants hold every slot; a third gets the first one given
    back, and once shares are even neither slow tenant takes more."""
    share = FairShare(capacity=6, per_key=6)
    first = await holders(share, "first", 6)
    assert share.share() == 6 and holding(first) == 6
    waiting = await holders(share, "second", 3)
    assert holding(waiting) == 0 and share.share() == 3  # the capacity is full
    await first[0].release()
    await settle()
    # "first" holds 5, over its share of 3: the slot given back goes to "second".
    assert holding(waiting) == 1
    third = await holders(share, "third", 2)
    assert share.share() == 2
    for holder in first[1:4]:
        await holder.release()
    await settle()
    # Six slots: "first" keeps its two, "second" and "third" reach two each.
    assert (share.held("first"), share.held("second"), share.held("third")) == (2, 2, 2)
    assert holding(waiting) == 2 and holding(third) == 2
    for holder in [*first[4:], *waiting, *third]:
        holder._release.set()
    await asyncio.gather(*(holder.task for holder in [*first, *waiting, *third]))


async def test_shares_grow_back_when_a_key_is_done() -> None:
    share = FairShare(capacity=4, per_key=4)
    one = await holders(share, "one", 2)
    two = await holders(share, "two", 4)
    assert (holding(one), holding(two)) == (2, 2)  # even split of 4
    for holder in one:
        await holder.release()
    await settle()
    assert holding(two) == 4 and share.share() == 4
    for holder in two:
        await holder.release()


async def test_a_cancelled_waiter_leaves_nothing_behind() -> None:
    share = FairShare(capacity=2, per_key=2)
    held = await holders(share, "held", 2)
    gone = await holders(share, "gone", 1)
    assert share.share() == 1  # two keys want slots
    gone[0].task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await gone[0].task
    assert share.share() == 2 and share.held("gone") == 0
    more = await holders(share, "held", 1)
    await held[0].release()
    await settle()
    assert holding(more) == 1  # its share is whole again
    for holder in [*held[1:], *more]:
        await holder.release()


def test_a_share_needs_a_slot_to_split() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        FairShare(capacity=0, per_key=1)
