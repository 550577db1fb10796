"""Console sessions that follow the identity provider (ADR 0140 as amended
2026-12-07, docs/console.md "Sessions follow the identity provider").

A session a sign-in began is checked again with the provider at the
browser's first call after SEALTRAIL_OIDC_RECHECK_SECONDS: the refresh token
the provider gave at sign-in, kept sealed under the console token
(store/console_sessions.py), is refreshed at the token endpoint, the new
id_token verified as at sign-in (OpenID Connect Core 1.0, 12.2: the same
subject, a nonce only if the sign-in's), and the person's groups mapped to a
role again. What follows:

    the same role                 the session goes on, next recheck after the interval
    refresh refused (invalid_grant),
    an id_token not to trust,
    no group, another role        ended at once: the token revoked, recorded
                                  (`api_token.revoked`, `ended_by: identity_provider`),
                                  the call answered 401 saying why
    the provider not answering    the session goes on, rechecked again after
                                  RETRY_SECONDS; once the provider last confirmed
                                  the person UNCONFIRMED_INTERVALS intervals ago,
                                  the next failed recheck ends it

The refresh token is usable only with the console token's secret, which the
browser presents with each call: a recheck happens at a call, never in the
background. A session nobody calls with is not rechecked, and ends at its
token's expiry.

A call costs the database nothing until its session is due: the process
remembers, by the token's digest, when the session's next check is
(`DueTimes`), learned from the row as it claimed, confirmed, failed or read
it, the clock started before the statement that said it. The row's
next_check_at only ever moves later, so what a process remembers is never
later than the row: it asks the database at the first call at or after the
row's time, and the claim there still decides which process rechecks.

Only a bearer the API's authenticator takes, of the console's tenant and
named as a sign-in names its tokens (`... (console)`), is checked here
(sign_in.py, `SignIn.rechecked`): a made-up, revoked or expired bearer, or
an API token pasted into the sign-in form, is never looked up. One so named
with no session row (a sign-in's the provider gave no refresh token, or one
made while rechecks were off; an API token an admin named so, pasted) is
remembered as none for one interval, then looked up again.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Final, Protocol

from ..domain.errors import SealtrailError
from ..store.console_sessions import LEASE_SECONDS, Claimed, Connection, Grant, SessionsKept
from ..store.console_sign_ins import digest
from .oidc import OidcConfig, Provider, ProviderFailed, RefreshRefused, SignInRefused, person_of

if TYPE_CHECKING:
    from .sign_in import Browser

log = logging.getLogger(__name__)

# Intervals without the provider's word after which a failed recheck ends the
# session (5 minutes each by default: 15 minutes).
UNCONFIRMED_INTERVALS: Final = 3
# Seconds after a failed recheck before the next is tried (the interval, if shorter).
RETRY_SECONDS: Final = 30.0
# The reason a call refused because the provider ended its session is answered with.
ENDED_REASON: Final = "IDENTITY_PROVIDER_ENDED_SESSION"
# Tokens whose next check a process remembers at most (the least recently
# used forgotten first: a forgotten one is only looked up again).
REMEMBERED_AT_MOST: Final = 10_000


class DueTimes:
    """When each session's next check is due, as this process last learned
    it (time.monotonic()), by (tenant, the token's digest); None: the token
    began no rechecked session. Bounded (REMEMBERED_AT_MOST); shared by the
    process's consoles, and safe to use from any thread."""

    def __init__(self, *, most: int = REMEMBERED_AT_MOST) -> None:
        self._most = most
        self._due: OrderedDict[tuple[str, bytes], float] = OrderedDict()
        self._lock = threading.Lock()

    def due(self, tenant_id: str, token_digest: bytes, *, now: float) -> bool:
        """Whether the database is to be asked about this token now."""
        with self._lock:
            at = self._due.get((tenant_id, token_digest))
            if at is None or at <= now:
                return True
            self._due.move_to_end((tenant_id, token_digest))
            return False

    def remember(self, tenant_id: str, token_digest: bytes, at: float) -> None:
        """The token is not to be asked about before `at`."""
        with self._lock:
            self._due[(tenant_id, token_digest)] = at
            self._due.move_to_end((tenant_id, token_digest))
            while len(self._due) > self._most:
                self._due.popitem(last=False)

    def forget(self, tenant_id: str, token_digest: bytes) -> None:
        """The token is to be asked about at its next call."""
        with self._lock:
            self._due.pop((tenant_id, token_digest), None)

    def __len__(self) -> int:
        with self._lock:
            return len(self._due)


# The process's memory of when sessions are due (a restart forgets it: each
# token then costs one lookup).
DUE_TIMES: Final = DueTimes()


@dataclass(frozen=True, slots=True)
class Ended:
    """Why the provider's word ended a session: `reason` (a word, recorded:
    refresh_refused, not_verified, no_group, role_changed, unconfirmed),
    `said` (a sentence for the page and the record), the groups it named."""

    reason: str
    said: str
    groups: tuple[str, ...] | None = None


class Ends(Protocol):
    """What revokes a session's token with its record (api/console_sessions.py)."""

    async def end(self, secret: str, *, ended: Ended, browser: Browser) -> None: ...


class Rechecks:
    """The rechecks of one console's sessions with `provider`."""

    def __init__(
        self,
        config: OidcConfig,
        provider: Provider,
        sessions: Ends,
        kept: SessionsKept,
        *,
        due_times: DueTimes = DUE_TIMES,
    ) -> None:
        self._config = config
        self._provider = provider
        self._sessions = sessions
        self._kept = kept
        self._due_times = due_times

    def _remember(self, secret: str, at: float) -> None:
        self._due_times.remember(self._config.tenant_id, digest(secret), at)

    @property
    def seconds(self) -> float:
        """Seconds between a session's rechecks; 0: never."""
        return self._config.recheck_seconds

    @property
    def bound(self) -> float:
        """Seconds a session goes on without the provider's word at most."""
        return UNCONFIRMED_INTERVALS * self._config.recheck_seconds

    async def keep(
        self,
        secret: str,
        *,
        token_id: str,
        role: str,
        subject: str,
        expires_at: datetime,
        grant: Grant,
        on: Connection | None = None,
    ) -> None:
        """Keeps a session just minted for rechecks (its first after the
        interval); `on`: in that connection's transaction, the token's
        creation's (a token that was not created is then never asked about)."""
        started = time.monotonic()
        await self._kept.keep(
            secret,
            token_id=token_id,
            role=role,
            subject=subject,
            expires_at=expires_at,
            grant=grant,
            seconds=self.seconds,
            on=on,
        )
        self._remember(secret, started + self.seconds)

    async def forget(self, secret: str) -> None:
        """The session of `secret` was signed out: its refresh token goes."""
        self._due_times.forget(self._config.tenant_id, digest(secret))
        await self._kept.forget(secret)

    async def check(self, secret: str, browser: Browser) -> Ended | None:
        """Rechecks the session of the console token `secret` if it is due
        (this process having taken it); why it ended, if it did (its token
        revoked then), else None. A database error lets the call go on: it
        reaches the same database, and says so itself. Not due by what
        the process remembers (DueTimes): no statement at all."""
        started = time.monotonic()
        if not self._due_times.due(self._config.tenant_id, digest(secret), now=started):
            return None
        try:
            claimed = await self._kept.claim(secret)
            if claimed is None:
                started = time.monotonic()
                due_in = await self._kept.due_in(secret)
        except SealtrailError:
            return None
        if claimed is None:
            # Not due (or held by another process: its lease), or no session:
            # not asked again before the row says, or for an interval.
            self._remember(secret, started + (self.seconds if due_in is None else due_in))
            return None
        self._remember(secret, started + LEASE_SECONDS)
        try:
            ended = await self._recheck(secret, claimed)
            if ended is None:
                return None
            log.warning(
                "the identity provider ended a console session (token %s, %s): %s",
                claimed.token_id,
                ended.reason,
                ended.said[:200],
            )
            await self._sessions.end(secret, ended=ended, browser=browser)
            await self.forget(secret)
        except SealtrailError as failed:
            # Not ended here: claimed again after the lease (LEASE_SECONDS).
            log.warning("a console session's recheck could not be completed: %s", failed.reason)
            return None
        return ended

    async def _recheck(self, secret: str, claimed: Claimed) -> Ended | None:
        grant = claimed.grant
        if grant is None:
            return Ended("not_verified", "the session's refresh token could not be opened")
        try:
            tokens = await self._provider.refresh(grant.refresh_token)
            if tokens.id_token is None:
                raise ProviderFailed("the identity provider renewed the session with no id_token")
            claims = await self._provider.verify(tokens.id_token, nonce=grant.nonce, renewed=True)
        except RefreshRefused as refused:
            return Ended(refused.reason, refused.said)
        except ProviderFailed as failed:
            return await self._failed(secret, claimed, failed.said)
        except SignInRefused as refused:
            return Ended("not_verified", f"its renewed id_token was refused: {refused.said}")
        if str(claims["sub"]) != claimed.subject:
            return Ended("not_verified", "its renewed id_token names another person (sub)")
        person = person_of(claims, self._config)
        if person.role is None:
            return Ended(
                "no_group",
                "the person is in none of the groups this console admits any more",
                person.groups,
            )
        if person.role.value != claimed.role:
            return Ended(
                "role_changed",
                f"the person's groups now give the role {person.role.value}, not"
                f" {claimed.role}: sign in again for it",
                person.groups,
            )
        renewed = Grant(tokens.refresh_token, grant.nonce) if tokens.refresh_token else None
        started = time.monotonic()
        await self._kept.confirmed(
            secret, token_id=claimed.token_id, grant=renewed, seconds=self.seconds
        )
        self._remember(secret, started + self.seconds)
        return None

    async def _failed(self, secret: str, claimed: Claimed, said: str) -> Ended | None:
        """A recheck the provider could not answer: the session goes on, unless
        the provider last confirmed the person longer ago than the bound."""
        retry = min(self.seconds, RETRY_SECONDS)
        started = time.monotonic()
        failures, ran_out = await self._kept.failed(secret, retry=retry, bound=self.bound)
        self._remember(secret, started + retry)
        log.warning(
            "a console session's recheck failed (token %s, %d in a row): %s",
            claimed.token_id,
            failures,
            said[:200],
        )
        if not ran_out:
            return None
        return Ended(
            "unconfirmed",
            f"the identity provider has not confirmed the person for over {self.bound:g} s"
            f" ({said[:120]})",
        )
