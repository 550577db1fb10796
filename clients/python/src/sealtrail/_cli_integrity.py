"""`sealtrail bundle`, `verify`, `verify-log`, `checkpoint` and `keys`: prove
a log's integrity, online and offline (`verify`: a bundle, or an export against its
manifest). Registers its commands on the main command of _cli.py, whose helpers
it shares."""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from sealtrail._bundle_format import BundleError, BundleSummary, RangeBeyondLogError
from sealtrail._cli import (
    _cannot_write,
    _client,
    _count,
    _filter,
    interrupted_status,
    main,
    terminal_safe,
)
from sealtrail._cli_filter_options import _filter_options, filter_given
from sealtrail._cli_ranges import (
    PERIOD_UNPROVEN,
    PeriodParam,
    SeqRangeParam,
    beyond_the_log,
    held_seqs,
    moment,
    range_line,
    range_options_given,
    range_warnings,
    received_options,
    received_period,
    received_seqs,
    unproven_ends,
)
from sealtrail._words import counted, detailed, noun

# What the commands work with (gRPC, protobuf, the client) each imports as it
# runs: --help imports none of it (tests/unit/test_cli_startup_imports.py).
if TYPE_CHECKING:
    from sealtrail._checkpoint_check import (
        CheckpointCheck,
        SavedCheckpoint,
    )
    from sealtrail._export_check import ExportCheck

_T = TypeVar("_T")

# `sealtrail verify` of a filtered bundle no export statement signs the
# selection of (a reader's, or one stripped of its statement): each record
# proven, one taken out not noticed. Not 0, which a stripped bundle had
# (helper-570): PERIOD_UNPROVEN's, a bundle proven in part.
SELECTION_UNPROVEN = PERIOD_UNPROVEN


@click.command()
@_filter_options
@click.option(
    "-o",
    "--out",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="New or empty directory to write the bundle into.",
)
@click.option(
    "--seq",
    "seqs",
    type=SeqRangeParam(),
    help="Every event of this seq range, FIRST-LAST, proven complete: none left out, none"
    " added (no filter with it).",
)
@received_options("Every event", ", proven complete")
@click.pass_context
def bundle(
    ctx: click.Context,
    /,
    out: Path,
    seqs: tuple[int, int] | None,
    received: tuple[datetime, datetime] | None,
    received_since: datetime | None,
    received_until: datetime | None,
    **criteria: Any,
) -> None:
    """Write matching events as a bundle that `sealtrail verify` checks offline;
    with --seq or --received, every event of a range of the log, proven complete."""
    from sealtrail._bundle import SeqRange, write_bundle
    from sealtrail._export import ExportError

    period = _period(ctx, seqs, received, received_since, received_until, criteria)
    with _client(ctx) as client:
        try:
            seq_range = (
                SeqRange(*seqs)
                if seqs is not None
                else None
                if period is None
                else received_seqs(ctx, client, period, whole=received is not None, verb="bundles")
            )
            summary = write_bundle(client, out, event_filter=_filter(criteria), seq_range=seq_range)
        except RangeBeyondLogError as error:
            if seqs is None or error.tree_size is None:  # a period's range, which the log held
                raise click.ClickException(terminal_safe(str(error))) from None
            raise click.ClickException(beyond_the_log(ctx, seqs, error.tree_size)) from None
        except (BundleError, ExportError) as error:
            raise click.ClickException(terminal_safe(str(error))) from None
        except OSError as error:
            raise click.ClickException(_cannot_write(out, error)) from None
        except KeyboardInterrupt as interrupt:
            # write_bundle removed what it wrote (and `out`, if it made it).
            # Not click's bare "Aborted!" (and 1, as any failure): what is
            # left, and 130, as a shell reports a command Ctrl-C ended (as
            # export and tail do).
            click.echo(f"bundle interrupted: no partial bundle was left at {out}", err=True)
            ctx.exit(interrupted_status(interrupt))
    purged = (
        f" and the leaves of {counted(summary.purged, 'purged event')}" if summary.purged else ""
    )
    # Only of a bundle the log could prove: stdout, kept as a job's evidence,
    # said its range complete before FAILED on stderr (helper-554).
    proven = (
        f": {range_line(summary)}"
        if summary.seq_range is not None and summary.log_fault is None
        else ""
    )
    click.echo(
        f"wrote {counted(summary.count, 'record')}{purged}"
        f"{held_seqs(summary)}"
        f" of {terminal_safe(summary.origin)} with its checkpoint at size {summary.tree_size}"
        f" to {out}{proven}"
    )
    if summary.log_fault is not None:
        click.echo(f"FAILED: {summary.log_fault}", err=True)
        sys.exit(1)
    if summary.unchecked_edges:  # verify would not say OK of it either
        for reason in unproven_ends(summary):
            click.echo(reason, err=True)
        sys.exit(PERIOD_UNPROVEN)
    if not summary.complete and summary.seq_range is None and not summary.selection_signed:
        click.echo(
            "SELECTION UNPROVEN: no export statement signs what the filter selected (a"
            " reader's token may not export; an exporter's export was refused): a record left"
            " out would not be noticed, and `sealtrail verify` exits 4 as this does",
            err=True,
        )
        sys.exit(SELECTION_UNPROVEN)


