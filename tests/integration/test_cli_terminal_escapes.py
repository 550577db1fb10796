"""What the two command lines print of text they did not write (a file's, a
server's, a stored name) reaches the terminal escaped, never as the codes it
holds: ANSI escapes, OSC 8 links, carriage returns, bidi overrides. Run
against a test's server and PostgreSQL, and (for a server's own words) a
scripted gRPC server that answers as a hostile one would."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import grpc
import psycopg
from click.testing import CliRunner
from google.rpc import error_details_pb2

from sealtrail import _cli as client_cli
from sealtrail.v1 import audit_service_pb2, event_pb2, integrity_pb2, retention_pb2, settings_pb2
from sealtrail_server import cli as server_cli
from tests.conftest import ServerThread
from tests.rpc_status import status_of, status_trailers
from tests.scripted_service import scripted

# What would recolour, link, rewrite the line and reverse the text after it.
HOSTILE = "x\x1b[31mRED\x1b]8;;https://evil.example\x07link\x1b]8;;\x07\rover\u202egnp.exe"
RAW = ("\x1b", "\x07", "\r", "\u202e")


def _raw(said: str) -> list[str]:
    return [code for code in RAW if code in said]


def test_an_imports_refused_lines_show_the_files_text_escaped(
    server: ServerThread, tenant: str, tmp_path: Path
) -> None:
    """A refused line was named with the parser's words, which quote the
    file's text: an enum value or a field name holding escapes (JSON's
    \\u001b) reached stderr as terminal codes (helper-334)."""
    lines = [
        {"action": "doc.edit", "actor": {"id": "u"}, "category": HOSTILE},
        {"action": "doc.edit", "actor": {"id": "u"}, HOSTILE: 1},
        {"action": "doc.edit", "actor": {"id": "u"}},
    ]
    source = tmp_path / "events.jsonl"
    source.write_text("".join(json.dumps(line) + "\n" for line in lines))
    env = {"SEALTRAIL_SERVER": server.target, "SEALTRAIL_TOKEN": server.token(tenant, "admin")}
    done = CliRunner().invoke(client_cli.main, ["import", str(source)], env=env)
    assert "recorded 1 event" in done.output, done.output
    assert "line 1: " in done.stderr and "line 2: " in done.stderr, done.stderr
    assert _raw(done.output) == [], done.output
    assert "x\\x1b[31mRED\\x1b]8;;https://evil.example\\x07link" in done.stderr, done.stderr


def test_the_operators_token_list_shows_a_stored_name_escaped(
    migrated_database_url: str, server: ServerThread, tenant: str, sql: psycopg.Connection[Any]
) -> None:
    """A name stored before names were checked for invisible and bidi
    characters (helper-263) is still the token's: `sealtrail tokens` showed
    it escaped, `sealtrail-server token list` as it was, reversing the rest
    of the operator's line (helper-334)."""
    server.token(tenant, "reader")
    sql.execute(
        "UPDATE api_tokens SET name = %s WHERE tenant_id = %s", ["ci\u202egnp.exe\u200b", tenant]
    )
    listed = CliRunner().invoke(
        server_cli.main,
        ["token", "list", "--tenant", tenant, "--database-url", migrated_database_url],
    )
    assert listed.exit_code == 0, listed.output
    assert _raw(listed.output) == [] and "\u200b" not in listed.output, listed.output
    assert "ci\\u202egnp.exe\\u200b" in listed.output, listed.output


def _answering(**answers: Any) -> dict[str, grpc.RpcMethodHandler]:
    """Handlers that answer each method named with its message, or abort
    with a status (google.rpc.Status) whose text is HOSTILE."""

    def handler(answer: Any) -> grpc.RpcMethodHandler:
        async def answered(
            request: bytes, context: grpc.aio.ServicerContext[bytes, bytes]
        ) -> bytes:
            if isinstance(answer, grpc.StatusCode):
                status = status_of(
                    answer,
                    f"refused {HOSTILE}",
                    error_details_pb2.BadRequest(
                        field_violations=[
                            error_details_pb2.BadRequest.FieldViolation(
                                field=f"filter.{HOSTILE}", description=f"is {HOSTILE}"
                            )
                        ]
                    ),
                    error_details_pb2.ErrorInfo(
                        reason=f"R{HOSTILE}", metadata={f"k{HOSTILE}": f"v{HOSTILE}"}
                    ),
                )
                context.set_trailing_metadata(status_trailers(status))
                await context.abort(answer, status.message)
            return bytes(answer.SerializeToString())

        return grpc.unary_unary_rpc_method_handler(answered)

    return {method: handler(answer) for method, answer in answers.items()}


