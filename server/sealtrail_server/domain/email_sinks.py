"""Email sinks' settings (ADR 0133): an SMTP server, how it is reached, a
login, a sender and up to 20 recipients. Pure validation and the address a
sink sends to; the messages and their sending live in forward/mail.py.

Every setting is refused with a line break in it: each is written into a
command or a header of the mail, where a CR or LF would start one of the
tenant admin's choosing (header injection)."""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from dataclasses import dataclass
from email.errors import HeaderParseError
from email.utils import getaddresses
from typing import Any, Final, Literal

import idna

Security = Literal["starttls", "implicit_tls", "none"]
SECURITIES: Final[tuple[Security, ...]] = ("starttls", "implicit_tls", "none")
# The port of each, when the sink's is 0: submission, submissions (RFC 8314), smtp.
DEFAULT_PORTS: Final[dict[str, int]] = {"starttls": 587, "implicit_tls": 465, "none": 25}
MAX_RECIPIENTS: Final = 20
# The most messages one ReplaySink may send an email sink (the events of its
# range or window the sink's filter takes): each event is a message.
MAX_REPLAY_MESSAGES: Final = 1000
MAX_ADDRESS: Final = 320  # RFC 3696's longest address, with room for a short display name
MAX_LOGIN: Final = 256
MAX_HOST: Final = 253
_LINE_BREAKS: Final = ("\r", "\n")
_NOT_AN_ADDRESS: Final = f"must be one email address of at most {MAX_ADDRESS} characters"
# A local part in Unicode is mailed only by SMTPUTF8 (RFC 6531), which a
# server may not offer and Sealtrail does not send: refused as it is typed.
NEEDS_SMTPUTF8: Final = "a non-ASCII local part needs SMTPUTF8, which Sealtrail does not send"
_NOT_IDNA: Final = "has a domain that IDNA 2008 cannot write in ASCII (its xn-- form)"
_HOST_NOT_IDNA: Final = "must be a host name IDNA 2008 can write in ASCII (its xn-- form)"


def security_of(destination: dict[str, Any]) -> str:
    """The sink's `security`, `starttls` when empty."""
    return str(destination.get("security") or "starttls")


def port_of(destination: dict[str, Any]) -> int:
    """The port connected to: the sink's, or its security's default."""
    port = destination.get("port") or 0
    return int(port) or DEFAULT_PORTS.get(security_of(destination), 587)


def a_label(name: str) -> str:
    """`name`, a domain or a host name, in ASCII: as it is if it is, else
    by its A-labels (`xn--...`), IDNA 2008 with UTS 46's mapping (a
    full-width letter or dot is its ASCII one). UnicodeError (idna.IDNAError
    among them) where IDNA 2008 cannot write it."""
    if name.isascii():
        return name
    return idna.encode(name, uts46=True).decode("ascii")


def host_of(destination: dict[str, Any]) -> str:
    """The host an email sink looks up, has the egress policy check, connects
    to and verifies the certificate of: its `host` by its A-label where it is
    in Unicode (shown, and bound to its sealed password, as typed).
    UnicodeError for a host that validation refuses."""
    return a_label(str(destination.get("host", "")))


def smtp_url(destination: dict[str, Any]) -> str:
    """Where an email sink sends, as a URL for errors, logs and what binds its
    sealed password (`smtps://` for implicit TLS): `smtp://host:port`."""
    scheme = "smtps" if security_of(destination) == "implicit_tls" else "smtp"
    host = str(destination.get("host", ""))
    if ":" in host:
        host = f"[{host}]"
    return f"{scheme}://{host}:{port_of(destination)}"


def is_loopback(host: str) -> bool:
    """Whether `host` names this machine: `localhost`, 127.0.0.0/8 or ::1
    (a host name in Unicode by its A-label: `localhost` in full-width letters
    is one)."""
    try:
        host = a_label(host)
    except UnicodeError:
        return False
    if host.rstrip(".").lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class MailAddress:
    """One address as a sink mails it: its display name (any text: a header
    writes it encoded where it is not ASCII) and its `local@domain` in ASCII,
    an international domain by its A-label (`xn--...`, IDNA 2008), which any
    SMTP server takes in commands and headers alike."""

    display_name: str
    spec: str