def _period(
    ctx: click.Context,
    seqs: tuple[int, int] | None,
    received: tuple[datetime, datetime] | None,
    since: datetime | None,
    until: datetime | None,
    criteria: dict[str, Any],
) -> tuple[datetime, datetime | None] | None:
    """The period by receipt time a range bundle is asked for, if it is; a
    range asked for two ways, or with a filter, is refused."""
    period = received_period(ctx, seqs, received, since, until)
    ways = range_options_given(seqs, received, since, until)
    if ways and filter_given(criteria):
        raise click.UsageError(
            f"{ways[0]} bundles every event of a range, none left out: it takes no filter", ctx
        )
    return period


@click.command()
@click.argument("path", type=click.Path(exists=True, path_type=Path))
@click.option(
    "--key",
    "keys",
    metavar="VKEY",
    multiple=True,
    help="Verifier key (name+id+key) the checkpoint must be signed by. Without it the"
    " bundle's own keys are used, which proves only that the bundle is self-consistent:"
    " the command then says SELF-CONSISTENT, not OK, and exits 3 (an export needs it)."
    " Repeat it for a log whose key was rotated: what retention removed is signed by the"
    " key of its day.",
)
@click.option(
    "--manifest",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Of an export: its manifest, where it is not FILE.manifest.json beside FILE.",
)
@click.option(
    "--tenant",
    help="Tenant whose log the bundle or export must be: one key signs every tenant's"
    " checkpoints, so another tenant's would verify as well.",
)
@click.option(
    "--complete",
    "require_complete",
    is_flag=True,
    help="Require the whole log (a bundle written without filters): a partial bundle fails,"
    " however well its records check, since one left out of it would not be noticed; so does"
    " a range bundle (see --seq).",
)
@click.option(
    "--seq",
    "require_seqs",
    type=SeqRangeParam(),
    help="Require every event of this seq range, FIRST-LAST, proven complete: by a range"
    " bundle of it (or of more), or the whole log.",
)
@click.option(
    "--received",
    "require_period",
    type=PeriodParam(),
    help="Require every event received in this UTC year, month or day (2026-11), proven"
    " complete: by a bundle written for it (or for a period that holds it, `bundle"
    " --received`). As without it, exits 4 if an end of the range is not proven the period's.",
)
@click.pass_context
def verify(
    ctx: click.Context,
    /,
    path: Path,
    keys: tuple[str, ...],
    manifest: Path | None,
    tenant: str | None,
    require_complete: bool,
    require_seqs: tuple[int, int] | None,
    require_period: tuple[datetime, datetime] | None,
) -> None:
    """Check a bundle (a directory) offline: every record against the signed
    checkpoint; or an export (FILE) against its manifest's signed statement.
    Exits 0 when verified against --key, 1 on a failure, 3 when verified only
    against the bundle's own keys (which a forger writes too), 4 when a
    period's range is proven complete but an end of it not the period's, or
    a filtered bundle's selection is signed by no export statement."""
    from sealtrail._bundle_check import verify_bundle

    if not path.is_dir():
        ranged = {
            "--complete": require_complete,
            "--seq": require_seqs is not None,
            "--received": require_period is not None,
        }
        _verify_export(ctx, path, manifest, keys, tenant, [n for n, on in ranged.items() if on])
        return
    if manifest is not None:
        raise click.UsageError(
            "--manifest goes with an export's FILE: a bundle holds its own checkpoint", ctx
        )
    try:
        # No --key: None, the bundle's own keys (an empty list is refused).
        summary = verify_bundle(path, key=keys or None, tenant=tenant)
    except BundleError as error:  # which may quote the bundle's text, a forger's
        click.echo(f"FAILED: {terminal_safe(str(error))}", err=True)
        sys.exit(1)
    if require_complete and not summary.complete:
        what = (
            f"a range bundle (seq {summary.seq_range[0]}..{summary.seq_range[1]} complete)"
            if summary.seq_range is not None
            else f"a partial bundle ({counted(summary.count, 'record')} of {summary.tree_size},"
            " written with filters)"
        )
        click.echo(f"FAILED: {what} where --complete requires the whole log", err=True)
        sys.exit(1)
    if require_seqs is not None and not _proves(summary, require_seqs):
        first, last = require_seqs
        click.echo(
            f"FAILED: the bundle does not prove seq {first}..{last} complete: it proves "
            + (
                f"seq {summary.seq_range[0]}..{summary.seq_range[1]}"
                if summary.seq_range is not None
                else f"the whole log of {summary.tree_size}"
                if summary.complete
                else "no range (a partial bundle, written with filters)"
            ),
            err=True,
        )
        sys.exit(1)
    if require_period is not None and not _holds(summary, require_period):
        since, until = require_period
        click.echo(
            f"FAILED: the bundle does not prove the events received from {moment(since)} to"
            f" {moment(until)}: it proves "
            + (
                f"the events received from {moment(summary.received_since)} to"
                f" {moment(summary.received_until)}"
                if summary.received_since is not None and summary.received_until is not None
                else f"no period (a range bundle of seq {summary.seq_range[0]}.."
                f"{summary.seq_range[1]}, chosen by seq)"
                if summary.seq_range is not None
                else "no period (a bundle not written for one)"
            ),
            err=True,
        )
        sys.exit(1)
    _report_verified(summary)


