"""A refusal of `sealtrail` names what the user typed: the option (or the
argument) and the value given, never the API's field it became. Run in
process against a test's server and PostgreSQL."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import grpc
import pytest
from click.testing import CliRunner, Result

from sealtrail import AuditClient, build_sink
from sealtrail import _cli as cli
from sealtrail.v1 import audit_service_pb2, audit_service_pb2_grpc
from tests.conftest import ServerThread

SECRET = "whsec_" + "A" * 43 + "="


@pytest.fixture
def sealtrail(server: ServerThread, tenant: str) -> Callable[..., Result]:
    env = {"SEALTRAIL_SERVER": server.target, "SEALTRAIL_TOKEN": server.token(tenant, "admin")}

    def invoke(*args: str) -> Result:
        return CliRunner().invoke(cli.main, list(args), env=env)

    return invoke


def test_a_refused_retention_rule_is_named_by_its_option_and_value(
    sealtrail: Callable[..., Result],
) -> None:
    """`retention set --action rag=5` said `policy.rules[0].action_prefix`,
    an index into a list the user never saw; a bad number of days said
    `categories['security']` or `policy.default_days` (helper-334)."""
    prefix = sealtrail(
        "retention", "set", "90d", "--category", "security=1y", "--action", "rag=5", "--yes"
    )
    assert prefix.exit_code == 2, prefix.output
    assert "  --action rag=5: must be a prefix like `api_key.*`" in prefix.output, prefix.output
    ceiling = sealtrail("retention", "set", "90d", "--category", "security=100000", "--yes")
    assert ceiling.exit_code == 2, ceiling.output
    assert "  --category security=100000: must be at most 36500" in ceiling.output, ceiling.output
    default = sealtrail("retention", "set", "100000", "--yes")
    assert default.exit_code == 2, default.output
    assert "  DEFAULT 100000: must be at most 36500" in default.output, default.output
    days = sealtrail("retention", "set", "30", "--action", "rag.*=zz", "--yes")
    assert days.exit_code == 2, days.output
    assert "--action 'rag.*=zz': 'zz' is not days" in days.output, days.output
    category = sealtrail("retention", "set", "30", "--category", "nope=5", "--yes")
    assert category.exit_code == 2, category.output
    assert "--category nope=5: unknown value 'nope'" in category.output, category.output
    for refused in (prefix, ceiling, default, days, category):
        said = refused.output
        assert "policy." not in said and "rules[" not in said and "categories" not in said, said
        assert "action_prefix" not in said and "default_days" not in said, said


def test_a_refused_expiry_is_named_by_the_option_that_gave_it(
    sealtrail: Callable[..., Result],
) -> None:
    """`tokens create --expires-in 3y` said `expire_time: must be at most 730
    days ahead`, a field of the API's (helper-334)."""
    relative = sealtrail("tokens", "create", "--role", "reader", "--expires-in", "3y")
    assert relative.exit_code == 2, relative.output
    assert "  --expires-in 3y: must be at most 730 days ahead" in relative.output
    absolute = sealtrail("tokens", "create", "--role", "reader", "--expires-at", "2099-01-01")
    assert absolute.exit_code == 2, absolute.output
    assert "  --expires-at 2099-01-01: must be at most 730 days ahead" in absolute.output
    assert "expire_time" not in relative.output + absolute.output


def test_alert_and_sink_refusals_name_the_options_and_arguments_given(
    sealtrail: Callable[..., Result],
) -> None:
    """An off-hours rule's --hours and --days were refused as
    `rule.off_hours.start_hour` and `rule.off_hours.working_days`, a blank
    NAME as `rule.name` or `sink.name`, a missing webhook secret as
    `sink.webhook.secrets` (helper-334), which now says how to give one."""
    hours = sealtrail(
        "alerts", "create", "night", "--kind", "off_hours", "--time-zone", "UTC",
        "--hours", "8-17", "--days", "9", "--action", "doc.*",
    )  # fmt: skip
    assert hours.exit_code == 2, hours.output
    assert "  --days: days are 1 (Monday) to 7 (Sunday)" in hours.output, hours.output
    blank = sealtrail("alerts", "create", " ", "--kind", "match", "--action", "doc.*")
    assert blank.exit_code == 2 and "  NAME: must be 1 to 128" in blank.output, blank.output
    sink = sealtrail("sinks", "create", " ", "--kind", "webhook", "--url", "https://x.example/")
    assert sink.exit_code == 2, sink.output
    assert "  NAME: must be 1 to 128" in sink.output, sink.output
    assert (
        "  --secret: one or 2 secrets are required: give --secret whsec_... (or @FILE),"
        " or --generate-secret"
    ) in sink.output, sink.output
    for refused in (hours, blank, sink):
        said = refused.output
        assert "rule." not in said and "sink." not in said and "off_hours" not in said, said
        assert "working_days" not in said, said


