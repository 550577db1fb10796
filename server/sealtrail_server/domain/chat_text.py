"""What a chat sink says of an event: one line of text, for a person reading a
channel (ADR 0062). A `security.alert` is its description (the rule's name and
what fired it) with its severity, where its trigger came from (`from ip
(country)`, as below: the alert carries its trigger's) and the event it fired
on; any other event
is `[severity] action by actor from ip (country) on resource_type/resource_id
(outcome) at occurred_at`, a country the server located from the address
(GeoIP, ADR 0134) marked `(FR, located)`, not passed off as the caller's word.
An event that records the API request it was (ADR 0136) says it after its
resource, an alert (which keeps its trigger's in `details.trigger_request`,
not in its context: an alert is no request) after where it came from:
` via GET /v1/orders/{id} -> 503 in 1200 ms`, only the parts recorded
(` via HTTP -> 503` without a method or route), nothing with none; a route is
cut as any value is, never its status or duration.
Each line ends with the tenant and seq, which find the event in the log
(`sealtrail tail --from-seq`).

Every value an event carries came from a caller, a rule's name included, and
is posted where people are notified: each is made one line (control
characters as spaces), cut to a length a line can hold (marked `…`; the event
keeps it whole), and escaped as Slack asks (`&`, `<`, `>`), so that no event
can write `<!channel>`, a `<https://...|link>` or a `<@user>` mention; a
mention written out, a broadcast (`@channel`, `@here`, `@all`, `@everyone`,
which Mattermost and Discord take as they are) or a person (`@username`,
which Mattermost and Rocket.Chat take as it is), is broken with a zero-width
space, so that no actor or resource named like a user pages anyone."""

from __future__ import annotations

import re
from typing import Any, Final

from .event import ALERT_ACTION, COUNTRY_SOURCE_GEOIP, TRIGGER_REQUEST_NAMES

# Slack's advice for a message's text; Mattermost's limit is 16,383
# characters, a Teams message's about 28 KB.
MAX_TEXT: Final = 4000
# Characters of one value (an actor's id, a resource's) kept in a line, and of
# an alert's description: ten lines or so still share a message.
MAX_VALUE: Final = 120
MAX_DESCRIPTION: Final = 600
ALERT_MARK: Final = "\N{POLICE CARS REVOLVING LIGHT}"

# Controls, line and paragraph separators, and the marks and embeddings that
# change the direction of what follows (one would show the rest of a line,
# its tenant and seq, reversed: helper-177): Unicode's Bidi_Control, the
# Arabic letter mark (U+061C, a right-to-left mark as U+200F is) included.
_CONTROL: Final = re.compile(
    "[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069]+"
)
# A mention, of a broadcast or of a person: an `@` before a letter, digit or
# `_`, whatever follows the name (Mattermost strips `.-:_` off a mention's end
# one at a time, so `@channel_` and `@all_hands` notified: helper-177), and
# whatever punctuation comes before it (Mattermost splits a word at `.-:`, so
# `x.@bob` paged bob). Not an address's `@`, after a letter or digit, which
# starts no mention.
_MENTION: Final = re.compile(r"(?<!\w)@(?=\w)")
_SLACK_ESCAPES: Final = str.maketrans({"&": "&amp;", "<": "&lt;", ">": "&gt;"})


def shown(
    value: Any, limit: int = MAX_VALUE, *, markup: bool = True, guard_mentions: bool = True
) -> str:
    """A caller's `value` as a line may carry it: on one line, at most `limit`
    characters before escaping, and unable to mention or link. `markup`:
    escaped as Slack asks; without, as plain text (PagerDuty's summary, which
    shows `&amp;` as it is). Without `guard_mentions`, an `@` is left as it is
    (mail, which has no mentions: the zero-width space only hid the text
    from a search)."""
    text = _CONTROL.sub(" ", str(value)).strip()
    if len(text) > limit:
        text = text[: limit - 1].rstrip() + "…"
    if markup:
        text = text.translate(_SLACK_ESCAPES)
    return _MENTION.sub("@\u200b", text) if guard_mentions else text


def located(context: dict[str, Any]) -> bool:
    """Whether a record's `context.country` is the server's, found from its
    address in a GeoIP database, rather than the caller's."""
    return context.get("country_source") == COUNTRY_SOURCE_GEOIP


