"""The admin RPCs of forwarding: sinks (created, read, changed, deleted, each
change recorded in the log before it applies), their dead letters, and
replays. Delivery itself is the forwarder's (forward/). A mixin of the
servicer."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any, Final
from urllib.parse import urlsplit

import grpc
from google.protobuf import json_format

from sealtrail.v1 import event_pb2
from sealtrail.v1 import forwarding_pb2 as pb

from ..alerts.routing import reroute_alerts
from ..domain.email_sinks import MAX_REPLAY_MESSAGES, host_of, port_of
from ..domain.errors import FailedPrecondition, InvalidArgument, NotFound, PermissionDenied
from ..domain.etags import require_etag
from ..domain.event import checked_bound, parse_uuid
from ..domain.filters import MAX_PAGE_SIZE, page_size, validate_filter
from ..domain.page_tokens import PageTokens
from ..domain.sealing import SecretBox
from ..domain.sinks import (
    DEFAULT_URLS,
    KINDS,
    MAX_SINKS_PER_TENANT,
    SECRET_FIELDS,
    Format,
    Kind,
    SinkDefinition,
    changes_delivery,
    check_sink,
    destination_url,
    keep_secrets,
    redacted_destination,
    shown_url,
    sink_etag,
    validate_sink_settings,
)
from ..forward.egress import EgressDenied, EgressPolicy, Unresolvable
from ..forward.forwarder import Forwarder
from ..newer_objects import NEWER, sign, sink_not_understood
from ..store import sinks as store
from ..store.appender import Appender
from ..store.changes import Changes, refuse_if_erased
from ..store.database import Connection, Database
from ..store.tree import removed_in, tree_size
from .audited import FilterDetails, record_access, weakening_severity
from .convert import filter_draft, filter_from_json
from .denials import Denials
from .guard import current_principal
from .removals_said import RemovalsSaid
from .sink_records import SinkRecords
from .update_mask import replaces_oneof, update_paths

Context = grpc.aio.ServicerContext[Any, Any]

_FORMATS: Final[dict[int, Format]] = {
    pb.PAYLOAD_FORMAT_UNSPECIFIED: "sealtrail_json",
    pb.PAYLOAD_FORMAT_SEALTRAIL_JSON: "sealtrail_json",
    pb.PAYLOAD_FORMAT_OCSF: "ocsf",
}
_FORMAT_NUMBERS: Final = {
    "sealtrail_json": pb.PAYLOAD_FORMAT_SEALTRAIL_JSON,
    "ocsf": pb.PAYLOAD_FORMAT_OCSF,
}


def _destination(sink: pb.Sink) -> tuple[Kind | None, dict[str, Any]]:
    field = sink.WhichOneof("destination")
    if field is None:
        return None, {}
    settings = json_format.MessageToDict(getattr(sink, field), preserving_proto_field_name=True)
    for output_only in (
        "secret_hints",
        "token_hint",
        "api_key_hint",
        "url_hint",
        "routing_key_hint",
        "password_hint",
    ):
        settings.pop(output_only, None)
    return field, settings  # each kind is named as its oneof field


def _sink_message(stored: store.StoredSink, head: int) -> pb.Sink:
    definition = stored.definition
    message = pb.Sink(
        id=stored.id,
        name=definition.name,
        format=_FORMAT_NUMBERS[definition.format],
        paused=definition.paused,
        managed=stored.managed,
    )
    newer = sink_not_understood(definition.kind, definition.filter)
    # What this release knows of a newer one's sink, and, in its state, a sign
    # of what it does not (newer_objects.py).
    json_format.ParseDict(definition.filter, message.filter, ignore_unknown_fields=True)
    shown: dict[str, Any] = {}
    if definition.kind in KINDS:
        shown = redacted_destination(definition.kind, definition.destination)
        if stored.managed:
            shown = _operators_destination(shown)
        json_format.ParseDict(shown, getattr(message, definition.kind))
    message.create_time.FromDatetime(stored.created_at)
    message.update_time.FromDatetime(stored.updated_at)
    # A managed sink's etag is of what its tenant sees (no change of it is
    # the tenant's to make, nor so to condition).
    message.etag = sink_etag(definition, stored.updated_at, shown=shown if stored.managed else None)
    state = stored.state
    message.state.cursor_seq = state.cursor_seq
    message.state.head_seq = head
    message.state.lag_events = max(0, head - state.cursor_seq)
    message.state.delivered_events = state.delivered_events
    message.state.last_error = state.last_error if newer is None else sign(newer)
    message.state.consecutive_failures = state.consecutive_failures
    message.state.dead_letters = state.dead_letters
    message.state.pending_replays = state.pending_replays
    for stamp, value in (
        (message.state.last_delivery_time, state.last_delivery_at),
        (message.state.last_error_time, state.last_error_at),
        (message.state.next_attempt_time, state.next_attempt_at),
    ):
        if value is not None:
            stamp.FromDatetime(value)
    return message


def _operators_destination(shown: dict[str, Any]) -> dict[str, Any]:
    """A managed sink's destination as its tenant sees it (ADR 0070): the
    operator's secrets give nothing away, not even their last characters,
    and its URL shows only what cannot hold a credential (as the tenant's
    log records every sink URL); a chat URL's `url_hint` is that already."""
    shown = dict(shown)
    for hints in ("token_hint", "api_key_hint", "routing_key_hint", "password_hint"):
        if hints in shown:
            shown[hints] = ""
    if "secret_hints" in shown:
        shown["secret_hints"] = []
    if shown.get("url"):
        shown["url"] = shown_url(shown["url"])
    return shown


