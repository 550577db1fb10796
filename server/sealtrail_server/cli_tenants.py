"""`sealtrail-server tenant`: what the operator does to a tenant: list them, erase
one, read the receipts, release a legal hold, limit how long its events are
kept. Registered on the main command by cli.py, whose helpers it shares."""

from __future__ import annotations

import asyncio
import base64
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, NamedTuple

import click

from sealtrail._erased_by import erased_by_said
from sealtrail._terminal import terminal_safe
from sealtrail._words import counted

from .cli import (
    _data_dir_option,
    _database,
    _database_url_option,
    _database_urls,
    _operator,
    _output_format_option,
    _record_operator_action,
    _redacted_name,
    _Urls,
)
from .domain.access import valid_tenant_id
from .domain.errors import InvalidArgument
from .domain.event import ChangeDraft
from .domain.retention import MAX_DAYS, RetentionLimits, validate_hold_reason

# What the commands work with (psycopg, protobuf, cryptography) each command
# imports as it runs, as cli.py's do.
if TYPE_CHECKING:
    from sealtrail.tlog import Verifier

    from .retention.erasure import Receipt
    from .store.database import Database


@click.group()
def tenant() -> None:
    """What the operator does to a tenant: list them, erase one, read the
    receipts, release a legal hold, limit how long its events are kept."""


# Every tenant with a log: its size, its latest checkpoint (by the
# checkpoints' primary key, one row read per tenant, never a scan of all
# of them), its retention default, legal hold and ceiling (no policy row:
# forever, no hold, no ceiling).
_TENANTS: Final = (
    "SELECT h.tenant_id, h.tree_size, c.tree_size, c.issued_at,"
    " coalesce(p.legal_hold, false), coalesce(p.default_days, 0), p.max_days"
    " FROM chain_heads AS h"
    " LEFT JOIN LATERAL (SELECT tree_size, issued_at FROM checkpoints"
    "   WHERE tenant_id = h.tenant_id ORDER BY tree_size DESC LIMIT 1) AS c ON true"
    " LEFT JOIN retention_policies AS p ON p.tenant_id = h.tenant_id"
)
# What is left of an erased tenant: its receipt's final size and checkpoint.
_ERASED_TENANTS: Final = (
    "SELECT tenant_id, final_tree_size, final_tree_size, final_checkpoint_issued_at, erased_at"
    " FROM tenant_erasures"
)


class _TenantRow(NamedTuple):
    tenant: str
    events: int
    checkpoint_size: int | None
    checkpoint_signed_at: datetime | None
    legal_hold: bool | None  # None: erased
    retention_default_days: int | None  # 0: forever; None: erased
    retention_max_days: int | None  # the operator's ceiling; None: none, or erased
    erased_at: datetime | None = None


@tenant.command("list")
@click.option("--erased", is_flag=True, help="Also list erased tenants (their receipts).")
@_output_format_option
@_data_dir_option
@_database_url_option
def tenant_list(erased: bool, output: str, data_dir: Path | None, database_url: str | None) -> None:
    """List every tenant with a log: its size in events, its latest
    checkpoint's size and signing time (UTC), whether a legal hold is on, its
    retention default and the ceiling its plan sets (retention-limit). With
    --erased, erased tenants too, marked so, with their final size. Nothing
    is recorded in the tenants' logs."""
    from .config import Settings

    settings = Settings.load(data_dir=data_dir, database_url=database_url)
    urls = _database_urls(settings)

    async def run() -> list[_TenantRow]:
        async with _database(urls) as db, db.system_connection() as conn:
            cursor = await conn.execute(_TENANTS)
            rows = [_TenantRow(*row) for row in await cursor.fetchall()]
            if erased:
                cursor = await conn.execute(_ERASED_TENANTS)
                rows += [
                    _TenantRow(tenant_id, size, size, signed, None, None, None, erased_at)
                    for tenant_id, size, _, signed, erased_at in await cursor.fetchall()
                ]
        # By tenant, a live log before an erased one's receipt: both exist only
        # if someone wrote a receipt behind the service, and a sort of whole
        # rows then compared a datetime or a hold with None (a TypeError).
        return sorted(rows, key=lambda row: (row.tenant, row.erased_at is not None))

    rows = asyncio.run(run())
    if output == "json":
        click.echo(json.dumps([_tenant_json(row) for row in rows], indent=2))
        return
    if not rows:  # not a header alone: an operator cannot tell that from a listing that failed
        click.echo(
            "no tenants: none has a log, and none was erased"
            if erased
            else "no tenants: no tenant has a log"
        )
        return
    header = ["TENANT", "EVENTS", "CHECKPOINT", "SIGNED", "HOLD", "RETENTION", "LIMIT"]
    cells = [_tenant_cells(row) for row in rows]
    if erased:  # when each was erased, in a column of its own (`-`: not erased)
        header.append("ERASED")
        cells = [
            [*row_cells, _utc(row.erased_at) or "-"]
            for row_cells, row in zip(cells, rows, strict=True)
        ]
    _echo_aligned(header, cells)


