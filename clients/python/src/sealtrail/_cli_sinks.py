"""`sealtrail sinks`: forwarding to SIEMs, webhooks and chat channels (admin).
Registers its commands on the main command of _cli.py, whose helpers it shares."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, cast

import click

from sealtrail._choices import SINK_SETTINGS
from sealtrail._cli import (
    _client,
    _filter,
    given_as,
    hinted,
    main,
    terminal_safe,
    unchanged_since_read,
)
from sealtrail._cli_destination_options import (
    _SETTING_NAMES,
    _destination_options,
    _destination_settings,
    _show_secret,
)
from sealtrail._cli_filter_options import _tail_filter_options, _Time, filter_given
from sealtrail._cli_ranges import SeqRangeParam
from sealtrail._sink_names import SINK_HELP, sink_id_of
from sealtrail._typed import given_words
from sealtrail._words import counted, noun

# What the commands work with (gRPC, protobuf, the client) each imports as it
# runs: --help imports none of it (tests/unit/test_cli_startup_imports.py).
if TYPE_CHECKING:
    from sealtrail._client import AuditClient
    from sealtrail.v1 import event_pb2, forwarding_pb2


def _row(sink: forwarding_pb2.Sink, parked: str) -> list[str]:
    state = sink.state
    return [
        sink.id,
        sink.name,
        sink.WhichOneof("destination") or "",
        ("paused" if sink.paused else "on") + (", managed" if sink.managed else ""),
        f"{state.cursor_seq:,}/{state.head_seq:,}",
        f"{state.delivered_events:,}",
        f"{state.dead_letters:,}",
        state.last_error or (parked and f"oldest dead letter: {parked}"),
    ]


def _parked(client: AuditClient, sink: forwarding_pb2.Sink) -> str:
    """Why the sink's oldest waiting dead letter was parked, for the "last
    error" column of a sink with dead letters and no failure holding it: a
    delivery clears the sink's last error, parking sets none, so the column
    stayed empty beside them. One call more a sink (the oldest letter alone,
    however many wait); empty if none waits now (replayed, or the sink
    deleted, since it was listed)."""
    from sealtrail._errors import NotFoundError

    if sink.state.last_error or not sink.state.dead_letters:
        return ""
    try:
        letters = client.list_dead_letters(sink.id, limit=1)
    except NotFoundError:
        return ""
    return letters[0].error if letters else ""


@click.group(invoke_without_command=True)
@click.pass_context
def sinks(ctx: click.Context) -> None:
    """Admin: list (no subcommand, or `list`), create and manage the tenant's sinks.

    A sink listed as "managed" is the deployment operator's: it forwards this
    tenant's events to their destination, and only they change it."""
    if ctx.invoked_subcommand is not None:
        return
    _list_sinks(ctx)


@sinks.command("list")
@click.pass_context
def sinks_list(ctx: click.Context) -> None:
    """List the sinks with their delivery state: cursor and head, events
    delivered, dead letters and the last error (or why the oldest dead
    letter was parked)."""
    _list_sinks(ctx)


def _list_sinks(ctx: click.Context) -> None:
    """The tenant's sinks as a table."""
    from sealtrail._tables import PlainTable, print_table

    with _client(ctx) as client:
        found = [(sink, _parked(client, sink)) for sink in client.list_sinks()]
    table = PlainTable(
        "id", "name", "kind", "state", "cursor/head", "delivered", "dead", "last error"
    )
    for sink, parked in found:
        table.add_row(*_row(sink, parked))
    print_table(table)


@sinks.command("show", epilog=SINK_HELP)
@click.argument("sink_id", metavar="SINK")
@click.pass_context
def show(ctx: click.Context, sink_id: str) -> None:
    """A sink, its delivery state included, as JSON (secrets as hints)."""
    from google.protobuf import json_format

    with _client(ctx) as client:
        sink = client.get_sink(sink_id_of(client, sink_id))
        click.echo(json_format.MessageToJson(sink, indent=2))


# Output only.
_HINTS = (
    "secret_hints",
    "token_hint",
    "api_key_hint",
    "url_hint",
    "routing_key_hint",
    "password_hint",
)


# Said after the server's refusal of a webhook sink created with no secret.
_HOW_TO_GIVE_A_SECRET = "give --secret whsec_... (or @FILE), or --generate-secret"


