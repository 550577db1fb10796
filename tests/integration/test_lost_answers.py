"""A Record or RecordBatch whose first attempt the server committed, its answer
lost on the way back (the connection reset), retried by the client under the
same idempotency keys: the log holds each event once, and the caller is told
its events were recorded, not that they had been before (helper-197).

The answer is lost by an interceptor on the client's channel, after the
server answered; the channel sends the client's request id as the client's
own does (CorrelationInterceptor)."""

from __future__ import annotations

import base64
import json
import re
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import grpc
import pytest
from click.testing import CliRunner

import sealtrail
from sealtrail import (
    AsyncAuditClient,
    AuditClient,
    build_alert_rule,
    build_event,
    build_filter,
    build_sink,
)
from sealtrail import _cli as cli
from sealtrail import _client as client_module
from sealtrail.v1 import alerting_pb2, forwarding_pb2
from tests.conftest import ServerThread


class _Lost(grpc.RpcError):
    """What a connection reset after the server answered looks like."""

    def code(self) -> grpc.StatusCode:
        return grpc.StatusCode.UNAVAILABLE

    def details(self) -> str:
        return "connection reset (answer lost)"

    def trailing_metadata(self) -> tuple[()]:
        return ()


class LoseFirstAnswer(grpc.UnaryUnaryClientInterceptor):  # type: ignore[misc]
    """Lets the first call of `method` reach the server and be answered, then
    fails it UNAVAILABLE, as a connection reset would."""

    def __init__(self, method: str) -> None:
        self.method, self.lost = method, 0

    def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        outcome = continuation(details, request)
        if details.method.endswith(f"/{self.method}") and not self.lost:
            outcome.result()  # the server did it
            self.lost += 1
            raise _Lost()
        return outcome


class AioLoseFirstAnswer(grpc.aio.UnaryUnaryClientInterceptor):  # type: ignore[misc]
    """LoseFirstAnswer for a grpc.aio channel."""

    def __init__(self, method: str) -> None:
        self.method, self.lost = method, 0

    async def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        call = await continuation(details, request)
        method = details.method.decode() if isinstance(details.method, bytes) else details.method
        if method.endswith(f"/{self.method}") and not self.lost:
            await call  # the server did it
            self.lost += 1
            empty = grpc.aio.Metadata()
            raise grpc.aio.AioRpcError(
                grpc.StatusCode.UNAVAILABLE, empty, empty, "connection reset (answer lost)"
            )
        return call


class LoseAnswersAfter(LoseFirstAnswer):
    """Lets the first `answered` calls of `method` be answered; every later
    one reaches the server and is done, its answer lost."""

    def __init__(self, method: str, *, answered: int) -> None:
        super().__init__(method)
        self.answered = answered

    def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        outcome = continuation(details, request)
        if details.method.endswith(f"/{self.method}"):
            if self.answered:
                self.answered -= 1
            else:
                outcome.result()  # the server did it
                self.lost += 1
                raise _Lost()
        return outcome


def losing(server: ServerThread, tenant: str, lose: LoseFirstAnswer) -> AuditClient:
    channel = grpc.intercept_channel(
        grpc.insecure_channel(server.target), lose, sealtrail.CorrelationInterceptor()
    )
    return AuditClient(server.target, token=server.token(tenant), channel=channel)


def losing_client_class(lose: LoseFirstAnswer) -> type[AuditClient]:
    """An AuditClient for the command line whose channel loses an answer."""

    class Losing(AuditClient):
        def __init__(self, target: str, **options: Any) -> None:
            channel = grpc.intercept_channel(
                grpc.insecure_channel(target), lose, sealtrail.CorrelationInterceptor()
            )
            super().__init__(target, token=options["token"], channel=channel)

    return Losing


def stored(client: AuditClient, action: str) -> int:
    return sum(1 for _ in client.query(build_filter(actions=action)))


def test_a_record_whose_answer_was_lost_says_it_recorded_the_event(
    server: ServerThread, tenant: str, client: AuditClient
) -> None:
    """It said `deduplicated=True`: recorded before, by someone else."""
    lose = LoseFirstAnswer("Record")
    result = losing(server, tenant, lose).record(action="lost.one", actor_id="u")
    assert lose.lost == 1
    assert result.deduplicated is False
    assert stored(client, "lost.one") == 1