def _utc(moment: datetime | None) -> str | None:
    return None if moment is None else f"{moment.astimezone(UTC):%Y-%m-%dT%H:%M:%SZ}"


def _tenant_json(row: _TenantRow) -> dict[str, Any]:
    return {
        **row._asdict(),
        "checkpoint_signed_at": _utc(row.checkpoint_signed_at),
        "erased_at": _utc(row.erased_at),
    }


def _tenant_cells(row: _TenantRow) -> list[str]:
    if row.erased_at is not None:  # none of these is left: its time is --erased's column
        hold, retention, ceiling = "-", "-", "-"
    else:
        hold = "on" if row.legal_hold else "off"
        days = row.retention_default_days
        retention = counted(days, "day") if days else "forever"
        ceiling = (
            "none" if row.retention_max_days is None else counted(row.retention_max_days, "day")
        )
    tenant_id = terminal_safe(row.tenant)
    return [
        tenant_id,
        str(row.events),
        "-" if row.checkpoint_size is None else str(row.checkpoint_size),
        _utc(row.checkpoint_signed_at) or "-",
        hold,
        retention,
        ceiling,
    ]


def _echo_aligned(header: list[str], rows: list[list[str]]) -> None:
    """Columns padded to their widest cell, numbers to the right: what a
    shell's `column -t` would give, read by eye or by `awk`."""
    widths = [max(len(cell) for cell in column) for column in zip(header, *rows, strict=True)]
    numeric = {1, 2}  # EVENTS, CHECKPOINT
    for cells in [header, *rows]:
        padded = [
            cell.rjust(width) if at in numeric else cell.ljust(width)
            for at, (cell, width) in enumerate(zip(cells, widths, strict=True))
        ]
        click.echo("  ".join(padded).rstrip())