def _format_given(ctx: click.Context, payload: str) -> None:
    """Names the sink's `format` by --format (and its value, where typed) for a
    refusal of it: the option is `payload` within, after no API field (a chat
    sink refuses OCSF, which said `sink.format`; helper-484)."""
    typed = ctx.get_parameter_source("payload") is click.core.ParameterSource.COMMANDLINE
    given_as(ctx, {"sink.format": given_words("--format", payload) if typed else "--format"})


# Failures after which the call may have applied, its answer lost on the way.
# By their names (grpc.StatusCode's), so that --help imports no gRPC.
_OUTCOME_UNKNOWN = frozenset(
    {"UNAVAILABLE", "DEADLINE_EXCEEDED", "CANCELLED", "UNKNOWN", "INTERNAL"}
)


@contextmanager
def _secret_not_lost(made: str | None) -> Iterator[None]:
    """Shows a generated secret when the call setting it failed without an
    answer: the sink may sign with it, and no one would have it otherwise."""
    from sealtrail._errors import SealtrailError

    try:
        yield
    except SealtrailError as error:
        if made is not None and error.code.name in _OUTCOME_UNKNOWN:
            click.echo(
                "the call went unanswered and may have applied; check with `sealtrail sinks`"
                f" before giving a receiver this signing secret (shown once): {made}",
                err=True,
            )
        raise


@sinks.command("create")
@click.argument("name")
@click.option("--kind", type=click.Choice(list(SINK_SETTINGS)), required=True)
@_destination_options
@click.option(
    "--format", "payload", type=click.Choice(["sealtrail_json", "ocsf"]), default="sealtrail_json"
)
@click.option("--from-beginning", is_flag=True, help="Deliver the whole log, not only what comes.")
@_tail_filter_options
@click.pass_context
def create(
    ctx: click.Context,
    /,
    name: str,
    kind: str,
    payload: str,
    from_beginning: bool,
    generate_secret: bool,
    secrets_: tuple[str, ...],
    **options: Any,
) -> None:
    """Start forwarding matching events to a destination; prints the sink's id."""
    from sealtrail._convert import PayloadFormat, SinkKind, build_sink

    _format_given(ctx, payload)
    settings, made = _destination_settings(options, secrets_, generate_secret)
    if "secrets" not in settings:  # a webhook's is required: said how to give one
        hinted(ctx, {"sink.webhook.secrets": _HOW_TO_GIVE_A_SECRET})
    criteria = {key: value for key, value in options.items() if key not in _SETTING_NAMES}
    try:
        sink = build_sink(
            name,
            cast(SinkKind, kind),
            filter=_filter(criteria),
            format=cast(PayloadFormat, payload),
            **settings,
        )
    except ValueError as error:
        raise click.BadParameter(str(error)) from None
    with _client(ctx) as client, _secret_not_lost(made):
        made_sink = client.create_sink(sink, from_beginning=from_beginning).sink
    _show_secret(made)
    # On stderr: stdout is the id alone, for `SINK=$(sealtrail sinks create ...)`.
    cursor = made_sink.state.cursor_seq
    click.echo(
        f"delivers the events after seq {cursor}: the whole log"
        if cursor == 0
        else f"delivers the events after seq {cursor} (the first, seq {cursor + 1},"
        " records its creation)",
        err=True,
    )
    click.echo(terminal_safe(made_sink.id))


