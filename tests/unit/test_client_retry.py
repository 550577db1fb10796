"""The sync client's retries, idempotency and metadata, against grpcio-testing's fake channel."""

from __future__ import annotations

import asyncio
import random
import socket
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Final

import grpc
import grpc_testing
import pytest
from google.protobuf import message
from google.rpc import error_details_pb2, status_pb2

import sealtrail
from sealtrail import (
    AbortedError,
    AsyncAuditClient,
    AuditClient,
    InvalidArgumentError,
    PermissionDeniedError,
    RecordResult,
    ResourceExhaustedError,
    RpcFailedError,
    UnavailableError,
)
from sealtrail._retry import RetryPolicy
from sealtrail.v1 import (
    alerting_pb2,
    audit_service_pb2,
    event_pb2,
    forwarding_pb2,
    integrity_pb2,
    retention_pb2,
    settings_pb2,
)
from tests.fake_channel import retrying_client
from tests.rpc_status import retry_info, status_of, status_trailers
from tests.scripted_service import scripted

SERVICE = audit_service_pb2.DESCRIPTOR.services_by_name["AuditLogService"]
RECORD = SERVICE.methods_by_name["Record"]
QUERY = SERVICE.methods_by_name["Query"]
REQUEST_ID: Final = "5f0c6f0e-8d1a-4c35-9a57-2b7c1c0d9e11"


@pytest.fixture
def client(channel: grpc_testing.Channel, sleeps: list[float]) -> Iterator[AuditClient]:
    with retrying_client(channel, sleeps) as client:
        yield client


@pytest.fixture
def background() -> Iterator[ThreadPoolExecutor]:
    # The client blocks until the test, acting as the server, answers each call.
    with ThreadPoolExecutor(max_workers=1) as pool:
        yield pool


def fail(
    rpc: grpc_testing.UnaryUnaryChannelRpc, code: grpc.StatusCode, *details: message.Message
) -> None:
    status = status_of(code, "it failed", *details)
    rpc.terminate(None, status_trailers(status), code, status.message)


def test_record_retries_with_one_key_and_time_and_the_token(
    client: AuditClient,
    channel: grpc_testing.Channel,
    background: ThreadPoolExecutor,
    sleeps: list[float],
) -> None:
    event = event_pb2.Event(action="member.invite", actor=event_pb2.Actor(id="u_1"))
    future = background.submit(client.record, event)
    sent = []
    for _ in range(2):
        metadata, request, rpc = channel.take_unary_unary(RECORD)
        sent.append((request.SerializeToString(), metadata))
        fail(rpc, grpc.StatusCode.UNAVAILABLE, retry_info(0.5))
    metadata, request, rpc = channel.take_unary_unary(RECORD)
    sent.append((request.SerializeToString(), metadata))
    stored = event_pb2.Event(id="e_1", seq=7, action="member.invite")
    rpc.terminate(audit_service_pb2.RecordResponse(event=stored), (), grpc.StatusCode.OK, "")

    assert future.result(timeout=5) == RecordResult(event=stored, deduplicated=False)
    assert len({body for body, _ in sent}) == 1
    recorded = audit_service_pb2.RecordRequest.FromString(sent[0][0]).event
    assert uuid.UUID(recorded.idempotency_key)
    assert recorded.HasField("occurred_at")
    assert all(("authorization", "Bearer s3cret") in metadata for _, metadata in sent)
    # The server's RetryInfo, plus the backoff's jitter (0-0.1 s, then 0-0.2 s): clients
    # told the same delay do not all come back at once.
    assert 0.5 < sleeps[0] <= 0.6 and 0.5 < sleeps[1] <= 0.7 and sleeps[0] != sleeps[1]
    assert not event.idempotency_key  # the caller's event is left as it was


class _Unavailable(grpc.RpcError):
    """What a failed attempt raises, as much of it as the client reads."""

    def code(self) -> grpc.StatusCode:
        return grpc.StatusCode.UNAVAILABLE

    def details(self) -> str:
        return "try again"

    def trailing_metadata(self) -> tuple[()]:
        return ()


def test_an_event_with_the_callers_key_and_no_time_is_sent_without_one(
    client: AuditClient,
    channel: grpc_testing.Channel,
    background: ThreadPoolExecutor,
) -> None:
    """The caller's own key means the event is the same whenever it is sent
    again (another run of a script): stamped with each call's time, the
    repeat was another event under that key, ALREADY_EXISTS. Without one,
    the service gives it the time it first received it, and its retries are
    still byte-identical. A time the caller gives is sent as given."""
    keyed = event_pb2.Event(action="deploy.finish", actor=event_pb2.Actor(id="ci"),
                            idempotency_key="deploy-42")  # fmt: skip
    timed = event_pb2.Event()
    timed.CopyFrom(keyed)
    timed.occurred_at.FromSeconds(1_700_000_000)
    for event, time_sent in ((keyed, False), (timed, True)):
        future = background.submit(client.record, event)
        sent = []
        for attempt in range(2):
            _, request, rpc = channel.take_unary_unary(RECORD)
            sent.append(request.SerializeToString())
            if attempt == 0:
                fail(rpc, grpc.StatusCode.UNAVAILABLE, retry_info(0.01))
            else:
                rpc.terminate(audit_service_pb2.RecordResponse(event=event), (),
                              grpc.StatusCode.OK, "")  # fmt: skip
        future.result(timeout=5)
        assert len(set(sent)) == 1
        recorded = audit_service_pb2.RecordRequest.FromString(sent[0]).event
        assert recorded.idempotency_key == "deploy-42"
        assert recorded.HasField("occurred_at") is time_sent
        assert recorded.occurred_at == event.occurred_at


