"""`sealtrail sinks` says where a sink stands after each command: the range a
replay actually took and why it is not the one asked for, the seq a pause
stopped at, what a resume has to send, where a new sink starts and what a
deleted one never delivered; and each failure exits as the README says (2:
NOT_FOUND, PERMISSION_DENIED; 1: UNAVAILABLE). Run in process against a real
server and PostgreSQL."""

from __future__ import annotations

import contextlib
import json
import socket
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import grpc
import psycopg
import pytest
from click.testing import CliRunner, Result

from sealtrail import (
    AuditClient,
    InvalidArgumentError,
    RpcFailedError,
    build_event,
    build_filter,
    build_sink,
)
from sealtrail import _cli as client_cli
from sealtrail.v1 import forwarding_pb2
from tests.clock import Clock
from tests.conftest import ServerThread
from tests.http_endpoint import Received, Reply, endpoint
from tests.integration.test_forwarding import delivered_seqs
from tests.integration.test_retention import _removed_by_hand, aged_server, purge
from tests.sink_states import a_poisoned_event_parked

SECRET = "whsec_" + "A" * 43 + "="


def _cli(server: ServerThread, tenant: str, role: str = "admin") -> Callable[..., Result]:
    env = {"SEALTRAIL_SERVER": server.target, "SEALTRAIL_TOKEN": server.token(tenant, role)}

    def invoke(*args: str) -> Result:
        return CliRunner().invoke(client_cli.main, ["sinks", *args], env=env)

    return invoke


def _replays_described(server: ServerThread, tenant: str) -> list[str]:
    """The descriptions of the tenant's `sink.replay_requested` records, oldest
    first, as `sealtrail query --format jsonl` prints them."""
    env = {"SEALTRAIL_SERVER": server.target, "SEALTRAIL_TOKEN": server.token(tenant)}
    args = ["query", "--action", "sink.replay_requested", "--order", "oldest", "--format", "jsonl"]
    said = CliRunner().invoke(client_cli.main, args, env=env)
    assert said.exit_code == 0, said.output
    return [json.loads(line)["description"] for line in said.output.splitlines()]


@pytest.fixture(scope="module")
def clock() -> Clock:
    return Clock()


@pytest.fixture(scope="module")
def aged(migrated_database_url: str, clock: Clock) -> Iterator[ServerThread]:
    with aged_server(migrated_database_url, clock, batch_events=1000) as server:
        yield server


def test_replay_says_the_range_it_took_and_why_it_is_not_the_one_asked_for(
    aged: ServerThread, clock: Clock, tenant: str
) -> None:
    """`replay --seq` cut the range at the sink's cursor, and sent nothing of
    what retention had removed, while saying only "replay ... requested"."""
    sinks = _cli(aged, tenant)
    with AuditClient(aged.target, token=aged.token(tenant)) as client, endpoint() as receiver:
        for n in range(4):
            client.record(build_event(action="user.login", actor_id=f"old-{n}"))
        clock.advance(11)
        kept = client.record(build_event(action="user.login", actor_id="new")).event.seq
        client.set_retention_policy(10)
        purge(aged)
        assert kept == 5
        # Paused: the cursor stays where the sink was made as events come.
        made = build_sink("siem", "webhook", url=receiver.url, secrets=[SECRET], paused=True)
        sink = client.create_sink(made).sink
        for n in range(2):
            client.record(build_event(action="user.login", actor_id=f"later-{n}"))
        state = client.get_sink(sink.id).state
        cursor, head = state.cursor_seq, state.head_seq
        assert kept < cursor < head

        asked_last = head + 10
        cut = sinks("replay", sink.id, "--seq", f"1-{asked_last}")
        assert cut.exit_code == 0, cut.output
        first_line, *why = cut.output.splitlines()
        assert first_line.startswith("replay ")
        assert first_line.endswith(f" requested: seq 5-{cursor}, not 1-{asked_last} as asked")
        assert why == [
            "  seq 1-4: removed by retention (the first event it kept is seq 5)",
            f"  seq {cursor + 1}-{head}: after the sink's cursor (seq {cursor}),"
            " which sends them anyway",
            f"  seq {head + 1}-{asked_last}: past the log's end (seq {head})",
            f"  the sink is paused: sent once resumed (`sealtrail sinks resume {sink.id}`)",
        ]
        [recorded] = client.query(build_filter(actions="sink.replay_requested"))
        assert (recorded.details["first_seq"], recorded.details["last_seq"]) == (5, cursor)
        assert _replays_described(aged, tenant) == [f"Replay of seq 5-{cursor} to sink 'siem'"]

        whole = sinks("replay", sink.id, "--seq", f"5-{cursor}")
        assert whole.exit_code == 0, whole.output
        assert whole.output.splitlines()[0].endswith(f" requested: seq 5-{cursor}")

        # Nothing of it kept: refused, not a replay of nothing.
        removed = sinks("replay", sink.id, "--seq", "2-4")
        assert removed.exit_code == 2, removed.output
        assert "INVALID_ARGUMENT" in removed.output
        assert "--seq: must be at least 5, the first seq retention kept" in removed.output
        client.delete_sink(sink.id)