def test_a_chat_sink_refused_ocsf_is_named_by_format_not_the_apis_field(
    sealtrail: Callable[..., Result],
) -> None:
    """`sinks create --kind chat --format ocsf` said `sink.format: a chat sink
    posts a line of text per event`, the API's field, where every other
    refused setting of a sink is named by its option (helper-484); so did
    `sinks update --format ocsf` of a chat sink."""
    url = ["--url", "https://hooks.slack.com/services/T0/B0/secret"]
    refused = sealtrail("sinks", "create", "ops", "--kind", "chat", *url, "--format", "ocsf")
    assert refused.exit_code == 2, refused.output
    assert "  --format ocsf: a chat sink posts a line of text" in refused.output, refused.output
    made = sealtrail("sinks", "create", "ops", "--kind", "chat", *url, "--action", "security.*")
    assert made.exit_code == 0, made.output
    updated = sealtrail("sinks", "update", made.stdout.strip(), "--format", "ocsf")
    assert updated.exit_code == 2, updated.output
    assert "  --format ocsf: a chat sink posts a line of text" in updated.output, updated.output
    for said in (refused.output, updated.output):
        assert "sink.format" not in said, said


def test_refused_hours_are_said_in_the_terms_of_the_option(
    sealtrail: Callable[..., Result],
) -> None:
    """`--hours 18-9` (a night shift) was refused as `--hours: must be after
    start_hour, at most 24`, the server's field in the message, and a start
    past 23 twice over, once in those words; `--hours 9` did not say which
    option it was. Working hours are within a day (the API has no window
    across midnight): said so, in the option's terms, by create and update."""
    night = ["--kind", "off_hours", "--time-zone", "UTC", "--action", "doc.*"]
    for typed, said in (
        ("18-9", "Invalid value for --hours 18-9: the end must be after the start"),
        ("9-9", "Invalid value for --hours 9-9: the end must be after the start"),
        ("8-25", "Invalid value for --hours 8-25: the end must be after the start, at most 24"),
        ("24-24", "Invalid value for --hours 24-24: the start must be 0 to 23"),
        ("9", "Invalid value for --hours 9: not START-END, e.g. 9-18"),
    ):
        refused = sealtrail("alerts", "create", "night", *night, "--hours", typed)
        assert refused.exit_code == 2 and said in refused.output, refused.output
        assert "start_hour" not in refused.output, refused.output
    assert "across midnight" in sealtrail("alerts", "create", "n", *night, "--hours", "22-6").output
    made = sealtrail("alerts", "create", "night", *night, "--hours", "0-24")
    assert made.exit_code == 0, made.output
    rule_id = made.output.strip()
    refused = sealtrail("alerts", "update", rule_id, "--hours", "20-4")
    assert refused.exit_code == 2, refused.output
    assert "Invalid value for --hours 20-4: the end must be after the start" in refused.output
    assert sealtrail("alerts", "update", rule_id, "--hours", "7-20").exit_code == 0


def test_no_working_days_is_refused_not_made_monday_to_friday(
    sealtrail: Callable[..., Result],
) -> None:
    """`--days ""` (or `,`) sent no working days, which the API takes for
    the default: the rule was created, or updated, watching Monday to
    Friday, nothing said. `--days x` named no option."""
    night = ["--kind", "off_hours", "--time-zone", "UTC", "--action", "doc.*"]
    for typed in ("", ","):
        refused = sealtrail("alerts", "create", "night", *night, "--days", typed)
        assert refused.exit_code == 2, refused.output
        assert "--days: at least one working day is required" in refused.output, refused.output
    made = sealtrail("alerts", "create", "night", *night, "--days", "6,7")
    assert made.exit_code == 0, made.output
    rule_id = made.output.strip()
    refused = sealtrail("alerts", "update", rule_id, "--days", "")
    assert refused.exit_code == 2, refused.output
    assert "--days: at least one working day is required" in refused.output, refused.output
    named = sealtrail("alerts", "update", rule_id, "--days", "sat")
    assert named.exit_code == 2, named.output
    assert "Invalid value for --days: 'sat' is not ISO weekdays" in named.output, named.output
    shown = sealtrail("alerts", "show", rule_id)
    assert '"workingDays": [\n' in shown.output and "6,\n" in shown.output, shown.output