def test_every_attempt_of_a_call_carries_one_request_id(client: AuditClient) -> None:
    """Each retry sent a new one (the correlation interceptor reads the id set
    around the call): the stored event named an id the caller never saw, and
    the server's log split one call in three."""
    seen: list[str | None] = []

    def attempt(request: object, **_: object) -> str:
        seen.append(sealtrail.current_request_id())
        if len(seen) < 3:
            raise _Unavailable()
        return "answer"

    assert client._call(attempt, None) == "answer"  # type: ignore[arg-type]
    assert len(seen) == 3 and len(set(seen)) == 1 and uuid.UUID(str(seen[0]))
    with sealtrail.request_id("5f0c6f0e-8d1a-4c35-9a57-2b7c1c0d9e11"):
        seen.clear()
        client._call(attempt, None)  # type: ignore[arg-type]
    assert set(seen) == {"5f0c6f0e-8d1a-4c35-9a57-2b7c1c0d9e11"}  # the caller's own


def test_unavailable_without_retry_info_backs_off_exponentially(
    client: AuditClient,
    channel: grpc_testing.Channel,
    background: ThreadPoolExecutor,
    sleeps: list[float],
) -> None:
    future = background.submit(client.get_event, "e_1")
    get_event = SERVICE.methods_by_name["GetEvent"]
    for _ in range(2):
        _, _, rpc = channel.take_unary_unary(get_event)
        fail(rpc, grpc.StatusCode.UNAVAILABLE)
    _, _, rpc = channel.take_unary_unary(get_event)
    response = audit_service_pb2.GetEventResponse(event=event_pb2.Event(id="e_1"))
    rpc.terminate(response, (), grpc.StatusCode.OK, "")

    assert future.result(timeout=5).id == "e_1"
    assert len(sleeps) == 2
    assert 0 <= sleeps[0] <= 0.1
    assert 0 <= sleeps[1] <= 0.2


def test_invalid_argument_is_raised_at_once_with_its_field_violations(
    client: AuditClient,
    channel: grpc_testing.Channel,
    background: ThreadPoolExecutor,
    sleeps: list[float],
) -> None:
    future = background.submit(client.record, action="Bad Action", actor_id="u_1")
    _, _, rpc = channel.take_unary_unary(RECORD)
    violation = error_details_pb2.BadRequest.FieldViolation(
        field="event.action", description="must be dotted lowercase"
    )
    fail(
        rpc,
        grpc.StatusCode.INVALID_ARGUMENT,
        error_details_pb2.ErrorInfo(reason="INVALID_FIELD", domain="sealtrail"),
        error_details_pb2.BadRequest(field_violations=[violation]),
    )

    with pytest.raises(InvalidArgumentError) as raised:
        future.result(timeout=5)
    assert raised.value.code is grpc.StatusCode.INVALID_ARGUMENT
    assert raised.value.reason == "INVALID_FIELD"
    assert raised.value.field_violations == [("event.action", "must be dotted lowercase")]
    assert str(raised.value) == "INVALID_ARGUMENT: it failed"
    assert sleeps == []  # no retry was scheduled


def test_a_change_aborted_on_its_etag_is_raised_at_once(
    client: AuditClient,
    channel: grpc_testing.Channel,
    background: ThreadPoolExecutor,
    sleeps: list[float],
) -> None:
    future = background.submit(client.set_retention_policy, "90d", etag='"e1"')
    _, request, rpc = channel.take_unary_unary(SERVICE.methods_by_name["UpdateRetentionPolicy"])
    assert request == retention_pb2.UpdateRetentionPolicyRequest(
        policy=retention_pb2.RetentionPolicy(default_days=90, etag='"e1"')
    )
    fail(
        rpc,
        grpc.StatusCode.ABORTED,
        error_details_pb2.ErrorInfo(reason="ETAG_MISMATCH", domain="sealtrail"),
    )

    with pytest.raises(AbortedError) as raised:
        future.result(timeout=5)
    assert raised.value.reason == "ETAG_MISMATCH"
    assert sleeps == []  # read again and decide: never retried as it was


# Each change a caller can make on condition of an etag: (method, the call
# with an etag, the same call without, its response). A retried change
# answered without an event id looks for the one its lost attempt recorded
# (test_lost_answers.py): these answer with one.
CONDITIONAL_CHANGES: Final = [
    (
        "UpdateRetentionPolicy",
        lambda c: c.set_retention_policy("90d", etag='"e1"'),
        lambda c: c.set_retention_policy("90d"),
        retention_pb2.UpdateRetentionPolicyResponse(event_id="e_1"),
    ),
    (
        "SetLegalHold",
        lambda c: c.set_legal_hold(False, etag='"e1"'),
        lambda c: c.set_legal_hold(False),
        retention_pb2.SetLegalHoldResponse(event_id="e_1"),
    ),
    (
        "UpdateTenantSettings",
        lambda c: c.set_redaction_mode("hmac", etag='"e1"'),
        lambda c: c.set_redaction_mode("hmac"),
        settings_pb2.UpdateTenantSettingsResponse(event_id="e_1"),
    ),
    (
        "UpdateSink",
        lambda c: c.update_sink(forwarding_pb2.Sink(id="s", paused=True, etag='"e1"')),
        lambda c: c.update_sink(forwarding_pb2.Sink(id="s", paused=True)),
        forwarding_pb2.UpdateSinkResponse(event_id="e_1"),
    ),
    (
        "UpdateAlertRule",
        lambda c: c.update_alert_rule(alerting_pb2.AlertRule(id="r", disabled=True, etag='"e1"')),
        lambda c: c.update_alert_rule(alerting_pb2.AlertRule(id="r", disabled=True)),
        alerting_pb2.UpdateAlertRuleResponse(event_id="e_1"),
    ),
]