def test_a_range_retention_emptied_up_to_past_the_cursor_is_refused_naming_seq_range(
    aged: ServerThread, clock: Clock, tenant: str
) -> None:
    """Retention removed the events up to beyond the sink's cursor: the range
    taken, from the first kept seq to the cursor, ran backwards, and its row
    broke sink_replays' CHECK (last_seq >= first_seq - 1): INTERNAL."""
    with AuditClient(aged.target, token=aged.token(tenant)) as client, endpoint() as receiver:
        for n in range(2):
            client.record(build_event(action="user.login", actor_id=f"old-{n}"))
        made = build_sink("siem", "webhook", url=receiver.url, secrets=[SECRET], paused=True)
        sink = client.create_sink(made).sink
        for n in range(2):
            client.record(build_event(action="user.login", actor_id=f"later-{n}"))
        clock.advance(11)
        kept = client.record(build_event(action="user.login", actor_id="new")).event.seq
        client.set_retention_policy(10)
        purge(aged)
        cursor = client.get_sink(sink.id).state.cursor_seq
        assert kept > cursor + 1  # an empty range (first = last + 1) is no break of the CHECK

        with pytest.raises(InvalidArgumentError) as refused:
            client.replay_sink(sink.id, seq_range=(1, kept))
        assert refused.value.field_violations == [
            ("seq_range", f"retention kept no event up to seq {cursor}, the sink's cursor:"
                          " none to replay"),
        ]  # fmt: skip
        assert not list(client.query(build_filter(actions="sink.replay_requested")))
        client.delete_sink(sink.id)


def test_replay_says_how_many_events_of_its_range_a_rule_removed(
    aged: ServerThread, clock: Clock, tenant: str
) -> None:
    """A rule for some actions removed events in the middle of the range: the
    replay said it sent seq 1-N, those gone with it."""
    sinks = _cli(aged, tenant)
    with AuditClient(aged.target, token=aged.token(tenant)) as client, endpoint() as receiver:
        seqs = [
            client.record(build_event(action=action, actor_id=f"u-{n}")).event.seq
            for n, action in enumerate(["user.login", "debug.trace", "debug.trace", "user.login"])
        ]
        clock.advance(11)
        client.set_retention_policy(action_prefixes={"debug.*": 10})
        purge(aged)
        made = build_sink("siem", "webhook", url=receiver.url, secrets=[SECRET], paused=True)
        sink = client.create_sink(made).sink

        said = sinks("replay", sink.id, "--seq", f"{seqs[0]}-{seqs[-1]}")
        assert said.exit_code == 0, said.output
        assert said.output.splitlines()[1:] == [
            "  2 of its 4 events removed by retention: not sent",
            f"  the sink is paused: sent once resumed (`sealtrail sinks resume {sink.id}`)",
        ]
        [recorded] = client.query(build_filter(actions="sink.replay_requested"))
        assert recorded.details["removed_events"] == 2
        assert recorded.description.endswith("(2 of them removed by retention)")

        # Asked again (an answer lost, say): its events go out twice, and it says so.
        again = sinks("replay", sink.id, "--seq", f"{seqs[0]}-{seqs[-1]}")
        assert again.exit_code == 0, again.output
        assert again.output.splitlines()[2] == (
            "  the sink has 2 replays pending: each sends its events"
        )
        client.delete_sink(sink.id)


