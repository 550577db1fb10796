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
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Final, Protocol

from ..domain.errors import SealtrailError
from ..store.console_sessions import Claimed, Grant, SessionsKept
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
        self, config: OidcConfig, provider: Provider, sessions: Ends, kept: SessionsKept
    ) -> None:
        self._config = config
        self._provider = provider
        self._sessions = sessions
        self._kept = kept

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
    ) -> None:
        """Keeps a session just minted for rechecks (its first after the interval)."""
        await self._kept.keep(
            secret,
            token_id=token_id,
            role=role,
            subject=subject,
            expires_at=expires_at,
            grant=grant,
            seconds=self.seconds,
        )

    async def forget(self, secret: str) -> None:
        """The session of `secret` was signed out: its refresh token goes."""
        await self._kept.forget(secret)

    async def check(self, secret: str, browser: Browser) -> Ended | None:
        """Rechecks the session of the console token `secret` if it is due
        (this process having taken it); why it ended, if it did (its token
        revoked then), else None. A database error lets the call go on: it
        reaches the same database, and says so itself."""
        try:
            claimed = await self._kept.claim(secret)
        except SealtrailError:
            return None
        if claimed is None:
            return None
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
            await self._kept.forget(secret)
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
        await self._kept.confirmed(
            secret, token_id=claimed.token_id, grant=renewed, seconds=self.seconds
        )
        return None

    async def _failed(self, secret: str, claimed: Claimed, said: str) -> Ended | None:
        """A recheck the provider could not answer: the session goes on, unless
        the provider last confirmed the person longer ago than the bound."""
        failures, ran_out = await self._kept.failed(
            secret, retry=min(self.seconds, RETRY_SECONDS), bound=self.bound
        )
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
