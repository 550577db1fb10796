"""Resolving a presented API token to the principal it stands for."""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

from opentelemetry.metrics import Meter

from ..domain.access import TOKEN_PATTERN, Principal, Revoked, token_digest, token_well_formed
from ..domain.errors import ResourceExhausted, Unauthenticated
from ..measures import no_meter
from .last_use import LastUses
from .unknown_tokens import UnknownTokenBudgets, caller_key

TokenLookup = Callable[[bytes], Awaitable[Principal | Revoked | None]]


class RevokedToken(Unauthenticated):
    """A revoked token, answered as an unknown one is (the answer tells a
    caller nothing more), whose tenant is known: its refusal is recorded
    there (api/denials.py)."""

    def __init__(self, principal: Principal) -> None:
        super().__init__(_UNKNOWN)
        self.principal = principal


class ExpiredToken(Unauthenticated):
    """A token presented at or after its expiry. Unlike a revoked one's, the
    answer says so, and when: its holder has the secret, and a service
    whose token ran out is told what to renew rather than left to suspect
    a revocation. Its refusal is recorded as a revoked one's (api/denials.py)."""

    reason = "TOKEN_EXPIRED"

    def __init__(self, principal: Principal, expires_at: datetime) -> None:
        when = rfc3339(expires_at)
        super().__init__(
            f"token expired at {when}; an admin of the tenant creates a new one",
            metadata={"expire_time": when},
        )
        self.principal = principal
        self.expires_at = expires_at


def rfc3339(moment: datetime) -> str:
    """`moment` in UTC as RFC 3339 (Z), to the microsecond if it has any."""
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _utc_now() -> datetime:
    return datetime.now(UTC)


_UNKNOWN = "unknown or revoked token"
# A bearer of no token's shape (made up, cut short): said so, never echoed. The
# scheme's line (`authorization must be ...`) is for another scheme alone.
MALFORMED_TOKEN = (
    "malformed token: cut short, or not a Sealtrail token (`stk_` then 49 letters and digits)"
)

OUTCOME = "sealtrail.token.lookup.outcome"


def _outcome(found: Principal | Revoked | None) -> str:
    if isinstance(found, Principal):
        return "found"
    return "revoked" if isinstance(found, Revoked) else "unknown"