def test_a_refused_replay_names_its_options_not_the_clients_parameters(
    sealtrail: Callable[..., Result], tmp_path: Path
) -> None:
    """`sinks replay --seq 0-5` said `seq_range[0]: must be 1 or more`, the
    client's parameter; `--seq 1-9223372036854775808` protobuf's bare "Value
    out of range"; no range at all "give exactly one of seq_range, window and
    dead_letter_id". Refused as --seq (and export's), before any call."""
    sink = sealtrail(
        "sinks", "create", "siem", "--kind", "webhook", "--url", "https://x.example/",
        "--secret", "whsec_" + "a" * 32,
    )  # fmt: skip
    assert sink.exit_code == 0, sink.output
    sink_id = sink.stdout.strip()  # stderr says where the sink starts
    for typed, said in (
        ("0-5", "Invalid value for '--seq': the first seq is 1 or more"),
        ("5-3", "Invalid value for '--seq': the first seq 5 is after the last 3"),
        (f"1-{2**63}", f"Invalid value for '--seq': the last seq {2**63} is past the largest"),
        (f"{2**63}-{10**25}", f"Invalid value for '--seq': the last seq {10**25} is past"),
    ):
        refused = sealtrail("sinks", "replay", sink_id, "--seq", typed)
        assert refused.exit_code == 2 and said in refused.output, refused.output
        assert "seq_range" not in refused.output and "out of range" not in refused.output
    for given in ([], ["--seq", "1-2", "--dead-letter", "x"], ["--seq", "1-2", "--since", "1h"]):
        refused = sealtrail("sinks", "replay", sink_id, *given)
        assert refused.exit_code == 2, refused.output
        assert "give exactly one of --seq, --since and --dead-letter" in refused.output
        assert "seq_range" not in refused.output and "dead_letter_id" not in refused.output
    for command in ("export", "bundle"):
        past = sealtrail(command, "-o", str(tmp_path / command), "--seq", f"1-{2**63}")
        assert past.exit_code == 2, (past.output, past.exception)
        assert f"Invalid value for '--seq': the last seq {2**63} is past" in past.output


def test_a_rule_setting_past_what_its_field_carries_is_refused_as_its_option(
    sealtrail: Callable[..., Result],
) -> None:
    """`alerts create --count -1`, `--window 4294967296` or `--days` of a
    number past 2**63 ended in a traceback of protobuf's "Value out of
    range", as did `alerts update --count -1`: refused as the option now."""
    threshold = ["--kind", "threshold", "--action", "doc.*"]
    for given, said in (
        (["--count", "-1", "--window", "60"], "Invalid value for --count: must be 2 to 100000"),
        (["--count", "5", "--window", str(2**32)], "Invalid value for --window: must be 1 to"),
    ):
        refused = sealtrail("alerts", "create", "r", *threshold, *given)
        assert refused.exit_code == 2 and said in refused.output, refused.output
    days = sealtrail(
        "alerts", "create", "night", "--kind", "off_hours", "--time-zone", "UTC",
        "--days", f"1,{2**63}", "--action", "doc.*",
    )  # fmt: skip
    assert days.exit_code == 2, (days.output, days.exception)
    assert "Invalid value for --days: days are 1 (Monday) to 7 (Sunday)" in days.output
    made = sealtrail("alerts", "create", "r", *threshold, "--count", "5", "--window", "60")
    assert made.exit_code == 0, made.output
    refused = sealtrail("alerts", "update", made.output.strip(), "--count", "-1")
    assert refused.exit_code == 2, (refused.output, refused.exception)
    assert "Invalid value for --count: must be 2 to 100000, not -1" in refused.output


