"""Names of the actors a count groups by id: CountEvents gives an actor's id
alone (`u_3`, a token's UUID), which names no one in "who accessed what".
Each is named as its latest matching event names it, one Query of one event
per actor, for the first NAMED_ACTORS of them: a bounded cost (and as many
`audit_log.queried` records), whatever --limit shows."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Final

from sealtrail.v1 import event_pb2

if TYPE_CHECKING:
    from sealtrail._client import AuditClient

# The top actors named at most: one Query each.
NAMED_ACTORS: Final = 10


def actor_name(actor: event_pb2.Actor) -> str:
    """An actor's name as recorded: `Alice Martin <alice@example.com>`, its
    email or its display name alone (a token's name, for an api_key actor);
    "" for none."""
    if actor.email and actor.display_name:
        return f"{actor.display_name} <{actor.email}>"
    return actor.email or actor.display_name


def actor_names(
    client: AuditClient, ids: Sequence[str], filter: event_pb2.EventFilter | None
) -> dict[str, str]:
    """The names of the first NAMED_ACTORS of `ids` (an id "" is no actor),
    each from its latest event matching `filter`; an actor recorded with no
    name is ""."""
    names: dict[str, str] = {}
    for actor_id in [id for id in ids if id][:NAMED_ACTORS]:
        theirs = event_pb2.EventFilter()
        if filter is not None:
            theirs.CopyFrom(filter)
        theirs.actor = actor_id
        page = client.query_page(theirs, order="newest", page_size=1)
        names[actor_id] = actor_name(page.events[0].actor) if page.events else ""
    return names