@sinks.command("update", epilog=SINK_HELP)
@click.argument("sink_id", metavar="SINK")
@click.option("--name", help="A new name.")
@_destination_options
@click.option("--format", "payload", type=click.Choice(["sealtrail_json", "ocsf"]))
@click.option(
    "--etag",
    default="",
    help="Change the sink only if it is still as `sealtrail sinks show` showed it with this"
    " etag; if it changed since, nothing is changed and the command fails (ABORTED).",
)
@_tail_filter_options
@click.pass_context
def update(
    ctx: click.Context,
    /,
    sink_id: str,
    name: str | None,
    payload: str | None,
    etag: str,
    generate_secret: bool,
    secrets_: tuple[str, ...],
    **options: Any,
) -> None:
    """Change a sink in place, keeping its cursor: only what is given changes.

    Filter options replace the whole filter. Destination options change those
    settings of the current destination; the others, secrets included, stay.
    To rotate a webhook's secret, give the current one and the new one
    (--secret OLD --generate-secret), then, once receivers verify with the
    new one, the new one alone.

    Prints the seq after which a new filter, format or destination setting
    applies (the sink's cursor at the change); `replay --seq` sends the events
    up to it under the new settings. A new secret or token alone is said
    with no replay: those events were sent already."""
    from google.protobuf import json_format

    from sealtrail._convert import payload_format_value
    from sealtrail.v1 import forwarding_pb2

    if payload is not None:
        _format_given(ctx, payload)
    settings, made = _destination_settings(options, secrets_, generate_secret)
    criteria = {key: value for key, value in options.items() if key not in _SETTING_NAMES}
    sink = forwarding_pb2.Sink(etag=etag)
    fields = []
    changed_settings: list[str] = []
    if name is not None:
        sink.name = name
        fields.append("name")
    if payload is not None:
        sink.format = payload_format_value(payload)
        fields.append("format")
    if filter_given(criteria):
        sink.filter.CopyFrom(_filter(criteria))
        fields.append("filter")
    with _client(ctx) as client:
        sink_id = sink.id = sink_id_of(client, sink_id)
        if settings:
            current = client.get_sink(sink_id)
            kind = current.WhichOneof("destination")
            assert kind is not None  # every sink has one
            unknown = set(settings) - SINK_SETTINGS[kind]
            if unknown:
                raise click.BadParameter(
                    f"a {kind} sink takes no {', '.join(sorted(unknown))}", ctx
                )
            # Changed only if it is still the sink just read (or the one the
            # given etag was read with): a change made meanwhile is not
            # overwritten with what this read held.
            sink.etag = etag or current.etag
            destination = getattr(sink, kind)
            destination.CopyFrom(getattr(current, kind))
            for hint in _HINTS:
                if hint in destination.DESCRIPTOR.fields_by_name:
                    destination.ClearField(hint)
            json_format.ParseDict(settings, destination)
            fields.append(kind)
            # A setting given as it was changes nothing (a secret, write
            # only, reads empty: given, it counts as changed).
            was = getattr(current, kind)
            changed_settings = [
                key for key in settings if getattr(destination, key) != getattr(was, key)
            ]
        if not fields:
            raise click.UsageError("nothing to change: give a name, format, filter or setting", ctx)
        read_with = "sealtrail sinks show" if etag else None
        with unchanged_since_read(sink_id, read_with=read_with), _secret_not_lost(made):
            answer = client.update_sink(sink, fields=fields)
    _show_secret(made)
    if not answer.event_id:  # the sink had these settings: nothing changed, nothing recorded
        click.echo(f"{sink_id} unchanged: it has these settings already")
        return
    click.echo(f"{sink_id} updated")
    sent = [word for field, word in _SENT_BY.items() if field in fields]
    sent += [_SENT_BY[key] for key in changed_settings if key in _SENT_BY]
    credentials = [key for key in changed_settings if key not in _SENT_BY]
    secrets_set = len(sink.webhook.secrets) if "secrets" in credentials else 0
    if sent or credentials:
        click.echo(
            _takes_effect(
                sink_id,
                sent=sent,
                credentials=[_CREDENTIALS[key] for key in credentials if key != "secrets"],
                secrets_set=secrets_set,
                cursor=answer.sink.state.cursor_seq,
            )
        )


# The settings of what is sent, where or how, as `_takes_effect` names them (a
# rename changes none of it): the filter, the format and the destination's
# settings but its credentials, by the API's field names.
_SENT_BY = {
    "filter": "filter",
    "format": "format",
    "url": "URL",
    "index": "index",
    "source": "source",
    "sourcetype": "sourcetype",
    "service": "service",
    "tags": "tags",
    "host": "SMTP host",
    "port": "SMTP port",
    "security": "SMTP security",
    "from_address": "sender",
    "to_addresses": "recipients",
}
# The credentials the destination is sent with (a webhook's secrets, counted,
# are said apart): a new one changes nothing of what is sent, nor where.
_CREDENTIALS = {
    "token": "token",
    "api_key": "API key",
    "routing_key": "routing key",
    "username": "SMTP username",
    "password": "SMTP password",
}