def test_a_replay_never_records_an_event_removed_by_hand_as_removed_by_retention(
    aged: ServerThread, clock: Clock, tenant: str, migrated_database_url: str
) -> None:
    """A superuser deleted an event between two a rule removed, its leaf
    kept: the replay recorded "(3 of them removed by retention)" of its
    range. Retention's records say it removed 2 there: the replay is
    refused, DATA_LOSS, and nothing recorded. So is one whose start a
    superuser deleted (said "removed by retention (the first event it kept
    is ...)")."""
    with AuditClient(aged.target, token=aged.token(tenant)) as client, endpoint() as receiver:
        seqs = [
            client.record(build_event(action=action, actor_id=f"u-{n}")).event.seq
            for n, action in enumerate(
                ["user.login", "debug.trace", "user.login", "debug.trace", "user.login"]
            )
        ]
        clock.advance(11)
        client.set_retention_policy(action_prefixes={"debug.*": 10})
        purge(aged)
        made = build_sink("siem", "webhook", url=receiver.url, secrets=[SECRET], paused=True)
        sink = client.create_sink(made).sink
        with _removed_by_hand(migrated_database_url, tenant, seqs[2]):
            with pytest.raises(RpcFailedError) as refused:
                client.replay_sink(sink.id, seq_range=(seqs[0], seqs[-1]))
            assert (refused.value.code, refused.value.reason) == (
                grpc.StatusCode.DATA_LOSS,
                "INTEGRITY_FAILURE",
            )
            assert "account for 2 of the 3 removed events" in refused.value.message
        # Nor is the range's start, before the first event kept, said removed by retention.
        with _removed_by_hand(migrated_database_url, tenant, seqs[0]):
            with pytest.raises(RpcFailedError) as refused:
                client.replay_sink(sink.id, seq_range=(seqs[0], seqs[-1]))
            assert refused.value.code == grpc.StatusCode.DATA_LOSS
            assert f"seq {seqs[0]} is missing" in refused.value.message
        assert not list(client.query(build_filter(actions="sink.replay_requested")))
        client.replay_sink(sink.id, seq_range=(seqs[0], seqs[-1]))  # put back: retention's
        [recorded] = client.query(build_filter(actions="sink.replay_requested"))
        assert recorded.description.endswith("(2 of them removed by retention)")
        client.delete_sink(sink.id)


def test_replay_since_says_the_cursor_cut_the_window_only_where_it_did(
    aged: ServerThread, clock: Clock, tenant: str
) -> None:
    """The window's last event at the sink's cursor was said to be cut by it
    (the answer's range ended at the cursor either way)."""
    sinks = _cli(aged, tenant)
    with AuditClient(aged.target, token=aged.token(tenant)) as client, endpoint() as receiver:
        start = clock()
        # Each at the server's clock: the client's own is the real time.
        seqs = [client.record(build_event(action="user.login", actor_id=f"u-{n}",
                                          occurred_at=clock())).event.seq
                for n in range(2)]  # fmt: skip
        clock.advance(seconds=60)
        between = clock()
        made = build_sink("siem", "webhook", url=receiver.url, secrets=[SECRET], paused=True)
        sink = client.create_sink(made).sink
        cursor = client.get_sink(sink.id).state.cursor_seq
        later = client.record(
            build_event(action="user.login", actor_id="later", occurred_at=clock())
        ).event.seq
        clock.advance(seconds=60)
        assert cursor == seqs[-1] < later

        own = sinks("replay", sink.id, "--since", start.isoformat(), "--until", between.isoformat())
        assert own.exit_code == 0, own.output
        assert own.output.splitlines()[0].endswith(
            f" requested: seq {seqs[0]}-{cursor}, the window's events"
        ), own.output

        cut = sinks("replay", sink.id, "--since", start.isoformat(), "--until", clock().isoformat())
        assert cut.exit_code == 0, cut.output
        assert cut.output.splitlines()[:2] == [
            cut.output.splitlines()[0].split(":")[0]
            + f": seq {seqs[0]}-{cursor}, the window's events up to the sink's cursor",
            f"  the window's events in seq {cursor + 1}-{later}: after the sink's cursor"
            f" (seq {cursor}), which sends them anyway",
        ]
        client.delete_sink(sink.id)


