"""What the tests of one filter field check in more than one place: the
events a query finds, and what a live stream opened at a log's end follows."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from sealtrail import AuditClient
from sealtrail.v1 import event_pb2


@contextmanager
def live_from_now(
    client: AuditClient, event_filter: event_pb2.EventFilter
) -> Iterator[Iterator[event_pb2.Event]]:
    """A live stream of the events `event_filter` matches, recorded after the
    log's current end (a fresh checkpoint's tree size); closed on leaving."""
    tree_size = client.get_checkpoint(fresh=True).tree_size
    live = client.stream(event_filter, after_seq=tree_size)
    try:
        yield live
    finally:
        live.close()


def descriptions_found(client: AuditClient, event_filter: event_pb2.EventFilter) -> list[str]:
    """The descriptions of the events `event_filter` finds, oldest first (a
    test's events each described by a name of its own)."""
    return [e.description for e in client.query(event_filter, order="oldest")]
