"""`sealtrail-server sink`: the deployment-wide sinks the operator keeps
(ADR 0070, docs/forwarding.md "Deployment-wide sinks"). The commands of
cli.py's `sink` group, which imports this module when one of them is asked
for; it shares cli.py's helpers and the client command line's filter and
destination options, from modules of their own: the client's command line
itself (`_cli._filter`) it imports as a command runs, not for `--help`.

Each command works under the definition's lock (the servers' passes skip
it meanwhile), writes the definition, then brings every tenant's instance to
it, each change recorded in that tenant's log; what it cannot reach (a
tenant being erased, say) a server's pass finishes. The definition is written
as the tables' owner: the service's roles only read it (migration 0042)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import click

from sealtrail._choices import SINK_SETTINGS
from sealtrail._cli_destination_options import (
    _destination_options,
    _destination_settings,
    _show_secret,
)
from sealtrail._cli_filter_options import _tail_filter_options
from sealtrail._terminal import terminal_safe
from sealtrail._words import counted

from .cli import (
    _data_dir_option,
    _database,
    _database_url_option,
    _database_urls,
    _operator,
    _output_format_option,
    _Urls,
    refuse_another_redaction_key_here,
    sink,
)
from .domain.errors import InvalidArgument
from .domain.sinks import SECRET_FIELDS, SinkDefinition, described, destination_url, shown_url

# What the commands work with (psycopg, protobuf, cryptography) each command
# imports as it runs, as cli.py's do.
if TYPE_CHECKING:
    import psycopg

    from .api.managed_sinks import ManagedSinks, Reconciled
    from .config import Settings
    from .domain.sealing import SecretBox
    from .store import deployment_sinks as definitions
    from .store.database import Connection, Database
    from .store.deployment_sinks import DeploymentSink
    from .store.sinks import DeadLetterRow

# How long a command waits for a server's pass over the same definition.
_LOCK_WAIT_SECONDS = 60.0


@dataclass(frozen=True, slots=True)
class _Tools:
    """What a command that changes instances works with."""

    db: Database
    box: SecretBox
    managed: ManagedSinks


def _secret_box(settings: Settings, urls: _Urls) -> SecretBox:
    """The deployment's secrets key. Not made here where none is configured:
    on a database of its own (not the embedded one), a key of this machine's
    data dir would seal what no server can open."""
    from .sealing_setup import KEY_FILE_NAME, checked_secret_box

    configured = settings.secrets_key or settings.secrets_key_file
    if not configured and not urls.embedded and not (settings.data_dir / KEY_FILE_NAME).exists():
        raise click.ClickException(
            "no secrets key: set SEALTRAIL_SECRETS_KEY (or _FILE) to the deployment's, as its"
            " servers have it (docs/forwarding.md, Secrets at rest)"
        )
    return checked_secret_box(settings)


def _redaction_secret(settings: Settings) -> bytes:
    from .redaction_setup import existing_redaction_secret

    secret = existing_redaction_secret(settings)
    if secret is None:
        raise click.ClickException(
            "no redaction key: set SEALTRAIL_REDACTION_KEY (or _FILE) to the deployment's, as"
            " its servers have it: the tenants' logs fingerprint the sink's URL and secrets"
            " with it"
        )
    return secret


@asynccontextmanager
async def _tools(settings: Settings, urls: _Urls, *, set_up: bool = False) -> AsyncIterator[_Tools]:
    from .api.audited import FilterDetails
    from .api.convert import server_view
    from .api.managed_sinks import ManagedSinks
    from .api.sink_records import SinkRecords
    from .redaction_setup import load_redactor
    from .store.appender import Appender
    from .store.changes import Changes
    from .store.tenant_settings import SettingsCache

    box = _secret_box(settings, urls)
    secret = _redaction_secret(settings)
    # Connections: the definition's lock, a tenant's change, the appender's.
    async with _database(urls, connections=4, set_up=set_up) as db:
        # Before anything is recorded with it: a sink's URL and secrets'
        # fingerprints, under another key, unlike the servers' (helper-215).
        await refuse_another_redaction_key_here(db, settings, secret)
        appender = Appender(db, server_view=server_view)
        appender.start()
        try:
            names = FilterDetails(
                load_redactor(settings), SettingsCache(db), redaction_secret=secret
            )
            managed = ManagedSinks(
                Changes(db),
                appender,
                SinkRecords(names, redaction_secret=secret),
                box=box,
                clock=lambda: datetime.now(UTC),
            )
            yield _Tools(db, box, managed)
        finally:
            await appender.stop()


@asynccontextmanager
async def _as_owner(urls: _Urls) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
    """A connection of the tables' owner, to write a definition on (committed
    at once): a stolen service login paused and re-filtered the operator's
    sinks of every tenant while the service's roles could write them
    (helper-203)."""
    import psycopg

    try:
        async with await psycopg.AsyncConnection.connect(urls.owner, autocommit=True) as conn:
            yield conn
    except psycopg.errors.InsufficientPrivilege as error:
        raise click.ClickException(
            f"the database refused to change the deployment sink ({error.diag.message_primary}):"
            " only the tables' owner writes deployment sinks; set SEALTRAIL_OWNER_DATABASE_URL"
            " to the owner's, or a superuser's (docs/database.md)"
        ) from None


@asynccontextmanager
async def _definition_locked(db: Database, definition_id: str) -> AsyncIterator[Connection]:
    """A system connection whose transaction holds the definition's lock."""
    from .store import deployment_sinks as definitions
    from .store.changes import lock_subject, waiting_at_most

    async with db.system_connection() as conn, conn.transaction():
        busy = "a server is reconciling this deployment sink's instances; try again"
        async with waiting_at_most(conn, _LOCK_WAIT_SECONDS, busy=busy):
            await lock_subject(conn, "", definitions.definition_subject(definition_id))
        yield conn