@pytest.mark.parametrize(
    ("method", "conditional", "unconditional", "response"),
    CONDITIONAL_CHANGES,
    ids=[change[0] for change in CONDITIONAL_CHANGES],
)
def test_a_change_on_condition_of_an_etag_is_never_retried(
    client: AuditClient,
    channel: grpc_testing.Channel,
    background: ThreadPoolExecutor,
    sleeps: list[float],
    method: str,
    conditional: Callable[[AuditClient], object],
    unconditional: Callable[[AuditClient], object],
    response: message.Message,
) -> None:
    """Had the first attempt applied, a retry would fail on the change's own
    etag: the caller reads again instead. Without an etag it is retried."""
    descriptor = SERVICE.methods_by_name[method]
    future = background.submit(conditional, client)
    _, request, rpc = channel.take_unary_unary(descriptor)
    fail(rpc, grpc.StatusCode.UNAVAILABLE, retry_info(0.5))
    with pytest.raises(UnavailableError):
        future.result(timeout=5)
    assert sleeps == []
    assert 'etag: "\\"e1\\""' in str(request)  # the etag was sent

    future = background.submit(unconditional, client)
    _, _, rpc = channel.take_unary_unary(descriptor)
    fail(rpc, grpc.StatusCode.UNAVAILABLE, retry_info(0.5))
    _, _, rpc = channel.take_unary_unary(descriptor)
    rpc.terminate(response, (), grpc.StatusCode.OK, "")
    future.result(timeout=5)
    assert len(sleeps) == 1 and 0.5 < sleeps[0] <= 0.6


def test_retries_stop_after_max_attempts(
    client: AuditClient,
    channel: grpc_testing.Channel,
    background: ThreadPoolExecutor,
    sleeps: list[float],
) -> None:
    future = background.submit(client.record, action="member.invite", actor_id="u_1")
    for _ in range(3):
        _, _, rpc = channel.take_unary_unary(RECORD)
        fail(rpc, grpc.StatusCode.UNAVAILABLE, retry_info(1.5))

    with pytest.raises(UnavailableError) as raised:
        future.result(timeout=5)
    assert raised.value.retry_after == 1.5
    assert 1.5 < sleeps[0] <= 1.6 and 1.5 < sleeps[1] <= 1.7


def test_an_erasure_the_server_could_not_take_is_retried_and_answers_its_receipt(
    client: AuditClient,
    channel: grpc_testing.Channel,
    background: ThreadPoolExecutor,
    sleeps: list[float],
) -> None:
    """UNAVAILABLE: a server that could not take it (the database unreachable,
    the tenant being erased by another call)."""
    erase = SERVICE.methods_by_name["EraseTenant"]
    future = background.submit(client.erase_tenant, "acme")
    _, request, rpc = channel.take_unary_unary(erase)
    fail(rpc, grpc.StatusCode.UNAVAILABLE, retry_info(1.0))
    _, again, rpc = channel.take_unary_unary(erase)
    assert again == request and request.confirm_tenant_id == "acme"
    receipt = retention_pb2.ErasureReceipt(tenant_id="acme", final_tree_size=7)
    rpc.terminate(retention_pb2.EraseTenantResponse(receipt=receipt), (), grpc.StatusCode.OK, "")
    assert future.result(timeout=5) == receipt
    assert len(sleeps) == 1 and 1.0 < sleeps[0] <= 1.1


@pytest.mark.parametrize("code", [grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.CANCELLED])
def test_an_erasure_cut_off_or_cancelled_is_not_retried(
    client: AuditClient,
    channel: grpc_testing.Channel,
    background: ThreadPoolExecutor,
    sleeps: list[float],
    code: grpc.StatusCode,
) -> None:
    """Cut off at its deadline, an erasure was rolled back and would take as
    long again (five hours of tries for a large tenant); cancelled or reset, it
    may have completed, and a repeat would find the tenant's tokens gone."""
    future = background.submit(client.erase_tenant, "acme")
    _, _, rpc = channel.take_unary_unary(SERVICE.methods_by_name["EraseTenant"])
    fail(rpc, code)
    with pytest.raises(RpcFailedError) as raised:
        future.result(timeout=5)
    assert raised.value.code is code and not raised.value.retried
    assert sleeps == []


def test_an_erasure_whose_retry_finds_its_token_gone_says_it_probably_completed(
    client: AuditClient,
    channel: grpc_testing.Channel,
    background: ThreadPoolExecutor,
    sleeps: list[float],
) -> None:
    erase = SERVICE.methods_by_name["EraseTenant"]
    future = background.submit(client.erase_tenant, "acme")
    _, _, rpc = channel.take_unary_unary(erase)
    fail(rpc, grpc.StatusCode.UNAVAILABLE)  # a proxy lost the answer
    _, _, rpc = channel.take_unary_unary(erase)
    fail(rpc, grpc.StatusCode.UNAUTHENTICATED)  # the erasure removed the token
    with pytest.raises(sealtrail.UnauthenticatedError, match="probably completed") as raised:
        future.result(timeout=5)
    assert raised.value.code is grpc.StatusCode.UNAUTHENTICATED and raised.value.retried


@pytest.mark.parametrize("token", ["s3cr\u00e9t", "s3cret\n", "s3\x00cret", "s3cret\t"])
def test_a_token_no_header_can_carry_is_refused_as_the_client_is_made(token: str) -> None:
    """gRPC refuses such a header before sending it: every call failed
    INTERNAL "Invalid metadata", as if the server had (helper-222). Refused
    at once, by both clients, without repeating the secret."""
    for make in (AuditClient, sealtrail.AsyncAuditClient):
        with pytest.raises(ValueError, match="no header can carry") as raised:
            make("127.0.0.1:1", token=token)
        assert token not in str(raised.value)


def test_a_closed_client_makes_no_call() -> None:
    """grpc's intercepted channel, closed, crashed the process (SIGSEGV) on the
    first call of a method not called before; the async client raised grpc's
    UsageError. Both raise ClientClosedError (a ValueError) at once."""
    client = AuditClient("127.0.0.1:1", token="t")
    client.close()
    with pytest.raises(sealtrail.ClientClosedError):
        client.get_event("e_1")
    with pytest.raises(sealtrail.ClientClosedError):
        next(iter(client.stream()))
    with pytest.raises(ValueError, match="closed"):
        next(iter(client.export_stream()))

    async def closed_async() -> None:
        client = sealtrail.AsyncAuditClient("127.0.0.1:1", token="t")
        await client.close()
        with pytest.raises(sealtrail.ClientClosedError):
            await client.get_event("e_1")
        with pytest.raises(sealtrail.ClientClosedError):
            await anext(aiter(client.stream()))
        with pytest.raises(sealtrail.ClientClosedError):
            await anext(aiter(client.export_stream()))

    asyncio.run(closed_async())