def _verify_export(
    ctx: click.Context,
    path: Path,
    manifest: Path | None,
    keys: tuple[str, ...],
    tenant: str | None,
    ranged: list[str],
) -> None:
    """`sealtrail verify FILE`: the export at `path` held, offline, to its
    manifest (`manifest`, else FILE.manifest.json beside it; `path` may be
    the manifest itself) by sealtrail.check_export, as `checkpoint --check`
    holds it before it asks the service, which alone shows the log since
    extends it."""
    if ranged:
        raise click.UsageError(
            f"{ranged[0]} checks a bundle, its seqs proven complete: an export is what its"
            " statement signs it selected, which the MATCHES line says",
            ctx,
        )
    if not keys:
        # A bundle's own keys prove its consistency at least; a manifest holds none.
        raise click.UsageError(
            "verifying an export needs --key, the log's published verifier key", ctx
        )
    from sealtrail._checkpoint_check import CheckpointError, other_tenant, signer_names
    from sealtrail._export import MANIFEST_SUFFIX
    from sealtrail._export_check import check_export

    file: Path | None = path
    if manifest is None and path.name.endswith(MANIFEST_SUFFIX):
        manifest, file = path, None  # the manifest given for its file, beside it
    elif manifest is None:
        manifest = path.with_name(path.name + MANIFEST_SUFFIX)
        if not manifest.is_file():
            click.echo(
                terminal_safe(
                    f"FAILED: {path} has no manifest beside it ({manifest}), the signed"
                    " statement of the export it checks against: give it (--manifest PATH),"
                    " or export again with `sealtrail export -o FILE`, which keeps"
                    f" FILE{MANIFEST_SUFFIX} beside FILE"
                ),
                err=True,
            )
            sys.exit(1)
    try:
        found = check_export(manifest, key=keys, file=file)
    except CheckpointError as error:  # which may quote the manifest's text, a forger's
        click.echo(f"FAILED: {terminal_safe(str(error))}", err=True)
        sys.exit(1)
    signed = found.statement
    other = other_tenant(signed.origin, tenant)
    if other is not None:
        click.echo(f"FAILED: the export's statement: {terminal_safe(other)}", err=True)
        sys.exit(1)
    click.echo(
        f"{_matches(found)}; of {terminal_safe(signed.origin)} at size {signed.tree_size:,},"
        f" checkpoint signed by {terminal_safe(signer_names(found.signed_by))}"
    )
    _say_unproven(found)
    click.echo(
        "not checked offline: that the log was not rewritten since (sealtrail checkpoint"
        f" --check {terminal_safe(str(manifest))} --key VKEY, against the service)",
        err=True,
    )