def definition_of(
    sink: pb.Sink,
    *,
    path: str,
    current: SinkDefinition | None = None,
    kept_name: str | None = None,
) -> SinkDefinition:
    """`sink` as a valid definition (with `current`'s secrets where it gives
    none): INVALID_ARGUMENT naming each field that is not. Its name, if
    `current`'s (or `kept_name`), is not refused for a character a name made
    before today's rule may hold. The egress policy is `check_egress`'s."""
    if kept_name is None and current is not None:
        kept_name = current.name
    kind, destination = _destination(sink)
    if current is not None and kind == current.kind:
        destination = keep_secrets(kind, destination, current.destination)
    if sink.format not in _FORMATS:
        raise InvalidArgument.field(f"{path}.format", f"unknown enum value {sink.format}")
    check_sink(
        name=sink.name,
        kind=kind,
        format=_FORMATS[sink.format],
        destination=destination,
        path=path,
        kept_name=kept_name,
    )
    assert kind is not None
    validate_filter(filter_draft(sink.filter), path=f"{path}.filter")
    return SinkDefinition(
        name=sink.name,
        kind=kind,
        format=_FORMATS[sink.format],
        filter=json_format.MessageToDict(sink.filter),
        destination=destination,
        paused=sink.paused,
    )


async def check_egress(
    egress: EgressPolicy, sink: pb.Sink, *, path: str, tenant_id: str | None
) -> None:
    """INVALID_ARGUMENT if the egress policy refuses `sink`'s destination
    (its scheme, or the addresses its host resolves to). A URL that is not
    one is left to the definition's checks, which name it."""
    kind, destination = _destination(sink)
    if kind is None:
        return
    if kind == "email":
        try:
            smtp_host = host_of(destination)  # by its A-label, as it is connected to
        except UnicodeError:
            return  # refused by the definition's checks, naming it
        try:
            await egress.resolve(smtp_host, port_of(destination), tenant_id=tenant_id)
        except Unresolvable:
            pass
        except EgressDenied as error:
            raise InvalidArgument.field(f"{path}.email.host", str(error)) from None
        return
    url = destination.get("url") or DEFAULT_URLS.get(kind, "")
    try:
        parts = urlsplit(url)
        host, port = parts.hostname, parts.port
    except ValueError:
        return
    if not host:
        return
    try:
        egress.check_scheme(url)
        await egress.resolve(host, port or 443, tenant_id=tenant_id)
    except Unresolvable:
        pass  # perhaps not yet in DNS: deliveries will say so in the sink's state
    except EgressDenied as error:
        raise InvalidArgument.field(f"{path}.{kind}.url", str(error)) from None


def refuse_if_managed(stored: store.StoredSink) -> None:
    """PERMISSION_DENIED for a change of a managed sink: the operator keeps it."""
    if stored.managed:
        raise PermissionDenied(
            f"sink {stored.id} is a deployment-wide sink this deployment's operator keeps"
            " in every tenant (sealtrail-server sink update|delete): ask them to change it",
            reason="SINK_MANAGED_BY_OPERATOR",
        )


# What an UpdateSink's mask may name: the settings, and the destination by its kind.
_SETTINGS: Final = ("name", "filter", "format", "paused")
# A dead letter's instant in a page token: whole microseconds since the epoch.
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
# The most events an email sink created from_beginning has counted, to say how
# many more than MAX_REPLAY_MESSAGES it would mail ("over" this, past it).
_COUNTED_AT_MOST: Final = 100 * MAX_REPLAY_MESSAGES
_MICROSECOND: Final = timedelta(microseconds=1)
_UPDATABLE: Final = (
    *_SETTINGS,
    *(f.name for f in pb.Sink.DESCRIPTOR.oneofs_by_name["destination"].fields),
)


