"""The token cache: hits are kept for their interval, a change of
configuration looks the token up afresh, a revocation here is never
undone by a lookup that began before it, an expiry is checked on every call
cached or not, and a token's uses are noted at most once an interval."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from sealtrail_server.auth.last_use import LastUses, Uses
from sealtrail_server.auth.tokens import Authenticator, ExpiredToken
from sealtrail_server.domain.access import Principal, Role, new_token, token_digest
from sealtrail_server.domain.errors import Unauthenticated, Unavailable
from tests.clock import Clock

TOKEN = new_token()
PRINCIPAL = Principal(tenant_id="t1", token_id="k1", role=Role.ADMIN)


class Tokens:
    """A token table: `live` says whether the token is unrevoked; `gate`, when
    set, holds each lookup until it opens."""

    def __init__(self, principal: Principal = PRINCIPAL) -> None:
        self.principal = principal
        self.live = True
        self.lookups = 0
        self.gate: asyncio.Event | None = None

    async def lookup(self, digest: bytes) -> Principal | None:
        assert digest == token_digest(TOKEN)
        self.lookups += 1
        live = self.live  # read as the database would, when the statement runs
        if self.gate is not None:
            await self.gate.wait()
        return self.principal if live else None


def test_a_cached_token_is_looked_up_again_only_when_fresh_is_asked() -> None:
    async def scenario() -> None:
        tokens = Tokens()
        authenticator = Authenticator(tokens.lookup, cache_seconds=60)
        assert await authenticator.authenticate(f"Bearer {TOKEN}") == PRINCIPAL
        tokens.live = False  # revoked by another process
        assert await authenticator.authenticate(f"Bearer {TOKEN}") == PRINCIPAL
        assert tokens.lookups == 1
        with pytest.raises(Unauthenticated):
            await authenticator.authenticate(f"Bearer {TOKEN}", fresh=True)
        with pytest.raises(Unauthenticated):  # and no longer cached
            await authenticator.authenticate(f"Bearer {TOKEN}")

    asyncio.run(scenario())


async def _revoked_while_looked_up(
    tokens: Tokens, authenticator: Authenticator
) -> asyncio.Task[Principal]:
    """A call whose lookup has read the token live and waits at the gate,
    the token revoked here meanwhile."""
    tokens.gate = asyncio.Event()
    racing = asyncio.create_task(authenticator.authenticate(f"Bearer {TOKEN}"))
    await asyncio.sleep(0)  # its lookup has read the token live
    tokens.live = False
    authenticator.forget(PRINCIPAL.token_id)  # revoked here meanwhile
    return racing


def test_a_lookup_that_began_before_a_revocation_does_not_cache_the_token() -> None:
    async def scenario() -> None:
        tokens = Tokens()
        authenticator = Authenticator(tokens.lookup, cache_seconds=60)
        racing = await _revoked_while_looked_up(tokens, authenticator)
        tokens.gate.set()
        assert await racing == PRINCIPAL  # true when read
        tokens.gate = None
        with pytest.raises(Unauthenticated):
            await authenticator.authenticate(f"Bearer {TOKEN}")
        assert tokens.lookups == 2

    asyncio.run(scenario())


def test_a_cached_token_is_refused_from_its_expiry_not_from_the_caches_next_lookup() -> None:
    """The cache holds the token for an hour; its expiry, a minute away, is
    what counts: the second call is refused without a lookup."""

    async def scenario() -> None:
        wall = Clock()
        expiring = replace(PRINCIPAL, expires_at=wall() + timedelta(minutes=1))
        tokens = Tokens(expiring)
        authenticator = Authenticator(tokens.lookup, cache_seconds=3600, wall_clock=wall)
        assert await authenticator.authenticate(f"Bearer {TOKEN}") == expiring
        wall.advance(seconds=60)  # at its expiry: no longer valid
        with pytest.raises(ExpiredToken) as refused:
            await authenticator.authenticate(f"Bearer {TOKEN}")
        assert tokens.lookups == 1  # refused from the cache
        assert refused.value.reason == "TOKEN_EXPIRED"
        assert expiring.expires_at is not None
        when = expiring.expires_at.astimezone(UTC).isoformat().replace("+00:00", "Z")
        assert refused.value.metadata == {"expire_time": when}
        assert refused.value.message.startswith(f"token expired at {when}")
        assert refused.value.principal == expiring  # whose refusal to record
        with pytest.raises(ExpiredToken):  # a fresh lookup finds it expired too
            await authenticator.authenticate(f"Bearer {TOKEN}", fresh=True)

    asyncio.run(scenario())


def test_a_token_without_an_expiry_never_expires() -> None:
    async def scenario() -> None:
        wall = Clock()
        authenticator = Authenticator(Tokens().lookup, cache_seconds=0, wall_clock=wall)
        wall.advance(days=10_000)
        assert await authenticator.authenticate(f"Bearer {TOKEN}") == PRINCIPAL

    asyncio.run(scenario())


class Writes:
    """What LastUses wrote, write by write."""

    def __init__(self) -> None:
        self.writes: list[dict[tuple[str, str], datetime]] = []
        self.failing = False

    async def write(self, uses: Uses) -> None:
        if self.failing:
            raise OSError("the database went away")
        self.writes.append(dict(uses))


def test_a_tokens_use_is_noted_once_an_interval_and_written_behind() -> None:
    async def scenario() -> None:
        wall, now = Clock(), [0.0]
        writes = Writes()
        uses = LastUses(writes.write, clock=wall, interval=60)
        authenticator = Authenticator(
            Tokens().lookup, cache_seconds=10, clock=lambda: now[0], wall_clock=wall, uses=uses
        )
        first = wall()
        for _ in range(50):  # a busy caller within one interval
            await authenticator.authenticate(f"Bearer {TOKEN}")
            wall.advance(seconds=1)
            now[0] += 1
        assert writes.writes == []  # nothing on the calls' path
        await uses.flush()
        await uses.flush()  # nothing new: nothing written
        assert writes.writes == [{("t1", "k1"): first}]
        now[0] += 10  # 60 s after the first call: a new interval
        await authenticator.authenticate(f"Bearer {TOKEN}")
        await uses.flush()
        assert writes.writes[1:] == [{("t1", "k1"): wall()}]

    asyncio.run(scenario())


def test_a_failed_write_keeps_the_uses_for_the_next_and_a_stop_writes_what_is_left() -> None:
    async def scenario() -> None:
        wall = Clock()
        writes = Writes()
        uses = LastUses(writes.write, clock=wall, interval=0)
        uses.start()
        uses.note(PRINCIPAL, at=0.0)
        writes.failing = True
        with pytest.raises(OSError):
            await uses.flush()
        writes.failing = False
        await uses.stop()
        assert writes.writes == [{("t1", "k1"): wall()}]

    asyncio.run(scenario())


def test_calls_that_miss_the_cache_together_share_one_lookup() -> None:
    """A busy token's cache interval ends with many calls in flight: each of
    them looked the token up, and with the pool busy (each lookup waiting for
    a connection) every call arriving meanwhile added a lookup more. Calls
    that miss together now wait for the one lookup in progress; a change of
    configuration (`fresh`) still reads the token itself."""

    async def scenario() -> None:
        tokens = Tokens()
        authenticator = Authenticator(tokens.lookup, cache_seconds=60)
        tokens.gate = asyncio.Event()
        calls = [
            asyncio.create_task(authenticator.authenticate(f"Bearer {TOKEN}")) for _ in range(10)
        ]
        await asyncio.sleep(0)
        fresh = asyncio.create_task(authenticator.authenticate(f"Bearer {TOKEN}", fresh=True))
        await asyncio.sleep(0)
        tokens.gate.set()
        assert await asyncio.gather(*calls, fresh) == [PRINCIPAL] * 11
        assert tokens.lookups == 2

    asyncio.run(scenario())


def test_a_call_waiting_for_a_lookup_its_first_caller_left_looks_the_token_up_itself() -> None:
    async def scenario() -> None:
        tokens = Tokens()
        authenticator = Authenticator(tokens.lookup, cache_seconds=60)
        tokens.gate = asyncio.Event()
        first = asyncio.create_task(authenticator.authenticate(f"Bearer {TOKEN}"))
        await asyncio.sleep(0)
        second = asyncio.create_task(authenticator.authenticate(f"Bearer {TOKEN}"))
        await asyncio.sleep(0)
        first.cancel()  # its client gone
        await asyncio.sleep(0)
        tokens.gate.set()
        assert await second == PRINCIPAL
        assert first.cancelled()
        assert tokens.lookups == 2

    asyncio.run(scenario())


def test_a_call_after_a_revocation_here_does_not_wait_for_a_lookup_begun_before_it() -> None:
    async def scenario() -> None:
        tokens = Tokens()
        authenticator = Authenticator(tokens.lookup, cache_seconds=60)
        racing = await _revoked_while_looked_up(tokens, authenticator)
        after = asyncio.create_task(authenticator.authenticate(f"Bearer {TOKEN}"))
        await asyncio.sleep(0)
        tokens.gate.set()
        assert await racing == PRINCIPAL  # true when read
        with pytest.raises(Unauthenticated):
            await after

    asyncio.run(scenario())


def test_calls_sharing_a_lookup_that_fails_each_get_its_failure() -> None:
    """The database down as the one lookup runs: every call waiting for it is
    answered its error (UNAVAILABLE), none left waiting or told anything else."""

    async def scenario() -> None:
        gate = asyncio.Event()
        lookups = 0

        async def failing(digest: bytes) -> Principal | None:
            nonlocal lookups
            lookups += 1
            await gate.wait()
            raise Unavailable("the database is unavailable", retry_after=1.0)

        authenticator = Authenticator(failing, cache_seconds=60)
        calls = [
            asyncio.create_task(authenticator.authenticate(f"Bearer {TOKEN}")) for _ in range(5)
        ]
        await asyncio.sleep(0)
        gate.set()
        answers = await asyncio.gather(*calls, return_exceptions=True)
        assert all(isinstance(answer, Unavailable) for answer in answers), answers
        assert lookups == 1

    asyncio.run(scenario())