def test_jitter_comes_on_top_of_the_servers_delay_and_grows() -> None:
    policy = RetryPolicy(max_attempts=10, rng=random.Random(7))
    told = UnavailableError("busy", code=grpc.StatusCode.UNAVAILABLE, retry_after=1.0)
    waits = [policy.backoff(attempt, told) for attempt in range(1, 8)]
    assert all(
        w is not None and 1.0 < w <= 1.0 + min(5.0, 0.1 * 2 ** (n)) for n, w in enumerate(waits)
    )
    assert len(set(waits)) == len(waits)  # not in lockstep
    assert max(w for w in waits if w is not None) > 2.0  # and later as it goes on


def test_an_errors_reason_and_metadata_reach_the_caller(
    client: AuditClient, channel: grpc_testing.Channel, background: ThreadPoolExecutor
) -> None:
    future = background.submit(client.get_checkpoint, tree_size=99)
    _, _, rpc = channel.take_unary_unary(SERVICE.methods_by_name["GetCheckpoint"])
    info = error_details_pb2.ErrorInfo(
        reason="BEYOND_LOG_SIZE", domain="sealtrail", metadata={"tree_size": "41"}
    )
    status = status_pb2.Status(code=grpc.StatusCode.FAILED_PRECONDITION.value[0], message="no")
    status.details.add().Pack(info)
    trailers = (
        ("grpc-status-details-bin", status.SerializeToString()),
        ("x-request-id", "5f0c6f0e-8d1a-4c35-9a57-2b7c1c0d9e11"),  # the server's log knows it so
    )
    rpc.terminate(None, trailers, grpc.StatusCode.FAILED_PRECONDITION, status.message)
    with pytest.raises(RpcFailedError) as raised:
        future.result(timeout=5)
    assert (raised.value.reason, raised.value.metadata) == ("BEYOND_LOG_SIZE", {"tree_size": "41"})
    assert raised.value.request_id == "5f0c6f0e-8d1a-4c35-9a57-2b7c1c0d9e11"


def test_an_error_without_the_servers_id_carries_the_id_sent() -> None:
    """A deadline the client enforced, or a proxy's UNAVAILABLE, has no trailer:
    `request_id` was empty for exactly the calls one looks up in the logs.
    (Against a port nothing listens on: the client's own channel, which sends
    the id; a channel given to it may not, and then none is claimed.)"""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with (
        AuditClient(f"127.0.0.1:{port}", token="t", max_attempts=1) as client,
        sealtrail.request_id("0b6f3c1e-2a44-4f1b-8a61-7c3e9d2f5a10"),
        pytest.raises(UnavailableError) as raised,
    ):
        client.get_event("e_1")
    assert raised.value.request_id == "0b6f3c1e-2a44-4f1b-8a61-7c3e9d2f5a10"


def _unused_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_a_streams_error_says_it_was_retried_and_carries_the_id_sent() -> None:
    """A stream that never connected gave up with neither `retried` nor the
    request id its attempts were sent with, as calls have; an export too,
    retried as a call is before its first message."""
    with (
        AuditClient(
            f"127.0.0.1:{_unused_port()}", token="t", max_attempts=2, sleep=lambda seconds: None
        ) as client,  # fmt: skip
        sealtrail.request_id("3c1b7a52-0f7e-4a8e-9d6b-1e2f3a4b5c6d"),
    ):
        with pytest.raises(UnavailableError) as streamed:
            next(iter(client.stream()))
        with pytest.raises(UnavailableError) as exported:
            next(iter(client.export_stream()))
    assert streamed.value.retried and exported.value.retried
    assert streamed.value.request_id == "3c1b7a52-0f7e-4a8e-9d6b-1e2f3a4b5c6d"
    assert exported.value.request_id == "3c1b7a52-0f7e-4a8e-9d6b-1e2f3a4b5c6d"


def test_a_stream_on_a_given_channel_sends_no_request_id_of_its_own(
    client: AuditClient, channel: grpc_testing.Channel, background: ThreadPoolExecutor
) -> None:
    """A channel given to the client is used as it is: its interceptors may
    send ids of their own, which one added here went before (helper-77)."""
    future = background.submit(lambda: next(iter(client.export_stream())))
    metadata, _, rpc = channel.take_unary_stream(SERVICE.methods_by_name["Export"])
    assert "x-request-id" not in dict(metadata)
    rpc.terminate((), grpc.StatusCode.PERMISSION_DENIED, "no")
    with pytest.raises(PermissionDeniedError) as raised:
        future.result(timeout=5)
    assert raised.value.request_id == "" and not raised.value.retried


async def test_an_async_streams_error_says_it_was_retried_and_carries_a_request_id() -> None:
    async def no_wait(seconds: float) -> None:
        return None

    async with AsyncAuditClient(
        f"127.0.0.1:{_unused_port()}", token="t", max_attempts=2, sleep=no_wait
    ) as client:
        with pytest.raises(UnavailableError) as streamed:
            await anext(aiter(client.stream()))
        with pytest.raises(UnavailableError) as exported:
            await anext(aiter(client.export_stream()))
    assert streamed.value.retried and exported.value.retried
    # None set by the caller: one made for the stream, its attempts all sent with it.
    assert uuid.UUID(streamed.value.request_id) and uuid.UUID(exported.value.request_id)