def origin(record: dict[str, Any], *, markup: bool = True, guard_mentions: bool = True) -> str:
    """Where the event came from, as a line says it: ` from ip (country)`,
    ` from ip (country, located)` for a country the server located, ` from
    ip` or ` from country` with only one of them; "" with neither."""
    context = record.get("context") or {}
    ip, country = (
        shown(context.get(key) or "", markup=markup, guard_mentions=guard_mentions)
        for key in ("ip", "country")
    )
    if country and located(context):
        country += ", located"
    if ip and country:
        return f" from {ip} ({country})"
    return f" from {ip or country}" if ip or country else ""


def milliseconds(value: float) -> str:
    """A duration in milliseconds as a person reads it: `1200`, `12.5`, to
    the microsecond, and the first digits of one shorter (`0.0004`)."""
    said = f"{value:.3f}".rstrip("0").rstrip(".")
    return said if said != "0" else f"{value:.2g}"


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def request_fields(record: dict[str, Any]) -> dict[str, Any]:
    """The API request a stored record tells of, by the context's names
    (`http_method`, `http_route`, `http_status_code`, `duration_ms`), the
    parts recorded: an event's its context's (ADR 0136); an alert's its
    trigger's, which it keeps in `details.trigger_request`
    (alerts/evaluator.py), never its context's."""
    if record.get("action") == ALERT_ACTION:
        kept = (record.get("details") or {}).get("trigger_request")
        kept = kept if isinstance(kept, dict) else {}
        return {key: kept[name] for name, key in TRIGGER_REQUEST_NAMES if name in kept}
    context = record.get("context") or {}
    return {key: context[key] for _, key in TRIGGER_REQUEST_NAMES if key in context}


def request(record: dict[str, Any], *, markup: bool = True, guard_mentions: bool = True) -> str:
    """The API request the event was (ADR 0136), an alert's trigger's, as a
    line says it: ` via GET /v1/orders/{id} -> 503 in 1200 ms`, with only the
    parts recorded (`HTTP` for a method and route not recorded: ` via HTTP ->
    503`); "" with none. The route is cut as any value is (`…`), the status
    and duration never; with `markup`, `->` escaped as Slack asks, as a
    value's `>` is."""
    context = request_fields(record)
    said = " ".join(
        shown(context[key], markup=markup, guard_mentions=guard_mentions)
        for key in ("http_method", "http_route")
        if context.get(key)
    )
    status, duration = context.get("http_status_code"), context.get("duration_ms")
    status = status if _number(status) and status else None
    duration = duration if _number(duration) and duration else None
    if not said and status is None and duration is None:
        return ""
    said = said or "HTTP"
    if status is not None:
        said += f" {'-&gt;' if markup else '->'} {status}"
    if duration is not None:
        said += f" in {milliseconds(duration)} ms"
    return f" via {said}"


def line(record: dict[str, Any], *, markup: bool = True, guard_mentions: bool = True) -> str:
    """The line that tells of the event whose stored record is `record`;
    without `markup`, plain text, and an alert without its mark (a page's
    summary, ADR 0131: every page is an alert); without `guard_mentions`, its
    `@`s as they are (a mail's Subject)."""

    def show(value: Any, limit: int = MAX_VALUE) -> str:
        return shown(value, limit, markup=markup, guard_mentions=guard_mentions)

    severity = show(record.get("severity", "info"))
    where = f"tenant {show(record.get('tenant_id', ''))}, seq {record.get('seq')}"
    if record.get("action") == ALERT_ACTION:
        description = show(record.get("description", "Alert"), MAX_DESCRIPTION)
        trigger = (record.get("details") or {}).get("trigger_seq")
        fired_on = f", fired on seq {trigger}" if isinstance(trigger, int) else ""
        mark = f"{ALERT_MARK} " if markup else ""
        # Where its trigger came from (the alert's context) and the request
        # it was (its details), which the alert carries (alerts/evaluator.py).
        said = origin(record, markup=markup, guard_mentions=guard_mentions)
        said += request(record, markup=markup, guard_mentions=guard_mentions)
        return f"{mark}[{severity}] {description}{said} ({where}{fired_on})"
    actor = record.get("actor") or {}
    said = f"[{severity}] {show(record.get('action', ''))} by {show(actor.get('id', ''))}"
    said += origin(record, markup=markup, guard_mentions=guard_mentions)
    resource = record.get("resource") or {}
    if resource.get("type") or resource.get("id"):
        named = "/".join(show(resource[key]) for key in ("type", "id") if resource.get(key))
        said += f" on {named}"
    said += request(record, markup=markup, guard_mentions=guard_mentions)
    outcome = show(record.get("outcome", "success"))
    occurred = show(record.get("occurred_at", ""))
    return f"{said} ({outcome}) at {occurred} ({where})"