def _and(words: list[str]) -> str:
    """`a`, `a and b`, `a, b and c`."""
    return words[0] if len(words) == 1 else f"{', '.join(words[:-1])} and {words[-1]}"


def _takes_effect(
    sink_id: str, *, sent: list[str], credentials: list[str], secrets_set: int, cursor: int
) -> str:
    """Where a change takes effect: after the sink's cursor at the change (its
    `sink.updated` record's `from_seq` is the seq after it). The events up to
    it went by the old filter, format and destination settings (`sent`), or
    not at all: a replay sends them under the new ones. A new secret or token
    alone (a webhook's `secrets_set`, `credentials`) is offered no replay: a
    receiver took those events already (one that refused the old credential
    held the sink: they wait past its cursor), and a replay would only send
    them again, signed or sent anew."""
    how = []
    if secrets_set:
        how.append(
            "signed with the sink's one secret"
            if secrets_set == 1
            else f"signed with each of the sink's {secrets_set} secrets"
        )
    if credentials:
        how.append(f"with the new {_and(credentials)}")
    if sent:
        line = f"events after seq {cursor} are sent under the new {_and(sent)}"
        line += f", {' and '.join(how)}" if how else ""
        if cursor == 0:
            return line
        replay = f"sealtrail sinks replay {sink_id} --seq FIRST-{cursor}"
        return f"{line}; `{replay}` sends earlier ones under {'them' if len(sent) > 1 else 'it'}"
    said = " and ".join(how)
    line = f"events after seq {cursor} are {said if secrets_set else 'sent ' + said}"
    if cursor == 0:
        return line
    return f"{line}; those up to it were sent already (a replay would only send them again)"


def _set_paused(ctx: click.Context, sink_id: str, paused: bool) -> None:
    """Pauses or resumes the sink and says where it stands, from the answer's
    state: read once the change held the sink's row, so a paused sink's
    cursor stays where it is said to be. What waits is the log's events past
    the cursor (head_seq - cursor_seq, no count of the filter's matches),
    those the filter takes to be sent."""
    from sealtrail.v1 import forwarding_pb2

    with _client(ctx) as client:
        sink_id = sink_id_of(client, sink_id)
        answer = client.update_sink(
            forwarding_pb2.Sink(id=sink_id, paused=paused), fields=["paused"]
        )
    state = answer.sink.state
    cursor, head = state.cursor_seq, state.head_seq
    waiting = max(0, head - cursor)
    if not answer.event_id:  # nothing changed, nothing recorded
        click.echo(f"{sink_id} was {'paused' if paused else 'delivering'} already")
    else:
        click.echo(f"{sink_id} {'paused' if paused else 'resumed'}")
    replays = (
        f"; {counted(state.pending_replays, 'replay')} pending too" if state.pending_replays else ""
    )
    if paused and waiting:
        click.echo(
            f"delivered up to seq {cursor}; waiting after it: {counted(waiting, 'event')}"
            f" (to seq {head}), those its filter takes sent on `sealtrail sinks resume"
            f" {sink_id}`{replays}"
        )
    elif paused:
        click.echo(f"delivered up to seq {cursor}, the log's last{replays}")
    elif waiting:
        click.echo(
            f"delivering from seq {cursor + 1}; waiting: {counted(waiting, 'event')}"
            f" (to seq {head}), those its filter takes to be sent{replays}"
        )
    else:
        click.echo(f"nothing waits: delivered up to seq {cursor}, the log's last{replays}")


@sinks.command("pause", epilog=SINK_HELP)
@click.argument("sink_id", metavar="SINK")
@click.pass_context
def pause(ctx: click.Context, sink_id: str) -> None:
    """Stop delivering; the cursor waits where it is."""
    _set_paused(ctx, sink_id, True)


@sinks.command("resume", epilog=SINK_HELP)
@click.argument("sink_id", metavar="SINK")
@click.pass_context
def resume(ctx: click.Context, sink_id: str) -> None:
    """Deliver again from where the sink stopped, at once."""
    _set_paused(ctx, sink_id, False)