def test_replay_of_one_event_says_it_as_one(
    server: ServerThread, client: AuditClient, tenant: str
) -> None:
    """A range of one seq was said `seq 7-7`, and the one event after the
    sink's cursor one "which sends them anyway"; a window's, "the window's
    events in seq 8". The creation's record is the one event after the cursor."""
    sinks = _cli(server, tenant)
    with endpoint() as receiver:
        since = datetime.now(UTC)
        seq = client.record(build_event(action="user.login", actor_id="u")).event.seq
        made = build_sink("siem", "webhook", url=receiver.url, secrets=[SECRET], paused=True)
        sink = client.create_sink(made).sink
        until = datetime.now(UTC)  # after the creation's record, before the replays'
        assert client.get_sink(sink.id).state.cursor_seq == seq

        window = sinks(
            "replay", sink.id, "--since", since.isoformat(), "--until", until.isoformat()
        )
        assert window.exit_code == 0, window.output
        said = window.output.splitlines()[0].split(":")[0]
        assert window.output.splitlines()[:2] == [
            f"{said}: seq {seq}, the window's event up to the sink's cursor",
            f"  the window's event in seq {seq + 1}: after the sink's cursor (seq {seq}),"
            " which sends it anyway",
        ]

        one = sinks("replay", sink.id, "--seq", f"{seq}-{seq + 1}")
        assert one.exit_code == 0, one.output
        first, why = one.output.splitlines()[:2]
        assert first.endswith(f" requested: seq {seq}, not {seq}-{seq + 1} as asked"), first
        assert why == (
            f"  seq {seq + 1}: after the sink's cursor (seq {seq}), which sends it anyway"
        )
        exact = sinks("replay", sink.id, "--seq", f"{seq}-{seq}")
        assert exact.output.splitlines()[0].endswith(f" requested: seq {seq}"), exact.output
        # A window that holds no event: its range empty, one seq before its first.
        empty = sinks(
            "replay", sink.id, "--since", "2001-01-01T00:00:00Z", "--until", "2001-01-02T00:00:00Z"
        )
        assert empty.output.splitlines()[0].endswith(": no event occurred in the window")
        # Each replay's record says its range as the command did: seq 7, not seq 7-7.
        assert _replays_described(server, tenant) == [
            *[f"Replay of seq {seq} to sink 'siem'"] * 3,
            "Replay of no event to sink 'siem'",
        ]
        client.delete_sink(sink.id)


