"""The action catalogue's RPCs: an admin sets or clears what an action means
(each change recorded in the log, with the description it replaced), and any
reader lists the tenant's actions, those its log holds counted as CountEvents
counts them by action, beside their descriptions. A mixin of the servicer.

A description is stored as redaction leaves it (ADR 0141): readers see it,
as they see events, and the log keeps each change for good, so a secret
pasted into one reaches neither, as a secret in an alert rule's name reaches
no alert.

An entry may declare the category of its action's events too (ADR 0148):
enforced by Record while the tenant's `strict_actions` setting is on, so a
change of the catalogue drops the tenant's settings kept by this process
(they carry the catalogue then); the other processes read it again within
their cache's time. A request changes the fields its update_mask names, the
others kept as stored; an empty mask the description alone (ADR 0148,
addendum)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any, Final

import grpc

from sealtrail.v1 import catalog_pb2 as pb
from sealtrail.v1 import event_pb2

from ..domain.access import Principal
from ..domain.action_catalog import MAX_DESCRIPTION, action_problem, description_problem
from ..domain.counts import group_limit
from ..domain.errors import InvalidArgument
from ..domain.event import CATEGORIES, MISSING, ChangeDraft
from ..domain.page_tokens import PageTokens
from ..store.action_catalog import (
    CatalogEntry,
    Described,
    clear_description,
    list_catalog,
    read_description,
    write_description,
)
from ..store.appender import Appender
from ..store.changes import Changes, refuse_if_erased_now
from ..store.database import Database
from ..store.long_reads import LongReads
from ..store.tenant_settings import SettingsCache
from .audited import FilterDetails, record_access
from .guard import current_principal
from .update_mask import update_paths

Context = grpc.aio.ServicerContext[Any, Any]


_CATEGORY_NUMBERS: Final[dict[str, event_pb2.Category.ValueType]] = {
    name: event_pb2.Category.ValueType(number) for number, name in CATEGORIES.items()
}


def _described(action: str, described: Described | None) -> pb.ActionCatalogEntry:
    entry = pb.ActionCatalogEntry(action=action)
    if described is not None:
        entry.description = described.description or ""
        entry.category = _category_number(described.category)
        entry.update_time.FromDatetime(described.updated_at)
        entry.updated_by = described.updated_by
    return entry


def _listed(listed: CatalogEntry) -> pb.ActionCatalogEntry:
    entry = pb.ActionCatalogEntry(action=listed.action, count=listed.count)
    if listed.last_occurred_at is not None:
        entry.last_occurred_time.FromDatetime(listed.last_occurred_at)
    if listed.updated_at is not None:  # in the catalogue
        entry.description = listed.description or ""
        entry.category = _category_number(listed.category)
        entry.update_time.FromDatetime(listed.updated_at)
        entry.updated_by = listed.updated_by or ""
    return entry


def _category_number(name: str | None) -> event_pb2.Category.ValueType:
    if name is None:
        return event_pb2.CATEGORY_UNSPECIFIED
    return _CATEGORY_NUMBERS[name]


def _category_name(request: pb.SetActionDescriptionRequest) -> str | None:
    """The category the request declares, or None (CATEGORY_UNSPECIFIED)."""
    if request.category == event_pb2.CATEGORY_UNSPECIFIED:
        return None
    name = CATEGORIES.get(request.category)
    if name is None:
        raise InvalidArgument.field("category", f"{request.category} is no Category value")
    return name


_SETTABLE: Final = ("description", "category")


def _changed_fields(request: pb.SetActionDescriptionRequest) -> frozenset[str]:
    """The fields of the entry the request changes (AIP-134): those its mask
    names, both for `*`, the description alone for an empty mask (ADR 0148,
    addendum: a client that predates categories sends none, and its change
    of a description must not clear the category the catalogue declares)."""
    paths = update_paths(request.update_mask, _SETTABLE)
    if paths is not None:
        return paths
    return frozenset(_SETTABLE) if request.update_mask.paths else frozenset({"description"})


class ActionCatalogRpcs:
    _db: Database
    _changes: Changes
    _appender: Appender
    _clock: Callable[[], datetime]
    _filter_details: FilterDetails
    _count_timeout: float
    _long_reads: LongReads
    _page_tokens: PageTokens
    _settings_cache: SettingsCache

    async def SetActionDescription(
        self, request: pb.SetActionDescriptionRequest, context: Context
    ) -> pb.SetActionDescriptionResponse:
        principal = current_principal()
        tenant_id = principal.tenant_id
        if problem := action_problem(request.action):
            raise InvalidArgument.field("action", problem)
        paths = _changed_fields(request)
        description = None
        if "description" in paths and request.description:
            if problem := description_problem(request.description):
                raise InvalidArgument.field("description", problem)
            description = await self._filter_details.text(tenant_id, request.description)
            if len(description) > MAX_DESCRIPTION:  # a secret's HMAC is longer than it
                raise InvalidArgument.field(
                    "description",
                    f"is {len(description)} characters once redacted; the limit is"
                    f" {MAX_DESCRIPTION}",
                )
        category = _category_name(request)  # a wrong value refused, named or not
        action = request.action
        async with self._changes.exclusive(
            tenant_id, f"action_catalog/{action}", caller=principal.token_id
        ) as conn:
            before = await read_description(conn, tenant_id, action)
            previous = (None, None) if before is None else (before.description, before.category)
            # What the mask does not name is kept as stored.
            if "description" not in paths:
                description = previous[0]
            if "category" not in paths:
                category = previous[1]
            if previous == (description, category):
                return pb.SetActionDescriptionResponse(entry=_described(action, before))
            after = None
            if description is None and category is None:
                await clear_description(conn, tenant_id, action)
            else:
                after = await write_description(
                    conn,
                    tenant_id,
                    action,
                    description=description,
                    category=category,
                    updated_by=principal.token_id,
                )
            # Recorded last, in the change's transaction (ADR 0075).
            event_id = await self._record_description(
                principal, action, previous, (description, category)
            )
        # Kept settings carry the catalogue (strict_actions): read afresh here.
        self._settings_cache.forget(tenant_id)
        return pb.SetActionDescriptionResponse(entry=_described(action, after), event_id=event_id)

    async def _record_description(
        self,
        principal: Principal,
        action: str,
        before: tuple[str | None, str | None],
        after: tuple[str | None, str | None],
    ) -> str:
        """The record of a change of `action`'s entry, each side its
        (description, category) (the descriptions redacted already, as
        stored): a change of each that changed."""
        if before[0] == after[0]:  # the category alone
            said = f"Category of {action} {'cleared' if after[1] is None else 'declared'}"
        elif after == (None, None):
            said = f"Description of {action} cleared"
        elif before == (None, None):
            said = f"Description of {action} set"
        else:
            said = f"Description of {action} changed"
        changes = [
            ChangeDraft(
                field,
                MISSING if old is None else old,
                MISSING if new is None else new,
            )
            for field, old, new in zip(("description", "category"), before, after, strict=True)
            if old != new
        ]
        return (
            await record_access(
                self._appender,
                principal,
                now=self._clock(),
                action="action_catalog.updated",
                category=event_pb2.CATEGORY_CONFIGURATION,
                resource_type="action",
                resource_id=action,
                description=said,
                changes=changes,
            )
        ).event_id

    async def ListActionCatalog(
        self, request: pb.ListActionCatalogRequest, context: Context
    ) -> pb.ListActionCatalogResponse:
        principal = current_principal()
        tenant_id = principal.tenant_id
        limit = group_limit(request.limit)
        # A token goes on the listing of one tenant, for the caller it was
        # issued to, and carries the first page's tree_size with the last
        # action listed: every page counts the same log (ADR 0042's framing).
        # It carries the first page's total too, so a later page reads its
        # own entries' events alone, not the whole log's again.
        fingerprint = f"action-catalog:{tenant_id}"
        tree_size, after, total = 0, "", None
        if request.page_token:
            tree_size, after, total = self._page_tokens.decode_key(
                request.page_token, fingerprint=fingerprint, caller=principal.token_id,
                kinds=(int, str, int),
            )  # fmt: skip
        with self._long_reads.admitted(tenant_id, "count"):  # refused ones are not recorded
            if not request.page_token:
                # Recorded first, as a count is: the listing reads the log
                # before it. Once, on the first page: the later pages are read
                # on the strength of that record, as Query's are (ADR 0012).
                recorded = await record_access(
                    self._appender,
                    principal,
                    now=self._clock(),
                    action="audit_log.queried",
                    description="Listed the action catalogue",
                    details={"rpc": "ListActionCatalog", "limit": limit},
                )
                tree_size = recorded.seq - 1
            catalog = await list_catalog(
                self._db,
                tenant_id=tenant_id,
                before_seq=tree_size + 1,
                after=after,
                limit=limit,
                total=total,
                timeout=self._count_timeout,
            )
        if request.page_token and not catalog.entries:
            # Erased since the first page: an error, not an end that passes
            # for the whole catalogue.
            await refuse_if_erased_now(self._db, tenant_id)
        next_token = ""
        if catalog.more:
            next_token = self._page_tokens.encode_key(
                fingerprint=fingerprint,
                key=[tree_size, catalog.entries[-1].action, catalog.total],
                caller=principal.token_id,
            )
        return pb.ListActionCatalogResponse(
            entries=[_listed(entry) for entry in catalog.entries],
            truncated=bool(next_token),
            total_entries=catalog.total,
            tree_size=tree_size,
            next_page_token=next_token,
        )
