"""A real SMTP server on 127.0.0.1 (aiosmtpd, on a port of its own choosing)
for the email sinks' tests: it keeps every message it takes, answers each
DATA as its `responder` says, and, if given, asks for a login, STARTTLS, or
both."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from email import message_from_bytes
from email.message import Message
from email.policy import default
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, LoginPassword


@dataclass(frozen=True)
class Mail:
    """A message the server took: its envelope and its parsed content."""

    mail_from: str
    rcpt_tos: list[str]
    data: bytes
    login: str | None

    @property
    def message(self) -> Message:
        return message_from_bytes(self.data, policy=default)


# What the server answers DATA number `index` (0 first) carrying `data`: None
# takes the message (250), a reply such as "451 4.3.0 try later" refuses it.
Responder = Callable[[bytes, int], str | None]


@dataclass
class Mailbox:
    host: str
    port: int
    responder: Responder = lambda data, index: None
    # Addresses RCPT refuses with 550 (no such user).
    unknown: set[str] = field(default_factory=set)
    # Seconds each RCPT is answered after: a server slow at every step.
    rcpt_delay: float = 0.0
    # The first `lost_replies` messages are taken and their connection then
    # dropped before the 250 goes: a reply lost, which the sender cannot
    # tell from a message lost, so it sends the message again.
    lost_replies: int = 0
    taken: list[Mail] = field(default_factory=list)
    answered: int = 0  # DATA commands answered, refused ones too
    logins: list[tuple[str, bool]] = field(default_factory=list)  # (username, accepted)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def wait_for(self, done: Callable[[list[Mail]], bool], timeout: float = 30) -> list[Mail]:
        """The messages taken, once `done` says they are all that is awaited."""
        deadline = time.monotonic() + timeout
        while True:
            with self.lock:
                taken = list(self.taken)
            if done(taken):
                return taken
            assert time.monotonic() < deadline, f"never done: {len(taken)} messages taken"
            time.sleep(0.02)


class _Handler:
    def __init__(self, mailbox: Mailbox) -> None:
        self.mailbox = mailbox

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, options: list[str]
    ) -> str:
        if self.mailbox.rcpt_delay:
            await asyncio.sleep(self.mailbox.rcpt_delay)
        if address.lower() in self.mailbox.unknown:
            return "550 5.1.1 <" + address + ">: no such user here"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        mailbox = self.mailbox
        with mailbox.lock:
            index = mailbox.answered
            mailbox.answered += 1
        refusal = mailbox.responder(envelope.content, index)
        if refusal is not None:
            return refusal
        said = session.auth_data
        login = said.decode() if isinstance(said, bytes) else None
        with mailbox.lock:
            mailbox.taken.append(
                Mail(envelope.mail_from, list(envelope.rcpt_tos), envelope.content, login)
            )
        if index < mailbox.lost_replies and isinstance(server.transport, asyncio.Transport):
            server.transport.abort()  # the reply below is written to no one
        return "250 OK taken"


class _Controller(Controller):
    """aiosmtpd's controller on port 0: its port read once it listens, and
    its connections closed when it stops."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.sessions: list[SMTP] = []

    def _trigger_server(self) -> None:
        assert self.server is not None
        self.port = self.server.sockets[0].getsockname()[1]
        super()._trigger_server()

    def factory(self) -> SMTP:
        session = super().factory()
        self.sessions.append(session)
        return session

    def stop(self, no_assert: bool = False) -> None:
        # aiosmtpd stops its loop and cancels the connections' tasks, which
        # then never run: a connection still open (a sink's retry, a client
        # given up on) kept its transport, reported unclosed (a
        # ResourceWarning, an error here) in whichever later test the
        # collector found it. Each is closed first, its socket with it.
        async def close_sessions() -> None:
            for session in self.sessions:
                if isinstance(session.transport, asyncio.Transport):
                    session.transport.abort()
            await asyncio.sleep(0.01)  # their connection_lost: the sockets closed

        if self._thread is not None:
            asyncio.run_coroutine_threadsafe(close_sessions(), self.loop).result(timeout=10)
        super().stop(no_assert)


@contextlib.contextmanager
def smtp_server(
    *,
    logins: dict[str, str] | None = None,
    tls: tuple[str, str] | None = None,
) -> Iterator[Mailbox]:
    """A running server. `logins`: username -> password, a login then
    offered (and, with `tls`, required). `tls`: (certificate chain, key) PEM
    files: STARTTLS offered and required (and a login only over it)."""
    mailbox = Mailbox("127.0.0.1", 0)

    def authenticate(
        server: Any, session: Any, envelope: Any, mechanism: str, data: Any
    ) -> AuthResult:
        if not isinstance(data, LoginPassword):
            return AuthResult(success=False, handled=False)
        username, password = data.login.decode(), data.password.decode()
        accepted = logins is not None and logins.get(username) == password
        with mailbox.lock:
            mailbox.logins.append((username, accepted))
        # Not handled: the server answers a refusal itself (535).
        return AuthResult(success=accepted, handled=accepted, auth_data=data.login)

    options: dict[str, Any] = {}
    if logins is not None:
        # Over TLS a login is required before MAIL; in the clear it is only
        # offered (aiosmtpd warns of a login required without TLS).
        options |= {"authenticator": authenticate, "auth_required": tls is not None}
        options["auth_require_tls"] = tls is not None
    if tls is not None:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(*tls)
        options |= {"tls_context": context, "require_starttls": True}
    controller = _Controller(_Handler(mailbox), hostname="127.0.0.1", port=0, **options)
    controller.start()
    mailbox.port = controller.port
    try:
        yield mailbox
    finally:
        controller.stop()
