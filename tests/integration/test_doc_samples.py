"""The Python samples of the README, the client's README and the docs, run as
written against a real server, one by one: a sample that names a method, an
argument, a field or an error the client does not have fails here rather than
in the hands of its first reader. Only what a sample leaves to its reader is
given: the server's address and a token (`"127.0.0.1:50051"`, `"stk_..."`),
an event id where it writes `"0193..."`, and the names it uses without making
them (`audit`, `admin`, `week_ago`, `verifier_key`, ...). Where a doc says what
a sample prints, the output is checked too."""

from __future__ import annotations

import base64
import contextlib
import io
import json
import re
import secrets
import types
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from sealtrail import AuditClient, build_event, build_filter, build_sink
from sealtrail.tlog import Signer, generate_signer_key
from sealtrail_server.api.export import ExportRpcs
from tests.conftest import SIGNING_KEY, ServerThread
from tests.http_endpoint import endpoint

ROOT = Path(__file__).resolve().parents[2]
VERIFIER_KEY = Signer.parse(SIGNING_KEY).verifier.text()


def samples(doc: str) -> list[str]:
    """The ```python blocks of `doc` (a path from the repository's root), in
    order, each after as many empty lines as precede it in the doc: a failing
    sample's traceback names the doc's own line."""
    text = (ROOT / doc).read_text("utf-8")
    return [
        "\n" * text.count("\n", 0, found.start(1)) + found[1]
        for found in re.finditer(r"^```python\n(.*?)^```", text, re.S | re.M)
    ]


class Runner:
    """Runs each sample as a script: the placeholders replaced, what it prints
    returned. A sample starts where the one before it in its doc ended (its
    imports; the doc's count sample goes on from the reading one), with the
    names given, so `audit` is an open client whatever the sample before did
    with its own."""

    def __init__(self, server: ServerThread, token: str, **names: Any) -> None:
        self.placeholders = {'"127.0.0.1:50051"': repr(server.target), '"stk_..."': repr(token)}
        self.names = names
        self.scope: dict[str, Any] = {}

    def __call__(self, doc: str, source: str, **placeholders: str) -> str:
        for written, actual in {**self.placeholders, **placeholders}.items():
            source = source.replace(written, actual)
        printed = io.StringIO()
        self.scope = {**self.scope, "__name__": "__sample__", **self.names}
        with contextlib.redirect_stdout(printed):
            exec(compile(source, doc, "exec"), self.scope)
        return printed.getvalue()


@pytest.fixture
def audit(server: ServerThread, tenant: str) -> Iterator[tuple[AuditClient, str]]:
    """An admin client of the test's tenant, and its token (the samples' `stk_...`)."""
    token = server.token(tenant)
    with AuditClient(server.target, token=token) as client:
        yield client, token


@pytest.fixture
def run(server: ServerThread, audit: tuple[AuditClient, str]) -> Runner:
    client, token = audit
    return Runner(
        server,
        token,
        audit=client,
        admin=client,
        client=client,
        week_ago=datetime.now(UTC) - timedelta(days=7),
        verifier_key=VERIFIER_KEY,
    )


def test_the_readmes_sample_records_then_finds_the_event(run: Runner) -> None:
    (sample,) = samples("README.md")
    printed = run("README.md", sample)
    assert re.fullmatch(r"\d+ api_key\.create alice@example\.com\n", printed), printed