@tenant.command("erase")
@click.argument("tenant_id", metavar="TENANT")
@click.option("--confirm", required=True, help="The tenant's id, typed again.")
@_data_dir_option
@_database_url_option
def tenant_erase(
    tenant_id: str, confirm: str, data_dir: Path | None, database_url: str | None
) -> None:
    """Erase a tenant for good, as EraseTenant does: every row of it, leaving
    a receipt with the log's signed final checkpoint, printed as JSON (keep
    it). Refused while a legal hold is on. The only way to erase a tenant
    where SEALTRAIL_TENANT_ERASURE=operator. A tenant erased already (by
    another operator or a token, even at the same moment as this) is
    erased no more: its receipt is printed, saying on stderr when and by
    whom it was erased, and the command exits 0, the tenant being erased."""
    from google.protobuf import json_format

    from .api.retention import receipt_message
    from .config import Settings
    from .integrity.checkpointer import Checkpointer
    from .integrity.keys import checked_signer
    from .integrity.signed_sizes import open_signed_sizes
    from .retention.erasure import Eraser

    if not valid_tenant_id(tenant_id):
        raise click.BadParameter("not a tenant id", param_hint="TENANT")
    if confirm != tenant_id:
        raise click.BadParameter("must be the tenant's id, typed again", param_hint="--confirm")
    settings = Settings.load(data_dir=data_dir, database_url=database_url)
    # create=False: a final checkpoint no server's key signs would prove nothing.
    signer = checked_signer(settings)
    urls = _database_urls(settings)

    async def run() -> Receipt:
        # Two connections: the final checkpoint's, and the existence check's.
        async with _database(urls, connections=2) as db:
            await _refuse_unless_owner(urls, "tenant erase")
            if not await _key_registered(db, signer.verifier):  # else refused at the end
                raise click.ClickException(
                    "this signing key is not one the deployment's servers use (no server"
                    " signed with it): set SEALTRAIL_SIGNING_KEY (or _FILE) as they have it"
                )
            if not await _tenant_known(db, tenant_id):  # a mistyped id would be retired
                raise click.ClickException(
                    f"tenant {tenant_id} has no log, no token and no receipt: nothing to erase"
                )
            checkpointer = Checkpointer(
                db,
                signer,
                origin_prefix=settings.log_origin,
                signed_sizes=open_signed_sizes(settings, signer.verifier),
            )
            eraser = Eraser(urls.owner, checkpointer)
            return await eraser.erase(tenant_id, erased_by=_operator(), by_operator=True)

    receipt = asyncio.run(run())
    events = counted(receipt.final_tree_size, "event")
    if receipt.kept:  # by another operator or a token, maybe at the same moment
        by = erased_by_said(receipt.erased_by)
        click.echo(
            f"tenant {tenant_id!r} was erased already, at {_utc(receipt.erased_at)} by {by}"
            f" ({events}); this command erased nothing. Its receipt:",
            err=True,
        )
    else:
        click.echo(f"erased tenant {tenant_id!r} ({events}); keep this receipt:", err=True)
    click.echo(json_format.MessageToJson(receipt_message(receipt), indent=2))


async def _refuse_unless_owner(urls: _Urls, command: str) -> None:
    """`command` works as the tables' owner: said before it begins where its
    URL's user is not, which an erasure otherwise found as every table
    having "another owner" (helper-203)."""
    import psycopg

    async with await psycopg.AsyncConnection.connect(urls.owner, autocommit=True) as conn:
        cursor = await conn.execute(
            "SELECT pg_has_role(current_user, relowner, 'USAGE') FROM pg_class"
            " WHERE oid = 'events'::regclass"
        )
        row = await cursor.fetchone()
    if not (row and row[0]):
        url = (
            "SEALTRAIL_OWNER_DATABASE_URL"
            if urls.owner != urls.service
            else "SEALTRAIL_DATABASE_URL"
        )
        raise click.ClickException(
            f"{command} works as the tables' owner, which {url}'s user is not: set"
            " SEALTRAIL_OWNER_DATABASE_URL to the owner's, or a superuser's (docs/database.md)"
        )


async def _key_registered(db: Database, key: Verifier) -> bool:
    """Whether a server registered `key` (signing_keys): a final checkpoint
    signed with another could not be stored, nor checked by anyone."""
    async with db.system_connection() as conn:
        cursor = await conn.execute(
            "SELECT EXISTS (SELECT FROM signing_keys WHERE key_name = %s AND key_id = %s)",
            [key.name, key.key_id],
        )
        row = await cursor.fetchone()
    return bool(row and row[0])


async def _tenant_known(db: Database, tenant_id: str) -> bool:
    """Whether the tenant has a log, a token (revoked or not) or a receipt."""
    async with db.system_connection() as conn:
        cursor = await conn.execute(
            "SELECT EXISTS (SELECT FROM chain_heads WHERE tenant_id = %s)"
            " OR EXISTS (SELECT FROM api_tokens WHERE tenant_id = %s)"
            " OR EXISTS (SELECT FROM tenant_erasures WHERE tenant_id = %s)",
            [tenant_id] * 3,
        )
        row = await cursor.fetchone()
    return bool(row and row[0])