def test_dead_letters_says_one_events_seq_as_one(
    server: ServerThread, client: AuditClient, tenant: str, sql: psycopg.Connection[Any]
) -> None:
    """The table said a dead letter of one event `7-7`: it says `7`, and
    `7-9` for a letter of more (as a release before the forwarder halved a
    refused request parked the whole of it)."""
    sinks = _cli(server, tenant)

    def refuse_the_poisoned(received: Received, index: int) -> Reply:
        return Reply(400, b"bad payload") if b"poisoned" in received.body else Reply()

    with endpoint() as receiver:
        receiver.responder = refuse_the_poisoned
        made = build_sink("siem", "webhook", url=receiver.url, secrets=[SECRET])
        sink = client.create_sink(made).sink
        parked = a_poisoned_event_parked(
            client,
            sink.id,
            delivered=lambda after: receiver.wait_for(lambda r: after in delivered_seqs(r)),
            status=400,
        )
        first = parked.after + 1
        sql.execute(
            "INSERT INTO sink_dead_letters (tenant_id, sink_id, id, first_seq, last_seq,"
            " event_count, http_status, error, created_at)"
            " VALUES (%s, %s, gen_random_uuid(), %s, %s, 3, 400, 'bad batch', now())",
            [tenant, sink.id, first, first + 2],
        )
        listed = sinks("dead-letters", sink.id)
        assert listed.exit_code == 0, listed.output
        # id, seq, events of each row (the header's are ruled by another line)
        rows = [
            [cell.strip() for cell in line.split("\u2502")[1:4]]
            for line in listed.output.splitlines()
            if "\u2502" in line
        ]
        assert [row[1:] for row in rows] == [
            [str(parked.poisoned), "1"],
            [f"{first}-{first + 2}", "3"],
        ]
        assert rows[0][0] == parked.letter.id
        client.delete_sink(sink.id)


def test_the_sinks_table_says_why_events_were_dead_lettered(
    server: ServerThread, client: AuditClient, tenant: str
) -> None:
    """The "last error" column stayed empty once an event was parked: a
    delivery clears the sink's last error, and a dead letter sets none, so
    only the "dead" count showed it. While no failure holds the sink, the
    column says its oldest waiting dead letter's reason."""
    sinks = _cli(server, tenant)

    def refuse_the_poisoned(received: Received, index: int) -> Reply:
        return Reply(422, b"no such field") if b"poisoned" in received.body else Reply()

    with endpoint() as receiver:
        receiver.responder = refuse_the_poisoned
        made = build_sink("siem", "webhook", url=receiver.url, secrets=[SECRET])
        sink = client.create_sink(made).sink
        quiet = client.create_sink(build_sink("quiet", "webhook", url=receiver.url,
                                              secrets=[SECRET], paused=True)).sink  # fmt: skip
        parked = a_poisoned_event_parked(
            client,
            sink.id,
            delivered=lambda after: receiver.wait_for(lambda r: after in delivered_seqs(r)),
            status=422,
        )
        assert parked.state.last_error == "" and parked.letter.error
        listed = sinks()
        assert listed.exit_code == 0, listed.output
        # Each row's last cell: the "last error" column.
        last = {
            cells[2].strip(): cells[-2].strip()
            for line in listed.stdout.splitlines()
            if len(cells := line.split("\u2502")) > 2
        }
        assert last["siem"] == f"oldest dead letter: {parked.letter.error}"
        assert last["quiet"] == ""
        # Read as the column reads it: the oldest letter alone, in one call.
        assert client.list_dead_letters(sink.id, limit=1) == [parked.letter]
        with pytest.raises(ValueError, match="limit: must be 1 to 1000"):
            client.list_dead_letters(sink.id, limit=0)
        client.delete_sink(sink.id)
        client.delete_sink(quiet.id)


def test_pause_and_resume_say_where_the_sink_stands(
    server: ServerThread, client: AuditClient, tenant: str
) -> None:
    sinks = _cli(server, tenant)
    with endpoint() as receiver:
        made = build_sink("siem", "webhook", url=receiver.url, secrets=[SECRET],
                          filter=build_filter(actions="document.*"))  # fmt: skip
        sink = client.create_sink(made).sink
        for n in range(3):
            client.record(build_event(action="member.invite", actor_id=f"u-{n}"))

        paused = sinks("pause", sink.id)
        assert paused.exit_code == 0, paused.output
        # Paused, no batch moves the cursor any more: the one said is where it stays.
        state = client.get_sink(sink.id).state
        cursor = state.cursor_seq
        assert paused.output.splitlines()[0] == f"{sink.id} paused"
        waiting = state.head_seq - cursor  # the pause's own record among them
        events = f"{waiting} event" + ("s" if waiting != 1 else "")
        assert paused.output.splitlines()[1] == (
            f"delivered up to seq {cursor}; waiting after it: {events}"
            f" (to seq {state.head_seq}), those its filter takes sent on"
            f" `sealtrail sinks resume {sink.id}`"
        )
        again = sinks("pause", sink.id)
        assert again.output.splitlines()[0] == f"{sink.id} was paused already", again.output

        for n in range(2):
            client.record(build_event(action="member.invite", actor_id=f"v-{n}"))
        head = client.get_sink(sink.id).state.head_seq + 1  # the resume's record
        resumed = sinks("resume", sink.id)
        assert resumed.exit_code == 0, resumed.output
        assert resumed.output == (
            f"{sink.id} resumed\n"
            f"delivering from seq {cursor + 1}; waiting: {head - cursor} events"
            f" (to seq {head}), those its filter takes to be sent\n"
        )
        client.delete_sink(sink.id)