def test_a_batch_whose_answer_was_lost_says_it_recorded_its_events(
    server: ServerThread, tenant: str, client: AuditClient
) -> None:
    """The last entry repeats the first's key: recorded once, by the first."""
    lose = LoseFirstAnswer("RecordBatch")
    events = [
        build_event(action="lost.batch", actor_id=f"u{n}", idempotency_key=f"lost-batch-{n}")
        for n in range(3)
    ]
    events.append(build_event(action="lost.batch", actor_id="u0", idempotency_key="lost-batch-0"))
    results = losing(server, tenant, lose).record_batch(events)
    assert lose.lost == 1
    assert [(result.error, result.deduplicated) for result in results] == [
        (None, False),
        (None, False),
        (None, False),
        (None, True),
    ]
    assert stored(client, "lost.batch") == 3


def test_a_retried_call_still_says_deduplicated_of_what_another_call_recorded(
    server: ServerThread, tenant: str, client: AuditClient
) -> None:
    """Only the events this call's own attempts recorded count as its own: an
    event recorded before, under the same key, by another call, is said to
    be, retried or not."""
    earlier = build_event(action="lost.earlier", actor_id="u", idempotency_key="lost-earlier-1")
    assert client.record(earlier).deduplicated is False
    again = build_event(action="lost.earlier", actor_id="u", idempotency_key="lost-earlier-1")
    fresh = build_event(action="lost.earlier", actor_id="v")
    lose = LoseFirstAnswer("RecordBatch")
    results = losing(server, tenant, lose).record_batch([again, fresh])
    assert lose.lost == 1
    assert [result.deduplicated for result in results] == [True, False]
    assert stored(client, "lost.earlier") == 2


def test_under_a_request_id_of_the_callers_a_retried_call_says_deduplicated_as_before(
    server: ServerThread, tenant: str, client: AuditClient
) -> None:
    """A request id the caller set is shared by every call in its block: an
    earlier call of the request could have recorded the event under that id,
    so a retried call cannot tell it from its own lost attempt (documented)."""
    lose = LoseFirstAnswer("Record")
    with sealtrail.request_id():
        result = losing(server, tenant, lose).record(action="lost.shared", actor_id="u")
    assert lose.lost == 1 and result.deduplicated is True
    assert stored(client, "lost.shared") == 1


async def test_the_async_client_says_it_recorded_the_events_whose_answer_was_lost(
    server: ServerThread, tenant: str, client: AuditClient
) -> None:
    token = server.token(tenant)
    for method in ("Record", "RecordBatch"):
        lose = AioLoseFirstAnswer(method)
        channel = grpc.aio.insecure_channel(
            server.target, interceptors=[lose, *sealtrail.aio_correlation_interceptors()]
        )
        async with AsyncAuditClient(server.target, token=token, channel=channel) as losing_client:
            if method == "Record":
                one = await losing_client.record(action="lost.async", actor_id="u")
                results = [one.deduplicated]
            else:
                events = [build_event(action="lost.async", actor_id=f"u{n}") for n in range(2)]
                results = [r.deduplicated for r in await losing_client.record_batch(events)]
        await channel.close()
        assert lose.lost == 1 and results == [False] * len(results), method
    assert stored(client, "lost.async") == 3