@tenant.command("release-hold")
@click.argument("tenant_id", metavar="TENANT")
@click.option("--reason", required=True, help="Why it is released, recorded with it.")
@_data_dir_option
@_database_url_option
def tenant_release_hold(
    tenant_id: str, reason: str, data_dir: Path | None, database_url: str | None
) -> None:
    """Release a tenant's legal hold, recorded in its log as the API's release
    is (`retention.legal_hold_released`), with the reason given. The only
    way to release one where SEALTRAIL_LEGAL_HOLD_RELEASE=operator. A tenant
    with no hold on is answered so (exit 0), recording nothing, as the API
    answers a release of none."""
    from sealtrail.v1 import event_pb2

    from .api.audited import weakening_severity
    from .config import Settings
    from .redaction_setup import check_redaction_key_read
    from .store.changes import RETENTION_SUBJECT, Changes
    from .store.retention import policy_to_change, write_hold

    # As a placing reason is checked (plain, at most its length), said in this
    # command's words: the API's were "invalid request: reason: is required
    # to place a legal hold", told to an operator releasing one.
    if not reason.strip():
        raise click.BadParameter("is required: why the hold is released", param_hint="--reason")
    try:
        reason = validate_hold_reason(True, reason)
    except InvalidArgument as error:
        said = "; ".join(violation.description for violation in error.violations)
        raise click.BadParameter(said, param_hint="--reason") from None
    if not valid_tenant_id(tenant_id):  # a NUL in it was psycopg's DataError, a traceback
        raise click.BadParameter("not a tenant id", param_hint="TENANT")
    settings = Settings.load(data_dir=data_dir, database_url=database_url)
    check_redaction_key_read(settings)  # the reasons are redacted, perhaps with the key
    urls = _database_urls(settings)

    async def run() -> bool:
        # Two connections: the release's (its record written in its
        # transaction, ADR 0075), and one the reason's redaction reads settings on.
        async with _database(urls, connections=2) as db:
            if not await _tenant_known(db, tenant_id):  # a mistyped id: said as such
                raise click.ClickException(
                    f"tenant {tenant_id} has no log and no token: no legal hold to release"
                )
            # As the API releases: under the retention subject's lock, the
            # policy's row locked, and recorded last, in its transaction.
            async with Changes(db).exclusive(tenant_id, RETENTION_SUBJECT, caller=None) as conn:
                hold = (await policy_to_change(conn, tenant_id, seconds=_HOLD_WAIT_SECONDS)).hold
                if not hold.on:
                    return False
                previous = await _redacted_name(db, settings, tenant_id, hold.reason)
                given = await _redacted_name(db, settings, tenant_id, reason)
                await write_hold(conn, tenant_id, on=False, reason="", now=datetime.now(UTC))
                await _record_operator_action(
                    db,
                    tenant_id,
                    action="retention.legal_hold_released",
                    description="Legal hold released",
                    details={"previous_reason": previous, "reason": given},
                    category=event_pb2.CATEGORY_CONFIGURATION,
                    severity=weakening_severity(True),  # as the API's release (ADR 0066)
                    resource_type="legal_hold",
                )
            return True

    if not asyncio.run(run()):  # as the API answers a release of none: OK, nothing recorded
        click.echo(f"no legal hold was set on {tenant_id}; nothing recorded")
        return
    click.echo(f"released the legal hold of {tenant_id}")


# How long a release waits at most for a purge batch of the tenant (as the API's).
_HOLD_WAIT_SECONDS = 60.0