def test_create_says_where_the_sink_starts_and_delete_what_it_never_delivered(
    server: ServerThread, client: AuditClient, tenant: str
) -> None:
    sinks = _cli(server, tenant)
    for n in range(3):
        head = client.record(build_event(action="member.invite", actor_id=f"u-{n}")).event.seq
    with endpoint() as receiver:
        created = sinks("create", "siem", "--kind", "webhook", "--url", receiver.url,
                        "--secret", SECRET, "--action", "document.*")  # fmt: skip
        assert created.exit_code == 0, created.output
        sink_id = created.stdout.strip()  # the id alone, for `$(...)`
        assert created.stderr == (
            f"delivers the events after seq {head} (the first, seq {head + 1},"
            " records its creation)\n"
        )
        whole = sinks("create", "all", "--kind", "webhook", "--url", receiver.url,
                      "--secret", SECRET, "--from-beginning")  # fmt: skip
        assert whole.exit_code == 0, whole.output
        assert whole.stderr == "delivers the events after seq 0: the whole log\n"
        client.delete_sink(whole.stdout.strip())

        pause = client.update_sink(forwarding_pb2.Sink(id=sink_id, paused=True), fields=["paused"])
        cursor = pause.sink.state.cursor_seq
        for n in range(2):
            client.record(build_event(action="document.share", actor_id=f"d-{n}"))
        deleted = sinks("delete", sink_id)
        assert deleted.exit_code == 0, deleted.output
        deletions = client.query(build_filter(actions="sink.deleted"))
        [record] = [event for event in deletions if event.resource.id == sink_id]
        assert deleted.output == (
            f"{sink_id} deleted\n"
            f"it had delivered up to seq {cursor}; the {record.seq - 1 - cursor} events after"
            f" it (to seq {record.seq - 1}) and 0 dead letters go undelivered\n"
        )


@pytest.mark.parametrize(
    "command", [("pause",), ("resume",), ("delete",), ("replay", "--seq", "1-1"), ("show",)]
)
def test_a_failure_exits_as_documented(
    server: ServerThread, tenant: str, command: tuple[str, ...]
) -> None:
    """2 for a sink that does not exist and for a role that may not; 1 for a
    server that does not answer."""
    name, *options = command
    missing = _cli(server, tenant)(name, str(uuid.uuid4()), *options)
    assert missing.exit_code == 2, missing.output
    assert "error: NOT_FOUND" in missing.output
    if name != "show":
        refused = _cli(server, tenant, "reader")(name, str(uuid.uuid4()), *options)
        assert refused.exit_code == 2, refused.output
        assert "error: PERMISSION_DENIED" in refused.output
    with contextlib.closing(socket.socket()) as unused:
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]
    env = {"SEALTRAIL_SERVER": f"127.0.0.1:{port}", "SEALTRAIL_TOKEN": "st_unused"}
    gone = CliRunner().invoke(client_cli.main, ["sinks", name, str(uuid.uuid4()), *options],
                              env=env)  # fmt: skip
    assert gone.exit_code == 1, gone.output
    assert "error: UNAVAILABLE" in gone.output