def test_a_token_the_server_does_not_take_is_said_with_what_to_do(
    server: ServerThread, tenant: str
) -> None:
    """A made-up token (from SEALTRAIL_TOKEN) and a real one mistyped (given
    with --token) were refused in the server's words alone, `authorization
    must be Bearer stk_...` and `unknown or revoked token`: nothing said of
    where the CLI took the token from, nor how one is made."""
    real = server.token(tenant, "reader")
    mistyped = real[:-1] + ("A" if real[-1] != "A" else "B")
    for given, env, source in (
        ([], {"SEALTRAIL_TOKEN": "s3cret"}, "--token (from SEALTRAIL_TOKEN)"),
        (["--token", mistyped], {}, "--token"),
    ):
        refused = CliRunner().invoke(
            cli.main,
            [*given, "query", "--since", "1h"],
            env={"SEALTRAIL_SERVER": server.target, **env},
        )
        assert refused.exit_code == 2, refused.output
        lines = refused.stderr.splitlines()
        assert lines[0].startswith("error: UNAUTHENTICATED: "), lines
        assert (
            f"  {source} is no token this server takes: copy it whole, or have an admin"
            " make one (`sealtrail-server token create --tenant TENANT --role ROLE`, or"
            " `sealtrail tokens create --role ROLE` with an admin token of the tenant)"
        ) in lines, lines
        assert refused.stdout == ""


def test_a_malformed_token_is_said_to_be_one_not_a_wrong_scheme(
    server: ServerThread, tenant: str
) -> None:
    """`SEALTRAIL_TOKEN=stk_bogus`, or a token cut short, was answered
    ``authorization must be `Bearer stk_...` `` though `Bearer stk_...` is
    what the CLI sent: a malformed token is said to be one (never echoed), and
    that line is kept for another scheme."""
    cut_short = server.token(tenant, "reader")[:30]
    for token in ("stk_bogus", cut_short):
        refused = CliRunner().invoke(
            cli.main, ["query"], env={"SEALTRAIL_SERVER": server.target, "SEALTRAIL_TOKEN": token}
        )
        assert refused.exit_code == 2, refused.output
        assert refused.stderr.splitlines()[0] == (
            "error: UNAUTHENTICATED: malformed token: cut short, or not a Sealtrail token"
            " (`stk_` then 49 letters and digits)"
        ), refused.stderr
        assert token not in refused.stderr
    with grpc.insecure_channel(server.target) as channel:
        stub = audit_service_pb2_grpc.AuditLogServiceStub(channel)
        with pytest.raises(grpc.RpcError) as scheme:
            stub.Query(audit_service_pb2.QueryRequest(), metadata=[("authorization", "Basic x")])
    assert scheme.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert scheme.value.details() == "authorization must be `Bearer stk_...`"


def test_a_refused_value_of_a_repeated_filter_option_is_said_once_with_the_value(
    sealtrail: Callable[..., Result],
) -> None:
    """`query --country US --country ZZZ` printed the server's refusal twice
    (in the error's head, then as its field), naming `--country` both times
    but not which of the two it refused; `--country ZZZ` alone said
    `filter.country`, the API's field. One line now names the option and
    the value, for the filter of any command (an alert rule's as a query's);
    values given twice alike are sent once, and still named right."""
    country = "must be an ISO 3166-1 alpha-2 code: two letters"
    empty = "  --resource-type '': is empty: give a resource type"
    twice, bad = ["--country", "de", "--country", "de"], ["--country", "X1"]
    for given, said in (
        (["query", "--country", "US", "--country", "ZZZ"], f"  --country ZZZ: {country}"),
        (["query", "--country", "ZZZ"], f"  --country ZZZ: {country}"),
        (["query", *twice, *bad], f"  --country X1: {country}"),
        (["query", "--resource-type", "doc", "--resource-type", ""], empty),
        (["stats", "--resource-type", "", "--resource-type", "x"], empty),
        (
            ["alerts", "create", "r", "--kind", "match", "--country", "FR", "--country", "F"],
            f"  --country F: {country}",
        ),
    ):
        refused = sealtrail(*given)
        assert refused.exit_code == 2, refused.output
        lines = refused.stderr.splitlines()
        assert lines[0] == "error: INVALID_ARGUMENT", lines
        assert said in lines, lines
        assert sum(said.split(": ", 1)[1] in line for line in lines) == 1, lines
        assert "filter." not in refused.output and "countries" not in refused.output, lines
        assert "resource_type" not in refused.output, lines
    status = sealtrail("query", "--http-status", "5xx", "--http-status", "6xx")
    assert status.exit_code == 2, status.output
    lines = status.stderr.splitlines()
    assert [line for line in lines if "6xx" in line] == [lines[1]], lines
    assert lines[1].startswith("  --http-status 6xx: "), lines
    assert "filter." not in status.output, lines
    actor_type = sealtrail("query", "--actor-type", "user", "--actor-type", "bogus")
    assert actor_type.exit_code == 2, actor_type.output
    said = actor_type.stderr.splitlines()
    assert said[-1].startswith("Error: Invalid value for '--actor-type': 'bogus' is not one of")
    assert actor_type.stderr.count("bogus") == 1, said