@tenant.command("retention-limit")
@click.argument("tenant_id", metavar="TENANT")
@click.option(
    "--max-days",
    type=click.IntRange(1, MAX_DAYS),
    help="The most days the tenant's events are kept (its plan's ceiling).",
)
@click.option("--none", "no_limit", is_flag=True, help="No ceiling: the tenant's policy decides.")
@_data_dir_option
@_database_url_option
def tenant_retention_limit(
    tenant_id: str,
    max_days: int | None,
    no_limit: bool,
    data_dir: Path | None,
    database_url: str | None,
) -> None:
    """Set (--max-days N) or clear (--none) how long the tenant's events are
    kept at most, its plan's ceiling: its admins can set no longer policy,
    nor forever, and the purge keeps a policy stored before to it. Recorded
    in the tenant's log as `retention.limit_changed`, at WARNING when the
    purge keeps any of its events less long for it."""
    from sealtrail.v1 import event_pb2

    from .api.audited import weakening_severity
    from .api.retention import shortened_description, shortened_details
    from .config import Settings
    from .domain.weakening import Shortening, limit_shortenings
    from .store.changes import RETENTION_SUBJECT, Changes
    from .store.retention import policy_to_change, write_max_days

    if (max_days is not None) == no_limit:
        raise click.UsageError("give exactly one of --max-days and --none")
    if not valid_tenant_id(tenant_id):
        raise click.BadParameter("not a tenant id", param_hint="TENANT")
    settings = Settings.load(data_dir=data_dir, database_url=database_url)
    floor = settings.retention_min_days
    if max_days is not None and max_days < floor:
        raise click.ClickException(
            f"--max-days {max_days} is below this deployment's retention floor of"
            f" {counted(floor, 'day')}"
            " (SEALTRAIL_RETENTION_MIN_DAYS), which every tenant's events are kept at least:"
            f" a plan's ceiling must be {counted(floor, 'day')} or more"
        )
    urls = _database_urls(settings)

    async def run() -> tuple[bool, list[Shortening]]:
        async with _database(urls) as db:
            if not await _tenant_known(db, tenant_id):  # a mistyped id would get a log
                raise click.ClickException(
                    f"tenant {tenant_id} has no log and no token: nothing to limit"
                )
            # As the API changes the policy: under the retention subject's
            # lock (a policy change checks the ceiling under it), the policy's
            # row locked (after a purge batch under way), recorded last.
            async with Changes(db).exclusive(tenant_id, RETENTION_SUBJECT, caller=None) as conn:
                before = await policy_to_change(conn, tenant_id, seconds=_HOLD_WAIT_SECONDS)
                if before.max_days == max_days:
                    return False, []
                shortened = limit_shortenings(
                    before.policy,
                    RetentionLimits(floor, before.max_days),
                    RetentionLimits(floor, max_days),
                )
                what = (
                    f"Retention limited to {counted(max_days, 'day')} by the operator"
                    if max_days is not None
                    else "Retention limit removed by the operator"
                )
                await write_max_days(conn, tenant_id, max_days)
                await _record_operator_action(
                    db,
                    tenant_id,
                    action="retention.limit_changed",
                    description=shortened_description(what, shortened),
                    details=shortened_details(shortened),
                    category=event_pb2.CATEGORY_CONFIGURATION,
                    severity=weakening_severity(shortened),  # ADR 0066
                    resource_type="retention_limit",
                    changes=[ChangeDraft("max_days", before.max_days, max_days)],
                )
            return True, shortened

    changed, shortened = asyncio.run(run())
    now = (
        f"is limited to {counted(max_days, 'day')}"
        if max_days is not None
        else "is no longer limited"
    )
    if not changed:
        already = (
            f"is limited to {counted(max_days, 'day')}" if max_days is not None else "has no limit"
        )
        click.echo(f"the retention of {tenant_id} {already} already; nothing recorded")
        return
    click.echo(f"the retention of {tenant_id} {now}")
    if shortened:
        cuts = ", ".join(
            f"{s.events} ({s.before_days or 'forever'} -> {counted(s.after_days, 'day')})"
            for s in shortened
        )
        click.echo(f"its policy keeps events longer; the next purge removes them: {cuts}", err=True)


@tenant.command("retention-apply")
@click.argument("tenant_id", metavar="TENANT")
@_data_dir_option
@_database_url_option
def tenant_retention_apply(tenant_id: str, data_dir: Path | None, database_url: str | None) -> None:
    """Apply the tenant's pending retention change now, without waiting out
    SEALTRAIL_RETENTION_SHORTENING_DELAY (ADR 0163): the next purge removes
    what it expires. Recorded in the tenant's log as
    `retention.policy_change_applied`, attributed to the operator."""
    from datetime import UTC, datetime

    from .config import Settings
    from .retention.pending_changes import AppliedChange, applied_record, apply_change
    from .store.changes import RETENTION_SUBJECT, Changes

    if not valid_tenant_id(tenant_id):
        raise click.BadParameter("not a tenant id", param_hint="TENANT")
    settings = Settings.load(data_dir=data_dir, database_url=database_url)
    urls = _database_urls(settings)

    async def run() -> bool:
        async with _database(urls) as db:
            # As the API changes the policy: under the retention subject's lock.
            async with Changes(db).exclusive(tenant_id, RETENTION_SUBJECT, caller=None) as conn:

                async def record(change: AppliedChange) -> None:
                    await _record_operator_action(db, tenant_id, **applied_record(change))

                applied = await apply_change(
                    conn,
                    tenant_id,
                    now=datetime.now(UTC),
                    min_days=settings.retention_min_days,
                    record=record,
                    early=True,
                )
            return applied is not None

    if not asyncio.run(run()):
        click.echo(f"{tenant_id} has no pending retention change; nothing recorded")
        return
    click.echo(f"the pending retention change of {tenant_id} applies now")