def test_sealtrail_import_whose_answer_was_lost_counts_its_events_as_recorded(
    server: ServerThread,
    tenant: str,
    client: AuditClient,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A first import of 3 lines said "recorded 0 events, 3 events already recorded"."""
    lose = LoseFirstAnswer("RecordBatch")
    monkeypatch.setattr(client_module, "AuditClient", losing_client_class(lose))
    lines = _events_file(tmp_path, "lost.import", 3)
    env = {"SEALTRAIL_SERVER": server.target, "SEALTRAIL_TOKEN": server.token(tenant)}
    shown = CliRunner().invoke(cli.main, ["import", str(lines)], env=env)
    assert shown.exit_code == 0, shown.output
    assert lose.lost == 1
    assert shown.stdout.startswith("recorded 3 events from "), shown.stdout
    assert stored(client, "lost.import") == 3


def test_sealtrail_import_cut_short_names_the_lines_its_failed_call_may_have_recorded(
    server: ServerThread,
    tenant: str,
    client: AuditClient,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The second batch's call recorded its lines, its every answer lost: the
    import stopped saying "every line up to 2 was dealt with", and nothing
    of lines 3 and 4. Imported again from line 3, as that invited, lines
    without an idempotency key were recorded twice."""
    lose = LoseAnswersAfter("RecordBatch", answered=1)
    monkeypatch.setattr(client_module, "AuditClient", losing_client_class(lose))
    lines = _events_file(tmp_path, "lost.cut", 5)
    env = {"SEALTRAIL_SERVER": server.target, "SEALTRAIL_TOKEN": server.token(tenant)}
    args = ["import", "--batch-size", "2", "--import-id", "import-of-tests-1", str(lines)]
    shown = CliRunner().invoke(cli.main, args, env=env)
    assert shown.exit_code == 1, shown.output
    assert lose.lost > 1  # each attempt of the second batch's call
    said = shown.stderr.splitlines()[0]
    assert said == (
        f"recorded 2 events from {lines}; every line up to 2 was dealt with;"
        " lines 3 to 4, sent when it stopped, may have been recorded; to go on, import it"
        " again with --import-id import-of-tests-1: no line is recorded twice"
    )
    assert stored(client, "lost.cut") == 4
    # The client's README quotes the message whole, its way on included: it
    # quoted the lines alone, and went on to advise `tail -n +3`, after which
    # the lines sent when it stopped were recorded twice.
    readme = (Path(__file__).resolve().parents[2] / "clients/python/README.md").read_text("utf-8")
    (quoted,) = re.findall(r'"(every line up to 2 [^"]*)"', readme)
    quoted = re.sub(r"--import-id \S+:", "--import-id import-of-tests-1:", " ".join(quoted.split()))
    assert said.endswith(f"; {quoted}"), quoted


def test_a_retention_policy_set_whose_answer_was_lost_says_it_was_updated(
    server: ServerThread,
    tenant: str,
    client: AuditClient,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`sealtrail retention set --yes` (no etag, so retried) whose first
    attempt changed the policy, its answer lost: the retry found the policy
    as asked, and the command said "policy already as asked; nothing
    recorded", though the call had recorded the change."""
    lose = LoseFirstAnswer("UpdateRetentionPolicy")
    monkeypatch.setattr(client_module, "AuditClient", losing_client_class(lose))
    env = {"SEALTRAIL_SERVER": server.target, "SEALTRAIL_TOKEN": server.token(tenant)}
    shown = CliRunner().invoke(cli.main, ["retention", "set", "2y", "--yes"], env=env)
    assert shown.exit_code == 0, shown.output
    assert lose.lost == 1
    assert shown.stdout == "policy updated\n"
    assert client.get_retention_policy().policy.default_days == 730
    # The library's caller, the same: the id of the change its call recorded.
    lose = LoseFirstAnswer("UpdateRetentionPolicy")
    changed = losing(server, tenant, lose).set_retention_policy("1y")
    assert lose.lost == 1 and changed.event_id
    assert client.set_retention_policy("1y").event_id == ""  # as asked: nothing recorded
    updates = list(client.query(build_filter(actions="retention.policy_updated")))
    assert len(updates) == 2 and updates[0].id == changed.event_id


def test_a_redaction_mode_set_whose_answer_was_lost_says_it_was_updated(
    server: ServerThread,
    tenant: str,
    client: AuditClient,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`sealtrail settings redaction-mode` (no etag, so retried), the same:
    it said "settings already as asked; nothing recorded"."""
    lose = LoseFirstAnswer("UpdateTenantSettings")
    monkeypatch.setattr(client_module, "AuditClient", losing_client_class(lose))
    env = {"SEALTRAIL_SERVER": server.target, "SEALTRAIL_TOKEN": server.token(tenant)}
    shown = CliRunner().invoke(cli.main, ["settings", "redaction-mode", "hmac"], env=env)
    assert shown.exit_code == 0, shown.output
    assert lose.lost == 1
    assert shown.stdout == "settings updated\n"
    assert len(list(client.query(build_filter(actions="tenant.settings_updated")))) == 1
    assert client.set_redaction_mode("hmac").event_id == ""  # as asked: nothing recorded


async def test_the_async_client_answers_the_change_its_lost_attempt_made(
    server: ServerThread, tenant: str, client: AuditClient
) -> None:
    lose = AioLoseFirstAnswer("UpdateRetentionPolicy")
    channel = grpc.aio.insecure_channel(
        server.target, interceptors=[lose, *sealtrail.aio_correlation_interceptors()]
    )
    token = server.token(tenant)
    async with AsyncAuditClient(server.target, token=token, channel=channel) as losing_client:
        changed = await losing_client.set_retention_policy("2y")
    await channel.close()
    assert lose.lost == 1
    [update] = client.query(build_filter(actions="retention.policy_updated"))
    assert changed.event_id == update.id


def _placed(admin: AuditClient) -> str:
    admin.set_legal_hold(True, reason="litigation 42")
    return ""


# Changes retried without an etag whose repeat changes nothing, answered with
# no event id: (method, what the change needs made first, the change, the
# action that records it). Each found its lost attempt's change made and
# answered an empty event_id, as if nothing had been recorded.
Change = Callable[[Any, str], Any]
RETRIED_CHANGES: list[tuple[str, Callable[[AuditClient], str], Change, str]] = [
    (
        "SetLegalHold",
        lambda admin: "",
        lambda c, _: c.set_legal_hold(True, reason="litigation 42"),
        "retention.legal_hold_placed",
    ),
    (
        "SetLegalHold",
        _placed,
        lambda c, _: c.set_legal_hold(False),
        "retention.legal_hold_released",
    ),
    (
        "UpdateAlertRule",
        lambda admin: (
            admin.create_alert_rule(
                build_alert_rule("logins", "match", filter=build_filter(actions="user.login"))
            ).rule.id
        ),
        lambda c, rule_id: c.update_alert_rule(
            alerting_pb2.AlertRule(id=rule_id, disabled=True), fields=["disabled"]
        ),
        "alert_rule.updated",
    ),
    (
        "UpdateSink",
        lambda admin: (
            admin.create_sink(
                build_sink(
                    "siem",
                    "webhook",
                    url="http://127.0.0.1:9/hook",
                    secrets=["whsec_" + base64.b64encode(b"k" * 32).decode()],
                    filter=build_filter(actions="doc.edit"),
                    paused=True,
                )
            ).sink.id
        ),
        lambda c, sink_id: c.update_sink(
            forwarding_pb2.Sink(id=sink_id, name="siem (prod)"), fields=["name"]
        ),
        "sink.updated",
    ),
    (
        "RevokeToken",
        lambda admin: admin.create_token("recorder", name="old deploy key").token.token_id,
        lambda c, token_id: c.revoke_token(token_id),
        "api_token.revoked",
    ),
]


@pytest.mark.parametrize(
    ("method", "made", "change", "action"),
    RETRIED_CHANGES,
    ids=[action for *_, action in RETRIED_CHANGES],
)
def test_a_retried_change_whose_answer_was_lost_answers_the_id_of_its_change(
    server: ServerThread,
    tenant: str,
    client: AuditClient,
    method: str,
    made: Callable[[AuditClient], str],
    change: Change,
    action: str,
) -> None:
    """A legal hold placed or released, an alert rule or a sink updated, a
    token revoked (retried, as none carries an etag), whose first attempt
    made the change, its answer lost: the retry found it made and answered
    no event_id, as a repeat that changes nothing does."""
    resource = made(client)
    lose = LoseFirstAnswer(method)
    changed = change(losing(server, tenant, lose), resource)
    assert lose.lost == 1
    [recorded] = client.query(build_filter(actions=action))
    assert changed.event_id == recorded.id
    assert change(client, resource).event_id == ""  # as asked: nothing recorded


async def test_the_async_client_answers_the_id_of_each_change_its_lost_attempt_made(
    server: ServerThread, client_for: Callable[..., AuditClient]
) -> None:
    for method, made, change, action in RETRIED_CHANGES:
        admin = client_for(tenant := f"t-{uuid.uuid4().hex[:12]}")
        resource = made(admin)
        lose = AioLoseFirstAnswer(method)
        channel = grpc.aio.insecure_channel(
            server.target, interceptors=[lose, *sealtrail.aio_correlation_interceptors()]
        )
        token = server.token(tenant)
        async with AsyncAuditClient(server.target, token=token, channel=channel) as losing_client:
            answer: Awaitable[Any] = change(losing_client, resource)
            changed = await answer
        await channel.close()
        assert lose.lost == 1, action
        [recorded] = admin.query(build_filter(actions=action))
        assert changed.event_id == recorded.id, action


def _events_file(tmp_path: Path, action: str, count: int) -> Path:
    """An NDJSON file of `count` keyless events of `action`, for `sealtrail import`."""
    lines = tmp_path / "events.ndjson"
    events = ({"action": action, "actor": {"id": f"u{n}"}} for n in range(count))
    lines.write_text("".join(json.dumps(event) + "\n" for event in events))
    return lines