async def _run_against(handlers: dict[str, grpc.RpcMethodHandler], *args: str) -> Any:
    async with scripted(handlers) as target:
        env = {"SEALTRAIL_SERVER": target, "SEALTRAIL_TOKEN": "stk_" + "a" * 49}
        return await asyncio.to_thread(CliRunner().invoke, client_cli.main, list(args), env=env)


async def test_a_servers_words_reach_the_terminal_escaped() -> None:
    """What a server sends was printed as sent wherever no table held it: its
    error's text, reason, fields and metadata; a failed
    verify-log's reason and message; the retention policy's action prefixes
    and a preview's rule names; the settings' etag. A server that is not the
    one meant (or one that was taken) rewrote what its user saw (helper-334)."""
    refused = await _run_against(
        _answering(GetTenantSettings=grpc.StatusCode.INVALID_ARGUMENT), "settings"
    )
    assert refused.exit_code == 2, refused.output
    assert "refused x\\x1b[31mRED" in refused.output, refused.output
    shown = {"refused": refused.output}
    failed = integrity_pb2.VerifyLogResponse(
        ok=False,
        failure=integrity_pb2.VerifyLogFailure(seq=3, reason=f"R{HOSTILE}", message=HOSTILE),
    )
    shown["verify-log"] = (await _run_against(_answering(VerifyLog=failed), "verify-log")).output
    policy = retention_pb2.GetRetentionPolicyResponse(
        policy=retention_pb2.RetentionPolicy(
            default_days=30,
            rules=[retention_pb2.RetentionRule(action_prefix=HOSTILE, days=5)],
            etag=HOSTILE,
        ),
        legal_hold=retention_pb2.LegalHold(etag=HOSTILE),
    )
    shown["retention"] = (
        await _run_against(_answering(GetRetentionPolicy=policy), "retention")
    ).output
    preview = retention_pb2.PreviewRetentionPolicyResponse(
        events=1, rules=[retention_pb2.RetentionRulePreview(rule=HOSTILE, events=1, days=5)]
    )
    dry = await _run_against(
        _answering(PreviewRetentionPolicy=preview), "retention", "set", "30", "--dry-run"
    )
    shown["dry-run"] = dry.output
    settings = settings_pb2.GetTenantSettingsResponse(
        settings=settings_pb2.TenantSettings(etag=HOSTILE)
    )
    shown["settings"] = (
        await _run_against(_answering(GetTenantSettings=settings), "settings")
    ).output
    for command, said in shown.items():
        assert HOSTILE.split("\x1b")[0] in said, (command, said)
        assert _raw(said) == [], (command, said)


async def test_an_actors_name_beside_its_email_reaches_the_terminal_escaped() -> None:
    """The event table shows an actor's display name beside its email
    (`Alice Martin <a@x.io>`): what a server sends as the name is escaped
    there as in any cell, quoted or not."""
    for name in (HOSTILE, f"({HOSTILE})"):
        actor = event_pb2.Actor(id="u", email="a@x.io", display_name=name)
        event = event_pb2.Event(seq=1, action="doc.view", actor=actor)
        answer = audit_service_pb2.QueryResponse(events=[event])
        shown = (await _run_against(_answering(Query=answer), "query")).output
        # Escaped as a cell escapes it, or as JSON's quoting of the name does.
        assert "x\\x1b[31mRED" in shown or "x\\u001b[31mRED" in shown, shown
        assert "<a@x.io>" in shown, shown
        assert _raw(shown) == [], shown