@tenant.command("erasures")
@_output_format_option
@_data_dir_option
@_database_url_option
def tenant_erasures(output: str, data_dir: Path | None, database_url: str | None) -> None:
    """List the receipts of erased tenants, oldest first: the tenant, when, by
    whom (a token id, or the operator), the final size and root (base64), and
    whether the receipt's signature states it (`signed`), does not (`SIGNATURE
    DOES NOT MATCH`, edited behind the service's back), is missing
    (`unsigned`: kept before receipts were signed, which nothing proves), or
    is of a version a newer Sealtrail signed (`not read: ...`, to be listed
    by an upgraded server).
    Checked with the keys the database knows, which a superuser can add: an
    auditor checks a receipt with the keys they pinned (`sealtrail
    verify-erasure`). --format json: one array of objects with `tenant`,
    `erased_at` (UTC), `erased_by`, `final_tree_size`, `final_root_hash`
    (base64), `removed_rows` (by table), `signature` (`signed`, `mismatch`,
    `unsigned` or `newer`) and `signature_problem` (null when signed)."""
    from sealtrail.tlog import NewerStatementError, Verifier, newer_sealtrails

    from .config import Settings
    from .retention.erasure import Receipt, check_receipt
    from .store.checkpoints import known_keys

    settings = Settings.load(data_dir=data_dir, database_url=database_url)
    urls = _database_urls(settings)

    async def run() -> tuple[list[tuple[Any, ...]], list[Verifier]]:
        async with _database(urls) as db, db.system_connection() as conn:
            cursor = await conn.execute(
                "SELECT tenant_id, erased_at, erased_by, final_tree_size, final_root_hash,"
                " removed_rows, signed_receipt FROM tenant_erasures ORDER BY erased_at, tenant_id"
            )
            rows = list(await cursor.fetchall())
            keys = [Verifier.parse(key.verifier) for key in await known_keys(conn)]
            return rows, keys

    rows, keys = asyncio.run(run())
    listed: list[dict[str, Any]] = []
    for tenant_id, erased_at, erased_by, size, root, removed, signed in rows:
        receipt = Receipt(
            tenant_id, erased_by, erased_at, size, bytes(root), None, dict(removed), signed or ""
        )
        try:
            problem = check_receipt(receipt, keys)
            signature = "signed" if problem is None else "mismatch" if signed else "unsigned"
            said = None if problem is None else f"the receipt {problem}"
        except NewerStatementError as newer:  # a newer Sealtrail's, not one edited
            signature = "newer"
            said = newer_sealtrails("the receipt", newer.version, upgrade="this server")
        listed.append(
            {
                "tenant": tenant_id,
                "erased_at": _utc(erased_at),
                "erased_by": erased_by,
                "final_tree_size": size,
                "final_root_hash": base64.b64encode(bytes(root)).decode(),
                "removed_rows": dict(removed),
                "signature": signature,
                "signature_problem": said,
            }
        )
    if output == "json":
        click.echo(json.dumps(listed, indent=2))
        return
    if not listed:  # not nothing: an operator cannot tell that from a listing that failed
        click.echo("no tenant was erased: no erasure receipts")
    for row in listed:
        by = erased_by_said(row["erased_by"])
        status = {
            "signed": "signed",
            "unsigned": "unsigned (kept before receipts were signed: nothing proves it)",
            "newer": f"not read: {row['signature_problem']}",
        }.get(row["signature"], f"SIGNATURE DOES NOT MATCH: {row['signature_problem']}")
        click.echo(
            f"{row['tenant']}  {row['erased_at']}  by {by}  size {row['final_tree_size']}"
            f"  root {row['final_root_hash']}  {status}"
        )
