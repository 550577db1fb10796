"""What a new user's walkthrough of the README and the command line found
(helper-517): an actor shown by its id where the event names it, a listing
reachable as `tokens list` but not as `sinks list` or `alerts list`, options
whose help said nothing of what they take. Run in process against a test's
server and PostgreSQL."""

from __future__ import annotations

import shlex
import uuid
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from sealtrail import AuditClient, build_filter
from sealtrail import _cli as cli
from sealtrail._report import ReportedEvent, event_line
from tests.conftest import ServerThread

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def admin_env(server: ServerThread, tenant: str) -> dict[str, str]:
    return {"SEALTRAIL_SERVER": server.target, "SEALTRAIL_TOKEN": server.token(tenant, "admin")}


def _run(env: dict[str, str], *args: str) -> Result:
    return CliRunner().invoke(cli.main, list(args), env=env)


def test_an_actor_is_shown_by_name_and_email_else_either_else_id(admin_env: dict[str, str]) -> None:
    """The event table's actor column showed the actor's id, a UUID, where the
    event gives a display name; a report's first and last event too. Given
    both, it showed the email alone (`bo@example.com`), where audit-log
    products show who acted by name and email: `Bo Example <bo@example.com>`,
    a name that would read otherwise quoted. A report still names one."""
    named, mailed = str(uuid.uuid4()), str(uuid.uuid4())
    with AuditClient(admin_env["SEALTRAIL_SERVER"], token=admin_env["SEALTRAIL_TOKEN"]) as client:
        client.record(action="doc.named", actor_id=named, actor_display_name="Ann Example")
        client.record(
            action="doc.mailed",
            actor_id=mailed,
            actor_email="bo@example.com",
            actor_display_name="Bo Example",
        )
        client.record(action="doc.bare", actor_id="svc-7")
        client.record(
            action="doc.posing",
            actor_id="eve",
            actor_email="eve@example.com",
            actor_display_name="Eve <ceo@example.com>",
        )
        events = {
            event.action: event for event in client.query(build_filter(actions="doc.*"), limit=4)
        }
    shown = _run(admin_env, "query", "--action", "doc.*")
    assert shown.exit_code == 0, shown.output
    rows = {
        action: next(line for line in shown.stdout.splitlines() if f" {action} " in line)
        for action in ("doc.named", "doc.mailed", "doc.bare", "doc.posing")
    }
    assert "Ann Example" in rows["doc.named"] and named not in shown.stdout, shown.stdout
    assert "Bo Example <bo@example.com>" in rows["doc.mailed"], shown.stdout
    assert mailed not in shown.stdout
    # A name that holds an address is quoted: not read as whose email it is.
    assert '"Eve <ceo@example.com>" <eve@example.com>' in rows["doc.posing"], shown.stdout
    assert "svc-7" in rows["doc.bare"]
    reported = {action: ReportedEvent.of(event).actor for action, event in events.items()}
    assert reported == {
        "doc.named": "Ann Example",
        "doc.mailed": "bo@example.com",
        "doc.bare": "svc-7",
        "doc.posing": "eve@example.com",
    }
    assert " by Ann Example " in event_line(ReportedEvent.of(events["doc.named"]))


@pytest.mark.parametrize("group", ["sinks", "alerts", "tokens"])
def test_each_admin_listing_is_its_list_subcommand_and_the_bare_group(
    admin_env: dict[str, str], group: str
) -> None:
    """`sealtrail sinks list` and `alerts list` were "No such command 'list'"
    while `tokens list` listed: each group lists the same both ways, and says
    so in its help."""
    listed = _run(admin_env, group, "list")
    assert listed.exit_code == 0, listed.output
    bare = _run(admin_env, group)
    assert bare.exit_code == 0, bare.output
    assert listed.stdout.splitlines()[0] == bare.stdout.splitlines()[0]  # the table's header
    helped = _run(admin_env, group, "--help")
    assert [line for line in helped.stdout.splitlines() if line.split()[:1] == ["list"]], (
        helped.stdout
    )
    assert _run(admin_env, group, "list", "--help").stdout.count("\n") > 3


def _option_help(command: list[str], option: str) -> str:
    """What `sealtrail COMMAND --help` says of `option`, its lines joined."""
    helped = CliRunner().invoke(cli.main, [*command, "--help"], terminal_width=1000)
    assert helped.exit_code == 0, helped.output
    lines = helped.stdout.splitlines()
    start = next(n for n, line in enumerate(lines) if line.strip().startswith(option + " "))
    said = [lines[start]]
    for line in lines[start + 1 :]:
        if line.strip().startswith("-") or not line.startswith("      "):
            break
        said.append(line)
    return " ".join(" ".join(said).split())


def test_options_say_what_they_take() -> None:
    """`query --order` and `--format` had no help; `tail --since` did not say
    its forms; `stats --by` listed each grouping twice (resource-type and
    resource_type), and `--measure` each measure (p95 and duration_p95)."""
    assert "descending seq" in _option_help(["query"], "--order")
    assert "JSON line" in _option_help(["query"], "--format")
    since = _option_help(["tail"], "--since")
    assert "RFC 3339" in since and "24h" in since, since
    by = _option_help(["stats"], "--by").split("]")[0].split("|")
    assert by.count("resource-type") == 1 and not [name for name in by if "_" in name], by
    measure = _option_help(["stats"], "--measure").split("]")[0].split("|")
    assert "p95" in measure and "duration_p95" not in measure, measure


def test_stats_takes_either_spelling_of_a_grouping(admin_env: dict[str, str]) -> None:
    for by in ("resource-type", "resource_type", "http-status", "HTTP_STATUS"):
        counted = _run(admin_env, "stats", "--by", by, "--json")
        assert counted.exit_code == 0, (by, counted.output)
    for measure in ("p95", "duration_p95"):
        counted = _run(admin_env, "stats", "--by", "action", "--measure", measure, "--json")
        assert counted.exit_code == 0, (measure, counted.output)
    refused = _run(admin_env, "stats", "--by", "resourcetype")
    assert refused.exit_code == 2
    assert "resource_type" not in refused.output and "resource-type" in refused.output


def test_the_readmes_p95_per_route_shows_routes_alone(admin_env: dict[str, str]) -> None:
    """The README's "each endpoint's p95 response time" showed first a
    `(none)` row: every event without a route (the log's records of its
    own reads, events of no request), counted but never measured; and,
    leaving out the untimed, still one of timed events of no request (a
    worker's run): API requests alone are asked (helper-557)."""
    [line] = [
        line
        for line in (ROOT / "README.md").read_text().splitlines()
        if line.startswith("sealtrail stats --by http-route --measure p95")
    ]
    command = shlex.split(line.split("#")[0])[1:]
    with AuditClient(admin_env["SEALTRAIL_SERVER"], token=admin_env["SEALTRAIL_TOKEN"]) as client:
        for route, duration in (("/v1/orders/{id}", 120.0), ("/v1/orders", 40.0)):
            client.record(
                action="order.read", actor_id="alice", http_method="GET",
                http_route=route, http_status_code=200, duration_ms=duration,
            )  # fmt: skip
        client.record(action="member.invite", actor_id="alice")  # no request's
        client.record(action="job.run", actor_id="cron", duration_ms=900.0)  # timed, no route
        list(client.query(build_filter(actions="order.read")))  # a read the log records
    shown = _run(admin_env, *command)
    assert shown.exit_code == 0, shown.output
    assert "/v1/orders/{id}" in shown.output and "/v1/orders " in shown.output, shown.output
    assert "(none)" not in shown.output, shown.output