def _option_of(field: str) -> str:
    """The option a violation's field (`sink.webhook.secrets[0]`) was given by."""
    last = field.rsplit(".", 1)[-1].split("[", 1)[0]
    named = {
        "secrets": "secret",
        "destination": "kind",
        "actions": "action",
        "exclude_actions": "exclude_action",
        "actor_email_domain": "actor_domain",
        "categories": "category",
        "outcomes": "outcome",
        "min_severity": "severity",
        "severities": "exact_severity",
        "actor_types": "actor_type",
        "countries": "country",
        "resource_types": "resource_type",
        "http_status_classes": "http_status",
        "http_routes": "http_route",
        "http_route_presence": "has_http_route/--no_http_route",  # one option, two flags
        "changed_fields": "changed_field",
        "actor_roles": "role",
        "text": "search",
        # An email sink's settings (ADR 0133).
        "host": "smtp_host",
        "port": "smtp_port",
        "security": "smtp_security",
        "username": "smtp_username",
        "password": "smtp_password",
        "from_address": "mail_from",
        "to_addresses": "mail_to",
    }.get(last, last)
    return "--" + named.replace("_", "-")


def _checked(sink_message: Any, *, kept_name: str | None = None) -> SinkDefinition:
    """The definition `sink_message` gives, validated as a tenant's sink is
    (`kept_name`, the definition's stored name, not refused again)."""
    from .api.forwarding import definition_of

    try:
        return definition_of(sink_message, path="sink", kept_name=kept_name)
    except InvalidArgument as error:
        said = "; ".join(
            f"{_option_of(v.field)} ({v.field}) {v.description}" for v in error.violations
        )
        raise click.BadParameter(said) from None


async def _check_egress(settings: Settings, sink_message: Any) -> None:
    """The destination against this deployment's egress policy, as the API
    checks a tenant's (the servers deliver under theirs)."""
    from .api.forwarding import check_egress
    from .forward.egress import EgressPolicy

    try:
        await check_egress(EgressPolicy.of(settings), sink_message, path="sink", tenant_id=None)
    except InvalidArgument as error:
        raise click.BadParameter(
            "; ".join(f"{_option_of(v.field)} {v.description}" for v in error.violations)
        ) from None


def _report(name: str, done: Reconciled) -> None:
    click.echo(
        f"{terminal_safe(name)}: made in {counted(len(done.created), 'tenant')},"
        f" changed in {len(done.updated)}, removed from {len(done.deleted)}"
    )
    for tenant_id, why in done.failed:
        click.echo(
            terminal_safe(f"  {tenant_id}: not yet ({why}); a server's pass will finish it"),
            err=True,
        )


