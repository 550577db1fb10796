"""A client method that makes more than one RPC is one call for the
client's `total_timeout`: its later RPCs get what is left of the bound,
not a bound of their own. Against a scripted grpc.aio server (real
deadlines, real connections) that never answers the later RPC, the call's
duration measured by the client's clock: one that jumps ahead as the
earlier RPC is answered, so that the earlier part spends most of the bound
without the test waiting for it."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
import pytest

from sealtrail import AsyncAuditClient, AuditClient, SealtrailError
from sealtrail.tlog import Checkpoint, format_checkpoint, generate_signer_key, sign_note
from sealtrail.v1 import access_pb2, integrity_pb2
from tests.scripted_service import scripted

BOUND = 4.0  # the clients' total_timeout
SPENT = 3.0  # of it, by the client's clock, before the RPC never answered
# What the whole call may take by the client's clock: the bound, and half of
# it again for a slow machine's own delays. A later RPC given a bound of its
# own takes SPENT + BOUND, past it.
WITHIN = BOUND * 1.5


class _Clock:
    """time.monotonic, moved ahead by `jump`."""

    def __init__(self) -> None:
        self.ahead = 0.0

    def __call__(self) -> float:
        return time.monotonic() + self.ahead

    def jump(self, seconds: float) -> None:
        self.ahead += seconds


async def _never_answered(request: bytes, context: grpc.aio.ServicerContext[bytes, bytes]) -> bytes:
    await asyncio.sleep(60)  # cancelled when the call's deadline passes, or the server stops
    raise AssertionError("answered")


def _revoke_handlers(clock: _Clock) -> dict[str, grpc.RpcMethodHandler]:
    """RevokeToken's first attempt fails UNAVAILABLE once SPENT of the bound
    is spent (its answer lost, as far as the client knows); the retry finds
    the token revoked already (no event_id), so the client looks for the
    revocation its first attempt recorded: a Query never answered."""
    attempts = 0

    async def revoke(request: bytes, context: grpc.aio.ServicerContext[bytes, bytes]) -> bytes:
        nonlocal attempts
        attempts += 1
        if attempts == 1:
            clock.jump(SPENT)
            await context.abort(grpc.StatusCode.UNAVAILABLE, "connection reset")
        return access_pb2.RevokeTokenResponse().SerializeToString()

    return {
        "RevokeToken": grpc.unary_unary_rpc_method_handler(revoke),
        "Query": grpc.unary_unary_rpc_method_handler(_never_answered),
    }


def _options(clock: _Clock) -> dict[str, Any]:
    return {
        "token": "t",
        "total_timeout": BOUND,
        "initial_backoff": 0.01,
        "max_backoff": 0.01,
        "clock": clock,
    }


async def _timed(clock: _Clock, call: Callable[[], Awaitable[object]]) -> tuple[float, Exception]:
    began = clock()
    with pytest.raises(SealtrailError) as raised:
        await call()
    return clock() - began, raised.value


async def test_a_retried_changes_lookup_of_its_own_record_gets_what_is_left_of_the_bound() -> None:
    """A change (revoke_token here; set_retention_policy and the others go
    the same way) retried after a lost answer looks up the record its lost
    attempt made: that Query had a total_timeout of its own, and the whole
    call took up to twice the bound. Now it gets what is left; cut off, the
    call's error says it was retried (the change may have been made)."""
    clock = _Clock()
    async with scripted(_revoke_handlers(clock)) as target:
        with AuditClient(target, **_options(clock)) as client:
            took, error = await _timed(
                clock, lambda: asyncio.to_thread(client.revoke_token, "tok_1")
            )
        assert took < WITHIN, f"the sync client's call took {took:.1f} s of a {BOUND} s bound"
        assert isinstance(error, SealtrailError)
        assert error.code is grpc.StatusCode.DEADLINE_EXCEEDED and error.retried

    clock = _Clock()
    async with (
        scripted(_revoke_handlers(clock)) as target,
        AsyncAuditClient(target, **_options(clock)) as aclient,
    ):
        took, error = await _timed(clock, lambda: aclient.revoke_token("tok_1"))
    assert took < WITHIN, f"the async client's call took {took:.1f} s of a {BOUND} s bound"
    assert isinstance(error, SealtrailError)
    assert error.code is grpc.StatusCode.DEADLINE_EXCEEDED and error.retried