def _with_settings(sink: pb.Sink, current: SinkDefinition, paths: frozenset[str]) -> SinkDefinition:
    """`current` with the settings `paths` names taken from `sink`; its
    destination as it is."""
    changed: dict[str, Any] = {}
    if "name" in paths:
        changed["name"] = sink.name
    if "format" in paths:
        if sink.format not in _FORMATS:
            raise InvalidArgument.field("sink.format", f"unknown enum value {sink.format}")
        changed["format"] = _FORMATS[sink.format]
    if "filter" in paths:
        validate_filter(filter_draft(sink.filter), path="sink.filter")
        changed["filter"] = json_format.MessageToDict(sink.filter)
    if "paused" in paths:
        changed["paused"] = sink.paused
    definition = replace(current, **changed)
    violations = validate_sink_settings(
        name=definition.name, format=definition.format, kind=definition.kind, kept_name=current.name
    )
    if violations:
        raise InvalidArgument(violations)
    return definition


def _merged(sink: pb.Sink, current: store.StoredSink, paths: frozenset[str]) -> pb.Sink:
    """`sink`, with the current values of the settings `paths` does not name."""
    merged = pb.Sink()
    merged.CopyFrom(sink)
    definition = current.definition
    if "name" not in paths:
        merged.name = definition.name
    if "format" not in paths and merged.WhichOneof("destination") != "chat":
        # A chat posts lines whatever the format was: moved to one, a sink
        # leaves OCSF behind rather than be refused for it (helper-177).
        merged.format = _FORMAT_NUMBERS[definition.format]
    if "filter" not in paths:
        merged.ClearField("filter")
        json_format.ParseDict(definition.filter, merged.filter)
    if "paused" not in paths:
        merged.paused = definition.paused
    return merged


