"""Email sinks over SMTP (ADR 0133): each event a message of its own, sent by
aiosmtplib on the server's event loop, to addresses the egress policy allows.

`message()` writes an event's message; `send()` delivers one and says what
the server answered as an `Answer` whose status is the SMTP reply code and
whose `smtp-phase` header names the command it answered (`connect`, `auth`,
`mail`, `rcpt`, `data`): `destinations.verdict` reads them. What an SMTP
server says is kept to its first line, its first `_KEPT` characters: a
refusal may quote the message (a content filter's), or the recipient."""

from __future__ import annotations

import asyncio
import hashlib
import json
import socket
import ssl
from datetime import datetime
from email.headerregistry import Address
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import format_datetime
from typing import Any, Final

import aiosmtplib

from ..domain.chat_text import line as chat_line
from ..domain.chat_text import located as chat_located
from ..domain.chat_text import milliseconds, request_fields, shown
from ..domain.email_sinks import host_of, is_loopback, mail_address, port_of, security_of
from ..domain.event import ALERT_ACTION, TRIGGER_REQUEST_NAMES
from .egress import DEADLINE_TIMEOUTS, Answer, EgressDenied, EgressPolicy

# An SMTP reply's characters kept (its first line): its code and enhanced
# status code, and the server's words up to here.
_KEPT: Final = 160
# The right-hand side of each Message-ID (short: the header stays on one line).
_ID_DOMAIN: Final = "sealtrail"
# A field's path that starts with this is the API request's part
# (`chat_text.request_fields`), not the record's.
_REQUEST: Final = "request"
# The event's fields told, in order, before its JSON (each on one line).
_FIELDS: Final = (
    ("Severity", ("severity",)),
    ("Action", ("action",)),
    ("Category", ("category",)),
    ("Outcome", ("outcome",)),
    ("Actor", ("actor", "id")),
    ("Actor type", ("actor", "type")),
    ("Resource type", ("resource", "type")),
    ("Resource", ("resource", "id")),
    ("IP address", ("context", "ip")),
    ("Country", ("context", "country")),
    # The API request the event was (ADR 0136); an alert's, its trigger's,
    # which it keeps in its details (chat_text.request_fields).
    ("HTTP method", (_REQUEST, "http_method")),
    ("HTTP route", (_REQUEST, "http_route")),
    ("HTTP status", (_REQUEST, "http_status_code")),
    ("Duration", (_REQUEST, "duration_ms")),
    ("Description", ("description",)),
    ("Occurred at", ("occurred_at",)),
    ("Tenant", ("tenant_id",)),
    ("Seq", ("seq",)),
    ("Event id", ("id",)),
)


# What a mail's Country says of a country the server located (ADR 0134).
_LOCATED: Final = "located by the server from the IP address, in its GeoIP database"


class MailSettingsRefused(EgressDenied):
    """The SMTP server cannot be used as the sink says (no STARTTLS offered,
    no login offered): held until the sink or the server is put right."""


def message_id(data: dict[str, Any]) -> str:
    """The Message-ID of an event's message: the same at every send of it (a
    retry, a replay), so a mail client or a list shows a repeat as the message
    it has; the tenant as a digest (ids of two tenants' logs never meet)."""
    tenant = hashlib.sha256(str(data["tenant_id"]).encode()).hexdigest()[:8]
    return f"<{data['id']}.{tenant}@{_ID_DOMAIN}>"


def message(destination: dict[str, Any], data: dict[str, Any], item: str) -> bytes:
    """An event's message: its Subject the event's line, its text body the
    event's fields and then `item` (the event as the sink's format writes it)."""
    mail = EmailMessage(policy=SMTP)
    # The chat line without its mention guard: mail has no mentions, and a
    # zero-width space after an `@` made an ASCII Subject RFC 2047's, and
    # unsearchable. One line still, controls made spaces; the policy folds it.
    mail["Subject"] = chat_line(data, markup=False, guard_mentions=False)
    mail["From"] = _header_address(destination["from_address"])
    mail["To"] = [_header_address(to) for to in destination["to_addresses"]]
    mail["Date"] = format_datetime(datetime.fromisoformat(data["occurred_at"]))
    mail["Message-ID"] = message_id(data)
    mail["X-Sealtrail-Event-Id"] = str(data["id"])
    mail["X-Sealtrail-Seq"] = str(data["seq"])
    mail["Auto-Submitted"] = "auto-generated"  # RFC 3834: no vacation replies
    lines = []
    request = request_fields(data)
    for label, path in _FIELDS:
        keys: tuple[str, ...] = path
        value: Any = data
        if path[0] == _REQUEST:
            value, keys = request, path[1:]
        for key in keys:
            value = value.get(key) if isinstance(value, dict) else None
        if value not in (None, ""):
            said = shown(value, 1000, markup=False, guard_mentions=False)
            if label == "Country" and chat_located(data.get("context") or {}):
                said += f" ({_LOCATED})"
            elif label == "Duration" and isinstance(value, int | float):
                said = f"{milliseconds(value)} ms"
            lines.append(f"{label}: {said}")
    details = _details_unsaid(data, request)
    if details:
        said = json.dumps(details, ensure_ascii=False)
        lines.append(f"Details: {shown(said, 2000, markup=False, guard_mentions=False)}")
    pretty = json.dumps(json.loads(item), indent=2, ensure_ascii=False)
    text = "\n".join(lines) + "\n\nThe event as Sealtrail forwards it:\n\n" + pretty + "\n"
    mail.set_content(text, cte="quoted-printable")
    return mail.as_bytes()