def test_a_total_timeout_bounds_a_call_with_its_retries(channel: grpc_testing.Channel) -> None:
    """`timeout` is per attempt: five attempts and the server's delays made
    one `record()` last a minute. Within `total_timeout`, no retry starts that
    could not begin in time (and each attempt gets only what is left)."""
    now = [0.0]
    sleeps: list[float] = []

    def sleep(seconds: float) -> None:
        sleeps.append(seconds)
        now[0] += seconds

    client = AuditClient(
        "unused", token="t", channel=channel, timeout=10.0, total_timeout=3.0,
        sleep=sleep, rng=random.Random(0), clock=lambda: now[0],
    )  # fmt: skip
    with ThreadPoolExecutor(max_workers=1) as background:
        future = background.submit(client.get_event, "e_1")
        get_event = SERVICE.methods_by_name["GetEvent"]
        for _ in range(2):
            _, _, rpc = channel.take_unary_unary(get_event)
            fail(rpc, grpc.StatusCode.UNAVAILABLE, retry_info(1.6))
        with pytest.raises(UnavailableError) as raised:
            future.result(timeout=5)
    assert len(sleeps) == 1 and 1.6 < sleeps[0] <= 1.7  # a second wait would end past 3 s
    assert raised.value.retried


class _Deadlines:
    """A channel that notes the deadline each call on it is given
    (grpc_testing's channel cannot be intercepted)."""

    def __init__(self, channel: grpc_testing.Channel) -> None:
        self._channel = channel
        self.seen: list[float | None] = []

    def unary_unary(self, *args: Any, **kwargs: Any) -> Callable[..., Any]:
        call = self._channel.unary_unary(*args, **kwargs)

        def noted(request: Any, *, timeout: float | None = None, **options: Any) -> Any:
            self.seen.append(timeout)
            return call(request, timeout=timeout, **options)

        return noted

    def __getattr__(self, name: str) -> Any:  # the stub's other kinds of call
        return getattr(self._channel, name)


@pytest.mark.parametrize(
    ("method", "call"),
    [
        ("CountEvents", lambda client: client.count_events()),
        ("PreviewRetentionPolicy", lambda client: client.preview_retention_policy("90d")),
    ],
    ids=["count_events", "preview_retention_policy"],
)
def test_a_total_timeout_bounds_a_count_and_a_retention_preview_too(
    channel: grpc_testing.Channel, method: str, call: Callable[[AuditClient], object]
) -> None:
    """They have their own longer deadline (60 s, an hour), and the client's
    total_timeout did not bound them: with total_timeout=1, five attempts of
    an hour each (helper-197). Their deadline stays, within total_timeout."""
    now = [0.0]
    sleeps: list[float] = []

    def sleep(seconds: float) -> None:
        sleeps.append(seconds)
        now[0] += seconds

    deadlines = _Deadlines(channel)
    client = AuditClient(
        "unused", token="t", channel=deadlines,  # type: ignore[arg-type]
        timeout=10.0, total_timeout=3.0, sleep=sleep, rng=random.Random(0), clock=lambda: now[0],
    )  # fmt: skip
    with ThreadPoolExecutor(max_workers=1) as background:
        future = background.submit(call, client)
        for _ in range(2):
            _, _, rpc = channel.take_unary_unary(SERVICE.methods_by_name[method])
            fail(rpc, grpc.StatusCode.UNAVAILABLE, retry_info(1.6))
        while not future.done() and len(sleeps) < 2:
            time.sleep(0.01)
        if not future.done():  # a third attempt past the bound: ended, so the test ends
            _, _, rpc = channel.take_unary_unary(SERVICE.methods_by_name[method])
            fail(rpc, grpc.StatusCode.INVALID_ARGUMENT)
        with pytest.raises(sealtrail.SealtrailError) as raised:
            future.result(timeout=5)
    assert len(sleeps) == 1 and 1.6 < sleeps[0] <= 1.7  # a second wait would end past 3 s
    assert isinstance(raised.value, UnavailableError) and raised.value.retried
    assert deadlines.seen[0] == 3.0 and all(d is not None and d <= 3.0 for d in deadlines.seen)


async def test_the_async_clients_total_timeout_bounds_a_count_too() -> None:
    """As the sync client's (above), against a grpc.aio server whose every
    CountEvents takes 2 s by the client's clock and fails UNAVAILABLE."""
    now = [0.0]
    attempts = 0

    async def count_events(
        request: bytes, context: grpc.aio.ServicerContext[bytes, bytes]
    ) -> bytes:
        nonlocal attempts
        attempts += 1
        now[0] += 2.0
        await context.abort(grpc.StatusCode.UNAVAILABLE, "down")
        raise AssertionError("aborted")

    async def sleep(seconds: float) -> None:
        now[0] += seconds

    async with (
        scripted({"CountEvents": grpc.unary_unary_rpc_method_handler(count_events)}) as target,
        AsyncAuditClient(
            target, token="t", total_timeout=3.0, sleep=sleep, clock=lambda: now[0]
        ) as client,
    ):
        with pytest.raises(UnavailableError):
            await client.count_events()
    assert attempts == 2  # the third would begin past 3 s


def test_resource_exhausted_without_retry_info_is_not_retried(
    client: AuditClient,
    channel: grpc_testing.Channel,
    background: ThreadPoolExecutor,
    sleeps: list[float],
) -> None:
    future = background.submit(client.record, action="member.invite", actor_id="u_1")
    _, _, rpc = channel.take_unary_unary(RECORD)
    fail(rpc, grpc.StatusCode.RESOURCE_EXHAUSTED)

    with pytest.raises(ResourceExhaustedError):
        future.result(timeout=5)
    assert sleeps == []


def test_a_record_cancelled_by_a_stopping_server_is_retried_with_its_key(
    client: AuditClient,
    channel: grpc_testing.Channel,
    background: ThreadPoolExecutor,
    sleeps: list[float],
) -> None:
    future = background.submit(client.record, action="member.invite", actor_id="u_1")
    _, first, rpc = channel.take_unary_unary(RECORD)
    fail(rpc, grpc.StatusCode.CANCELLED)  # as a server stopping mid-call answers
    _, second, rpc = channel.take_unary_unary(RECORD)
    stored = event_pb2.Event(id="e_1", seq=7, action="member.invite")
    rpc.terminate(audit_service_pb2.RecordResponse(event=stored), (), grpc.StatusCode.OK, "")

    assert future.result(timeout=5).event == stored
    assert second == first and first.event.idempotency_key
    assert len(sleeps) == 1