class ForwardingRpcs:
    _db: Database
    _changes: Changes
    _appender: Appender
    _clock: Callable[[], datetime]
    _forwarder: Forwarder
    _egress: EgressPolicy
    _box: SecretBox  # seals sinks' secrets at rest
    _redaction_secret: bytes  # keys the fingerprints of sinks' secrets in the log
    _filter_details: FilterDetails
    _denials: Denials | None
    _page_tokens: PageTokens
    _removals_said: RemovalsSaid

    @property
    def _sink_records(self) -> SinkRecords:
        return SinkRecords(self._filter_details, redaction_secret=self._redaction_secret)

    async def _recorded_sink(self, tenant_id: str, definition: SinkDefinition) -> dict[str, Any]:
        return await self._sink_records.shown(tenant_id, definition)

    async def _refuse_if_managed(self, stored: store.StoredSink, rpc: str) -> None:
        """`refuse_if_managed`, the attempt recorded for alert rules to see
        (as any refusal of what the operator keeps)."""
        if stored.managed and self._denials is not None:
            await self._denials.refused(current_principal(), rpc=rpc, reason="operator")
        refuse_if_managed(stored)
        if sink_not_understood(stored.definition.kind, stored.definition.filter) is not None:
            # A newer release's sink (newer_objects.py): changed by this one,
            # it would be rewritten, or recorded, by what this one knows of it.
            raise FailedPrecondition(
                f"sink {stored.id}: {NEWER} release; use a newer one",
                reason="SINK_FROM_A_NEWER_RELEASE",
            )

    async def _definition(
        self,
        sink: pb.Sink,
        *,
        path: str,
        current: SinkDefinition | None = None,
        check_egress: bool = True,
    ) -> SinkDefinition:
        """`sink` as a valid definition (`definition_of`), its destination
        checked against the egress policy unless the caller did that already
        (`_check_egress`)."""
        definition = definition_of(sink, path=path, current=current)
        if check_egress:
            await self._check_egress(sink, path=path)
        return definition

    async def _check_egress(self, sink: pb.Sink, *, path: str) -> None:
        await check_egress(self._egress, sink, path=path, tenant_id=current_principal().tenant_id)

    async def _stored_sink(
        self, conn: Connection, tenant_id: str, sink_id_text: str, field: str
    ) -> store.StoredSink:
        stored = await store.read_sink(
            conn, tenant_id, _sink_id(sink_id_text, field), box=self._box
        )
        if stored is None:
            raise NotFound(f"no sink {sink_id_text}")
        return stored

    async def CreateSink(
        self, request: pb.CreateSinkRequest, context: Context
    ) -> pb.CreateSinkResponse:
        principal = current_principal()
        tenant_id = principal.tenant_id
        definition = await self._definition(request.sink, path="sink")
        # One creation at a time: concurrent ones cannot pass the limit together.
        async with self._changes.exclusive(tenant_id, "sinks", caller=principal.token_id) as conn:
            if await store.count_sinks(conn, tenant_id) >= MAX_SINKS_PER_TENANT:
                raise FailedPrecondition(
                    f"the tenant has {MAX_SINKS_PER_TENANT} sinks, the most it may have",
                    reason="TOO_MANY_SINKS",
                )
            head = await tree_size(conn, tenant_id)
            if request.from_beginning and definition.kind == "email":
                await _refuse_a_mail_storm_from_the_beginning(conn, tenant_id, definition, head)
            sink_id = str(uuid.uuid4())
            cursor = 0 if request.from_beginning else head
            shown = await self._recorded_sink(tenant_id, definition)
            await store.insert_sink(
                conn,
                tenant_id,
                sink_id,
                definition,
                box=self._box,
                cursor_seq=cursor,
                now=self._clock(),
            )
            # Recorded last, in the change's transaction (ADR 0075).
            event_id = (
                await record_access(
                    self._appender,
                    principal,
                    now=self._clock(),
                    action="sink.created",
                    category=event_pb2.CATEGORY_CONFIGURATION,
                    resource_type="sink",
                    resource_id=sink_id,
                    description=f"Sink {shown['name']!r} ({definition.kind}) created",
                    details={**shown, "from_seq": cursor + 1},
                )
            ).event_id
            stored = await store.read_sink(conn, tenant_id, sink_id, box=self._box)
        assert stored is not None
        self._forwarder.sink_changed(tenant_id)
        return pb.CreateSinkResponse(sink=_sink_message(stored, head), event_id=event_id)

    async def GetSink(self, request: pb.GetSinkRequest, context: Context) -> pb.GetSinkResponse:
        tenant_id = current_principal().tenant_id
        async with self._db.connection(tenant_id) as conn:
            stored = await self._stored_sink(conn, tenant_id, request.id, "id")
            head = await tree_size(conn, tenant_id)
        return pb.GetSinkResponse(sink=_sink_message(stored, head))

    async def ListSinks(
        self, request: pb.ListSinksRequest, context: Context
    ) -> pb.ListSinksResponse:
        tenant_id = current_principal().tenant_id
        async with self._db.connection(tenant_id) as conn:
            stored = await store.list_sinks(conn, tenant_id, box=self._box)
            head = await tree_size(conn, tenant_id)
            await refuse_if_erased(conn, tenant_id)  # not an empty list
        return pb.ListSinksResponse(sinks=[_sink_message(sink, head) for sink in stored])

    async def UpdateSink(
        self, request: pb.UpdateSinkRequest, context: Context
    ) -> pb.UpdateSinkResponse:
        principal = current_principal()
        tenant_id = principal.tenant_id
        sink_id = _sink_id(request.sink.id, "sink.id")
        paths = update_paths(request.update_mask, _UPDATABLE)
        if paths is None or replaces_oneof(paths, request.sink, "destination", path="sink"):
            # Resolved before the lock is taken: a slow resolver holds up no one.
            await self._check_egress(request.sink, path="sink")
        async with self._changes.exclusive(
            tenant_id, f"sink/{sink_id}", caller=principal.token_id
        ) as conn:
            before = await self._stored_sink(conn, tenant_id, sink_id, "sink.id")
            await self._refuse_if_managed(before, "UpdateSink")
            require_etag(
                request.sink.etag,
                sink_etag(before.definition, before.updated_at),
                what=f"sink {sink_id}",
            )
            keep_destination = paths is not None and not replaces_oneof(
                paths, request.sink, "destination", path="sink"
            )
            if keep_destination:
                assert paths is not None
                definition = _with_settings(request.sink, before.definition, paths)
            else:
                merged = request.sink if paths is None else _merged(request.sink, before, paths)
                definition = await self._updated_definition(merged, before)
            if definition == before.definition:
                head = await tree_size(conn, tenant_id)
                return pb.UpdateSinkResponse(sink=_sink_message(before, head))
            change = await self._sink_records.change(tenant_id, before.definition, definition)
            await store.update_sink(
                conn,
                tenant_id,
                sink_id,
                definition,
                box=self._box,
                now=self._clock(),
                keep_destination=keep_destination,
            )
            if definition.filter != before.definition.filter:
                await reroute_alerts(
                    conn,
                    tenant_id,
                    sink_id,
                    was_filter=filter_from_json(before.definition.filter),
                    now_filter=filter_from_json(definition.filter),
                    now=self._clock(),
                )
            # Read once the change holds the sink's row: no batch moves the
            # cursor past the change (store.advance), which applies after it.
            after = await self._stored_sink(conn, tenant_id, sink_id, "sink.id")
            details = change.details
            if changes_delivery(before.definition, definition):
                details = {**details, "from_seq": after.state.cursor_seq + 1}
            # Recorded last, in the change's transaction (ADR 0075).
            event_id = (
                await record_access(
                    self._appender,
                    principal,
                    now=self._clock(),
                    action="sink.updated",
                    category=event_pb2.CATEGORY_CONFIGURATION,
                    severity=change.severity,
                    resource_type="sink",
                    resource_id=sink_id,
                    description=change.description,
                    details=details,
                    changes=change.changes,
                )
            ).event_id
            head = await tree_size(conn, tenant_id)
        self._forwarder.sink_changed(tenant_id)
        return pb.UpdateSinkResponse(sink=_sink_message(after, head), event_id=event_id)

    async def _updated_definition(self, sink: pb.Sink, before: store.StoredSink) -> SinkDefinition:
        """`sink` as the new definition of `before`, its secrets kept where
        none are given, or why that cannot be."""
        kind, given = _destination(sink)
        if kind == before.definition.kind and any(not given.get(f) for f, _ in before.unopened):
            # Kept as it is, an unopenable secret would be stored empty.
            raise FailedPrecondition(
                f"the sink's secrets cannot be opened ({before.unopened_text()}):"
                " give them again in this update",
                reason="SINK_SECRETS_UNOPENABLE",
            )
        definition = await self._definition(
            sink, path="sink", current=before.definition, check_egress=False
        )
        moved = destination_url(definition.kind, definition.destination) != destination_url(
            before.definition.kind, before.definition.destination
        )
        kept = [f for f in SECRET_FIELDS[definition.kind] if definition.destination.get(f)]
        if kind == before.definition.kind and moved and any(not given.get(f) for f in kept):
            # A credential goes only where it was given for: whoever moves a
            # sink must know its secrets.
            raise FailedPrecondition(
                "the sink's URL changes: give its secrets again in this update",
                reason="SINK_SECRETS_REQUIRED",
            )
        return definition

    async def DeleteSink(
        self, request: pb.DeleteSinkRequest, context: Context
    ) -> pb.DeleteSinkResponse:
        principal = current_principal()
        tenant_id = principal.tenant_id
        sink_id = _sink_id(request.id, "id")
        async with self._changes.exclusive(
            tenant_id, f"sink/{sink_id}", caller=principal.token_id
        ) as conn:
            stored = await self._stored_sink(conn, tenant_id, sink_id, "id")
            await self._refuse_if_managed(stored, "DeleteSink")
            require_etag(
                request.etag,
                sink_etag(stored.definition, stored.updated_at),
                what=f"sink {sink_id}",
            )
            shown = await self._recorded_sink(tenant_id, stored.definition)
            await store.delete_sink(conn, tenant_id, sink_id)
            # Recorded last, in the change's transaction (ADR 0075).
            event_id = (
                await record_access(
                    self._appender,
                    principal,
                    now=self._clock(),
                    action="sink.deleted",
                    category=event_pb2.CATEGORY_CONFIGURATION,
                    severity=weakening_severity(True),  # nothing forwarded there any more
                    resource_type="sink",
                    resource_id=sink_id,
                    description=f"Sink {shown['name']!r} deleted",
                    details={
                        **shown,
                        "cursor_seq": stored.state.cursor_seq,
                        "dead_letters": stored.state.dead_letters,
                    },
                )
            ).event_id
        return pb.DeleteSinkResponse(event_id=event_id)

    async def ListDeadLetters(
        self, request: pb.ListDeadLettersRequest, context: Context
    ) -> pb.ListDeadLettersResponse:
        principal = current_principal()
        tenant_id = principal.tenant_id
        # A request without page_size gets the 1,000 it got before paging.
        limit = page_size(request.page_size or MAX_PAGE_SIZE)
        async with self._db.connection(tenant_id) as conn:
            stored = await self._stored_sink(conn, tenant_id, request.sink_id, "sink_id")
            # A page token goes on the listing of one sink of one tenant.
            fingerprint = f"dead-letters:{tenant_id}:{stored.id}"
            after = None
            if request.page_token:
                micros, seq, letter_id = self._page_tokens.decode_key(
                    request.page_token,
                    fingerprint=fingerprint,
                    caller=principal.token_id,
                    kinds=(int, int, str),
                )
                after = (_EPOCH + timedelta(microseconds=micros), seq, letter_id)
            rows = await store.list_dead_letters(
                conn, tenant_id, stored.id, after=after, limit=limit + 1
            )
        page = rows[:limit]
        response = pb.ListDeadLettersResponse()
        if len(rows) > limit:
            last = page[-1]
            response.next_page_token = self._page_tokens.encode_key(
                fingerprint=fingerprint,
                key=[(last.created_at - _EPOCH) // _MICROSECOND, last.first_seq, last.id],
                caller=principal.token_id,
            )
        for row in page:
            letter = response.dead_letters.add(
                id=row.id,
                sink_id=row.sink_id,
                first_seq=row.first_seq,
                last_seq=row.last_seq,
                event_count=row.event_count,
                http_status=row.http_status,
                error=row.error,
            )
            letter.create_time.FromDatetime(row.created_at)
        return response

    async def ReplaySink(
        self, request: pb.ReplaySinkRequest, context: Context
    ) -> pb.ReplaySinkResponse:
        principal = current_principal()
        tenant_id = principal.tenant_id
        sink_id = _sink_id(request.sink_id, "sink_id")
        async with self._changes.exclusive(
            tenant_id, f"sink/{sink_id}", caller=principal.token_id
        ) as conn:
            stored = await self._stored_sink(conn, tenant_id, sink_id, "sink_id")
            await self._refuse_if_managed(stored, "ReplaySink")
            cursor = stored.state.cursor_seq
            head = await tree_size(conn, tenant_id)
            kept = await store.first_kept_seq(conn, tenant_id, head)
            asked = request.seq_range.first_seq if request.HasField("seq_range") else 0
            if 1 <= asked < kept:  # its start is said removed by retention
                await self._refuse_unaccounted(tenant_id, after_seq=asked - 1, upto_seq=kept - 1)
            replay = await _replay_selection(
                conn, request, tenant_id, sink_id, _Log(cursor=cursor, head=head, first_kept=kept)
            )
            if stored.definition.kind == "email":
                await _refuse_a_mail_storm(conn, request, tenant_id, stored.definition, replay)
            # The events a rule removed within a range (before first_kept, a
            # range starts after them): not sent. A window's range holds
            # events outside it too, so its tombstones are not the window's.
            removed = (
                0
                if replay.occurred_after is not None or replay.last_seq < replay.first_seq
                else await removed_in(
                    conn, tenant_id, first_seq=replay.first_seq, last_seq=replay.last_seq
                )
            )
            if removed:
                await self._refuse_unaccounted(
                    tenant_id, after_seq=replay.first_seq - 1, upto_seq=replay.last_seq
                )
            details: dict[str, Any] = {
                "sink_id": sink_id,
                "first_seq": replay.first_seq,
                "last_seq": replay.last_seq,
            }
            if replay.occurred_after is None:
                details["removed_events"] = removed
            if replay.occurred_after is not None and replay.occurred_before is not None:
                details["window"] = [
                    replay.occurred_after.isoformat(),
                    replay.occurred_before.isoformat(),
                ]
            if replay.dead_letter_id is not None:
                details["dead_letter_id"] = replay.dead_letter_id
            name = await self._filter_details.text(tenant_id, stored.definition.name)
            replay_id = str(uuid.uuid4())
            await store.insert_replay(
                conn,
                tenant_id,
                sink_id,
                replay_id,
                first_seq=replay.first_seq,
                last_seq=replay.last_seq,
                occurred_after=replay.occurred_after,
                occurred_before=replay.occurred_before,
                dead_letter_id=replay.dead_letter_id,
                bypass_filter=replay.bypass_filter,
                now=self._clock(),
            )
            # Recorded last, in the change's transaction (ADR 0075).
            event_id = (
                await record_access(
                    self._appender,
                    principal,
                    now=self._clock(),
                    action="sink.replay_requested",
                    category=event_pb2.CATEGORY_CONFIGURATION,
                    resource_type="sink",
                    resource_id=sink_id,
                    description=(
                        f"Replay of {_seqs(replay.first_seq, replay.last_seq)} to sink {name!r}"
                        + (f" ({removed} of them removed by retention)" if removed else "")
                    ),
                    details=details,
                )
            ).event_id
        self._forwarder.sink_changed(tenant_id)
        return pb.ReplaySinkResponse(
            replay_id=replay_id,
            event_id=event_id,
            seq_range=pb.SeqRange(first_seq=replay.first_seq, last_seq=replay.last_seq),
            first_kept_seq=kept,
            cursor_seq=cursor,
            head_seq=head,
            window_last_seq=replay.window_last,
        )

    async def _refuse_unaccounted(self, tenant_id: str, *, after_seq: int, upto_seq: int) -> None:
        """IntegrityFailure unless retention's records account for the removed
        seqs of (after_seq, upto_seq]: a replay says and records them removed
        by retention (ADR 0158). On a connection of its own: the change's is
        in its transaction, and this reads in a snapshot of its own."""
        async with self._db.connection(tenant_id) as conn:
            await self._removals_said.refuse_unaccounted(
                conn,
                tenant_id,
                after_seq=after_seq,
                upto_seq=upto_seq,
                refusing="refusing the replay: ",
            )


def _seqs(first: int, last: int) -> str:
    """A replay's range as its record's description says it: `seq 5` for
    one event (not `seq 5-5`), `seq 5-9` for more, `no event` for a window
    that holds none (its range empty, `last_seq` one before `first_seq`)."""
    if last < first:
        return "no event"
    return f"seq {first}" if first == last else f"seq {first}-{last}"


async def _refuse_a_mail_storm(
    conn: Connection,
    request: pb.ReplaySinkRequest,
    tenant_id: str,
    definition: SinkDefinition,
    replay: _Replay,
) -> None:
    """An email sink mails each event (ADR 0133): a replay whose events its
    filter takes number more than MAX_REPLAY_MESSAGES is refused, naming the
    selection, before a message goes (a range of weeks, a window of a busy
    month: thousands of messages in a shared mailbox, or a relay's rate limit
    met). A dead letter's replay is one event."""
    if replay.dead_letter_id is not None:
        return
    taken = await _messages(conn, tenant_id, definition, replay, at_most=MAX_REPLAY_MESSAGES + 1)
    if taken > MAX_REPLAY_MESSAGES:
        raise InvalidArgument.field(
            request.WhichOneof("selection") or "selection",
            f"an email sink mails each event: at most {MAX_REPLAY_MESSAGES:,} a replay,"
            " and this selects more",
        )


async def _refuse_a_mail_storm_from_the_beginning(
    conn: Connection, tenant_id: str, definition: SinkDefinition, head: int
) -> None:
    """An email sink created `from_beginning` mails each event of the log its
    filter takes, as a replay of the whole log would: more than
    MAX_REPLAY_MESSAGES is refused as that replay is (the same count), naming
    `from_beginning`, saying how many (counted up to _COUNTED_AT_MOST, no
    further: a log of millions is not read for a number) and what to do."""
    taken = await _messages(
        conn, tenant_id, definition, _Replay(1, head), at_most=_COUNTED_AT_MOST + 1
    )
    if taken > MAX_REPLAY_MESSAGES:
        many = f"over {_COUNTED_AT_MOST:,}" if taken > _COUNTED_AT_MOST else f"{taken:,}"
        raise InvalidArgument.field(
            "from_beginning",
            f"would mail {many} events, at most {MAX_REPLAY_MESSAGES:,}: create without it,"
            " then replay a narrower range",
        )


async def _messages(
    conn: Connection,
    tenant_id: str,
    definition: SinkDefinition,
    selection: _Replay,
    *,
    at_most: int,
) -> int:
    """How many messages an email sink mails for `selection` of the log (the
    events of its seqs, and of its window, its filter takes), counted up to
    `at_most`: the count a replay's cap and `from_beginning`'s refuse by."""
    base = filter_from_json(definition.filter)
    after, before = base.occurred_after, base.occurred_before
    if selection.occurred_after is not None:
        after = selection.occurred_after if after is None else max(after, selection.occurred_after)
    if selection.occurred_before is not None:
        before = (
            selection.occurred_before if before is None else min(before, selection.occurred_before)
        )
    return await store.count_taken(
        conn,
        tenant_id,
        replace(base, occurred_after=after, occurred_before=before),
        first_seq=selection.first_seq,
        last_seq=selection.last_seq,
        at_most=at_most,
    )


def _sink_id(text: str, field: str) -> str:
    """`text` as a sink id: INVALID_ARGUMENT naming `field` if it is not one."""
    sink_id = parse_uuid(text)
    if sink_id is None:
        raise InvalidArgument.field(field, "must be a sink id (a UUID)")
    return sink_id


@dataclass(frozen=True, slots=True)
class _Replay:
    """What a ReplaySink request selects: a seq range, and the window or dead
    letter it came from."""

    first_seq: int
    last_seq: int
    occurred_after: datetime | None = None
    occurred_before: datetime | None = None
    dead_letter_id: str | None = None
    bypass_filter: bool = False  # a dead letter parked from a delivery that bypassed it
    window_last: int = 0  # a window's last event's seq, before the cursor cut it (0: none)


@dataclass(frozen=True, slots=True)
class _Log:
    """Where the sink and its tenant's log stand when a replay is asked for."""

    cursor: int  # the sink's cursor
    head: int  # the log's last seq
    first_kept: int  # the first seq retention kept (head + 1: none)


async def _replay_selection(
    conn: Connection, request: pb.ReplaySinkRequest, tenant_id: str, sink_id: str, log: _Log
) -> _Replay:
    """What `request` selects of the sink's events. A seq range or window
    stops at the sink's cursor: the events after it are still the live
    cursor's to deliver, and replayed as well they went out twice, out of
    order (helper-148). A seq range starts at the first event retention
    kept: the response says the range taken (ReplaySinkResponse.seq_range)."""
    cursor, head = log.cursor, log.head
    selection = request.WhichOneof("selection")
    if selection == "seq_range":
        first, last = request.seq_range.first_seq, request.seq_range.last_seq
        if first < 1:
            raise InvalidArgument.field("seq_range.first_seq", "must be at least 1")
        if last < first:
            raise InvalidArgument.field("seq_range.last_seq", "must be at least first_seq")
        if first > head:
            # Before anything is recorded: past the log's end, no event is
            # there to replay (and the replay's row would break its CHECK).
            raise InvalidArgument.field(
                "seq_range.first_seq", f"must be at most {head}, the log's last seq"
            )
        if first > cursor:
            raise InvalidArgument.field(
                "seq_range.first_seq",
                f"must be at most {cursor}, the sink's cursor: it has yet to deliver the events"
                " after it",
            )
        if last < log.first_kept:
            # Nothing of it is left to send (and the row would break its CHECK).
            raise InvalidArgument.field(
                "seq_range.last_seq",
                f"must be at least {log.first_kept}, the first seq retention kept",
            )
        if log.first_kept > cursor:
            raise InvalidArgument.field(
                "seq_range",
                f"retention kept no event up to seq {cursor}, the sink's cursor: none to replay",
            )
        return _Replay(max(first, log.first_kept), min(last, cursor))
    if selection == "window":
        window = request.window
        if not window.HasField("start_time") or not window.HasField("end_time"):
            raise InvalidArgument.field("window", "start_time and end_time are required")
        start, end = window.start_time, window.end_time
        # Bounds as a filter's: one between two microseconds is the later.
        after = checked_bound(start.seconds, start.nanos, field="window.start_time")
        before = checked_bound(end.seconds, end.nanos, field="window.end_time")
        if before <= after:
            raise InvalidArgument.field("window.end_time", "must be after start_time")
        first, last = await store.seq_range_of_window(conn, tenant_id, after, before)
        if first <= last and first > cursor:
            raise InvalidArgument.field(
                "window",
                f"its events are after seq {cursor}, the sink's cursor: it has yet to deliver them",
            )
        return _Replay(
            first,
            min(last, cursor),
            occurred_after=after,
            occurred_before=before,
            window_last=last if first <= last else 0,
        )
    if selection == "dead_letter_id":
        letter_id = parse_uuid(request.dead_letter_id)
        if letter_id is None:
            raise InvalidArgument.field("dead_letter_id", "must be a dead letter id (a UUID)")
        letter = await store.read_dead_letter(conn, tenant_id, sink_id, letter_id)
        if letter is None:
            raise NotFound(f"no dead letter {letter_id} of sink {sink_id}")
        # Queued again (an admin retrying), its events went out twice (helper-148).
        pending = await store.pending_replay_of(conn, tenant_id, sink_id, letter.id)
        if pending is not None:
            raise FailedPrecondition(
                f"dead_letter_id: replay {pending} of dead letter {letter.id} is still pending;"
                " the letter goes once its events are delivered",
                reason="REPLAY_PENDING",
            )
        return _Replay(
            letter.first_seq,
            letter.last_seq,
            dead_letter_id=letter.id,
            bypass_filter=letter.bypass_filter,
        )
    raise InvalidArgument.field("selection", "seq_range, window or dead_letter_id is required")