def _sink_message(
    name: str,
    kind: str,
    *,
    payload: str,
    settings: dict[str, Any],
    criteria: dict[str, Any],
    filter_message: Any = None,
    paused: bool = False,
) -> Any:
    from sealtrail import build_sink
    from sealtrail._cli import _filter
    from sealtrail._convert import PayloadFormat, SinkKind

    try:
        message = build_sink(
            name,
            cast(SinkKind, kind),
            filter=filter_message if filter_message is not None else _filter(criteria),
            format=cast(PayloadFormat, payload),
            paused=paused,
            **settings,
        )
    except ValueError as error:
        raise click.BadParameter(str(error)) from None
    return message


_SETTING_NAMES = frozenset(name for names in SINK_SETTINGS.values() for name in names)


def _split(options: dict[str, Any]) -> dict[str, Any]:
    """The filter criteria among a command's options (the rest are settings)."""
    return {key: value for key, value in options.items() if key not in _SETTING_NAMES}


def _run(
    settings: Settings, urls: _Urls, work: Callable[[_Tools], Any], *, set_up: bool = False
) -> Any:
    """`work` with the tools; `set_up` (`sink create`): on a database with no
    schema yet, a fresh setup, made first."""

    async def run() -> Any:
        async with _tools(settings, urls, set_up=set_up) as tools:
            return await work(tools)

    return asyncio.run(run())


@sink.command("create")
@click.argument("name")
@click.option("--kind", type=click.Choice(list(SINK_SETTINGS)), required=True)
@_destination_options
@click.option(
    "--format", "payload", type=click.Choice(["sealtrail_json", "ocsf"]), default="sealtrail_json"
)
@click.option(
    "--from",
    "start",
    type=click.Choice(["start", "now"]),
    default="now",
    show_default=True,
    help="Where each existing tenant's instance starts: its first event, or the event that"
    " records the instance (as a tenant's sink does). A tenant whose log begins later starts"
    " at its first event either way.",
)
@_tail_filter_options
@_data_dir_option
@_database_url_option
def sink_create(
    name: str,
    kind: str,
    payload: str,
    start: str,
    generate_secret: bool,
    secrets_: tuple[str, ...],
    data_dir: Path | None,
    database_url: str | None,
    **options: Any,
) -> None:
    """Forward every tenant's matching events to one destination; makes its
    instance in every tenant with a log now, and each server gives one to every
    tenant whose log begins later. Prints the definition's id."""
    from .config import Settings
    from .store import deployment_sinks as definitions

    config = Settings.load(data_dir=data_dir, database_url=database_url)
    given, made = _destination_settings(options, secrets_, generate_secret)
    message = _sink_message(name, kind, payload=payload, settings=given, criteria=_split(options))
    definition = _checked(message)
    urls = _database_urls(config)

    async def work(tools: _Tools) -> tuple[str, Reconciled]:
        await _check_egress(config, message)
        definition_id = definitions.new_id()
        async with _definition_locked(tools.db, definition_id) as conn:
            async with _as_owner(urls) as writer:
                inserted = await definitions.insert_definition(
                    writer,
                    definition_id,
                    definition,
                    box=tools.box,
                    from_start=start == "start",
                    changed_by=_operator(),
                )
            if not inserted:
                raise click.ClickException(f"there is a deployment sink named {name!r} already")
            deployment = await definitions.find_definition(conn, definition_id, box=tools.box)
            assert deployment is not None
            done = await tools.managed.reconcile(conn, deployment, at_size=start == "now")
        return definition_id, done

    definition_id, done = _run(config, urls, work, set_up=True)
    _show_secret(made)
    _report(name, done)
    click.echo(definition_id)


def _definition_json(deployment: DeploymentSink) -> dict[str, Any]:
    from .newer_objects import sign

    return {
        "id": deployment.id,
        **described(deployment.definition),
        "from": "start" if deployment.from_start else "now",
        "revision": deployment.revision,
        "changed_by": deployment.changed_by,
        "create_time": _utc(deployment.created_at),
        "update_time": _utc(deployment.updated_at),
        "deleting": deployment.deleting,
        "unopenable_secrets": [f"{name}: {why}" for name, why in deployment.unopened],
        # Made by a newer release (newer_objects.py): what this one does not know of it.
        "newer_release": None if deployment.newer is None else sign(deployment.newer),
    }