def test_a_closed_client_retries_nothing(
    client: AuditClient,
    channel: grpc_testing.Channel,
    background: ThreadPoolExecutor,
    sleeps: list[float],
) -> None:
    future = background.submit(client.record, action="member.invite", actor_id="u_1")
    _, _, rpc = channel.take_unary_unary(RECORD)
    client.close()
    fail(rpc, grpc.StatusCode.CANCELLED)  # as its closing channel ends the call

    with pytest.raises(RpcFailedError) as raised:
        future.result(timeout=5)
    assert raised.value.code is grpc.StatusCode.CANCELLED
    assert sleeps == []


def test_query_follows_page_tokens_and_stops_at_the_limit(
    client: AuditClient, channel: grpc_testing.Channel, background: ThreadPoolExecutor
) -> None:
    future = background.submit(lambda: [e.seq for e in client.query(page_size=2, limit=3)])
    pages = []
    for seqs, token in [((9, 8), "p2"), ((7, 6), "p3")]:
        _, request, rpc = channel.take_unary_unary(QUERY)
        pages.append((request.page_token, request.page_size, request.order))
        response = audit_service_pb2.QueryResponse(
            events=[event_pb2.Event(seq=s) for s in seqs], next_page_token=token
        )
        rpc.terminate(response, (), grpc.StatusCode.OK, "")

    assert future.result(timeout=5) == [9, 8, 7]
    newest = audit_service_pb2.ORDER_NEWEST_FIRST
    assert pages == [("", 2, newest), ("p2", 2, newest)]


def test_one_field_name_is_refused_as_an_update_mask(client: AuditClient) -> None:
    # A string is an iterable of names too: each letter would become a path.
    with pytest.raises(TypeError, match=r"\['paused'\]"):
        client.update_sink(forwarding_pb2.Sink(id="s"), fields="paused")
    with pytest.raises(TypeError, match=r"\['disabled'\]"):
        client.update_alert_rule(alerting_pb2.AlertRule(id="r"), fields="disabled")


def test_retention_days_beyond_a_hundred_years_are_refused_naming_the_argument(
    client: AuditClient,
) -> None:
    """Days past what the request's field carries: protobuf's bare "Value
    out of range: 1099511627776" named nothing. (Up to there the server
    refuses what is past 36,500 days, naming every such field at once.)
    (helper-137)"""
    with pytest.raises(ValueError, match=r"^default: must be at most 36500 \(or 0"):
        client.set_retention_policy(2**40)
    with pytest.raises(ValueError, match=r"^categories\['security'\]: must be at most 36500"):
        client.preview_retention_policy(categories={"security": 2**32})
    with pytest.raises(ValueError, match=r"^action_prefixes\['rag\.\*'\]: must be at most"):
        client.set_retention_policy(action_prefixes={"rag.*": 2**63})


def test_a_whole_log_scan_is_not_retried(
    client: AuditClient,
    channel: grpc_testing.Channel,
    sleeps: list[float],
    background: ThreadPoolExecutor,
) -> None:
    """VerifyLog reads the whole log, and each scan is recorded: cut off by a
    deadline, each retry began the scan again (five, for one command)."""
    verify = SERVICE.methods_by_name["VerifyLog"]
    future = background.submit(client.verify_log)
    _, request, rpc = channel.take_unary_unary(verify)
    assert isinstance(request, integrity_pb2.VerifyLogRequest)
    fail(rpc, grpc.StatusCode.DEADLINE_EXCEEDED)
    with pytest.raises(RpcFailedError):
        future.result(timeout=5)
    assert sleeps == []


def test_a_retention_preview_is_retried_as_a_read_but_not_once_its_time_ran_out(
    client: AuditClient,
    channel: grpc_testing.Channel,
    sleeps: list[float],
    background: ThreadPoolExecutor,
) -> None:
    """A preview records and changes nothing: a server that could not take it
    is asked again, as the docs said, though the client never retried it. Cut
    off by its deadline (an hour), it would take as long again: not retried."""
    preview = SERVICE.methods_by_name["PreviewRetentionPolicy"]
    future = background.submit(client.preview_retention_policy, "90d")
    _, request, rpc = channel.take_unary_unary(preview)
    fail(rpc, grpc.StatusCode.UNAVAILABLE)
    while not (sleeps or future.done()):  # waiting to retry, or given up
        time.sleep(0.01)
    assert not future.done(), future.exception()
    _, again, rpc = channel.take_unary_unary(preview)
    assert again == request
    answer = retention_pb2.PreviewRetentionPolicyResponse(events=3)
    rpc.terminate(answer, (), grpc.StatusCode.OK, "")
    assert future.result(timeout=5).events == 3 and len(sleeps) == 1
    future = background.submit(client.preview_retention_policy, "90d")
    _, _, rpc = channel.take_unary_unary(preview)
    fail(rpc, grpc.StatusCode.DEADLINE_EXCEEDED)
    with pytest.raises(RpcFailedError):
        future.result(timeout=5)
    assert len(sleeps) == 1


RECORD_BATCH = SERVICE.methods_by_name["RecordBatch"]


def _entries(*outcomes: event_pb2.Event | grpc.StatusCode) -> audit_service_pb2.RecordBatchResponse:
    """A RecordBatch answer: an event stored, or an entry refused with a code."""
    response = audit_service_pb2.RecordBatchResponse()
    for outcome in outcomes:
        result = response.results.add()
        if isinstance(outcome, grpc.StatusCode):
            result.error.code = outcome.value[0]
            result.error.message = "refused"
        else:
            result.event.CopyFrom(outcome)
    return response


