"""Every server's part in the deployment-wide sinks (ADR 0070): a pass over
the definitions, now and then, that gives each tenant whose log began since
an instance of each (from its first event), and finishes what a command
left undone (a change or deletion interrupted midway).

Any process may pass; one reconciles a definition at a time, the one that
takes its lock without waiting (`try_lock_subject`), held for the
reconciliation in a transaction of a system connection of the pass's own,
outside the pool: held from it, it kept a connection from each tenant's
change and the appender recording it, all of them with a pool of two
(helper-189). The changes take theirs within the servicer's budget
(store/changes.py), whose `Changes` the pass shares. The command
changing a definition holds the same lock, so the two never write one
definition's instances at once, and a definition being created `--from now`
is not given instances from their first event by a pass meanwhile. Each
tenant's instance is made under that tenant's lock of the definition, and
the table allows one per tenant, so passes that overlap (two definitions,
two processes) make none twice.

A pass comes every `interval` seconds, and sooner when this process sees a
commit of a tenant the last pass did not know of: a new tenant's first
events are forwarded within a moment of them."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from .api.managed_sinks import ManagedSinks
from .domain.sealing import SecretBox
from .leased_work import RETRIED
from .store import deployment_sinks as definitions
from .store.changes import try_lock_subject
from .store.database import Database

log = logging.getLogger(__name__)


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
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="sealtrail-deployment-sinks")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
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
        if not ids:
            return
        async with self._db.own_system_connection() as conn:
            for definition_id in ids:
                async with conn.transaction():
                    subject = definitions.definition_subject(definition_id)
                    if not await try_lock_subject(conn, "", subject):
                        continue  # a command, or another process, is at it
                    deployment = await definitions.find_definition(
                        conn, definition_id, box=self._box
                    )
                    if deployment is None:
                        continue
                    done = await self._managed.reconcile(conn, deployment)
                if done.created or done.updated or done.deleted:
                    log.info(
                        "deployment sink %s: instances made in %d tenants, changed in %d,"
                        " removed from %d",
                        deployment.definition.name,
                        len(done.created),
                        len(done.updated),
                        len(done.deleted),
                    )