@pytest.mark.parametrize(
    ("role", "command", "roles", "needed"),
    [
        ("reader", ["record", "--action", "a.b", "--actor-id", "u"], "recorder,admin", "recorder"),
        ("recorder", ["query", "--since", "1h"], "reader,exporter,admin", "reader"),
        ("reader", ["tokens", "create", "--role", "reader"], "admin", "admin"),
    ],
)  # fmt: skip
def test_a_role_refused_an_rpc_is_said_with_the_roles_that_may_and_how_to_get_one(
    server: ServerThread, tenant: str, role: str, command: list[str], roles: str, needed: str
) -> None:
    """A reader's token given to `sealtrail record` was refused in the
    server's words alone, `PERMISSION_DENIED: role 'reader' may not call
    Record`: not which roles may, nor how a token of one is had, where a
    token the server does not take is said with what to do (a new user's
    walkthrough of the README)."""
    refused = CliRunner().invoke(
        cli.main,
        command,
        env={"SEALTRAIL_SERVER": server.target, "SEALTRAIL_TOKEN": server.token(tenant, role)},
    )
    assert refused.exit_code == 2, refused.output
    lines = refused.stderr.splitlines()
    assert lines[0].startswith(f"error: PERMISSION_DENIED: role '{role}' may not call"), lines
    assert f"  roles: {roles}" in lines, lines  # the server's: those that may call it
    assert (
        f"  have an admin of the tenant make a token of role {needed}"
        f" (`sealtrail tokens create --role {needed}`, or"
        f" `sealtrail-server token create --tenant TENANT --role {needed}`)"
    ) in lines, lines
    assert refused.stdout == ""


def test_export_takes_its_format_from_the_files_extension_unless_told(
    sealtrail: Callable[..., Result], tmp_path: Path
) -> None:
    """`export -o a.ndjson` with no --format wrote CSV (its default) to a
    file named NDJSON, without a word (a README walkthrough). The extension
    says the format when --format is not given; an unknown one keeps CSV;
    one that contradicts a --format given is refused, naming both."""
    assert sealtrail("record", "--action", "doc.read", "--actor-id", "ops").exit_code == 0
    for name, begins in (
        ("a.ndjson", "{"),
        ("a.jsonl", "{"),
        ("a.json", "["),
        ("a.CSV", "seq,id,"),
        ("a.txt", "seq,id,"),
        ("a", "seq,id,"),
    ):
        out = tmp_path / name
        done = sealtrail("export", "-o", str(out))
        assert done.exit_code == 0, done.output
        assert out.read_text(encoding="utf-8").startswith(begins), name
    for given, name in (
        ("csv", "b.ndjson"),
        ("ndjson", "b.csv"),
        ("json", "b.jsonl"),
        ("ndjson", "b.json"),
        ("bundle", "b.csv"),
    ):
        refused = sealtrail("export", "--format", given, "-o", str(tmp_path / name))
        assert refused.exit_code == 2, refused.output
        suffix = name.partition(".")[2]
        assert f"--format {given}" in refused.output and f".{suffix}" in refused.output
        assert not (tmp_path / name).exists()
    agreed = sealtrail("export", "--format", "ndjson", "-o", str(tmp_path / "c.jsonl"))
    assert agreed.exit_code == 0, agreed.output
    helped = sealtrail("export", "--help")
    assert "from -o's extension" in " ".join(helped.output.split()), helped.output