SIGNER = generate_signer_key("sealtrail.test/log")


def _signed(size: int) -> str:
    """A checkpoint of the log at `size`, signed by SIGNER."""
    checkpoint = Checkpoint("sealtrail.test/log/acme", size, bytes([size]) * 32)
    return sign_note(format_checkpoint(checkpoint), SIGNER)


def _checkpoint_handlers(clock: _Clock) -> dict[str, grpc.RpcMethodHandler]:
    """Today's checkpoint, answered once SPENT of the bound is spent; the
    consistency proof to it from a saved one, never answered."""

    async def checkpoint(request: bytes, context: grpc.aio.ServicerContext[bytes, bytes]) -> bytes:
        clock.jump(SPENT)
        latest = integrity_pb2.SignedCheckpoint(note=_signed(7))
        return integrity_pb2.GetCheckpointResponse(checkpoint=latest).SerializeToString()

    return {
        "GetCheckpoint": grpc.unary_unary_rpc_method_handler(checkpoint),
        "GetConsistencyProof": grpc.unary_unary_rpc_method_handler(_never_answered),
    }


async def test_checking_a_saved_checkpoint_is_one_call_for_the_bound() -> None:
    """check_checkpoint reads today's checkpoint, then the consistency proof
    to it: each RPC had a total_timeout of its own, and the check took up
    to twice the bound."""
    key = SIGNER.verifier.text()
    clock = _Clock()
    async with scripted(_checkpoint_handlers(clock)) as target:
        with AuditClient(target, **_options(clock)) as client:
            took, error = await _timed(
                clock, lambda: asyncio.to_thread(client.check_checkpoint, _signed(5), key=key)
            )
        assert took < WITHIN, f"the sync client's check took {took:.1f} s of a {BOUND} s bound"
        assert error.code is grpc.StatusCode.DEADLINE_EXCEEDED

    clock = _Clock()
    async with (
        scripted(_checkpoint_handlers(clock)) as target,
        AsyncAuditClient(target, **_options(clock)) as aclient,
    ):
        took, error = await _timed(clock, lambda: aclient.check_checkpoint(_signed(5), key=key))
    assert took < WITHIN, f"the async client's check took {took:.1f} s of a {BOUND} s bound"
    assert error.code is grpc.StatusCode.DEADLINE_EXCEEDED


def _listing_handlers(clock: _Clock) -> dict[str, grpc.RpcMethodHandler]:
    """ListTokens' first page, answered once SPENT of the bound is spent and
    naming a next page; the next page, never answered."""

    async def tokens(request: bytes, context: grpc.aio.ServicerContext[bytes, bytes]) -> bytes:
        if access_pb2.ListTokensRequest.FromString(request).page_token:
            return await _never_answered(request, context)
        clock.jump(SPENT)
        first = access_pb2.ApiToken(token_id="tok_1")
        page = access_pb2.ListTokensResponse(tokens=[first], next_page_token="page-2")
        return page.SerializeToString()

    return {"ListTokens": grpc.unary_unary_rpc_method_handler(tokens)}


async def test_a_listing_read_page_after_page_is_one_call_for_the_bound() -> None:
    """list_tokens (and the other methods returning every page of a listing)
    is one method, one list: each page had a total_timeout of its own, and
    the listing took as many bounds as it had pages."""
    clock = _Clock()
    async with scripted(_listing_handlers(clock)) as target:
        with AuditClient(target, **_options(clock)) as client:
            took, error = await _timed(clock, lambda: asyncio.to_thread(client.list_tokens))
        assert took < WITHIN, f"the sync client's listing took {took:.1f} s of a {BOUND} s bound"
        assert error.code is grpc.StatusCode.DEADLINE_EXCEEDED

    clock = _Clock()
    async with (
        scripted(_listing_handlers(clock)) as target,
        AsyncAuditClient(target, **_options(clock)) as aclient,
    ):
        took, error = await _timed(clock, aclient.list_tokens)
    assert took < WITHIN, f"the async client's listing took {took:.1f} s of a {BOUND} s bound"
    assert error.code is grpc.StatusCode.DEADLINE_EXCEEDED