def test_the_client_readmes_samples_run_as_written(
    run: Runner,
    audit: tuple[AuditClient, str],
    server: ServerThread,
    tenant: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    client, _ = audit
    doc = "clients/python/README.md"
    record, read, count, by_detail, check, export_held, export_check, excel, correlate, *rest = (
        samples(doc)
    )
    on_behalf, *_middlewares, errors = rest

    # Recording: the stored event's id and seq, and that this call recorded it.
    assert re.fullmatch(r"[0-9a-f-]{36} \d+ False\n", run(doc, record))

    # Reading: the query it shows finds a warning of the day; `get_event`, the event.
    warning = client.record(
        build_event(action="api_key.revoke", category="security", severity="warning", actor_id="u")
    ).event
    printed = run(doc, read, **{'"0193..."': repr(warning.id)})
    assert printed == f"{warning.seq} api_key.revoke u\n"

    # Counting: failed logins per actor, largest first, after the total and the
    # size of the log counted (up to the last of them).
    for actor in ("u_9", "u_9", "u_7"):
        last = client.record(action="user.login", outcome="failure", actor_id=actor).event
    assert run(doc, count) == f"3 False\n{last.seq}\nu_9 2\nu_7 1\n"
    # Tokens per model and per key (ADR 0161): it runs as written.
    client.record(action="llm.call", actor_id="u", details={"model": "m", "tokens": 5})
    run(doc, by_detail)

    # A saved checkpoint, checked against the log today.
    saved = client.get_checkpoint(fresh=True)
    (tmp_path / "saved.txt").write_text(saved.note, "utf-8")
    monkeypatch.chdir(tmp_path)
    client.record(action="member.invite", actor_id="u_42")
    sizes = re.fullmatch(r"(\d+) events then, (\d+) now\n", run(doc, check))
    assert sizes is not None
    assert int(sizes[1]) == saved.tree_size <= int(sizes[2])
    # ... and one signed by none of the keys given is said to be so.
    run.names["verifier_key"] = generate_signer_key("sealtrail.test/log").verifier.text()
    with pytest.raises(SystemExit, match=r"^cannot check it: "):
        run(doc, check)
    run.names["verifier_key"] = VERIFIER_KEY

    # An export's rows held to their leaves: a good one passes without a word; a
    # record rewritten behind its leaf, signed by a server before it refused to,
    # fails naming its seq (the record put back after: the database is shared).
    assert run(doc, export_held) == ""
    with (
        monkeypatch.context() as patched,
        psycopg.connect(server.settings.owner_database_url, autocommit=True) as sql,
    ):
        patched.setattr(ExportRpcs, "_refuse_unless_of_its_leaf", lambda *_: None)
        sql.execute("SET session_replication_role = replica")
        rewrite = (
            "UPDATE events SET record = replace(record, %s, %s) WHERE tenant_id = %s AND seq = %s"
        )
        sql.execute(rewrite, ['"u_7"', '"u_8"', tenant, last.seq])
        try:
            with pytest.raises(SystemExit, match=rf"^FAILED: seq {last.seq}: audit\.csv's row"):
                run(doc, export_held)
        finally:
            sql.execute(rewrite, ['"u_8"', '"u_7"', tenant, last.seq])

    # An export and its manifest, checked offline, then the log since held to it.
    client.export(tmp_path / "audit.csv", format="csv", manifest_file=True)
    checked = re.fullmatch(
        r"(\S+): (\d+) rows, sha256 ([0-9a-f]{64}), the whole log of ([\d,]+) events,"
        r" unfiltered, each record in the signed tree \(its root recomputed\); consistent: True\n",
        run(doc, export_check),
    )
    assert checked is not None and checked[1].endswith("audit.csv") and int(checked[2]) > 0
    assert int(checked[4].replace(",", "")) == int(checked[2])  # every event, unfiltered
    # ... and a byte altered in the file fails it, in the sample's words.
    exported = (tmp_path / "audit.csv").read_bytes()
    (tmp_path / "audit.csv").write_bytes(exported[:-2] + b"X" + exported[-1:])
    with pytest.raises(SystemExit, match=r"^FAILED: "):
        run(doc, export_check)

    # An exported CSV's cells longer than Excel keeps, each named by its seq.
    long = client.record(
        build_event(action="document.share", actor_id="u", details={"blob": "x" * 40_000})
    ).event
    assert run(doc, excel) == (
        f"seq {long.seq}: its details is longer than Excel keeps; read it from NDJSON\n"
    )

    # The caller's request id reaches the event.
    incoming = str(uuid.uuid4())
    run.names["incoming_request_id"] = incoming
    run(doc, correlate)
    (carried,) = client.query(build_filter(request_id=incoming))
    assert carried.action == "member.invite"

    # The person read for reaches the record of the read, and a search finds it.
    run.names["current_user_id"] = "u_42@customer.example"
    run(doc, on_behalf)
    [read_for] = client.query(build_filter(text='"u_42@customer.example"'))
    assert read_for.action == "audit_log.queried"
    assert read_for.details["on_behalf_of"] == "u_42@customer.example"

    # The field violations of a refused event, as `field description` lines.
    assert run(doc, errors) == (
        "event.action must be dotted lowercase `resource.verb`, e.g. `api_key.create`\n"
    )


async def test_the_client_readmes_middleware_sample_records_a_request(
    run: Runner, audit: tuple[AuditClient, str]
) -> None:
    client, _ = audit
    doc = "clients/python/README.md"
    (sample,) = [sample for sample in samples(doc) if "AuditMiddleware(\n    Starlette(" in sample]
    run(doc, sample)
    app = run.scope["app"]
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://service.test") as http:
        answer = await http.post(
            "/v1/templates/tpl_7/publish?draft=1", headers={"x-user-id": "u_42"}
        )
    await app.client.close()
    assert answer.json() == {"published": "tpl_7"}
    (recorded,) = client.query(build_filter(actions="http.*"))
    assert (recorded.action, recorded.actor.id, recorded.resource.id) == (
        "http.v1.templates.publish.post",
        "u_42",
        "tpl_7",
    )
    context = recorded.context
    assert (context.http_route, context.http_status_code) == ("/v1/templates/{id}/publish", 201)


def test_the_client_readmes_flask_sample_records_a_request_by_flasks_rule(
    run: Runner, audit: tuple[AuditClient, str]
) -> None:
    client, _ = audit
    doc = "clients/python/README.md"
    (sample,) = [sample for sample in samples(doc) if "Flask(" in sample]
    run(doc, sample)
    flask_app = run.scope["flask_app"]
    with flask_app.test_client() as http:
        answer = http.post("/orders/o_7/cancel?reason=late", headers={"x-user-id": "u_42"})
        missing = http.post("/orders")  # no rule matched: Flask's 404, by its path
    flask_app.wsgi_app.client.close()
    assert (answer.status_code, answer.get_json()) == (201, {"cancelled": "o_7"})
    assert missing.status_code == 404
    cancelled, unmatched = client.query(build_filter(actions="http.*"), order="oldest")
    assert (cancelled.action, cancelled.actor.id) == ("http.orders.cancel.post", "u_42")
    # Its callables read Flask's `g` and `request`, current as they ran.
    assert (cancelled.resource.type, cancelled.resource.id) == ("order", "o_7")
    context = cancelled.context
    assert (context.http_route, context.http_status_code) == ("/orders/<id>/cancel", 201)
    assert (unmatched.actor.id, unmatched.context.http_route) == ("anonymous", "/orders")
    assert unmatched.resource.id == ""  # no view_args: no rule matched
    assert unmatched.context.http_status_code == 404
    assert [e.id for e in client.query(build_filter(http_routes="/orders/<id>/cancel"))] == [
        cancelled.id
    ]


def test_the_correlation_samples_carry_the_callers_request_id_and_find_a_trace(
    run: Runner, audit: tuple[AuditClient, str]
) -> None:
    client, _ = audit
    doc = "docs/correlation.md"
    recording, finding = samples(doc)
    incoming = "5f0c6f0e8d1a4c359a572b7c1c0d9e11"  # 32 hex digits, as nginx's $request_id
    run.names.update(
        request=types.SimpleNamespace(headers={"x-request-id": incoming}),
        user=types.SimpleNamespace(id="u_42"),
        key=types.SimpleNamespace(id="key_7"),
    )
    run(doc, recording)
    (recorded,) = client.query(build_filter(request_id=incoming))
    assert (recorded.action, recorded.actor.id, recorded.resource.id) == (
        "api_key.create",
        "u_42",
        "key_7",
    )
    assert recorded.context.request_id == "5f0c6f0e-8d1a-4c35-9a57-2b7c1c0d9e11"

    trace_id = "4bf92f3577b34da6a3ce929d0e0e4736"  # the sample's
    traced = client.record(
        build_event(
            action="api_key.create", actor_id="u_42", trace_id=trace_id, span_id="00f067aa0ba902b7"
        )
    ).event
    assert run(doc, finding) == f"{traced.seq} api_key.create 00f067aa0ba902b7\n"


def test_the_retention_samples_set_a_policy_then_change_it_as_read(
    run: Runner, audit: tuple[AuditClient, str]
) -> None:
    client, _ = audit
    doc = "docs/retention.md"
    setting, changing = samples(doc)
    run(doc, setting)
    policy = client.get_retention_policy().policy
    assert policy.default_days == 180
    prefixes = sorted(
        (rule.action_prefix, rule.days) for rule in policy.rules if rule.action_prefix
    )
    assert prefixes == [("billing.*", 0), ("rag.*", 90)]
    run(doc, changing)
    policy = client.get_retention_policy().policy
    assert policy.default_days == 90
    assert [rule.days for rule in policy.rules] == [365]


def test_the_webhook_verifier_accepts_what_sealtrail_signs_and_nothing_else(
    run: Runner, audit: tuple[AuditClient, str]
) -> None:
    client, _ = audit
    doc = "docs/forwarding.md"
    (verifier,) = samples(doc)
    run(doc, verifier)
    verify: Callable[[dict[str, str], bytes, str], bool] = run.scope["verify"]
    secret = "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()
    other = "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()
    with endpoint() as receiver:
        made = client.create_sink(
            build_sink("doc sample", "webhook", url=receiver.url, secrets=[secret])
        ).sink
        try:
            client.record(action="member.invite", actor_id="u_42")
            (request, *_) = receiver.wait_for(lambda received: len(received) > 0)
        finally:
            client.delete_sink(made.id)
    assert json.loads(request.body)["type"] == "sealtrail.events"
    assert verify(request.headers, request.body, secret)
    assert not verify(request.headers, request.body, other)
    assert not verify(request.headers, request.body + b" ", secret)


def test_the_record_format_sample_hashes_an_exported_record_to_its_leaf(
    run: Runner, audit: tuple[AuditClient, str], tmp_path: Path
) -> None:
    client, _ = audit
    doc = "docs/record-format.md"
    (sample,) = samples(doc)
    stored = client.record(action="member.invite", actor_id="u_42", details={"n": 3}).event
    exported = tmp_path / "log.ndjson"
    client.export(exported, format="ndjson", filter=build_filter(actions="member.invite"))
    (line,) = exported.read_text("utf-8").splitlines()
    run.names.update(row_record=line, row_leaf_hash=stored.leaf_hash)
    run(doc, sample)
    assert run.scope["event"]["seq"] == stored.seq
    # The sample's assertion is a check: another leaf hash fails it.
    run.names.update(row_leaf_hash=bytes(32))
    with pytest.raises(AssertionError):
        run(doc, sample)


def test_the_reports_sample_prints_the_weeks_totals_and_top_actors(
    run: Runner, audit: tuple[AuditClient, str]
) -> None:
    client, _ = audit
    doc = "docs/reports.md"
    (sample,) = samples(doc)
    client.record_batch(
        [
            build_event(action="user.login", actor_id="alice", outcome="failure"),
            build_event(
                action="user.login",
                actor_id="alice",
                outcome="failure",
                actor_email="alice@example.com",
                actor_display_name="Alice Martin",
            ),
            build_event(action="user.login", actor_id="bob", actor_email="bob@example.com"),
        ]
    )
    # Each top actor with who it is, as its latest event records it.
    assert run(doc, sample) == (
        "3 events, 2 failures, 0 alerts\n"
        "alice Alice Martin <alice@example.com> 2\n"
        "bob bob@example.com 1\n"
    )
    assert run.scope["report"].checkpoint.tree_size == 3


def test_the_api_request_sample_records_the_call_typed(
    run: Runner, audit: tuple[AuditClient, str]
) -> None:
    client, _ = audit
    doc = "docs/api.md"
    (sample,) = samples(doc)
    run(doc, sample)
    (recorded,) = client.query(build_filter(http_status_classes="5xx"))
    context = recorded.context
    assert (context.http_method, context.http_route) == ("GET", "/v1/templates/{id}")
    assert (context.http_status_code, context.duration_ms) == (503, 12.5)
    assert recorded.actor.credential.hint == "a1b2"


def test_every_sample_of_the_docs_is_run_here() -> None:
    """A sample added to a doc is added to a test above, or this fails."""
    run_here = {
        "README.md": 1,
        "clients/python/README.md": 13,
        "docs/api.md": 1,
        "docs/correlation.md": 2,
        "docs/retention.md": 2,
        "docs/forwarding.md": 1,
        "docs/record-format.md": 1,
        "docs/reports.md": 1,
    }
    docs = [ROOT / "README.md", ROOT / "clients/python/README.md", *(ROOT / "docs").rglob("*.md")]
    names = [str(path.relative_to(ROOT)) for path in docs]
    assert {name: len(samples(name)) for name in names if samples(name)} == run_here