def _details_unsaid(data: dict[str, Any], request: dict[str, Any]) -> Any:
    """The event's details as its Details line says them: an alert's
    `details.trigger_request` without the parts its HTTP fields said
    (`request`, by the context's names), and without it if they said all.
    The forwarded event below keeps its record whole."""
    details = data.get("details")
    if data.get("action") != ALERT_ACTION or not isinstance(details, dict):
        return details
    kept = details.get("trigger_request")
    if not isinstance(kept, dict):
        return details
    said = {name for name, key in TRIGGER_REQUEST_NAMES if key in request}
    rest = {name: value for name, value in kept.items() if name not in said}
    unsaid = {key: value for key, value in details.items() if key != "trigger_request"}
    return unsaid | ({"trigger_request": rest} if rest else {})


def _header_address(value: str) -> Address:
    mailed = mail_address(value)  # an international domain by its A-label
    return Address(display_name=mailed.display_name, addr_spec=mailed.spec)


def _said(code: int, text: str, secrets: tuple[str, ...]) -> bytes:
    """What is kept of a reply: `code` and its first line, cut."""
    first = text.strip().splitlines()[0] if text.strip() else ""
    for secret in secrets:
        first = first.replace(secret, "…")
    return f"{code} {first[:_KEPT]}".strip().encode()


def _answer(code: int, text: str, phase: str, secrets: tuple[str, ...]) -> Answer:
    return Answer(status=code, body=_said(code, text, secrets), headers={"smtp-phase": phase})


async def _connected(
    policy: EgressPolicy, host: str, port: int, timeout: float, tenant_id: str | None
) -> socket.socket:
    """A TCP connection to one of `host`'s addresses, each permitted by the
    policy: connected to the address checked (a DNS answer that changes
    between check and connect gains nothing)."""
    addresses = await policy.resolve(host, port, tenant_id=tenant_id)
    loop = asyncio.get_running_loop()
    failure: OSError | None = None
    for address in addresses:
        family = socket.AF_INET6 if ":" in address else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setblocking(False)
        try:
            await asyncio.wait_for(loop.sock_connect(sock, (address, port)), timeout)
        except (OSError, TimeoutError) as error:
            sock.close()
            failure = error if isinstance(error, OSError) else OSError("connect timed out")
            continue
        except BaseException:  # cancelled: the exchange's deadline, a stop
            sock.close()
            raise
        return sock
    raise failure or OSError("no address to connect to")


async def send(
    policy: EgressPolicy,
    trust: ssl.SSLContext,
    destination: dict[str, Any],
    body: bytes,
    *,
    timeout: float,
    tenant_id: str | None,
) -> Answer:
    """Sends `body` as the sink's `destination` says: the server's last reply
    (250 once taken). OSError (aiosmtplib's disconnects and timeouts among
    them) when the server could not be reached or went away; EgressDenied
    for an address the policy refuses; MailSettingsRefused for a server
    without what the sink asks of it.

    Each step (connecting, each command, the message) has `timeout`; the
    whole exchange has an HTTP request's deadline, `DEADLINE_TIMEOUTS` of
    them: a server that answers every step just in time (an EHLO, a login, a
    RCPT per recipient, up to 20) held the sink for minutes, past its lease,
    another process then sending its events again (TimeoutError)."""
    deadline = DEADLINE_TIMEOUTS * timeout
    try:
        async with asyncio.timeout(deadline):
            return await _exchange(
                policy, trust, destination, body, timeout=timeout, tenant_id=tenant_id
            )
    except TimeoutError as error:
        if str(error):  # a step's own, said by its step
            raise
        raise TimeoutError(f"the SMTP exchange did not end within {deadline:g} s") from None