def mail_address(value: str) -> MailAddress:
    """`value`, one address as a header writes it (`Name <local@domain>` or
    bare) and as the sink keeps it, made what is mailed; ValueError saying
    why it cannot be (its text a field violation's description)."""
    if len(value) > MAX_ADDRESS:
        raise ValueError(_NOT_AN_ADDRESS)
    try:
        found = getaddresses([value], strict=True)
    except TypeError:  # a Python without `strict` (before 3.11.10)
        found = getaddresses([value])
    if len(found) != 1:
        raise ValueError(_NOT_AN_ADDRESS)
    name, spec = found[0]
    local, at, domain = spec.rpartition("@")
    if not at or not local or not domain:
        raise ValueError(_NOT_AN_ADDRESS)
    if not local.isascii():
        raise ValueError(NEEDS_SMTPUTF8)
    try:
        domain = a_label(domain)
    except UnicodeError:  # idna.IDNAError among them
        raise ValueError(_NOT_IDNA) from None
    # Imported here: its header classes cost `sealtrail-server --help` a tenth
    # of its start (tests/unit/test_cli_startup_imports.py).
    from email.headerregistry import Address

    try:
        parsed = Address(display_name=name, addr_spec=f"{local}@{domain}")
    except (HeaderParseError, ValueError, IndexError):
        raise ValueError(_NOT_AN_ADDRESS) from None
    if not parsed.username or not parsed.domain or "." not in parsed.domain:
        raise ValueError(_NOT_AN_ADDRESS)
    return MailAddress(display_name=name, spec=parsed.addr_spec)


def _address_error(value: str) -> tuple[str | None, str]:
    """The `local@domain` mailed to, lowered (who it reaches), or None and why not."""
    try:
        return mail_address(value).spec.lower(), ""
    except ValueError as error:
        return None, str(error)


def validate_email(destination: dict[str, Any], fail: Callable[[str, str], None]) -> None:
    """Each violation of an email destination, by `fail(field, description)`
    (the field under `email.`)."""
    broken = set()  # said once: a line break, nothing else of the field
    for name in ("host", "security", "username", "password", "from_address"):
        value = destination.get(name, "")
        if isinstance(value, str) and any(c in value for c in _LINE_BREAKS):
            fail(name, "must not hold a line break (CR or LF)")
            broken.add(name)
    host = str(destination.get("host", ""))
    security = security_of(destination)
    if not host:
        fail("host", "is required: the SMTP server's host name or address")
    elif "host" not in broken and (host_error := _host_error(host)):
        fail("host", host_error)
    if "security" in broken:
        pass
    elif security not in SECURITIES:
        fail("security", "must be starttls, implicit_tls or none")
    elif security == "none" and host and not is_loopback(host):
        fail("security", "none (plain text) only to localhost, 127.0.0.0/8 or ::1")
    port = destination.get("port") or 0
    if not isinstance(port, int) or not 0 <= port <= 65535:
        fail("port", "must be 1 to 65535, or 0 for the security's default")
    username = str(destination.get("username", ""))
    password = str(destination.get("password", ""))
    if "username" not in broken and (len(username) > MAX_LOGIN or not _visible(username)):
        fail("username", f"must be at most {MAX_LOGIN} visible ASCII characters")
    if "password" in broken:
        pass
    elif len(password) > MAX_LOGIN:
        fail("password", f"must be at most {MAX_LOGIN} characters")
    elif username and not password:
        fail("password", "is required with a username")
    elif password and not username:
        fail("username", "is required with a password")
    sender = str(destination.get("from_address", ""))
    if not sender:
        fail("from_address", "is required: the sender, such as alerts@example.com")
    elif "from_address" not in broken and (refused := _address_error(sender)[1]):
        fail("from_address", refused)
    recipients = destination.get("to_addresses") or []
    if not 1 <= len(recipients) <= MAX_RECIPIENTS:
        fail("to_addresses", f"must be 1 to {MAX_RECIPIENTS} addresses")
    seen: set[str] = set()
    for index, recipient in enumerate(recipients[:MAX_RECIPIENTS]):
        field = f"to_addresses[{index}]"
        if any(c in recipient for c in _LINE_BREAKS):
            fail(field, "must not hold a line break (CR or LF)")
            continue
        spec, refused = _address_error(recipient)
        if spec is None:
            fail(field, refused)
        elif spec in seen:  # by its A-label too: `ops@bücher.example`, `ops@xn--bcher-kva.example`
            fail(field, "is given twice")
        else:
            seen.add(spec)


def _visible(text: str) -> bool:
    return all("\x21" <= c <= "\x7e" for c in text)


def _host_error(host: str) -> str | None:
    """Why `host` cannot be connected to (None: it can), as typed: one in
    Unicode by its A-label, which is what is connected to."""
    if len(host.rstrip(".")) <= MAX_HOST and not host.isascii():
        try:
            host = a_label(host)
        except UnicodeError:
            return _HOST_NOT_IDNA
    if len(host.rstrip(".")) > MAX_HOST or not _visible(host):
        return f"must be a host name or IP address of at most {MAX_HOST} characters"
    try:
        ipaddress.ip_address(host.strip("[]"))
        return None
    except ValueError:
        pass
    try:
        host.encode("idna")  # each label 1 to 63 characters
    except UnicodeError:
        return "must name a host whose labels are 1 to 63 characters"
    if any(c in host for c in "/:@?#[]"):
        return "must be a host name alone (its port is `port`)"
    return None
