"""The token cache: hits are kept for their interval, a change of
configuration looks the token up afresh, and a revocation here is never
undone by a lookup that began before it."""

from __future__ import annotations

import asyncio

import pytest

from sealtrail_server.auth.tokens import Authenticator
from sealtrail_server.domain.access import Principal, Role, new_token, token_digest
from sealtrail_server.domain.errors import Unauthenticated

TOKEN = new_token()
PRINCIPAL = Principal(tenant_id="t1", token_id="k1", role=Role.ADMIN)


class Tokens:
    """A token table: `live` says whether the token is unrevoked; `gate`, when
    set, holds each lookup until it opens."""

    def __init__(self) -> None:
        self.live = True
        self.lookups = 0
        self.gate: asyncio.Event | None = None

    async def lookup(self, digest: bytes) -> Principal | None:
        assert digest == token_digest(TOKEN)
        self.lookups += 1
        live = self.live  # read as the database would, when the statement runs
        if self.gate is not None:
            await self.gate.wait()
        return PRINCIPAL if live else None


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


def test_a_lookup_that_began_before_a_revocation_does_not_cache_the_token() -> None:
    async def scenario() -> None:
        tokens = Tokens()
        authenticator = Authenticator(tokens.lookup, cache_seconds=60)
        tokens.gate = asyncio.Event()
        racing = asyncio.create_task(authenticator.authenticate(f"Bearer {TOKEN}"))
        await asyncio.sleep(0)  # its lookup has read the token live
        tokens.live = False
        authenticator.forget(PRINCIPAL.token_id)  # revoked here meanwhile
        tokens.gate.set()
        assert await racing == PRINCIPAL  # true when read
        tokens.gate = None
        with pytest.raises(Unauthenticated):
            await authenticator.authenticate(f"Bearer {TOKEN}")
        assert tokens.lookups == 2

    asyncio.run(scenario())
