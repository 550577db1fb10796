"""`sealtrail sinks update` says where the new settings take effect: the
sink's cursor at the change, as its `sink.updated` record keeps it, and the
replay that sends the events before it. Run in process against a real
server."""

from __future__ import annotations

from click.testing import CliRunner

from sealtrail import AuditClient, build_event, build_filter, build_sink
from sealtrail import _cli as client_cli
from tests.conftest import ServerThread
from tests.http_endpoint import endpoint

SECRET = "whsec_" + "A" * 43 + "="


def test_sinks_update_says_after_which_seq_the_new_settings_apply(
    server: ServerThread, client: AuditClient, tenant: str
) -> None:
    env = {"SEALTRAIL_SERVER": server.target, "SEALTRAIL_TOKEN": server.token(tenant, "admin")}

    def cli(*args: str) -> str:
        done = CliRunner().invoke(client_cli.main, ["sinks", *args], env=env)
        assert done.exit_code == 0, done.output
        return done.output

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
            assert f"events after seq {cursor} are sent under the new format and destination;" in (
                moved
            )
            # A rename changes nothing sent; the same settings again change nothing.
            assert cli("update", sink.id, "--name", "siem 2") == f"{sink.id} updated\n"
            assert cli("update", sink.id, "--name", "siem 2") == (
                f"{sink.id} unchanged: it has these settings already\n"
            )
        finally:
            client.delete_sink(sink.id)