def _utc(moment: datetime) -> str:
    return f"{moment.astimezone(UTC):%Y-%m-%dT%H:%M:%SZ}"


async def _find(conn: Connection, name_or_id: str, box: SecretBox) -> DeploymentSink:
    from .store import deployment_sinks as definitions

    found = await definitions.find_definition(conn, name_or_id, box=box)
    if found is None:
        raise click.ClickException(f"no deployment sink {name_or_id!r}")
    return found


def _refuse_if_newer(deployment: DeploymentSink) -> None:
    """A definition a newer release made (newer_objects.py) is changed by
    that release's command: this one would rewrite it, and each tenant's
    instance and record, from what it knows of it."""
    from .newer_objects import NEWER

    if deployment.newer is not None:
        raise click.ClickException(
            f"deployment sink {deployment.definition.name!r} was {NEWER} release"
            f" ({deployment.newer} not known to this one): change it with that release's"
            " sealtrail-server"
        )


@sink.command("list")
@_output_format_option
@_data_dir_option
@_database_url_option
def sink_list(output: str, data_dir: Path | None, database_url: str | None) -> None:
    """List the deployment sinks: kind, where to (what of the URL cannot hold a
    credential), the tenants with an instance, and their lag and dead letters
    in all. Nothing is recorded in the tenants' logs."""
    from .config import Settings
    from .newer_objects import sign
    from .store import deployment_sinks as definitions

    config = Settings.load(data_dir=data_dir, database_url=database_url)
    urls = _database_urls(config)
    box = _secret_box(config, urls)

    async def run() -> list[tuple[DeploymentSink, list[definitions.Instance], _Oldest | None]]:
        async with _database(urls) as db, db.system_connection() as conn:
            found = await definitions.list_definitions(conn, box=box)
            rows = []
            for deployment in found:
                instances = await definitions.instances(conn, deployment.id)
                rows.append((deployment, instances, await _oldest_dead_letter(conn, instances)))
            return rows

    rows = asyncio.run(run())
    if output == "json":
        click.echo(
            json.dumps(
                [
                    {
                        **_definition_json(d),
                        "tenants": len(i),
                        **_totals(i),
                        "oldest_dead_letter": None if oldest is None else oldest.json(),
                    }
                    for d, i, oldest in rows
                ],
                indent=2,
            )
        )
        return
    if not rows:  # as `key restored` says it: not nothing, an operator cannot tell that apart
        click.echo("no deployment sinks (`sealtrail-server sink create` makes one)")
    for deployment, instances, oldest in rows:
        definition = deployment.definition
        url = destination_url(definition.kind, definition.destination)
        totals = _totals(instances)
        state = "deleting" if deployment.deleting else "paused" if definition.paused else "on"
        newer = "" if deployment.newer is None else f"  ({sign(deployment.newer)})"
        parked = (
            ""
            if oldest is None
            else f"  oldest dead letter (tenant {oldest.tenant_id}): {oldest.letter.error}"
        )
        click.echo(
            terminal_safe(
                f"{deployment.id}  {definition.name}  {definition.kind}  {state}"
                f"  {shown_url(url) if url else '-'}  tenants {len(instances)}"
                f"  lag {totals['lag_events']}  dead letters {totals['dead_letters']}"
                f"{parked}{newer}"
            )
        )


@dataclass(frozen=True, slots=True)
class _Oldest:
    """A deployment sink's oldest waiting dead letter, of whichever tenant."""

    tenant_id: str
    letter: DeadLetterRow

    def json(self) -> dict[str, Any]:
        return {
            "tenant_id": self.tenant_id,
            "sink_id": self.letter.sink_id,
            "dead_letter_id": self.letter.id,
            "http_status": self.letter.http_status,
            "error": self.letter.error,
            "create_time": _utc(self.letter.created_at),
        }


