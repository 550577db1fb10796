"""The tenants' instances of the deployment-wide sinks (ADR 0070): each one
made, changed and removed as an admin's sink is, through `Changes` on the
tenant's own connection (row-level security, the erasure lock, an erased
tenant refused), and recorded in the tenant's log before it applies,
attributed to the operator (a `system` actor), so a tenant sees where its
events go. Used by `sealtrail-server sink` and by every server's
reconciliation (`DeploymentSinkJob`), whichever holds the definition's lock.

Delivery is the forwarder's, as for any sink: an instance is an ordinary
row of `sinks`, marked with its definition and the revision it was written
from."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sealtrail._words import detailed
from sealtrail.v1 import event_pb2

from ..domain.errors import SealtrailError
from ..domain.sealing import SecretBox
from ..domain.sinks import SinkDefinition, changes_delivery
from ..store import deployment_sinks as definitions
from ..store import sinks as store
from ..store.appender import Appender
from ..store.changes import Changes
from ..store.database import Connection
from ..store.db_errors import named
from ..store.deployment_sinks import DeploymentSink
from ..store.events import first_seq_received_since_on
from ..store.tree import tree_size
from .audited import record_event, weakening_severity
from .sink_records import SinkRecords

log = logging.getLogger(__name__)


@dataclass(slots=True)
class Reconciled:
    """What a reconciliation of one definition did, tenant by tenant."""

    created: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    # Tenants left for a later pass, and why (an erasure in progress, an
    # appender refusing for now).
    failed: list[tuple[str, str]] = field(default_factory=list)
    definition_deleted: bool = False


@dataclass(frozen=True, slots=True)
class Step:
    """One tenant's part of a reconciliation: its instance, or None where
    it had none when the step was planned."""

    tenant_id: str
    sink_id: str | None


class ManagedSinks:
    def __init__(
        self,
        changes: Changes,
        appender: Appender,
        records: SinkRecords,
        *,
        box: SecretBox,
        clock: Callable[[], datetime],
        changed: Callable[[str], None] = lambda tenant_id: None,
    ) -> None:
        """`changed(tenant_id)`: a tenant's sinks changed (the forwarder of
        this process looks at once; others at their next lease renewal)."""
        self._changes = changes
        self._appender = appender
        self._records = records
        self._box = box
        self._clock = clock
        self._changed = changed

    async def reconcile(
        self, conn: Connection, deployment: DeploymentSink, *, at_size: bool = False
    ) -> Reconciled:
        """Brings every tenant's instance to `deployment` as it stands, read
        on `conn` (a system connection, whose transaction holds the
        definition's lock throughout: a command's): `steps`, each one
        `step`, then `finish`. `at_size`: those made start after the tenant's
        last event (a definition created `--from now`, as its command makes
        them)."""
        done = Reconciled()
        for each in await self.steps(conn, deployment, done):
            await self.step(deployment, each, done, at_size=at_size)
        await self.finish(conn, deployment, done)
        return done

    async def steps(
        self, conn: Connection, deployment: DeploymentSink, done: Reconciled
    ) -> list[Step]:
        """What a reconciliation of `deployment` (read on `conn`) has to do,
        tenant by tenant: if it is being deleted, remove each instance; else
        rewrite each written from another revision, and make one for each
        tenant with a log and none. None if its secrets cannot be opened
        (noted in `done`)."""
        if deployment.unopened and not deployment.deleting:
            # Written as it is, an instance would hold the secret empty.
            problem = "; ".join(f"{name}: {why}" for name, why in deployment.unopened)
            log.error(
                "deployment sink %s: its secrets cannot be opened (%s): no instance is made"
                " or changed until `sealtrail-server sink update` gives them again",
                deployment.definition.name,
                problem,
            )
            done.failed.append(("*", f"its secrets cannot be opened ({problem})"))
            return []
        revision = None if deployment.deleting else deployment.revision
        found = [
            Step(tenant_id, sink_id)
            for tenant_id, sink_id in await definitions.instances_not_at(
                conn, deployment.id, revision
            )
        ]
        if not deployment.deleting:
            without = await definitions.tenants_without(conn, deployment.id)
            found += [Step(tenant_id, None) for tenant_id in without]
        return found

    async def step(
        self, deployment: DeploymentSink, step: Step, done: Reconciled, *, at_size: bool = False
    ) -> None:
        """One tenant's step, to `deployment` as it stands now (it may have
        changed since the step was planned: its instance removed if it is
        being deleted, else rewritten, or made if it had none). A failure
        leaves that tenant for a later pass, noted in `done`; the other
        tenants' steps go on."""
        tenant_id = step.tenant_id
        try:
            if step.sink_id is None:
                if not deployment.deleting and await self._materialise(
                    deployment, tenant_id, at_size=at_size
                ):
                    done.created.append(tenant_id)
            elif deployment.deleting:
                if await self._remove(deployment, tenant_id, step.sink_id):
                    done.deleted.append(tenant_id)
            elif await self._rewrite(deployment, tenant_id, step.sink_id):
                done.updated.append(tenant_id)
        except SealtrailError as error:
            why = str(error)
        except Exception as error:  # the database, or a bug: this tenant's step only
            log.exception("deployment sink %s: tenant %s failed", deployment.id, tenant_id)
            why = detailed(type(error).__name__, named(error))  # never a DETAIL's values
        else:
            return
        done.failed.append((tenant_id, why))
        log.warning(
            "deployment sink %s: tenant %s left for a later pass: %s",
            deployment.definition.name,
            tenant_id,
            why,
        )

    async def finish(self, conn: Connection, deployment: DeploymentSink, done: Reconciled) -> None:
        """A definition being deleted goes (on `conn`, under its lock) once
        none of its instances is left."""
        if deployment.deleting and not await definitions.instances_not_at(
            conn, deployment.id, None
        ):
            await definitions.delete_definition(conn, deployment.id)
            done.definition_deleted = True

    async def _record(
        self,
        deployment: DeploymentSink,
        tenant_id: str,
        sink_id: str,
        *,
        action: str,
        description: str,
        severity: event_pb2.Severity.ValueType = event_pb2.SEVERITY_INFO,
        details: dict[str, Any],
        changes: Any = None,
    ) -> None:
        await record_event(
            self._appender,
            tenant_id,
            actor_type=event_pb2.ACTOR_TYPE_SYSTEM,
            actor_id=deployment.changed_by,
            now=self._clock(),
            action=action,
            description=description,
            category=event_pb2.CATEGORY_CONFIGURATION,
            severity=severity,
            resource_type="sink",
            resource_id=sink_id,
            details={**details, "managed": True, "deployment_sink_id": deployment.id},
            changes=changes,
        )

    async def _materialise(
        self, deployment: DeploymentSink, tenant_id: str, *, at_size: bool
    ) -> bool:
        """The tenant's instance, made unless it has one already (another
        process made it meanwhile)."""
        subject = definitions.definition_subject(deployment.id)
        async with self._changes.exclusive(tenant_id, subject, caller=None) as conn:
            if await _instance_of(conn, tenant_id, deployment.id) is not None:
                return False
            cursor = await _start(conn, tenant_id, deployment, at_size=at_size)
            await definitions.forget_instance_start(conn, tenant_id, deployment.id)
            sink_id = str(uuid.uuid4())
            definition = deployment.definition
            shown = await self._records.shown(tenant_id, definition)
            await store.insert_sink(
                conn,
                tenant_id,
                sink_id,
                definition,
                box=self._box,
                cursor_seq=cursor,
                now=self._clock(),
                deployment_sink=(deployment.id, deployment.revision),
            )
            # Recorded last, in the change's transaction (ADR 0075).
            await self._record(
                deployment,
                tenant_id,
                sink_id,
                action="sink.created",
                description=(
                    f"Sink {shown['name']!r} ({definition.kind}) created by the deployment's"
                    " operator, for every tenant"
                ),
                details={**shown, "from_seq": cursor + 1},
            )
        self._changed(tenant_id)
        return True

    async def _rewrite(self, deployment: DeploymentSink, tenant_id: str, sink_id: str) -> bool:
        """The instance brought to the definition's revision; recorded if its
        definition changes (a change of another field of the deployment sink,
        such as its start, changes nothing of it). Any other revision than the
        definition's is rewritten, one ahead of it too: an interrupted `sink
        update` of an earlier version wrote instances before it committed the
        definition, and one left ahead would skip the next change, which
        reuses its revision."""
        async with self._changes.exclusive(tenant_id, f"sink/{sink_id}", caller=None) as conn:
            before = await store.read_sink(conn, tenant_id, sink_id, box=self._box)
            if before is None or before.deployment_revision == deployment.revision:
                return False
            after: SinkDefinition = deployment.definition
            change = None
            details: dict[str, Any] = {}
            if after != before.definition:
                change = await self._records.change(tenant_id, before.definition, after)
                details = change.details
                await store.update_sink(
                    conn, tenant_id, sink_id, after, box=self._box, now=self._clock()
                )
                if changes_delivery(before.definition, after):
                    # Read once the change holds the row: no batch moves the
                    # cursor past it (store.advance).
                    cursor = await store.read_sink_cursor(conn, tenant_id, sink_id)
                    details = {**details, "from_seq": cursor + 1}
            await store.update_sink_revision(conn, tenant_id, sink_id, deployment.revision)
            if change is not None:  # recorded last, in the change's transaction (ADR 0075)
                await self._record(
                    deployment,
                    tenant_id,
                    sink_id,
                    action="sink.updated",
                    description=f"{change.description} by the deployment's operator",
                    severity=change.severity,
                    details=details,
                    changes=change.changes,
                )
        self._changed(tenant_id)
        return after != before.definition

    async def _remove(self, deployment: DeploymentSink, tenant_id: str, sink_id: str) -> bool:
        async with self._changes.exclusive(tenant_id, f"sink/{sink_id}", caller=None) as conn:
            stored = await store.read_sink(conn, tenant_id, sink_id, box=self._box)
            if stored is None:
                return False
            shown = await self._records.shown(tenant_id, stored.definition)
            await store.delete_sink(conn, tenant_id, sink_id)
            # Recorded last, in the change's transaction (ADR 0075).
            await self._record(
                deployment,
                tenant_id,
                sink_id,
                action="sink.deleted",
                description=f"Sink {shown['name']!r} deleted by the deployment's operator",
                severity=weakening_severity(True),  # nothing forwarded there any more
                details={
                    **shown,
                    "cursor_seq": stored.state.cursor_seq,
                    "dead_letters": stored.state.dead_letters,
                    "weakens": ["deleted"],
                },
            )
        return True


