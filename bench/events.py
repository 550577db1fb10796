"""The events the benchmark records: realistic, each with its own idempotency
key and request id; and the equivalent rows for the raw COPY baseline, with
the caller view the server stores beside each record (ADR 0022)."""

from __future__ import annotations

import hashlib
import itertools
import json
import uuid
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import uuid_utils.compat as uuid_utils
from google.protobuf import struct_pb2

from sealtrail.v1 import event_pb2
from sealtrail_server.api.convert import server_view, view_matches
from sealtrail_server.domain.event_ids import event_id_minter
from sealtrail_server.store.events import ShownEvent

_ACTORS = 50  # distinct users the events are spread over
_ACTION = "document.share"
_DESCRIPTION = "Shared a document with an external collaborator"
_DETAILS: dict[str, Any] = {
    "permission": "view",
    "recipient_domain": "partner.example",
    "expires_in_days": 30,
    "notify": True,
}
_IP = "203.0.113.42"
_USER_AGENT = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 Chrome/126.0 Safari/537.36"
# The API token every row is recorded with, as the server stamps it (ADR 0061).
_RECORDER_ID = "0190f1c2-5b7e-7d3a-9c41-2f6e8a1b3c5d"
_RECORDER_NAME = "bench-recorder"


def _template() -> event_pb2.Event:
    details = struct_pb2.Struct()
    details.update(_DETAILS)
    return event_pb2.Event(
        action=_ACTION,
        category=event_pb2.CATEGORY_DATA_ACCESS,
        severity=event_pb2.SEVERITY_INFO,
        outcome=event_pb2.OUTCOME_SUCCESS,
        description=_DESCRIPTION,
        actor=event_pb2.Actor(type=event_pb2.ACTOR_TYPE_USER),
        resource=event_pb2.Resource(type="document", name="Q3 board deck.pdf"),
        details=details,
        context=event_pb2.RequestContext(ip=_IP, user_agent=_USER_AGENT),
    )


class EventFactory:
    """Makes Record/RecordBatch events; keys are unique per `prefix`. With
    `details`, each event also has that many small details ("k0": "v0", ...),
    the shape of a large batch's events (about 50 KB each at 3,000)."""

    def __init__(self, prefix: str, *, details: int = 0) -> None:
        self._prefix = prefix
        self._template = _template()
        for j in range(details):
            self._template.details.fields[f"k{j}"].string_value = f"v{j}"
        self._numbers = itertools.count(1)

    def make(self, into: event_pb2.Event) -> None:
        """Fill `into` (e.g. `request.event` or `request.events.add()`)."""
        n = next(self._numbers)
        into.CopyFrom(self._template)
        user = n % _ACTORS
        into.actor.id = f"user_{user:04d}"
        into.actor.email = f"user{user}@customer.example"
        into.resource.id = f"doc_{n % 997:05d}"
        into.context.request_id = str(uuid.uuid4())
        into.occurred_at.GetCurrentTime()
        into.idempotency_key = f"{self._prefix}-{n}"


# The canonical record (RFC 8785 JSON: keys sorted, no spaces) of an event like
# EventFactory's, with the server's fields; ASCII only, so plain %-formatting
# produces exactly the canonical bytes.
_RECORD = (
    '{"action":"%(action)s","actor":{"email":"%(email)s","id":"%(actor_id)s","type":"user"},'
    '"category":"data_access","context":{"ip":"%(ip)s","request_id":"%(request_id)s",'
    '"user_agent":"%(user_agent)s"},"description":"%(description)s","details":%(details)s,'
    '"id":"%(id)s","idempotency_key":"%(key)s","occurred_at":"%(occurred_at)s",'
    '"outcome":"success","received_at":"%(received_at)s",'
    '"recorded_by":{"token_id":"%(recorder_id)s","token_name":"%(recorder_name)s"},'
    '"resource":{"id":"%(resource_id)s",'
    '"name":"Q3 board deck.pdf","type":"document"},"seq":%(seq)d,"severity":"info",'
    '"tenant_id":"%(tenant)s","v":1}'
)
_DETAILS_JSON = json.dumps(_DETAILS, sort_keys=True, separators=(",", ":"))


def _timestamp() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _part(**fields: Any) -> bytes:
    return event_pb2.Event(**fields).SerializeToString()