async def _oldest_dead_letter(
    conn: Connection, instances: list[definitions.Instance]
) -> _Oldest | None:
    """Why the oldest dead letter waiting in any of the instances was parked,
    as `sealtrail sinks` says a tenant's sink's: a parking sets no last error,
    so the count alone showed it. Each instance with letters is read as
    ListDeadLetters reads it (its oldest alone, a page of one), one query an
    instance with any; none waiting (all replayed, or none), None."""
    from .store.sinks import list_dead_letters

    found = [
        _Oldest(i.tenant_id, letter)
        for i in instances
        if i.dead_letters
        for letter in await list_dead_letters(conn, i.tenant_id, i.sink_id, limit=1)
    ]
    return min(found, key=lambda o: (o.letter.created_at, o.tenant_id), default=None)


def _totals(instances: list[definitions.Instance]) -> dict[str, int]:
    return {
        "lag_events": sum(max(0, i.head_seq - i.cursor_seq) for i in instances),
        "delivered_events": sum(i.delivered_events for i in instances),
        "dead_letters": sum(i.dead_letters for i in instances),
    }


@sink.command("show")
@click.argument("name_or_id", metavar="NAME")
@_data_dir_option
@_database_url_option
def sink_show(name_or_id: str, data_dir: Path | None, database_url: str | None) -> None:
    """A deployment sink as JSON (secrets as hints), with each tenant's
    instance: its sink id, cursor and head, delivered events, dead letters,
    last error, and why its oldest dead letter waiting was parked."""
    from .config import Settings
    from .store import deployment_sinks as definitions

    config = Settings.load(data_dir=data_dir, database_url=database_url)
    urls = _database_urls(config)
    box = _secret_box(config, urls)

    async def run() -> dict[str, Any]:
        async with _database(urls) as db, db.system_connection() as conn:
            deployment = await _find(conn, name_or_id, box)
            instances = await definitions.instances(conn, deployment.id)
            oldest = [await _oldest_dead_letter(conn, [i]) for i in instances]
        return {
            **_definition_json(deployment),
            "instances": [
                {
                    "tenant_id": i.tenant_id,
                    "sink_id": i.sink_id,
                    "revision": i.revision,
                    "cursor_seq": i.cursor_seq,
                    "head_seq": i.head_seq,
                    "delivered_events": i.delivered_events,
                    "dead_letters": i.dead_letters,
                    "last_error": i.last_error,
                    "oldest_dead_letter": None if parked is None else parked.json(),
                }
                for i, parked in zip(instances, oldest, strict=True)
            ],
        }

    click.echo(json.dumps(asyncio.run(run()), indent=2))


@sink.command("update")
@click.argument("name_or_id", metavar="NAME")
@click.option("--name", "new_name", help="A new name.")
@_destination_options
@click.option("--format", "payload", type=click.Choice(["sealtrail_json", "ocsf"]))
@click.option("--pause/--resume", "paused", default=None, help="Stop delivery, or resume it.")
@_tail_filter_options
@_data_dir_option
@_database_url_option
def sink_update(
    name_or_id: str,
    new_name: str | None,
    payload: str | None,
    paused: bool | None,
    generate_secret: bool,
    secrets_: tuple[str, ...],
    data_dir: Path | None,
    database_url: str | None,
    **options: Any,
) -> None:
    """Change a deployment sink, and every tenant's instance with it (each
    change recorded in the tenant's log; at severity WARNING where it pauses,
    narrows or moves it). Only what is given changes: filter options replace
    the whole filter; destination options change those settings, the others
    (secrets included) stay, but a new URL needs the secrets again."""
    from .config import Settings
    from .store import deployment_sinks as definitions

    config = Settings.load(data_dir=data_dir, database_url=database_url)
    given, made = _destination_settings(options, secrets_, generate_secret)
    criteria = _split(options)
    if not (given or any(criteria.values()) or new_name or payload or paused is not None):
        raise click.UsageError("nothing to change: give a name, format, filter or setting")
    urls = _database_urls(config)

    async def work(tools: _Tools) -> Reconciled:
        async with tools.db.system_connection() as conn:
            current = await _find(conn, name_or_id, tools.box)
        _refuse_if_newer(current)
        async with _definition_locked(tools.db, current.id) as conn:
            current = await _find(conn, current.id, tools.box)
            _refuse_if_newer(current)
            if current.deleting:
                raise click.ClickException(f"deployment sink {name_or_id!r} is being deleted")
            message, definition = _updated(current, new_name, payload, paused, given, criteria)
            if destination_url(definition.kind, definition.destination) != destination_url(
                current.definition.kind, current.definition.destination
            ):
                await _check_egress(config, message)
            if definition != current.definition:
                if await definitions.name_taken(conn, definition.name, other_than=current.id):
                    raise click.ClickException(
                        f"there is a deployment sink named {definition.name!r} already"
                    )
                async with _as_owner(urls) as writer:
                    # Committed at once, as create and delete do: interrupted,
                    # the change is a server's to finish (an instance already
                    # rewritten is never ahead of a definition rolled back).
                    await definitions.update_definition(
                        writer,
                        current.id,
                        definition,
                        box=tools.box,
                        changed_by=_operator(),
                    )
            current = await _find(conn, current.id, tools.box)
            return await tools.managed.reconcile(conn, current)

    done = _run(config, urls, work)
    _show_secret(made)
    _report(name_or_id, done)


