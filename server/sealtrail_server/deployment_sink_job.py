"""Every server's part in the deployment-wide sinks (ADR 0070): a pass over
the definitions, now and then, that gives each tenant whose log began since
an instance of each (from its first event), and finishes what a command
left undone (a change or deletion interrupted midway).

Any process may pass. A pass works on a definition one tenant's step at a
time (its instance made, changed or removed, and recorded in its log), each
step in a transaction of its own that takes the definition's lock without
waiting (`try_lock_subject`) and lets it go as the step ends: the command
changing a definition, which waits for the same lock, waits for one step,
not for the pass over every tenant, and the pass leaves the definition to
it once it holds the lock (helper-193). So the two never write one
definition's instances at once, and a definition being created `--from now`
is not given instances by a pass meanwhile. A step that fails leaves its
tenant for a later pass; the others go on. The lock is held on a system
connection of the pass's own, outside the pool: held from it, it kept a
connection from each tenant's change and the appender recording it, all of
them with a pool of two (helper-189). The changes take theirs within the
servicer's budget (store/changes.py), whose `Changes` the pass shares. Each
tenant's instance is made under that tenant's lock of the definition, and
the table allows one per tenant, so passes that overlap (two definitions,
two processes) make none twice.

A definition a newer release made, of a kind or with a filter key this one
does not know (newer_objects.py, docs/operations.md "Rolling upgrades"), is
left to a process that knows it: no instance of it is made, changed or
removed here (one written from what this release knows of it would send what
its filter excludes, or record a change half-known in each tenant's log), its
lock is let go at once, and it is said once, again only if it changes.

A pass comes every `interval` seconds, and sooner when this process sees a
commit of a tenant the last pass did not know of: a new tenant's first
events are forwarded within a moment of them."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime

from .api.managed_sinks import ManagedSinks, Reconciled
from .domain.sealing import SecretBox
from .leased_work import RETRIED
from .newer_objects import NEWER
from .stopping import end_tasks
from .store import deployment_sinks as definitions
from .store.changes import try_lock_subject
from .store.database import Connection, Database
from .store.deployment_sinks import DeploymentSink

log = logging.getLogger(__name__)

# How long the pass's transaction around a step may sit idle (its step runs on
# other connections meanwhile) before PostgreSQL ends its session, letting the
# definition's lock go. A process frozen midway through a step (SIGSTOP,
# `docker pause`, a debugger) held it for as long as it stayed frozen, and the
# operator's commands on the definition, from any host, waited meanwhile. A
# step is one change of one tenant, whose waits are bounded (store/changes.py,
# 5 s each): a pass whose step outlasts this fails, and the next goes on.
IDLE_IN_STEP_SECONDS = 30.0


class DeploymentSinkJob:
    def __init__(
        self, db: Database, managed: ManagedSinks, *, box: SecretBox, interval: float
    ) -> None:
        self._db = db
        self._managed = managed
        self._box = box
        self._interval = interval
        # The tenants with a log as the last pass began (None: no definition then).
        self._known: set[str] | None = None
        self._soon = asyncio.Event()
        # Definitions left to a newer release's processes, as defined (their
        # `updated_at`) when this one met them: said again only once changed.
        self._left: dict[str, datetime] = {}
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="sealtrail-deployment-sinks")

    async def stop(self) -> None:
        await end_tasks([self._task])
        self._task = None

    def wake(self, tenant_id: str) -> None:
        """Events were committed in `tenant_id`'s log: a pass soon if it is
        a log the last pass did not know of (a new tenant's)."""
        if self._known is not None and tenant_id not in self._known:
            self._soon.set()

    async def _run(self) -> None:
        while True:
            self._soon.clear()
            try:
                await self.run_pass()
            except RETRIED as error:
                log.warning("deployment sinks: the pass failed: %s", error)
            except Exception:  # a bug: keep the job alive, loudly
                log.exception("deployment sinks: the pass failed")
            # asyncio.timeout, not wait_for (leased_work._repeat says why).
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._interval):
                    await self._soon.wait()

    async def run_pass(self) -> None:
        """One pass over every definition this process can take the lock of."""
        async with self._db.system_connection() as conn:
            ids = await definitions.definition_ids(conn)
            known = await definitions.tenants_with_logs(conn) if ids else None
        self._known = known
        # One deleted since is forgotten.
        self._left = {d: at for d, at in self._left.items() if d in set(ids)}
        if not ids:
            return
        async with self._db.own_system_connection() as conn:
            for definition_id in ids:
                reconciled = await self._reconcile(conn, definition_id)
                if reconciled is None:
                    continue
                name, done = reconciled
                if done.created or done.updated or done.deleted:
                    log.info(
                        "deployment sink %s: instances made in %d tenants, changed in %d,"
                        " removed from %d",
                        name,
                        len(done.created),
                        len(done.updated),
                        len(done.deleted),
                    )

    async def _reconcile(
        self, conn: Connection, definition_id: str
    ) -> tuple[str, Reconciled] | None:
        """The definition's instances brought to it, one tenant's step at a
        time, each in a transaction of `conn` of its own that holds the
        definition's lock: a command waits for one step, not for the pass
        over every tenant (helper-193), and once it holds the lock the pass
        leaves the definition to it. None if the pass could not begin."""
        done = Reconciled()
        async with self._locked(conn, definition_id) as deployment:
            if deployment is None:
                return None
            if deployment.newer is not None:
                self._leave(deployment, deployment.newer)
                return None
            name = deployment.definition.name
            steps = await self._managed.steps(conn, deployment, done)
        for step in steps:
            async with self._locked(conn, definition_id) as deployment:
                if deployment is None or deployment.newer is not None:
                    return name, done  # a newer one's since: the next pass leaves it
                # Finished if the pass is cancelled (the server stopping), as
                # a token's change is if its call is: cut between its record
                # and its change, the log named an instance never made, and
                # the next pass recorded it again (helper-200).
                await asyncio.shield(
                    asyncio.ensure_future(self._managed.step(deployment, step, done))
                )
        async with self._locked(conn, definition_id) as deployment:
            if deployment is not None and deployment.newer is None:
                await self._managed.finish(conn, deployment, done)
        return name, done

    def _leave(self, deployment: DeploymentSink, newer: str) -> None:
        """Leaves a newer release's definition to a process of it; said once
        for each of its changes."""
        if self._left.get(deployment.id) != deployment.updated_at:
            log.warning(
                "deployment sink %s (%s) was %s release (%s not known to this one);"
                " left to a process that knows it: no instance made, changed or removed",
                deployment.definition.name, deployment.id, NEWER, newer,
            )  # fmt: skip
        self._left[deployment.id] = deployment.updated_at

    @asynccontextmanager
    async def _locked(
        self, conn: Connection, definition_id: str
    ) -> AsyncIterator[DeploymentSink | None]:
        """The definition as it stands, read in a transaction of `conn` that
        holds its lock; None if it is gone, or the lock is another's (a
        command, or another process's pass, is at it)."""
        async with conn.transaction():
            await conn.execute(
                "SELECT set_config('idle_in_transaction_session_timeout', %s, true)",
                [f"{max(1, round(IDLE_IN_STEP_SECONDS * 1000))}ms"],
            )
            subject = definitions.definition_subject(definition_id)
            if not await try_lock_subject(conn, "", subject):
                yield None
            else:
                yield await definitions.find_definition(conn, definition_id, box=self._box)