def _say_unproven(found: ExportCheck) -> None:
    """On stderr, what the MATCHES line does not prove of an export whose
    rows are not each proven the log's record (filtered, a range, ...)."""
    if found.unproven is not None:
        click.echo(
            "not proven: that each row is the log's record, not the service's word of it: "
            + terminal_safe(found.unproven),
            err=True,
        )


def _matches(found: ExportCheck) -> str:
    """The verdict on an export found as its manifest describes it, as
    `verify` and `checkpoint --check` print it."""
    rows = "" if found.rows is None else f"{_count(found.rows, 'row')}, "
    return (
        f"MATCHES: {terminal_safe(str(found.path))} is the export its manifest"
        f" describes: {rows}{_count(found.byte_count, 'byte')}, sha256 {found.sha256};"
        f" signed: {terminal_safe(found.selected)}"
    )


def _holds(summary: BundleSummary, period: tuple[datetime, datetime]) -> bool:
    """Whether the bundle was written for `period`, or for one that holds it
    (whether its ends are proven the period's is `_report_verified`'s)."""
    if summary.received_since is None or summary.received_until is None:
        return False
    return summary.received_since <= period[0] and period[1] <= summary.received_until


def _proves(summary: BundleSummary, seqs: tuple[int, int]) -> bool:
    """Whether the bundle proves every event of `seqs` is in it."""
    first, last = seqs
    if summary.complete:
        return last <= summary.tree_size
    if summary.seq_range is None:
        return False
    return summary.seq_range[0] <= first and last <= summary.seq_range[1]