class Authenticator:
    """Resolves presented tokens to principals, caching hits for `cache_seconds`
    so a busy caller costs one database read per interval, not per call. A
    revoked token therefore stops working within that interval, but where a
    caller asks for `fresh`: a change of configuration, which a stolen token
    revoked a moment ago must not make (a new token, a sink sending the log
    elsewhere).

    A token's expiry, kept with its principal, is compared with `wall_clock`
    on every call, cached or not: an expired token stops at its expiry on
    every process, never a cache interval later (ADR 0064). Each call a token
    authenticates is noted in `uses` (its last use, written behind). At most
    `max_cached` tokens are kept: past it, the one used longest ago makes room
    (emptied instead, the cache had every token in use looked up again each
    time a process that sees many tokens filled it). Calls that miss the
    cache while a token's lookup is in progress share it (but a `fresh` one).
    Each lookup is counted on `meter` by its outcome (found, revoked, unknown).

    A token found to be unknown, or revoked, is remembered so for
    `cache_seconds` too: a client retrying with one in a loop (a fleet whose
    secret was rotated away) costs a lookup an interval, not a call. (No
    token is refused for it that exists: a secret exists only once its token
    is created, and can be presented only after; and a revocation is final,
    migration 0027.) And each caller
    may present `unknown_per_minute` unknown tokens (0: any number): past
    it, a token this process has not seen is refused unlooked (unknown_tokens.py),
    but one it has is looked up again as its interval ends, whoever
    presents it."""

    def __init__(
        self,
        lookup: TokenLookup,
        *,
        cache_seconds: float = 10.0,
        max_cached: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], datetime] = _utc_now,
        uses: LastUses | None = None,
        meter: Meter | None = None,
        unknown_per_minute: int = 0,
    ) -> None:
        self._lookup = lookup
        self._cache_seconds = cache_seconds
        self._max_cached = max_cached
        self._clock = clock
        self._wall_clock = wall_clock
        self._uses = uses
        # Least recently used first.
        self._cache: OrderedDict[bytes, tuple[Principal, float]] = OrderedDict()
        # Bumped by each forget: a lookup that began before it must not put
        # back what it forgot.
        self._forgets = 0
        # Lookups in progress, by digest and the forgets before them: a call
        # missing the cache meanwhile waits for the one, not a lookup more.
        self._in_flight: dict[tuple[bytes, int], asyncio.Future[Principal | Revoked | None]] = {}
        # Tenants erased here (at most `max_cached`): a stream of one ends saying so.
        self._erased: dict[str, None] = {}
        # Digests found to be no token (None) or a revoked one -> until when
        # they are taken so, least recently found first (at most `max_cached`).
        self._refused: OrderedDict[bytes, tuple[Revoked | None, float]] = OrderedDict()
        # Digests of tokens this process saw that no longer work (revoked, or
        # gone with their tenant's erasure), least recently added first (at
        # most `max_cached`): no strangers, they spend no caller's budget.
        self._seen_gone: OrderedDict[bytes, None] = OrderedDict()
        self._budgets = UnknownTokenBudgets(per_minute=unknown_per_minute, clock=wall_clock)
        self._lookups = (meter or no_meter()).create_counter(
            "sealtrail.tokens.lookups",
            unit="{lookup}",
            description="Presented tokens looked up in the database, by outcome.",
        )

    async def authenticate(
        self,
        authorization: str | None,
        *,
        fresh: bool = False,
        caller: Callable[[], str] = str,
    ) -> Principal:
        """The principal `authorization` stands for, or Unauthenticated (an
        ExpiredToken, a RevokedToken); ResourceExhausted for a token this
        process has not seen from a `caller()` (its IP address, asked only
        then) past its budget of unknown tokens."""
        if not authorization:
            raise Unauthenticated("missing `authorization: Bearer <token>` metadata")
        scheme, _, token = authorization.partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise Unauthenticated("authorization must be `Bearer stk_...`")
        if not TOKEN_PATTERN.fullmatch(token):
            raise Unauthenticated(MALFORMED_TOKEN)
        digest = token_digest(token)
        now = self._clock()
        cached = self._cache.get(digest)
        if cached is not None and cached[1] > now and not fresh:
            principal = cached[0]
            self._cache.move_to_end(digest)
        else:
            # A token whose checksum fails is no token (ADR 0111): refused as
            # an unknown one is, in its words and from its caller's budget,
            # but never looked up.
            well_formed = token_well_formed(token)
            found = await self._look_up(digest, now, caller, fresh=fresh, look=well_formed)
            if not isinstance(found, Principal):
                if self._cache.pop(digest, None) is not None:
                    self._keep_seen_gone(digest)
                if isinstance(found, Revoked):
                    raise RevokedToken(found.principal)
                raise Unauthenticated(_UNKNOWN)
            principal = found
        # Left cached: an expiry never moves, and a client retrying with an
        # expired token in a loop costs no lookup a call.
        if principal.expires_at is not None and principal.expires_at <= self._wall_clock():
            raise ExpiredToken(principal, principal.expires_at)
        if self._uses is not None:
            self._uses.note(principal, at=now)
        return principal

    async def _look_up(
        self,
        digest: bytes,
        now: float,
        caller: Callable[[], str],
        *,
        fresh: bool = False,
        look: bool = True,
    ) -> Principal | Revoked | None:
        """`digest` looked up (a principal then cached), or taken as no token
        or a revoked one (found so lately), or refused unlooked (an unseen
        token of a caller past its budget). A call finding a lookup of it in
        progress (begun after the latest `forget`) takes its answer, but for
        a `fresh` one, which reads the token itself: as a busy token's
        interval ended, every call in flight looked it up, and with the pool
        busy every call arriving while the lookups waited for it added one.
        Not `look`: a token whose checksum fails, taken for an unknown one
        without a lookup (but for the caller's budget)."""
        refused = self._refused.get(digest)
        if refused is not None and refused[1] > now:
            return refused[0]
        key = (digest, self._forgets)
        shared = None if fresh else self._in_flight.get(key)
        if shared is not None:
            try:
                return await asyncio.shield(shared)
            except asyncio.CancelledError:
                task = asyncio.current_task()
                if not shared.cancelled() or (task is not None and task.cancelling()):
                    raise
                # Its first caller left (cancelled) before the answer: looked
                # up anew, by the first of those waiting, shared by the others.
                return await self._look_up(digest, now, caller, look=look)
        return await self._look_up_first(digest, now, caller, key, look=look)

    async def _look_up_first(
        self,
        digest: bytes,
        now: float,
        caller: Callable[[], str],
        key: tuple[bytes, int],
        *,
        look: bool = True,
    ) -> Principal | Revoked | None:
        """`digest` looked up by this call (not `look`: taken for an unknown
        token's, unlooked), whose answer the calls missing the cache meanwhile
        share (`_in_flight[key]`)."""
        # Kept past its interval (until the cache is full), a token in use is
        # no stranger: only one this process has not seen spends a budget.
        # So is one it saw that no longer works: an erased tenant's fleet
        # still calling with its tokens spent its address's budget, each
        # token once an interval, and that address (a service recording for
        # several tenants, a NAT) was then refused other tenants' new tokens.
        seen = digest in self._cache or digest in self._seen_gone
        budget = "" if seen else caller_key(caller())
        if budget and (wait := self._budgets.wait(budget)) > 0:
            raise ResourceExhausted(
                "too many unknown tokens from this address; retry later",
                retry_after=wait,
                reason="TOO_MANY_UNKNOWN_TOKENS",
            )
        forgets = self._forgets
        shared: asyncio.Future[Principal | Revoked | None] | None = None
        if key not in self._in_flight:
            shared = asyncio.get_running_loop().create_future()
            self._in_flight[key] = shared
        try:
            found = await self._lookup(digest) if look else None
        except BaseException as error:
            if shared is not None:
                if isinstance(error, Exception):
                    shared.set_exception(error)  # Unavailable: theirs too
                    shared.exception()  # retrieved, whether anyone waits or not
                else:
                    shared.cancel()  # cancelled: those waiting look it up themselves
            raise
        finally:
            if shared is not None:
                del self._in_flight[key]
        if shared is not None:
            shared.set_result(found)
        if look:
            self._lookups.add(1, {OUTCOME: _outcome(found)})
        if not isinstance(found, Principal):
            self._refused.pop(digest, None)
            self._refused[digest] = (found, now + self._cache_seconds)
            if len(self._refused) > self._max_cached:
                self._refused.popitem(last=False)
        if found is None and budget:
            self._budgets.spent(budget)
        # Not kept past a revocation since it was read (true when read).
        if isinstance(found, Principal) and forgets == self._forgets:
            self._cache[digest] = (found, now + self._cache_seconds)
            self._cache.move_to_end(digest)
            while len(self._cache) > self._max_cached:
                self._cache.popitem(last=False)
        return found

    def forget(self, token_id: str) -> None:
        """Stop trusting a cached token at once (it was revoked here)."""
        self._forgets += 1
        for digest, (principal, _) in list(self._cache.items()):
            if principal.token_id == token_id:
                del self._cache[digest]

    def forget_tenant(self, tenant_id: str) -> None:
        """Stop trusting every cached token of a tenant at once (it was erased here)."""
        self._forgets += 1
        self._erased[tenant_id] = None
        if len(self._erased) > self._max_cached:
            del self._erased[next(iter(self._erased))]
        for digest, (principal, _) in list(self._cache.items()):
            if principal.tenant_id == tenant_id:
                del self._cache[digest]
                self._keep_seen_gone(digest)
        # Its tokens are gone: no longer known, not even as revoked.
        for digest, (revoked, _) in list(self._refused.items()):
            if revoked is not None and revoked.principal.tenant_id == tenant_id:
                del self._refused[digest]
                self._keep_seen_gone(digest)

    def _keep_seen_gone(self, digest: bytes) -> None:
        self._seen_gone.pop(digest, None)
        self._seen_gone[digest] = None
        if len(self._seen_gone) > self._max_cached:
            self._seen_gone.popitem(last=False)

    def erased_here(self, tenant_id: str) -> bool:
        """Whether this process erased `tenant_id` (lately)."""
        return tenant_id in self._erased