async def _instance_of(conn: Connection, tenant_id: str, deployment_id: str) -> str | None:
    cursor = await conn.execute(
        "SELECT id::text FROM sinks WHERE tenant_id = %s AND deployment_sink_id = %s",
        [tenant_id, deployment_id],
    )
    row = await cursor.fetchone()
    return None if row is None else str(row[0])


async def _start(
    conn: Connection, tenant_id: str, deployment: DeploymentSink, *, at_size: bool
) -> int:
    """Where the tenant's new instance starts: its cursor, the last seq it is
    not sent. `at_size` (`sink create --from now`, reaching the tenant): after
    the log's last event, the one recording the instance coming next. Else,
    of a definition created `--from now`: before the first event the log
    received since the definition was created, so that a log begun since
    starts at its first event, and one that was there, which the command did
    not reach (it failed there, or was interrupted), is not sent the history
    `--from now` keeps from the others (helper-193): where its log stood as
    the definition was created, read in the same snapshot (the first event
    received since, by the clock of the server that recorded it, set against
    the database's: a server 2 minutes behind lost those minutes' events, one
    ahead sent history); by receipt only for a definition made before those
    were kept. `--from start`: at the first event."""
    if at_size:
        return await tree_size(conn, tenant_id)
    if deployment.from_start:
        return 0
    if deployment.starts_kept:
        return await definitions.instance_start(conn, tenant_id, deployment.id)
    since = deployment.created_at
    return await first_seq_received_since_on(conn, tenant_id=tenant_id, since=since) - 1