def _report_verified(summary: BundleSummary) -> None:
    """What was verified; its origin and key names are the bundle's, which a
    forger chooses: escaped, they cannot overwrite the verdict or its warning."""
    whole = ", the complete log with no gap" if summary.complete else ""
    if summary.seq_range is not None:
        whole = f"; {range_line(summary)} and consistent with the signed checkpoint"
    elif not summary.complete:
        whole = f"; {_selection_line(summary)}"
    purged = (
        f" and the leaves of {counted(summary.purged, 'event')} removed by retention"
        if summary.purged
        else ""
    )
    unproven = summary.seq_range is not None and bool(summary.unchecked_edges)
    unsigned = not summary.complete and summary.seq_range is None and not summary.selection_signed
    verdict = (
        "SELF-CONSISTENT"
        if summary.trusted_own_keys
        else "PERIOD UNPROVEN"
        if unproven
        else "SELECTION UNPROVEN"
        if unsigned
        else "OK"
    )
    click.echo(
        f"{verdict}: {counted(summary.count, 'record')}{purged}"
        f"{held_seqs(summary)}"
        f" {noun(summary.count, 'is', 'are')} in {terminal_safe(summary.origin)}"
        f" at size {summary.tree_size}{whole};"
        f" checkpoint signed by {terminal_safe(', '.join(summary.signed_by))}"
    )
    if summary.seq_range is not None:
        for warning in range_warnings(summary):
            click.echo(terminal_safe(warning), err=True)
    elif summary.selection_signed:
        click.echo(
            "note: a partial bundle (a filter's selection): that the filter matched no other"
            " event is the server's signed word, not proven by the tree; only a complete"
            " bundle shows the log has no gap",
            err=True,
        )
    elif not summary.complete:
        click.echo(
            "warning: a partial bundle (a filter's selection): each record it holds is"
            " proven, but one left out would not be noticed; only a complete bundle shows"
            " the log has no gap",
            err=True,
        )
    if summary.trusted_own_keys:
        click.echo(
            "not authenticated: checked against the bundle's own keys, which whoever wrote"
            " it chose; pass --key with the log's published verifier key",
            err=True,
        )
        sys.exit(3)
    if unproven:
        sys.exit(PERIOD_UNPROVEN)
    if unsigned:
        sys.exit(SELECTION_UNPROVEN)


def _selection_line(summary: BundleSummary) -> str:
    """What a filtered bundle's verdict line says it selected: the filter
    and count its export's statement signs (`OK:`), or, none signing them,
    that records may have been taken out (`SELECTION UNPROVEN:`; a warning
    on stderr alone went unseen by a job keeping stdout: helper-554). The
    filter is the bundle's text, escaped."""
    chosen = "" if summary.filter is None else terminal_safe(summary.filter)
    if summary.selection_signed:
        return (
            f"every event of filter {chosen}, as the export statement signed by the log's"
            f" key counts them ({counted(summary.count, 'row')})"
        )
    said = f"filter {chosen}, as bundle.json says, unsigned" if chosen else "filter not recorded"
    return f"a filtered bundle: records may have been removed; not proven complete ({said})"


@click.command("verify-log")
@click.option(
    "--check-views",
    is_flag=True,
    help="Also check that what Query shows of each event is what its record says (slower).",
)
@click.pass_context
def verify_log(ctx: click.Context, check_views: bool) -> None:
    """Admin: have the server recheck every record, leaf and checkpoint root."""
    with _client(ctx) as client:
        result = client.verify_log(check_views=check_views)
    if result.ok:
        views = f", {_count(result.views_verified, 'view')}" if check_views else ""
        click.echo(
            f"OK: {_count(result.verified_size, 'record')}{views} and"
            f" {_count(result.checkpoints_verified, 'checkpoint')} verified"
        )
        if check_views and result.verified_size and not result.views_verified:
            click.echo(
                "warning: no view was checked: the server predates --check-views, or its"
                " events were all stored without views (shown from their records)",
                err=True,
            )
        return
    failure = result.failure
    click.echo(
        terminal_safe(f"FAILED at seq {failure.seq}: {failure.reason}: {failure.message}"),
        err=True,
    )
    sys.exit(1)


