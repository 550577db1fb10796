"""`sealtrail sinks update` says where the new settings take effect: the
sink's cursor at the change, as its `sink.updated` record keeps it, and the
replay that sends the events before it. Run in process against a real
server."""

from __future__ import annotations

from collections.abc import Callable

from click.testing import CliRunner

from sealtrail import AuditClient, build_event, build_filter, build_sink
from sealtrail import _cli as client_cli
from sealtrail.v1 import forwarding_pb2
from tests.conftest import ServerThread
from tests.http_endpoint import endpoint

SECRET = "whsec_" + "A" * 43 + "="
NEW_SECRET = "whsec_" + "B" * 43 + "="


def _sinks(server: ServerThread, tenant: str) -> Callable[..., str]:
    """`sealtrail sinks ARGS` as an admin of `tenant`: its stdout, once it
    succeeded (a generated secret is shown on stderr)."""
    env = {"SEALTRAIL_SERVER": server.target, "SEALTRAIL_TOKEN": server.token(tenant, "admin")}

    def cli(*args: str) -> str:
        done = CliRunner().invoke(client_cli.main, ["sinks", *args], env=env)
        assert done.exit_code == 0, done.output
        return done.stdout

    return cli


def _paused_behind(client: AuditClient, made: forwarding_pb2.Sink) -> tuple[str, int]:
    """Creates `made` paused and records events after it: its cursor stays
    where it was made, behind the log's head. The sink's id and cursor."""
    sink = client.create_sink(made).sink
    for n in range(3):
        client.record(build_event(action="member.invite", actor_id=f"u-{n}"))
    cursor = client.get_sink(sink.id).state.cursor_seq
    assert 0 < cursor < client.get_sink(sink.id).state.head_seq
    return sink.id, cursor


def test_sinks_update_says_after_which_seq_the_new_settings_apply(
    server: ServerThread, client: AuditClient, tenant: str
) -> None:
    cli = _sinks(server, tenant)

    for n in range(2):
        client.record(build_event(action="member.invite", actor_id=f"u-{n}"))
    with endpoint() as receiver:
        # Paused, the sink's cursor stays where it was made as events come.
        made = build_sink("siem", "webhook", url=receiver.url, secrets=[SECRET], paused=True,
                          filter=build_filter(actions="document.*"))  # fmt: skip
        sink = client.create_sink(made).sink
        try:
            for n in range(3):
                client.record(build_event(action="member.invite", actor_id=f"u-{n}"))
            cursor = client.get_sink(sink.id).state.cursor_seq
            assert 0 < cursor < client.get_sink(sink.id).state.head_seq

            widened = cli("update", sink.id, "--action", "document.*", "--action", "member.*")

            [updated] = client.query(build_filter(actions="sink.updated"))
            assert updated.details["from_seq"] == cursor + 1
            assert widened == (
                f"{sink.id} updated\n"
                f"events after seq {cursor} are sent under the new filter;"
                f" `sealtrail sinks replay {sink.id} --seq FIRST-{cursor}` sends earlier ones"
                " under it\n"
            )
            moved = cli("update", sink.id, "--format", "ocsf",
                        "--url", receiver.url + "/b", "--secret", SECRET)  # fmt: skip
            assert f"events after seq {cursor} are sent under the new format and URL, signed" in (
                moved
            )
            assert f"--seq FIRST-{cursor}` sends earlier ones under them\n" in moved
            # A rename changes nothing sent; the same settings again change nothing.
            assert cli("update", sink.id, "--name", "siem 2") == f"{sink.id} updated\n"
            assert cli("update", sink.id, "--name", "siem 2") == (
                f"{sink.id} unchanged: it has these settings already\n"
            )
        finally:
            client.delete_sink(sink.id)


def test_a_credential_changed_alone_is_said_as_such_with_no_replay_offered(
    server: ServerThread, client: AuditClient, tenant: str
) -> None:
    """A rotated secret or token changes neither what is sent nor where: the
    line said `sent under the new destination` and offered a replay, which
    would only send again, signed anew, events the receiver has already
    taken (a refused signature or token holds the sink: nothing is lost)."""
    cli = _sinks(server, tenant)
    client.record(build_event(action="member.invite", actor_id="u-0"))
    with endpoint() as receiver:
        made = build_sink("hooks", "webhook", url=receiver.url, secrets=[SECRET], paused=True)
        hook, cursor = _paused_behind(client, made)
        token = build_sink("hec", "splunk_hec", url=receiver.url, token="t-1", paused=True)
        hec, hec_cursor = _paused_behind(client, token)
        try:
            rotating = cli("update", hook, "--secret", SECRET, "--generate-secret")
            assert rotating == (
                f"{hook} updated\n"
                f"events after seq {cursor} are signed with each of the sink's 2 secrets;"
                " those up to it were sent already (a replay would only send them again)\n"
            )
            assert cli("update", hook, "--secret", NEW_SECRET).splitlines()[1] == (
                f"events after seq {cursor} are signed with the sink's one secret;"
                " those up to it were sent already (a replay would only send them again)"
            )
            assert cli("update", hec, "--token", "t-2").splitlines()[1] == (
                f"events after seq {hec_cursor} are sent with the new token;"
                " those up to it were sent already (a replay would only send them again)"
            )
            # With a label changed too, the replay sends the events before under it.
            assert cli("update", hec, "--token", "t-3", "--index", "audit").splitlines()[1] == (
                f"events after seq {hec_cursor} are sent under the new index, with the new"
                f" token; `sealtrail sinks replay {hec} --seq FIRST-{hec_cursor}` sends"
                " earlier ones under it"
            )
            # A setting given as it is changes nothing: only the token is named.
            assert cli("update", hec, "--token", "t-4", "--index", "audit").splitlines()[1] == (
                f"events after seq {hec_cursor} are sent with the new token;"
                " those up to it were sent already (a replay would only send them again)"
            )
        finally:
            client.delete_sink(hook)
            client.delete_sink(hec)