def test_a_sink_is_named_by_its_name_or_id_where_one_sink_has_it(
    sealtrail: Callable[..., Result], client: AuditClient
) -> None:
    """`alerts create --sink local`, `local` a sink's name, said `--sink: no
    such sink`, and `sinks show local` `id: must be a sink id (a UUID)`:
    a name is taken where one sink has it; a name no sink or several have
    is refused, saying `sealtrail sinks` lists them."""
    made = {
        name: client.create_sink(
            build_sink(name, "webhook", url="https://x.example/", secrets=[SECRET], paused=True)
        ).sink.id
        for name in ("local", "twin", "other")
    }
    client.create_sink(
        build_sink("twin", "webhook", url="https://x.example/", secrets=[SECRET], paused=True)
    )
    shown = sealtrail("sinks", "show", "local")
    assert shown.exit_code == 0, shown.output
    assert json.loads(shown.stdout)["id"] == made["local"]
    assert sealtrail("sinks", "show", made["local"]).exit_code == 0
    resumed = sealtrail("sinks", "resume", "local")
    assert resumed.exit_code == 0, resumed.output
    assert resumed.stdout.startswith(f"{made['local']} resumed")
    assert sealtrail("sinks", "pause", "other").exit_code == 0
    rule = sealtrail("alerts", "create", "r", "--kind", "match", "--action", "doc.*",
                     "--sink", "local", "--sink", made["other"])  # fmt: skip
    assert rule.exit_code == 0, rule.output
    rule_id = rule.stdout.strip()
    (kept,) = [rule for rule in client.list_alert_rules() if rule.id == rule_id]
    assert list(kept.sink_ids) == [made["local"], made["other"]]
    for args, said in (
        (["sinks", "show", "twin"], "2 sinks are named 'twin': give its id"),
        (["sinks", "delete", "nowhere"], "no sink is named 'nowhere'"),
        (["alerts", "update", rule_id, "--sink", "twin"], "2 sinks are named 'twin'"),
        (
            ["alerts", "create", "s", "--kind", "match", "--action", "doc.*", "--sink", "nowhere"],
            "no sink is named",
        ),
    ):
        refused = sealtrail(*args)
        assert refused.exit_code == 2, (args, refused.output)
        assert said in refused.output and "`sealtrail sinks` lists them" in refused.output
        assert "must be a sink id" not in refused.output, refused.output
    assert len(client.list_sinks()) == 4  # nothing deleted
    for command in (["sinks", "show"], ["alerts", "create"]):
        helped = " ".join(sealtrail(*command, "--help").output.split())
        assert "its id or its name" in helped, helped


def test_a_sink_named_like_an_id_is_found_by_its_name_unless_another_has_it_as_id(
    sealtrail: Callable[..., Result], client: AuditClient
) -> None:
    """Anything uuid.UUID() read was sent as an id: a sink named with 32 hex
    digits or a braced UUID was refused `id: must be a sink id (a UUID)`,
    one named in the 8-4-4-4-12 form no sink has as id said NOT_FOUND, and
    of sink A and sink B named with A's id, `sinks show A-ID` acted on A
    without a word and B was out of reach by its name."""

    def made(name: str) -> str:
        sink = build_sink(name, "webhook", url="https://x.example/", secrets=[SECRET], paused=True)
        return client.create_sink(sink).sink.id

    names = (
        "0123456789abcdef0123456789abcdef",
        "{01234567-89ab-cdef-0123-456789abcdef}",
        "01234567-89ab-cdef-0123-456789abcdef",
    )
    ids = {name: made(name) for name in names}
    for name, sink_id in ids.items():
        shown = sealtrail("sinks", "show", name)
        assert shown.exit_code == 0, (name, shown.output)
        assert json.loads(shown.stdout)["id"] == sink_id
    first = ids[names[0]]
    assert sealtrail("sinks", "show", first.upper()).exit_code == 0  # as the server reads ids
    named_as_first = made(first)
    for args in (
        ["sinks", "show", first],
        ["sinks", "delete", first],
        ["alerts", "create", "r", "--kind", "match", "--action", "doc.*", "--sink", first],
    ):
        refused = sealtrail(*args)
        assert refused.exit_code == 2, (args, refused.output)
        said = " ".join(refused.output.split())
        assert f"one sink has {first!r} as its id and another as its name" in said, said
        assert "give the id of the one meant; `sealtrail sinks` lists them" in said, said
    assert {sink.id for sink in client.list_sinks()} == {*ids.values(), named_as_first}
    assert client.list_alert_rules() == []