def _updated(
    current: DeploymentSink,
    new_name: str | None,
    payload: str | None,
    paused: bool | None,
    given: dict[str, Any],
    criteria: dict[str, Any],
) -> tuple[Any, SinkDefinition]:
    """The definition the options make of `current`, and its message (for
    the egress check). A credential goes only where it was given for: a new
    URL needs the secrets that go with it."""
    from google.protobuf import json_format

    from sealtrail._cli import _filter

    old = current.definition
    unknown = set(given) - SINK_SETTINGS[old.kind]
    if unknown:
        raise click.BadParameter(f"a {old.kind} sink takes no {', '.join(sorted(unknown))}")
    if current.unopened and not all(given.get(name) for name, _ in current.unopened):
        raise click.ClickException(
            "the sink's secrets cannot be opened"
            f" ({'; '.join(f'{n}: {w}' for n, w in current.unopened)}): give them again"
        )
    destination = {**old.destination, **given}
    moved = destination_url(old.kind, destination) != destination_url(old.kind, old.destination)
    kept = [f for f in SECRET_FIELDS[old.kind] if f != "url" and old.destination.get(f)]
    if moved and any(not given.get(f) for f in kept):
        raise click.BadParameter(
            "the URL changes: give its secrets again ("
            + ", ".join(_option_of(f) for f in kept)
            + ")"
        )
    filter_message = _filter(criteria) if any(criteria.values()) else None
    message = _sink_message(
        new_name if new_name is not None else old.name,
        old.kind,
        payload=payload or old.format,
        settings=destination,
        criteria={},
        filter_message=filter_message,
        paused=old.paused if paused is None else paused,
    )
    if filter_message is None:
        message.ClearField("filter")
        json_format.ParseDict(old.filter, message.filter)
    return message, _checked(message, kept_name=old.name)


@sink.command("delete")
@click.argument("name_or_id", metavar="NAME")
@click.option("--confirm", required=True, help="The deployment sink's name, typed again.")
@_data_dir_option
@_database_url_option
def sink_delete(
    name_or_id: str, confirm: str, data_dir: Path | None, database_url: str | None
) -> None:
    """Delete a deployment sink and every tenant's instance of it (each
    deletion recorded in the tenant's log, at severity WARNING). Their
    undelivered events and dead letters go with them."""
    from .config import Settings
    from .store import deployment_sinks as definitions

    config = Settings.load(data_dir=data_dir, database_url=database_url)
    urls = _database_urls(config)

    async def work(tools: _Tools) -> Reconciled:
        async with tools.db.system_connection() as conn:
            current = await _find(conn, name_or_id, tools.box)
        _refuse_if_newer(current)
        if confirm != current.definition.name:
            raise click.BadParameter(
                "must be the deployment sink's name, typed again", param_hint="--confirm"
            )
        async with _definition_locked(tools.db, current.id) as conn:
            _refuse_if_newer(await _find(conn, current.id, tools.box))
            async with _as_owner(urls) as writer:
                # Committed at once: interrupted, the deletion is a server's to finish.
                await definitions.mark_deleting(writer, current.id, changed_by=_operator())
            current = await _find(conn, current.id, tools.box)
            return await tools.managed.reconcile(conn, current)

    done = _run(config, urls, work)
    _report(name_or_id, done)
    if not done.definition_deleted:
        raise click.ClickException(
            f"{name_or_id}: some instances are left; a server's pass removes them, then the"
            " deployment sink"
        )