@click.command()
@click.option(
    "--fresh",
    is_flag=True,
    help="Sign a new checkpoint if the log has grown; with --check, check against it, not"
    " the latest (signed up to the server's checkpoint interval ago:"
    " SEALTRAIL_CHECKPOINT_INTERVAL, 10 s by default).",
)
@click.option(
    "--check",
    "saved",
    metavar="SAVED",
    multiple=True,
    type=click.Path(exists=True, allow_dash=True, path_type=Path),
    help="Check a checkpoint saved earlier (this command's output, a bundle's directory, or"
    " an export's FILE.manifest.json; - reads the output from stdin, not a manifest, whose"
    " FILE cannot be found from there): the log it signs must be a prefix of today's. Of"
    " FILE.manifest.json, FILE beside it must be the export it describes too: its bytes,"
    " SHA-256 and rows. Repeat it (an export and a"
    " checkpoint saved later) to check each against one checkpoint of today's log, which"
    " shows their logs prefixes of each other. Exits 1 if the log was rewritten since, or"
    " FILE differs.",
)
@click.option(
    "--key",
    "keys",
    metavar="VKEY",
    multiple=True,
    help="With --check: verifier key (name+id+key) both checkpoints must be signed by."
    " Repeat it for a log whose key was rotated since the checkpoint was saved.",
)
@click.pass_context
def checkpoint(
    ctx: click.Context, fresh: bool, saved: tuple[Path, ...], keys: tuple[str, ...]
) -> None:
    """Print the log's latest signed checkpoint, or check one saved earlier
    against it (--check SAVED --key VKEY)."""
    from sealtrail._checkpoint_check import (
        CheckpointError,
        OtherLogError,
        SavedCheckpoint,
        issued_at_of,
        saved_checkpoint_text,
    )
    from sealtrail._export_check import check_export, export_manifest

    if not saved:
        if keys:
            raise click.UsageError("--key goes with --check", ctx)
        with _client(ctx) as client:
            note = client.get_checkpoint(fresh=fresh).note
            # Line by line: a note's own lines stay lines (and a signed one as
            # it was signed), what else the server sent is escaped.
            click.echo("\n".join(map(terminal_safe, note.split("\n"))), nl=False)
        return
    if not keys:
        # The server's own keys would prove nothing: a forger serves theirs.
        raise click.UsageError("--check needs --key, the log's published verifier key", ctx)
    named = len(saved) > 1
    checks: list[tuple[Path, SavedCheckpoint]] = []
    exported: list[ExportCheck] = []
    try:
        # Offline first: each checkpoint's signature, and a manifest's file (a
        # file altered or cut short since its export passed, its checkpoint good),
        # by sealtrail.check_export, as a script checks one.
        for path in saved:
            text = _of(path, named, saved_checkpoint_text, path)
            if _of(path, named, export_manifest, path) is not None:
                found = _of(path, named, check_export, path, key=keys)
                exported.append(found)
                text = found.checkpoint
            checks.append((path, _of(path, named, SavedCheckpoint.open, text, keys)))
        # Then each against one checkpoint of the log today, so that their logs
        # are shown prefixes of one log, and so of each other.
        with _client(ctx) as client:
            today = client.get_checkpoint(fresh=fresh)
            results = []
            for path, check in checks:
                latest, signers = _of(path, named, check.latest, today.note)
                proof: Sequence[bytes] = ()
                if check.needs_proof(latest):
                    proof = client.get_consistency_proof(
                        old_size=check.checkpoint.tree_size, new_size=latest.tree_size
                    ).proof
                verdict = check.verdict(latest, signers, proof, issued_at=issued_at_of(today))
                results.append((path, verdict))
    except OtherLogError as error:  # which quotes the saved text, a forger's perhaps
        click.echo(f"refused: {terminal_safe(str(error))}", err=True)
        ctx.exit(2)
    except CheckpointError as error:
        click.echo(f"FAILED: {terminal_safe(str(error))}", err=True)
        sys.exit(1)
    rewritten = [(path, result) for path, result in results if not result.consistent]
    for path, result in rewritten:
        _report_rewritten(result, _shown(path) if named else None)
    if rewritten:
        sys.exit(1)
    for path, result in results:
        _report_checked(result, _shown(path) if named else None)
    for found in exported:
        click.echo(_matches(found))
        _say_unproven(found)


