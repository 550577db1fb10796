"""How much of a client's address a tenant's events keep (its settings'
`ip_recording`, ADR 0154): all of it (`full`, the default), its network
(`truncated`: an IPv4 address's /24, an IPv6 address's /48, as analytics tools
anonymise), or none of it (`none`). Applied to an event after the server
located its country from the whole address, before it is canonicalized and
hashed: the country stays right and the whole address is never stored.

An address kept less of is marked so in the record (`context.ip_recording`:
`truncated` or `none`, inside its leaf hash): a retry under the key of one is
compared with the address its mark says the first attempt kept, and a record
without the mark with the whole address; an event stored with no address, or
with a network's `.0` as its whole address, is no retry of one sent with
another (helper-563 finding 8)."""

from __future__ import annotations

import ipaddress
from dataclasses import replace
from typing import Any, Final

from .event import IP_RECORDING_MARK, ValidEvent, network_address

FULL: Final = "full"
TRUNCATED: Final = "truncated"
NONE: Final = "none"
# The prefix a truncated address keeps, by IP version.
TRUNCATED_PREFIX: Final = {4: 24, 6: 48}


def truncated(ip: str) -> str:
    """The network of `ip` (an address as validated) as a truncated one is
    stored: `81.2.69.0` for `81.2.69.7`, `2a02:8100:1::` for
    `2a02:8100:1:2::7`; an IPv4 address written as IPv6 (`::ffff:a.b.c.d`) as
    the IPv4 one, as the `ip` filter reads it."""
    address = network_address(ip)
    assert address is not None  # validated: an address
    prefix = TRUNCATED_PREFIX[address.version]
    return str(ipaddress.ip_network(f"{address}/{prefix}", strict=False).network_address)


def recorded_ip(event: ValidEvent, recording: str) -> ValidEvent:
    """`event` with its `context.ip` as `recording` keeps it (itself when
    that changes nothing). Its view is then built from its body, not copied
    from the request, as redaction's is."""
    if recording == FULL or event.ip is None:
        return event
    context = dict(event.body["context"])
    if recording == NONE:
        del context["ip"]
        kept = None
    else:
        # A network's address is its own network form: the column's too.
        context["ip"] = kept = truncated(context["ip"])
    context[IP_RECORDING_MARK] = recording
    return replace(
        event,
        body=_with_context(event.body, context),
        verbatim=False,
        ip=kept,
        sent_ip=event.body["context"]["ip"],
    )


def sent_address(event: ValidEvent) -> str | None:
    """The event's `context.ip` as it was sent, if it had one."""
    if event.sent_ip is not None:
        return event.sent_ip
    context = event.body.get("context")
    ip = context.get("ip") if isinstance(context, dict) else None
    return ip if isinstance(ip, str) else None


def recording_of(record: dict[str, Any]) -> str:
    """How much of its address a stored record (parsed) kept: its mark's
    word, else `full` (no mark: the address, if any, as sent)."""
    context = record.get("context")
    mark = context.get(IP_RECORDING_MARK) if isinstance(context, dict) else None
    return mark if isinstance(mark, str) else FULL


def as_recorded(body: dict[str, Any], sent_ip: str, recording: str) -> dict[str, Any]:
    """`body` with the address `sent_ip` as `recording` keeps it, marked so:
    what a first attempt stored under another setting, for a retry with the
    same key and address (the same request)."""
    context = {
        key: value
        for key, value in (body.get("context") or {}).items()
        if key not in ("ip", IP_RECORDING_MARK)
    }
    if recording == FULL:
        context["ip"] = sent_ip
    else:
        if recording == TRUNCATED:
            context["ip"] = truncated(sent_ip)
        context[IP_RECORDING_MARK] = recording
    return _with_context(body, context)


def _with_context(body: dict[str, Any], context: dict[str, Any]) -> dict[str, Any]:
    """`body` with `context` (none, if it is empty)."""
    if context:
        return {**body, "context": context}
    return {key: value for key, value in body.items() if key != "context"}
