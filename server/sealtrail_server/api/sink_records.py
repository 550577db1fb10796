"""How a sink and its changes are shown in its tenant's log: the same for a
change an admin makes through the API and for the operator's change of a
managed sink (ADR 0070), so a SIEM rule on `sink.updated` reads both alike."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sealtrail.v1 import event_pb2

from ..domain.event import ChangeDraft
from ..domain.redaction import tenant_key
from ..domain.sinks import SinkDefinition, recorded
from ..domain.weakening import sink_weakenings
from .audited import FilterDetails, weakened, weakening_details, weakening_severity
from .convert import filter_from_json


@dataclass(frozen=True, slots=True)
class SinkChange:
    """What a `sink.updated` event says of a change."""

    description: str
    severity: event_pb2.Severity.ValueType
    details: dict[str, Any]
    changes: list[ChangeDraft]


class SinkRecords:
    """Sinks as their change events record them, in the tenant's log for good."""

    def __init__(self, filter_details: FilterDetails, *, redaction_secret: bytes) -> None:
        self._filter_details = filter_details
        self._secret = redaction_secret

    def key(self, tenant_id: str) -> bytes:
        """The tenant's key of its sinks' recorded fingerprints."""
        return tenant_key(self._secret, tenant_id)

    async def shown(self, tenant_id: str, definition: SinkDefinition) -> dict[str, Any]:
        """The sink as its change events record it (`recorded`), a secret in its
        filter (a leaked token to forward the events of) or its name redacted
        as the tenant's events are: the log keeps it for good (helper-119)."""
        shown = recorded(definition, self.key(tenant_id))
        shown["filter"] = await self._filter_details.redacted(tenant_id, shown["filter"])
        shown["name"] = await self._filter_details.text(tenant_id, shown["name"])
        return shown

    async def change(
        self, tenant_id: str, before: SinkDefinition, after: SinkDefinition
    ) -> SinkChange:
        """The record of changing `before` into `after`: each field changed,
        as stored and redacted, and whether the change weakens the trail."""
        key = self.key(tenant_id)
        old, new = recorded(before, key), recorded(after, key)
        # Told apart as stored: a filter's secret changed is redacted alike.
        changed = [name for name in old if old[name] != new[name]]
        if "filter" in changed:
            for shown in (old, new):
                shown["filter"] = await self._filter_details.redacted(tenant_id, shown["filter"])
        for shown in (old, new):
            shown["name"] = await self._filter_details.text(tenant_id, shown["name"])
        weakens = sink_weakenings(
            before,
            after,
            before_filter=filter_from_json(before.filter),
            after_filter=filter_from_json(after.filter),
        )
        return SinkChange(
            description=weakened(f"Sink {new['name']!r} changed", weakens),
            severity=weakening_severity(weakens),
            details=weakening_details(weakens),
            changes=[ChangeDraft(k, old[k], new[k]) for k in changed]
            or [ChangeDraft("destination", "(secret)", "(secret rotated)")],
        )