def test_batch_entries_refused_unavailable_are_sent_again_under_their_keys(
    client: AuditClient,
    channel: grpc_testing.Channel,
    background: ThreadPoolExecutor,
    sleeps: list[float],
) -> None:
    """An entry refused alone with UNAVAILABLE (received in a month being
    created; the database refusing the batch, then it alone) was not written,
    and was returned as a result: the caller had to resend it, and the key the
    client gave it was nowhere to be had (helper-138). The client now sends
    those entries again, alone, under the same keys, as it retries a call;
    the others keep their results, and an entry refused for what it is is not
    sent again."""
    events = [event_pb2.Event(action=f"doc.{n}", actor=event_pb2.Actor(id="u")) for n in range(4)]
    future = background.submit(client.record_batch, events)
    _, first, rpc = channel.take_unary_unary(RECORD_BATCH)
    unavailable, invalid = grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.INVALID_ARGUMENT
    stored = [event_pb2.Event(id=f"e_{n}", seq=n + 1) for n in range(4)]
    rpc.terminate(
        _entries(stored[0], unavailable, invalid, unavailable), (), grpc.StatusCode.OK, ""
    )
    _, second, rpc = channel.take_unary_unary(RECORD_BATCH)
    assert list(second.events) == [first.events[1], first.events[3]]  # keys and times kept
    rpc.terminate(_entries(stored[1], unavailable), (), grpc.StatusCode.OK, "")
    _, third, rpc = channel.take_unary_unary(RECORD_BATCH)
    assert list(third.events) == [first.events[3]]
    rpc.terminate(_entries(stored[3]), (), grpc.StatusCode.OK, "")

    results = future.result(timeout=5)
    assert [result.event for result in results] == [stored[0], stored[1], None, stored[3]]
    error = results[2].error
    assert isinstance(error, InvalidArgumentError) and not error.retried
    assert len(sleeps) == 2 and 0 < sleeps[0] <= 0.1 and 0 < sleeps[1] <= 0.2


def test_a_batch_entry_is_sent_again_after_the_delay_the_server_asked(
    client: AuditClient,
    channel: grpc_testing.Channel,
    background: ThreadPoolExecutor,
    sleeps: list[float],
) -> None:
    """An entry refused alone carries the server's retry delay, as a call's
    RetryInfo does: resent at once, it met the same overload (the appender's
    pending limit, a shutting-down server) a moment later."""
    events = [event_pb2.Event(action=f"doc.{n}", actor=event_pb2.Actor(id="u")) for n in range(2)]
    future = background.submit(client.record_batch, events)
    _, _, rpc = channel.take_unary_unary(RECORD_BATCH)
    answer = _entries(event_pb2.Event(id="e_0", seq=1), grpc.StatusCode.UNAVAILABLE)
    answer.results[1].error.retry_delay.FromMilliseconds(1500)
    rpc.terminate(answer, (), grpc.StatusCode.OK, "")
    _, _, rpc = channel.take_unary_unary(RECORD_BATCH)
    rpc.terminate(_entries(event_pb2.Event(id="e_1", seq=2)), (), grpc.StatusCode.OK, "")
    assert [result.event.id for result in future.result(timeout=5) if result.event] == [
        "e_0",
        "e_1",
    ]
    assert len(sleeps) == 1 and sleeps[0] >= 1.5


def test_batch_entries_still_unavailable_after_the_last_attempt_say_they_were_retried(
    client: AuditClient, channel: grpc_testing.Channel, background: ThreadPoolExecutor
) -> None:
    """max_attempts bounds an entry's attempts as it does a call's; a resend
    that fails whole leaves its error on the entries it carried."""
    events = [event_pb2.Event(action=f"doc.{n}", actor=event_pb2.Actor(id="u")) for n in range(2)]
    future = background.submit(client.record_batch, events)
    stored = event_pb2.Event(id="e_0", seq=1)
    unavailable = grpc.StatusCode.UNAVAILABLE
    _, _, rpc = channel.take_unary_unary(RECORD_BATCH)
    rpc.terminate(_entries(stored, unavailable), (), grpc.StatusCode.OK, "")
    _, _, rpc = channel.take_unary_unary(RECORD_BATCH)
    rpc.terminate(_entries(unavailable), (), grpc.StatusCode.OK, "")
    _, _, rpc = channel.take_unary_unary(RECORD_BATCH)
    rpc.terminate(_entries(unavailable), (), grpc.StatusCode.OK, "")  # the third attempt
    results = future.result(timeout=5)
    assert results[0].event == stored
    error = results[1].error
    assert isinstance(error, UnavailableError) and error.retried

    future = background.submit(client.record_batch, events)
    _, _, rpc = channel.take_unary_unary(RECORD_BATCH)
    rpc.terminate(_entries(stored, unavailable), (), grpc.StatusCode.OK, "")
    _, _, rpc = channel.take_unary_unary(RECORD_BATCH)
    rpc.terminate(None, (), grpc.StatusCode.PERMISSION_DENIED, "token revoked")
    results = future.result(timeout=5)
    assert results[0].event == stored
    error = results[1].error
    assert isinstance(error, PermissionDeniedError) and error.retried


async def test_the_async_client_sends_entries_refused_unavailable_again() -> None:
    """As the sync client does (above), against a grpc.aio server that answers
    each RecordBatch from a script."""
    unavailable = grpc.StatusCode.UNAVAILABLE
    stored = [event_pb2.Event(id=f"e_{n}", seq=n + 1) for n in range(3)]
    answers = [_entries(stored[0], unavailable, unavailable), _entries(unavailable, stored[2])]
    answers.append(_entries(stored[1]))
    received: list[audit_service_pb2.RecordBatchRequest] = []

    async def record_batch(
        request: bytes, context: grpc.aio.ServicerContext[bytes, bytes]
    ) -> bytes:
        received.append(audit_service_pb2.RecordBatchRequest.FromString(request))
        return answers[len(received) - 1].SerializeToString()

    sleeps: list[float] = []

    async def sleep(seconds: float) -> None:
        sleeps.append(seconds)

    async with (
        scripted({"RecordBatch": grpc.unary_unary_rpc_method_handler(record_batch)}) as target,
        AsyncAuditClient(target, token="t", sleep=sleep) as client,
    ):
        events = [event_pb2.Event(action="doc.a", actor=event_pb2.Actor(id="u"))] * 3
        results = await client.record_batch(events)
    assert [result.event for result in results] == stored
    first = received[0].events
    assert [list(r.events) for r in received[1:]] == [[first[1], first[2]], [first[1]]]
    assert len(sleeps) == 2