@click.command()
@click.pass_context
def keys(ctx: click.Context) -> None:
    """Print the verifier keys of the log's checkpoints, as `verify --key` takes them.

    One a line, the active one first (`--key "$(sealtrail keys | head -1)"`);
    on stderr, when each was first used. A key from the service audited is
    its word: compare it with the one pinned beforehand (docs/integrity.md)."""
    with _client(ctx) as client:
        found = client.get_verifier_keys()
    if not found:
        click.echo("no key has signed a checkpoint of this server yet", err=True)
        sys.exit(1)
    for key in found:
        click.echo(terminal_safe(key.text))
    for key in found:
        used = key.first_used_at.ToDatetime(UTC)
        state = "active (signs new checkpoints)" if key.active else "retired (verifies older)"
        click.echo(
            terminal_safe(
                f"{key.name}+{key.key_id}: {state}, first used {used:%Y-%m-%dT%H:%M:%SZ}"
            ),
            err=True,
        )
    # Whoever runs the service could serve a key of their own making with
    # checkpoints to match: only a key known otherwise authenticates them.
    click.echo(
        "these are the service's word: compare them with the key pinned at onboarding or"
        " the operator's published copy before trusting them",
        err=True,
    )


def _shown(path: Path) -> str:
    return "stdin" if str(path) == "-" else str(path)


def _of(path: Path, named: bool, call: Callable[..., _T], *args: Any, **kwargs: Any) -> _T:
    """`call(*args, **kwargs)`; a CheckpointError it raises names `path` when
    several were given (of the same class: another log's is still refused)."""
    from sealtrail._checkpoint_check import CheckpointError

    try:
        return call(*args, **kwargs)
    except CheckpointError as error:
        if not named:
            raise
        raise type(error)(f"{_shown(path)}: {error}") from None


def _report_rewritten(result: CheckpointCheck, name: str | None) -> None:
    """A saved checkpoint's log that today's does not extend, one line on
    stderr; its origin is the saved text's, escaped."""
    saved = f" {terminal_safe(name)}" if name is not None else ""
    failed = (
        f"FAILED: the log was rewritten since the saved checkpoint{saved}: its"
        f" {_count(result.saved_size, 'event')} are not a prefix of today's"
        f" {result.latest_size:,} ({terminal_safe(result.origin)}), {_todays(result)}"
    )
    click.echo(detailed(failed, terminal_safe(result.reason or "")), err=True)


def _report_checked(result: CheckpointCheck, name: str | None) -> None:
    """The verdict on a saved checkpoint whose log today's extends, one
    line; its origin is the saved text's, escaped."""
    origin = terminal_safe(result.origin)
    from sealtrail._checkpoint_check import signer_names

    of = f" of {terminal_safe(name)}" if name is not None else ""
    names = signer_names(result.signed_by)
    click.echo(
        f"CONSISTENT: the saved log of {_count(result.saved_size, 'event')}{of} is a prefix of"
        f" today's {result.latest_size:,} ({origin}): {_todays(result, terminal_safe(names))}"
    )


def _todays(result: CheckpointCheck, signers: str | None = None) -> str:
    """Which checkpoint of today's log a saved one was checked against: the
    latest, signed up to SEALTRAIL_CHECKPOINT_INTERVAL ago (--fresh: now), so
    that a size short of the events just recorded is not a surprise; when,
    by the server's word, and how long ago by this host's clock; and by
    `signers` (names), if given."""
    from sealtrail._durations import age_text

    said = "the latest checkpoint"
    signed = result.latest_issued_at
    if signed is not None:  # else a server that does not say
        age = age_text((datetime.now(UTC) - signed).total_seconds())
        said += f", signed {signed:%Y-%m-%dT%H:%M:%SZ} ({age})"
    if signers is not None:
        said += f" by {signers}" if signed is not None else f", signed by {signers}"
    return said


# On the main command as this module loads, whether _cli imported it (as it
# imports each) or it was imported first (tests/unit/test_cli_modules_import_alone.py).
main.add_command(bundle)
main.add_command(verify)
main.add_command(verify_log)
main.add_command(checkpoint)
main.add_command(keys)