async def _exchange(
    policy: EgressPolicy,
    trust: ssl.SSLContext,
    destination: dict[str, Any],
    body: bytes,
    *,
    timeout: float,
    tenant_id: str | None,
) -> Answer:
    # Looked up, checked, connected to and its certificate verified by its
    # A-label (validated: IDNA 2008 writes it), as the addresses' domains are.
    host = host_of(destination)
    port = port_of(destination)
    security = security_of(destination)
    if security == "none" and not is_loopback(host):  # validated, and checked again
        raise MailSettingsRefused("plain SMTP only to the loopback")
    password = destination.get("password") or ""
    secrets = (password,) if password else ()
    # In ASCII, an international domain by its A-label (validated: no SMTPUTF8 needed).
    sender = mail_address(destination["from_address"]).spec
    recipients = [mail_address(to).spec for to in destination["to_addresses"]]
    sock = await _connected(policy, host, port, timeout, tenant_id)
    client = aiosmtplib.SMTP(
        hostname=host,
        sock=sock,
        use_tls=security == "implicit_tls",
        start_tls=False,
        tls_context=trust,
        timeout=timeout,
        local_hostname="sealtrail",
    )
    try:
        try:
            await client.connect()
        except aiosmtplib.SMTPConnectResponseError as error:
            return _answer(error.code, error.message, "connect", secrets)
        except aiosmtplib.SMTPConnectError as error:
            raise OSError(str(error)[:_KEPT]) from None
        try:
            await client.ehlo()
            if security == "starttls":
                if not client.supports_extension("starttls"):
                    raise MailSettingsRefused("the server offers no STARTTLS (security: starttls)")
                await client.starttls(server_hostname=host, tls_context=trust)
                await client.ehlo()  # what it offers over TLS (AUTH, often only there)
        except aiosmtplib.SMTPHeloError as error:
            return _answer(error.code, error.message, "connect", secrets)
        except aiosmtplib.SMTPResponseException as error:
            return _answer(error.code, error.message, "connect", secrets)
        if destination.get("username"):
            methods = client.supported_auth_methods  # of PLAIN, LOGIN, CRAM-MD5
            if not methods:
                raise MailSettingsRefused("the server offers no login (SMTP AUTH) we know")
            # One try, by PLAIN where offered (over TLS, as the password is):
            # the server's reply to it is what the sink's error says.
            method = "plain" if "plain" in methods else methods[0]
            login = {
                "plain": client.auth_plain,
                "login": client.auth_login,
                "cram-md5": client.auth_crammd5,
            }[method]
            try:
                await login(destination["username"], password)
            except aiosmtplib.SMTPResponseException as error:  # 535 and the like
                return _answer(error.code, error.message, "auth", secrets)
        try:
            await client.sendmail(sender, recipients, body)
        except aiosmtplib.SMTPSenderRefused as error:
            return _answer(error.code, error.message, "mail", secrets)
        except aiosmtplib.SMTPRecipientsRefused as error:
            # Every recipient refused: the first's reply (some refused, the
            # others taken, is a delivery).
            first = error.recipients[0]
            return _answer(first.code, first.message, "rcpt", secrets)
        except aiosmtplib.SMTPDataError as error:
            return _answer(error.code, error.message, "data", secrets)
        except aiosmtplib.SMTPResponseException as error:
            return _answer(error.code, error.message, "data", secrets)
        return _answer(250, "taken", "data", secrets)
    except aiosmtplib.SMTPTimeoutError:
        raise TimeoutError("the SMTP server did not answer in time") from None
    except aiosmtplib.SMTPServerDisconnected:
        raise ConnectionError("the SMTP server closed the connection") from None
    except aiosmtplib.SMTPNotSupported as error:
        raise MailSettingsRefused(str(error)[:_KEPT]) from None
    except aiosmtplib.SMTPException as error:  # a reply it could not read, say
        raise ConnectionError(f"SMTP: {str(error)[:_KEPT]}") from None
    finally:
        task = asyncio.current_task()
        connected = client.is_connected
        transport = client.transport
        try:
            # Past the deadline (or stopping), no QUIT is waited for.
            if connected and not (task is not None and task.cancelling()):
                await asyncio.wait_for(client.quit(), timeout)
        except (aiosmtplib.SMTPException, OSError, TimeoutError):
            pass
        finally:
            # The session ended at QUIT's reply (or whatever ended it first):
            # the connection is dropped, not closed gracefully. Over TLS a
            # graceful close waits for the server's close_notify, up to 30 s,
            # its socket open until then, and open for good on a loop that
            # ends first (an unclosed transport).
            if isinstance(transport, asyncio.Transport):
                transport.abort()
            client.close()
            if not connected:
                sock.close()