def _request_id_of(metadata: Any) -> str | None:
    return next((str(value) for key, value in metadata or () if key == "x-request-id"), None)


async def test_a_batchs_entries_are_sent_again_under_the_batchs_request_id() -> None:
    """Each resend of entries refused UNAVAILABLE went out under a request id
    of its own: the events of one record_batch were split between ids, and a
    query by the id the batch was sent under missed those sent again. The
    resends now carry the batch's id (its own, or the one the caller set),
    from either client."""
    unavailable = grpc.StatusCode.UNAVAILABLE
    stored = [event_pb2.Event(id=f"e_{n}", seq=n + 1) for n in range(3)]
    answers = [
        _entries(stored[0], unavailable, unavailable),
        _entries(stored[1], unavailable),
        _entries(stored[2]),
    ]
    sent: list[str | None] = []

    async def record_batch(
        request: bytes, context: grpc.aio.ServicerContext[bytes, bytes]
    ) -> bytes:
        sent.append(_request_id_of(context.invocation_metadata()))
        return answers[(len(sent) - 1) % len(answers)].SerializeToString()

    async def no_wait(seconds: float) -> None:
        pass

    events = [event_pb2.Event(action=f"doc.{n}", actor=event_pb2.Actor(id="u")) for n in range(3)]

    def recorded(results: list[Any]) -> list[str | None]:
        assert [result.event for result in results] == stored
        batch, sent[:] = list(sent), []
        return batch

    handlers = {"RecordBatch": grpc.unary_unary_rpc_method_handler(record_batch)}
    async with scripted(handlers) as target:
        with AuditClient(target, token="t", sleep=lambda _: None) as client:
            own = recorded(await asyncio.to_thread(client.record_batch, events))
            assert len(set(own)) == 1 and uuid.UUID(str(own[0])), own

            def inside_a_request() -> list[Any]:
                with sealtrail.request_id(REQUEST_ID):
                    return client.record_batch(events)

            assert recorded(await asyncio.to_thread(inside_a_request)) == [REQUEST_ID] * 3
        async with AsyncAuditClient(target, token="t", sleep=no_wait) as aio_client:
            own = recorded(await aio_client.record_batch(events))
            assert len(set(own)) == 1 and uuid.UUID(str(own[0])), own
            with sealtrail.request_id(REQUEST_ID):
                assert recorded(await aio_client.record_batch(events)) == [REQUEST_ID] * 3


def test_a_total_timeout_bounds_a_batch_with_its_entries_resends(
    channel: grpc_testing.Channel,
) -> None:
    """Each resend of refused entries began the client's total_timeout anew:
    a batch of 10 s ran 16 s, up to three times the bound (helper-164)."""
    now = [0.0]

    def sleep(seconds: float) -> None:
        now[0] += seconds

    client = AuditClient(
        "unused", token="t", channel=channel, total_timeout=10.0, max_attempts=5,
        sleep=sleep, rng=random.Random(0), clock=lambda: now[0],
    )  # fmt: skip
    events = [event_pb2.Event(action="doc.a", actor=event_pb2.Actor(id="u"))] * 2
    stored, unavailable = event_pb2.Event(id="e_0", seq=1), grpc.StatusCode.UNAVAILABLE
    with ThreadPoolExecutor(max_workers=1) as background:
        future = background.submit(client.record_batch, events)
        _, _, rpc = channel.take_unary_unary(RECORD_BATCH)
        now[0] += 4.0  # each answer takes 4 s
        rpc.terminate(_entries(stored, unavailable), (), grpc.StatusCode.OK, "")
        _, _, rpc = channel.take_unary_unary(RECORD_BATCH)
        now[0] += 4.0
        rpc.terminate(_entries(unavailable), (), grpc.StatusCode.OK, "")
        _, _, rpc = channel.take_unary_unary(RECORD_BATCH)
        now[0] += 4.0
        rpc.terminate(_entries(unavailable), (), grpc.StatusCode.OK, "")
        results = future.result(timeout=5)
    assert now[0] <= 12.5  # no resend began past 10 s
    assert results[0].event == stored and isinstance(results[1].error, UnavailableError)


def test_a_client_closed_while_it_waits_to_resend_entries_returns_the_results(
    channel: grpc_testing.Channel,
) -> None:
    """A close() while the client waited to resend refused entries raised
    ClientClosedError, and the caller lost the results of the entries
    written (helper-164). It returns them, the refused entries' errors kept."""
    clients: list[AuditClient] = []
    client = AuditClient(
        "unused", token="t", channel=channel, sleep=lambda seconds: clients[0].close()
    )
    clients.append(client)
    events = [event_pb2.Event(action="doc.a", actor=event_pb2.Actor(id="u"))] * 2
    stored, unavailable = event_pb2.Event(id="e_0", seq=1), grpc.StatusCode.UNAVAILABLE
    with ThreadPoolExecutor(max_workers=1) as background:
        future = background.submit(client.record_batch, events)
        _, _, rpc = channel.take_unary_unary(RECORD_BATCH)
        rpc.terminate(_entries(stored, unavailable), (), grpc.StatusCode.OK, "")
        results = future.result(timeout=5)
    assert results[0].event == stored and isinstance(results[1].error, UnavailableError)


@pytest.mark.parametrize("span", ["0d", "0w", "0y"])
def test_a_retention_span_of_nothing_is_refused_not_read_as_forever(
    client: AuditClient, span: str
) -> None:
    """0 days is the field's "forever": a span of 0d, meant perhaps as "keep
    nothing", was taken silently as keep everything (helper-170)."""
    with pytest.raises(ValueError, match="forever"):
        client.set_retention_policy(span)