# A row's caller view in serialized parts, joined per row (concatenated
# messages merge): what every row shares, then what varies with its actor and
# resource; its time, key and request id, and the server's fields, are
# serialized per row.
_SHARED_VIEW = _template().SerializeToString()
_ACTOR_VIEWS = [
    _part(actor={"id": f"user_{n:04d}", "email": f"user{n}@customer.example"})
    for n in range(_ACTORS)
]
_RESOURCE_VIEWS = [_part(resource={"id": f"doc_{n:05d}"}) for n in range(997)]
_RECORDER_VIEW = _part(recorded_by={"token_id": _RECORDER_ID, "token_name": _RECORDER_NAME})
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def check_views(rows: Iterable[tuple[ShownEvent, str]], *, tenant_id: str) -> None:
    """Each (row as Query reads it, record) shows what its record says, checked
    as VerifyLog's check_views checks it: the bench's rows are the server's."""
    for row, record in rows:
        if not view_matches(row, record.encode(), tenant_id=tenant_id):
            raise RuntimeError(f"the bench's caller view of seq {row.seq} is not its record's")


class RowFactory:
    """Rows for the appender's COPY (same columns, same kind of values) of a
    tenant's events, with consecutive seqs from 1."""

    def __init__(self, tenant: str, prefix: str) -> None:
        self._tenant = tenant
        self._prefix = prefix
        self._seq = 0

    def batch(self, size: int, *, received_at: str | None = None) -> Iterator[tuple[Any, ...]]:
        """The next `size` rows; all of a batch share received_at (now, unless
        given), as in the appender."""
        received_at = received_at or _timestamp()
        received = datetime.fromisoformat(received_at)
        mint_event_id = event_id_minter(received)  # as the appender mints them (ADR 0031)
        for _ in range(size):
            yield self._row(received_at, received, mint_event_id())

    def _row(self, received_at: str, received: datetime, event_id: str) -> tuple[Any, ...]:
        self._seq += 1
        seq = self._seq
        user = seq % _ACTORS
        occurred = datetime.now(UTC)
        values = {
            "action": _ACTION,
            "email": f"user{user}@customer.example",
            "actor_id": f"user_{user:04d}",
            "ip": _IP,
            "request_id": str(uuid_utils.uuid4()),
            "user_agent": _USER_AGENT,
            "description": _DESCRIPTION,
            "details": _DETAILS_JSON,
            "id": event_id,
            "key": f"{self._prefix}-{seq}",
            "occurred_at": occurred.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
            "received_at": received_at,
            "resource_id": f"doc_{seq % 997:05d}",
            "seq": seq,
            "tenant": self._tenant,
            "recorder_id": _RECORDER_ID,
            "recorder_name": _RECORDER_NAME,
        }
        record = _RECORD % values
        leaf = hashlib.sha256(b"\x00" + record.encode()).digest()
        since_epoch = occurred - _EPOCH
        view = b"".join(
            (
                _SHARED_VIEW,
                _ACTOR_VIEWS[user],
                _RESOURCE_VIEWS[seq % 997],
                _RECORDER_VIEW,
                _part(
                    occurred_at={
                        "seconds": since_epoch // timedelta(seconds=1),
                        "nanos": since_epoch.microseconds * 1000,
                    },
                    idempotency_key=values["key"],
                    context={"request_id": values["request_id"]},
                ),
            )
        )
        # The whole view, as the server stores it (ADR 0025).
        view += server_view(
            tenant_id=self._tenant,
            event_id=values["id"],
            seq=seq,
            received_at=received,
            leaf_hash=leaf,
        )
        if seq == 1:
            shown = ShownEvent(seq, view, None, None, None, None, None)
            check_views([(shown, record)], tenant_id=self._tenant)
        return (
            self._tenant,
            seq,
            values["id"],
            values["occurred_at"],
            received_at,
            _ACTION,
            "data_access",
            1,
            "success",
            values["actor_id"],
            values["email"],
            "document",
            values["resource_id"],
            values["request_id"],
            None,
            values["key"],
            _RECORDER_ID,
            _IP,
            "Q3 board deck.pdf",  # search_names: the resource's name
            "",  # credential_kind: none (NULL is a row from before migration 0056)
            None,  # credential_id
            None,  # credential_hint
            None,  # duration_ms: the bench's events have none (migration 0064)
            None,  # actor_roles: none either (migration 0065)
            leaf,
            record,
            None,  # caller_view: the whole view holds it
            view,
        )