@sinks.command("delete", epilog=SINK_HELP)
@click.argument("sink_id", metavar="SINK")
@click.option(
    "--etag",
    default="",
    help="Delete the sink only if it is still as `sealtrail sinks show` showed it with this"
    " etag; if it changed since, nothing is deleted and the command fails (ABORTED).",
)
@click.pass_context
def delete(ctx: click.Context, sink_id: str, etag: str) -> None:
    """Stop and delete a sink, with its dead letters; says what it never
    delivered, as its `sink.deleted` record keeps it."""
    from sealtrail._errors import SealtrailError

    with _client(ctx) as client:
        sink_id = sink_id_of(client, sink_id)
        with unchanged_since_read(sink_id, read_with="sealtrail sinks show"):
            answer = client.delete_sink(sink_id, etag=etag)
        click.echo(f"{sink_id} deleted")
        try:
            record = client.get_event(answer.event_id)
        except SealtrailError as error:  # deleted all the same
            click.echo(f"(its last state is unread: {error.code.name})", err=True)
            return
    click.echo(_undelivered(record))


def _undelivered(record: event_pb2.Event) -> str:
    """What a deleted sink never delivered, from its `sink.deleted` record:
    the log's events after its cursor, before the record, and its dead
    letters."""
    from google.protobuf import json_format

    details = json_format.MessageToDict(record.details)
    cursor = int(details.get("cursor_seq", 0))
    letters = int(details.get("dead_letters", 0))
    after = max(0, record.seq - 1 - cursor)
    if not after and not letters:
        return f"it had delivered every event, up to seq {cursor}"
    between = f" (to seq {record.seq - 1})" if after else ""
    return (
        f"it had delivered up to seq {cursor}; the {counted(after, 'event')} after it{between}"
        f" and {counted(letters, 'dead letter')} go undelivered"
    )


@sinks.command("dead-letters", epilog=SINK_HELP)
@click.argument("sink_id", metavar="SINK")
@click.pass_context
def dead_letters(ctx: click.Context, sink_id: str) -> None:
    """Every dead letter of the sink, oldest first: the events the destination refused for
    good (replay them with `replay --dead-letter`)."""
    from sealtrail._tables import PlainTable, print_table

    with _client(ctx) as client:
        letters = client.list_dead_letters(sink_id_of(client, sink_id))
    table = PlainTable("id", "seq", "events", "HTTP", "error", "at")
    for letter in letters:
        table.add_row(
            letter.id,
            _seq_range(letter.first_seq, letter.last_seq),
            str(letter.event_count),
            str(letter.http_status),
            letter.error,
            letter.create_time.ToJsonString(),
        )
    print_table(table)


@sinks.command("replay", epilog=SINK_HELP)
@click.argument("sink_id", metavar="SINK")
@click.option(
    "--seq", "seq_range", type=SeqRangeParam(), help="A seq range, FIRST-LAST, both ends included."
)
@click.option(
    "--since", "start", type=_Time(), help="Events that occurred since this time (e.g. 1h) ..."
)
@click.option("--until", "end", type=_Time(), help="... and before this one (default: now).")
@click.option("--dead-letter", default="", help="A dead letter's id.")
@click.pass_context
def replay(
    ctx: click.Context,
    sink_id: str,
    seq_range: tuple[int, int] | None,
    start: datetime | None,
    end: datetime | None,
    dead_letter: str,
) -> None:
    """Send a seq range, a time window or a dead letter's events to the sink again."""
    from sealtrail._errors import SealtrailError

    if end is not None and start is None:
        raise click.UsageError("--until goes with --since")
    if start is not None and end is None:
        end = datetime.now(UTC)
    window = (start, end) if start is not None and end is not None else None
    # Said here in the options' terms: the client's refusal names its own
    # parameters (seq_range, window, dead_letter_id), which no option is called.
    if (seq_range is not None) + (window is not None) + bool(dead_letter) != 1:
        raise click.UsageError("give exactly one of --seq, --since and --dead-letter", ctx)
    with _client(ctx) as client:
        sink_id = sink_id_of(client, sink_id)
        answer = client.replay_sink(
            sink_id, seq_range=seq_range, window=window, dead_letter_id=dead_letter
        )
        for line in _replayed(answer, seq_range, by_window=window is not None):
            click.echo(line)
        try:
            record = client.get_event(answer.event_id) if answer.event_id else None
            stored = client.get_sink(sink_id)
        except SealtrailError as error:  # requested all the same
            click.echo(f"(what it leaves out is unread: {error.code.name})", err=True)
            return
    for line in _left_out(answer, record, stored, by_window=window is not None):
        click.echo(line)


def _left_out(
    answer: forwarding_pb2.ReplaySinkResponse,
    record: event_pb2.Event | None,
    sink: forwarding_pb2.Sink,
    *,
    by_window: bool,
) -> list[str]:
    """What else a replay's sending depends on: the events of its range a
    retention rule removed (its `sink.replay_requested` record counts them;
    not a window's, whose range holds events outside it), the replays
    pending beside it (asked again, its events go out again) and a pause."""
    from google.protobuf import json_format

    lines = []
    if record is not None and not by_window:
        removed = int(json_format.MessageToDict(record.details).get("removed_events", 0))
        if removed:
            size = answer.seq_range.last_seq - answer.seq_range.first_seq + 1
            lines.append(
                f"  {removed} of its {counted(size, 'event')} removed by retention: not sent"
            )
    if (pending := sink.state.pending_replays) > 1:
        lines.append(f"  the sink has {pending} replays pending: each sends its events")
    if sink.paused:
        lines.append(
            f"  the sink is paused: sent once resumed (`sealtrail sinks resume {sink.id}`)"
        )
    return lines


def _replayed(
    answer: forwarding_pb2.ReplaySinkResponse,
    asked: tuple[int, int] | None,
    *,
    by_window: bool,
) -> list[str]:
    """What a replay sends, and why it is less than `asked` (a --seq range):
    the events retention removed, those after the sink's cursor (its own to
    deliver), those past the log's end. A server of an earlier release says
    no range (`seq_range` unset): only the request's id then."""
    said = f"replay {terminal_safe(answer.replay_id)} requested"
    if not answer.HasField("seq_range"):
        return [said]
    first, last = answer.seq_range.first_seq, answer.seq_range.last_seq
    cursor, head = answer.cursor_seq, answer.head_seq
    if by_window:
        if last < first:
            return [f"{said}: no event occurred in the window"]
        # Cut by the cursor only if the window's own last event lies past it:
        # the range taken ends at the cursor also where that event is at it.
        window_last = answer.window_last_seq
        events = f"the window's {noun(last - first + 1, 'event')}"
        if window_last <= last:
            return [f"{said}: {_seqs(first, last)}, {events}"]
        return [
            f"{said}: {_seqs(first, last)}, {events} up to the sink's cursor",
            f"  the window's {noun(window_last - last, 'event')} in"
            f" {_after_the_cursor(last + 1, window_last, cursor)}",
        ]
    if asked is None or asked == (first, last):
        return [f"{said}: {_seqs(first, last)}"]
    asked_first, asked_last = asked
    lines = [f"{said}: {_seqs(first, last)}, not {asked_first}-{asked_last} as asked"]
    if asked_first < first:
        lines.append(
            f"  {_seqs(asked_first, first - 1)}: removed by retention"
            f" (the first event it kept is seq {answer.first_kept_seq})"
        )
    if asked_last > last and cursor < head:
        lines.append(f"  {_after_the_cursor(last + 1, min(asked_last, head), cursor)}")
    if asked_last > head:
        lines.append(f"  {_seqs(head + 1, asked_last)}: past the log's end (seq {head})")
    return lines


def _seqs(first: int, last: int) -> str:
    return f"seq {_seq_range(first, last)}"


def _seq_range(first: int, last: int) -> str:
    """A range of seqs as the CLI says it: `5` for one event (not `5-5`), `5-9` for more."""
    return str(first) if first == last else f"{first}-{last}"


def _after_the_cursor(first: int, last: int, cursor: int) -> str:
    """Seq `first` to `last`, past the sink's `cursor`, which the sink sends
    whatever the replay: `seq 8: ... sends it anyway` of one event."""
    return (
        f"{_seqs(first, last)}: after the sink's cursor (seq {cursor}),"
        f" which sends {noun(last - first + 1, 'it', 'them')} anyway"
    )


# On the main command as this module loads, whether _cli imported it (as it
# imports each) or it was imported first (tests/unit/test_cli_modules_import_alone.py).
main.add_command(sinks)
