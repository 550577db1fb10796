"""Email sinks (docs/forwarding.md, ADR 0133) against a real SMTP server on
127.0.0.1 (aiosmtpd): an alert mailed with its line as the Subject, from and
to the sink's addresses, under a Message-ID of its event; a 5xx refusing the
message parked, a 4xx retried until taken (the same message), a refused
login held naming the username, STARTTLS verified against a CA of the
test's own, and the password (a sealed secret) never shown or logged."""

from __future__ import annotations

import asyncio
import json
import ssl
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from email import message_from_bytes
from email.policy import default
from pathlib import Path
from typing import Any

import psycopg
import pytest
from click.testing import CliRunner
from google.protobuf import json_format

from sealtrail import (
    AuditClient,
    InvalidArgumentError,
    RpcFailedError,
    build_filter,
    build_sink,
)
from sealtrail import _cli as client_cli
from sealtrail.v1 import event_pb2, forwarding_pb2
from sealtrail_server.forward import mail
from sealtrail_server.forward.egress import EgressDenied, EgressPolicy
from tests.alerted_sinks import a_role_change_alerted
from tests.conftest import ServerThread
from tests.integration.test_forwarding import record
from tests.integration.test_spike_alerts import BASELINE, SPIKE, WINDOW, spike_rule
from tests.pki import Authority
from tests.sink_states import a_poisoned_event_parked, wait_for_state
from tests.smtp_server import Mailbox, smtp_server

ON_CALL = ["oncall@example.com", "Security Team <security@example.org>"]
# `localhost` in full-width letters: a host name in Unicode whose A-label (UTS
# 46 maps each letter to its ASCII one) resolves here, to 127.0.0.1.
FULL_WIDTH_LOCALHOST = "".join(chr(0xFF41 + ord(c) - ord("a")) for c in "localhost")


@pytest.fixture
def mailbox() -> Iterator[Mailbox]:
    with smtp_server() as running:
        yield running


def email_sink(
    mailbox: Mailbox, actions: str = "document.*", **options: Any
) -> forwarding_pb2.Sink:
    settings: dict[str, Any] = {
        "host": "127.0.0.1",
        "port": mailbox.port,
        "security": "none",
        "from_address": "Sealtrail <alerts@example.com>",
        "to_addresses": ON_CALL,
        **options,
    }
    return build_sink("on-call mail", "email", filter=build_filter(actions=actions), **settings)


def mailed_seqs(taken: list[Any]) -> list[int]:
    return [int(one.message["X-Sealtrail-Seq"]) for one in taken]


def test_an_alert_is_mailed_with_its_line_as_subject_from_and_to_the_sinks_addresses(
    client: AuditClient,
    sinks: Callable[..., forwarding_pb2.Sink],
    mailbox: Mailbox,
    tenant: str,
) -> None:
    sink = sinks(email_sink(mailbox, actions="security.alert"))
    with a_role_change_alerted(client, sink.id, rule_name="role change") as trigger:
        [taken] = mailbox.wait_for(lambda t: len(t) >= 1)  # the alert's alone
        [alert] = client.query(build_filter(actions="security.alert"))
        wait_for_state(client, sink.id, lambda s: s.state.delivered_events == 1)
    message = taken.message
    assert message["Subject"] == (
        f"[critical] Alert 'role change': member.role_changed by admin"
        f" (tenant {tenant}, seq {alert.seq}, fired on seq {trigger})"
    )
    assert message["From"] == "Sealtrail <alerts@example.com>"
    assert message["To"] == "oncall@example.com, Security Team <security@example.org>"
    assert taken.mail_from == "alerts@example.com"
    assert taken.rcpt_tos == ["oncall@example.com", "security@example.org"]
    assert message["Message-ID"].startswith(f"<{alert.id}.")
    assert message["X-Sealtrail-Event-Id"] == alert.id
    body = message.get_body(("plain",)).get_content().replace("\r\n", "\n")
    assert "Severity: critical" in body and "Action: security.alert" in body
    # The alert as the log holds it, with its leaf hash: what a responder checks.
    forwarded = json.loads(body.split("forwards it:\n\n", 1)[1])
    assert forwarded["id"] == alert.id and len(forwarded["leaf_hash"]) == 64
    assert forwarded["details"]["trigger_seq"] == trigger
    assert len(mailbox.taken) == 1


def test_a_5xx_refusing_the_message_parks_it_and_the_next_is_mailed(
    client: AuditClient,
    sinks: Callable[..., forwarding_pb2.Sink],
    mailbox: Mailbox,
) -> None:
    mailbox.responder = lambda data, index: (
        "554 5.7.1 message content rejected" if b"poisoned" in data else None
    )
    sink = sinks(email_sink(mailbox))
    parked = a_poisoned_event_parked(
        client,
        sink.id,
        delivered=lambda after: mailbox.wait_for(lambda t: after in mailed_seqs(t)),
        status=554,
    )
    assert parked.state.consecutive_failures == 0
    error = parked.letter.error
    assert error.startswith("SMTP 554 from 127.0.0.1:") and "5.7.1" in error
    assert mailbox.answered == 2  # not sent again


def test_every_recipient_refused_parks_the_event(
    client: AuditClient,
    sinks: Callable[..., forwarding_pb2.Sink],
    mailbox: Mailbox,
) -> None:
    mailbox.unknown = {"nobody@example.com"}
    sink = sinks(email_sink(mailbox, to_addresses=["nobody@example.com"]))
    seq = client.record(action="document.share", actor_id="u").event.seq
    state = wait_for_state(client, sink.id, lambda s: s.state.dead_letters == 1).state
    assert state.cursor_seq >= seq
    [letter] = client.list_dead_letters(sink.id)
    assert letter.http_status == 550 and "no such user" in letter.error


def test_a_4xx_is_retried_and_the_same_message_then_taken(
    client: AuditClient,
    sinks: Callable[..., forwarding_pb2.Sink],
    mailbox: Mailbox,
) -> None:
    sent: list[bytes] = []

    def later_twice(data: bytes, index: int) -> str | None:
        sent.append(data)
        return "451 4.3.0 try again later" if index < 2 else None

    mailbox.responder = later_twice
    sink = sinks(email_sink(mailbox))
    seq = client.record(action="document.share", actor_id="u").event.seq
    [taken] = mailbox.wait_for(lambda t: len(t) >= 1)
    assert mailed_seqs([taken]) == [seq]
    state = wait_for_state(client, sink.id, lambda s: s.state.cursor_seq >= seq).state
    assert state.dead_letters == 0 and state.delivered_events == 1
    # The same message each time: a retry is recognisable by its Message-ID.
    assert len(sent) == 3 and len(set(sent)) == 1


def test_a_reply_lost_after_data_is_sent_again_under_the_same_message_id(
    client: AuditClient,
    sinks: Callable[..., forwarding_pb2.Sink],
    mailbox: Mailbox,
) -> None:
    """A connection lost after the message went but before the server's
    reply: the sender cannot tell a message taken from one lost, so it sends
    it again (at least once). The repeat is the same message, under the same
    Message-ID, which mail readers and most servers show or keep once."""
    mailbox.lost_replies = 1
    sink = sinks(email_sink(mailbox))
    seq = client.record(action="document.share", actor_id="u").event.seq
    first, again = mailbox.wait_for(lambda t: len(t) >= 2)
    state = wait_for_state(client, sink.id, lambda s: s.state.cursor_seq >= seq).state
    assert state.dead_letters == 0 and state.delivered_events == 1
    assert mailed_seqs([first, again]) == [seq, seq]
    [event] = client.query(build_filter(actions="document.share"))
    assert first.message["Message-ID"] == again.message["Message-ID"]
    assert first.message["Message-ID"].startswith(f"<{event.id}.")
    assert first.data == again.data
    assert mailbox.answered == 2


def test_a_refused_login_holds_the_sink_naming_its_username_then_a_good_one_delivers(
    client: AuditClient,
    sinks: Callable[..., forwarding_pb2.Sink],
    caplog: pytest.LogCaptureFixture,
) -> None:
    with smtp_server(logins={"sealtrail": "right horse battery"}) as mailbox:
        sink = sinks(email_sink(mailbox, username="sealtrail", password="wrong horse battery"))
        seq = client.record(action="document.share", actor_id="u").event.seq
        state = wait_for_state(client, sink.id, lambda s: s.state.consecutive_failures >= 2).state
        assert state.dead_letters == 0 and state.cursor_seq < seq
        assert state.last_error.startswith("SMTP 535 from 127.0.0.1:")
        assert "refusal of the sink's login (username 'sealtrail')" in state.last_error
        assert ("sealtrail", False) in mailbox.logins
        fixed = email_sink(mailbox, username="sealtrail", password="right horse battery")
        fixed.id = sink.id
        client.update_sink(fixed, fields=["email"])
        [taken] = mailbox.wait_for(lambda t: len(t) >= 1)
        assert taken.login == "sealtrail" and mailed_seqs([taken]) == [seq]
    for secret in ("wrong horse battery", "right horse battery"):
        assert not [r for r in caplog.records if secret in r.getMessage()]


def test_the_password_is_never_shown(
    client: AuditClient,
    sinks: Callable[..., forwarding_pb2.Sink],
    sql: psycopg.Connection[Any],
    tenant: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    password = "p4ss-w0rd-never-shown"
    with smtp_server(logins={"sealtrail": password}) as mailbox:
        created = sinks(email_sink(mailbox, username="sealtrail", password=password))
        for shown in (created, client.get_sink(created.id), *client.list_sinks()):
            assert shown.WhichOneof("destination") == "email"
            assert shown.email.password == "" and shown.email.password_hint == password[-4:]
            assert password not in str(shown)
        [(stored,)] = sql.execute(
            "SELECT destination::text FROM sinks WHERE tenant_id = %s AND id = %s",
            [tenant, created.id],
        ).fetchall()
        assert password not in stored
        [change] = client.query(build_filter(actions="sink.created"))
        recorded = json.dumps(json_format.MessageToDict(change.details))
        assert password not in recorded and password[-4:] not in recorded
        assert "password_fingerprint" in recorded
        seq = client.record(action="document.share", actor_id="u").event.seq
        [taken] = mailbox.wait_for(lambda t: len(t) >= 1)
        assert taken.login == "sealtrail" and mailed_seqs([taken]) == [seq]
    assert not [r for r in caplog.records if password in r.getMessage()]


def test_another_host_asks_for_the_password_and_other_recipients_are_a_move(
    client: AuditClient,
    sinks: Callable[..., forwarding_pb2.Sink],
    mailbox: Mailbox,
) -> None:
    """The password goes only to the server it was given for; the recipients
    say whose inboxes the events reach, so changing them is recorded as a
    move of the sink's destination (a WARNING), as a moved URL is."""
    sink = sinks(email_sink(mailbox, username="u", password="pw-for-this-host", paused=True))
    elsewhere = email_sink(mailbox, port=mailbox.port + 1, username="u", paused=True)
    elsewhere.id = sink.id
    with pytest.raises(RpcFailedError) as refused:
        client.update_sink(elsewhere, fields=["email"])
    assert refused.value.reason == "SINK_SECRETS_REQUIRED"
    others = email_sink(mailbox, to_addresses=["someone@example.net"], username="u", paused=True)
    others.id = sink.id
    client.update_sink(others, fields=["email"])
    [moved] = client.query(build_filter(actions="sink.updated"))
    assert moved.severity == event_pb2.SEVERITY_WARNING
    assert list(json_format.MessageToDict(moved.details)["weakens"]) == ["destination_moved"]
    assert "pw-for-this-host" not in str(moved)


@pytest.mark.parametrize(
    ("settings", "field"),
    [
        ({"from_address": "alerts@example.com\r\nBcc: x@evil.example"}, "from_address"),
        ({"to_addresses": ["a@example.com\nBcc: x@evil.example"]}, "to_addresses[0]"),
        ({"to_addresses": ["not an address"]}, "to_addresses[0]"),
        ({"to_addresses": []}, "to_addresses"),
        ({"to_addresses": [f"u{n}@example.com" for n in range(21)]}, "to_addresses"),
        ({"to_addresses": ["a@example.com", "A@example.com"]}, "to_addresses[1]"),
        ({"host": "mail.example.com"}, "security"),  # plain text off the loopback
        ({"host": ""}, "host"),
        ({"security": "ssl"}, "security"),
        ({"username": "sealtrail"}, "password"),
        ({"username": "seal\rtrail", "password": "x"}, "username"),
        ({"from_address": ""}, "from_address"),
        ({"from_address": "a@example.com, b@example.com"}, "from_address"),
    ],
)
def test_a_setting_that_cannot_be_mailed_with_is_refused_naming_it(
    client: AuditClient, mailbox: Mailbox, settings: dict[str, Any], field: str
) -> None:
    with pytest.raises(InvalidArgumentError) as refused:
        client.create_sink(email_sink(mailbox, **settings))
    assert f"sink.email.{field}" in str(refused.value), str(refused.value)


def _header_block(taken: Any) -> bytes:
    return bytes(taken.data).replace(b"\r\n", b"\n").split(b"\n\n", 1)[0]


def test_an_international_domain_is_kept_as_typed_and_mailed_by_its_a_label(
    client: AuditClient,
    sinks: Callable[..., forwarding_pb2.Sink],
    mailbox: Mailbox,
) -> None:
    """A domain in Unicode (IDNA) reaches any SMTP server in its ASCII form
    (`xn--...`, the A-label): in MAIL FROM, RCPT TO, From and To. The sink
    keeps the addresses as the admin typed them."""
    sender = "Bücher Alerts <alerts@bücher.example>"
    recipients = ["ops@bücher.example", "Ops Japan <ops@例え.テスト>"]
    sink = sinks(email_sink(mailbox, from_address=sender, to_addresses=recipients))
    assert sink.email.from_address == sender
    assert list(client.get_sink(sink.id).email.to_addresses) == recipients
    seq = client.record(action="document.share", actor_id="u").event.seq
    [taken] = mailbox.wait_for(lambda t: len(t) >= 1)
    assert mailed_seqs([taken]) == [seq]
    assert taken.mail_from == "alerts@xn--bcher-kva.example"
    assert taken.rcpt_tos == ["ops@xn--bcher-kva.example", "ops@xn--r8jz45g.xn--zckzah"]
    assert _header_block(taken).isascii()
    message = taken.message
    [From] = message["From"].addresses
    assert (From.display_name, From.addr_spec) == ("Bücher Alerts", "alerts@xn--bcher-kva.example")
    assert [(to.display_name, to.addr_spec) for to in message["To"].addresses] == [
        ("", "ops@xn--bcher-kva.example"),
        ("Ops Japan", "ops@xn--r8jz45g.xn--zckzah"),
    ]


def test_an_international_host_is_kept_as_typed_and_connected_to_by_its_a_label(
    client: AuditClient,
    sinks: Callable[..., forwarding_pb2.Sink],
    mailbox: Mailbox,
) -> None:
    """A host name in Unicode is kept and shown as typed, and looked up,
    checked by the egress policy and connected to by its A-label (IDNA 2008,
    UTS 46, as an address's domain): `localhost` in full-width letters is
    `localhost`, so plain text is allowed to it and the mail goes."""
    typed = FULL_WIDTH_LOCALHOST
    sink = sinks(email_sink(mailbox, host=typed))
    assert sink.email.host == typed and client.get_sink(sink.id).email.host == typed
    seq = client.record(action="document.share", actor_id="u").event.seq
    [taken] = mailbox.wait_for(lambda t: len(t) >= 1)
    assert mailed_seqs([taken]) == [seq]


def test_an_international_host_is_looked_up_by_its_idna_2008_a_label(
    client: AuditClient,
    sinks: Callable[..., forwarding_pb2.Sink],
) -> None:
    """`straße` is `xn--strae-oqa` by IDNA 2008, not IDNA 2003's `strasse`
    (Python's `idna` codec, which the resolver used for a name in Unicode):
    the lookup the sink's error names is the A-label's."""
    sink = sinks(build_sink(
        "mail", "email", host="mail.straße.invalid", from_address="alerts@example.com",
        to_addresses=["oncall@example.com"], filter=build_filter(actions="document.*"),
    ))  # fmt: skip
    assert sink.email.host == "mail.straße.invalid"
    client.record(action="document.share", actor_id="u")
    state = wait_for_state(client, sink.id, lambda s: s.state.consecutive_failures >= 1).state
    assert "mail.xn--strae-oqa.invalid" in state.last_error, state.last_error
    assert "strasse" not in state.last_error


@pytest.mark.parametrize(
    "host",
    ["mail.\u2603.example", "mail." + "\u00fc" * 60 + ".example", "mail.a\u200db.example"],
    ids=["a-snowman", "a-label-over-63", "a-joiner-out-of-context"],
)
def test_a_host_idna_2008_cannot_write_in_ascii_is_refused_saying_so(
    client: AuditClient, mailbox: Mailbox, host: str
) -> None:
    with pytest.raises(InvalidArgumentError) as refused:
        client.create_sink(email_sink(mailbox, host=host, security="starttls"))
    [(named, description)] = refused.value.field_violations
    assert named == "sink.email.host", str(refused.value)
    assert description == "must be a host name IDNA 2008 can write in ASCII (its xn-- form)"


@pytest.mark.parametrize(
    ("settings", "field", "said"),
    [
        ({"to_addresses": ["jörg@example.com"]}, "to_addresses[0]", "SMTPUTF8"),
        ({"from_address": "Jörg <jörg@example.com>"}, "from_address", "SMTPUTF8"),
        ({"to_addresses": ["ops@\u2603.example"]}, "to_addresses[0]", "IDNA"),
        (
            {"to_addresses": ["ops@bücher.example", "OPS@xn--bcher-kva.example"]},
            "to_addresses[1]",
            "is given twice",
        ),
    ],
)
def test_an_address_that_cannot_be_mailed_in_ascii_is_refused_saying_why(
    client: AuditClient, mailbox: Mailbox, settings: dict[str, Any], field: str, said: str
) -> None:
    """A local part in Unicode needs SMTPUTF8 (RFC 6531), which Sealtrail
    does not send: refused at creation saying so, not as "not an address"."""
    with pytest.raises(InvalidArgumentError) as refused:
        client.create_sink(email_sink(mailbox, **settings))
    [(named, description)] = refused.value.field_violations
    assert named == f"sink.email.{field}", str(refused.value)
    assert said in description
    if said == "SMTPUTF8":
        assert description == "a non-ASCII local part needs SMTPUTF8, which Sealtrail does not send"


def test_the_subject_is_plain_text_without_the_chat_sinks_mention_guard(
    client: AuditClient,
    sinks: Callable[..., forwarding_pb2.Sink],
    mailbox: Mailbox,
    tenant: str,
) -> None:
    """Mail has no mentions: the zero-width space a chat line puts after an
    `@` (so Slack pages no one) is not in the Subject, which stays ASCII
    (no RFC 2047 encoding) and is what people search for."""
    sinks(email_sink(mailbox))
    seq = client.record(
        action="document.share",
        actor_id="admin@example.com",
        resource_type="team",
        resource_id="@oncall",
    ).event.seq
    [taken] = mailbox.wait_for(lambda t: len(t) >= 1)
    subject = taken.message["Subject"]
    assert subject.startswith("[info] document.share by admin@example.com on team/@oncall ")
    assert subject.endswith(f"(tenant {tenant}, seq {seq})")
    assert subject.isascii() and "\u200b" not in subject
    [raw] = [h for h in _header_block(taken).split(b"\n") if h.startswith(b"Subject:")]
    assert b"=?" not in raw and raw.isascii()
    body = taken.message.get_body(("plain",)).get_content()
    assert "Resource: @oncall" in body and "\u200b" not in body


def test_the_cli_makes_an_email_sink_its_password_read_from_a_file(
    server: ServerThread, client: AuditClient, tenant: str, mailbox: Mailbox, tmp_path: Path
) -> None:
    password_file = tmp_path / "smtp-password"
    password_file.write_text("s3cret-from-a-file\n")
    env = {"SEALTRAIL_SERVER": server.target, "SEALTRAIL_TOKEN": server.token(tenant, "admin")}
    done = CliRunner().invoke(
        client_cli.main,
        ["sinks", "create", "mail", "--kind", "email", "--smtp-host", "127.0.0.1",
         "--smtp-port", str(mailbox.port), "--smtp-security", "none",
         "--smtp-username", "sealtrail", "--smtp-password", f"@{password_file}",
         "--mail-from", "alerts@example.com", "--mail-to", "a@example.com",
         "--mail-to", "b@example.com", "--action", "security.alert"],
        env=env,
    )  # fmt: skip
    assert done.exit_code == 0, done.output
    sink_id = done.stdout.strip()  # stderr says where the sink starts
    try:
        sink = client.get_sink(sink_id)
        assert sink.email.host == "127.0.0.1" and sink.email.port == mailbox.port
        assert list(sink.email.to_addresses) == ["a@example.com", "b@example.com"]
        assert sink.email.password_hint == "file"
        shown = CliRunner().invoke(client_cli.main, ["sinks", "show", sink_id], env=env)
        assert shown.exit_code == 0 and "s3cret-from-a-file" not in shown.output
    finally:
        client.delete_sink(sink_id)


# STARTTLS, straight through the sending (forward/mail.py): the tests' server
# trusts no CA of the test's own, and any server of the session may hold a
# sink's lease.


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("smtp-pki")
    ca = Authority("sealtrail SMTP test CA")
    issued = ca.issue("smtp test server", server=True)
    paths = {"ca": folder / "ca.pem", "crt": folder / "s.crt", "key": folder / "s.key"}
    paths["ca"].write_bytes(ca.pem)
    paths["crt"].write_bytes(issued.cert)
    paths["key"].write_bytes(issued.key)
    return paths


def _send(
    mailbox: Mailbox,
    trust: ssl.SSLContext,
    *,
    timeout: float = 5.0,
    allowed: str = "127.0.0.0/8",
    **settings: Any,
) -> Any:
    destination = {
        "host": "127.0.0.1",
        "port": mailbox.port,
        "from_address": "alerts@example.com",
        "to_addresses": ["oncall@example.com"],
        **settings,
    }
    policy = EgressPolicy.parse(allow_http=False, allowed=allowed, denied="")
    body = b"Subject: hello\r\n\r\nbody\r\n"
    return asyncio.run(mail.send(policy, trust, destination, body, timeout=timeout, tenant_id=None))


def test_starttls_is_verified_and_the_login_goes_over_it(pki: dict[str, Path]) -> None:
    trusting = ssl.create_default_context(cafile=str(pki["ca"]))
    tls = (str(pki["crt"]), str(pki["key"]))
    with smtp_server(logins={"sealtrail": "pw-over-tls"}, tls=tls) as mailbox:
        answer = _send(mailbox, trusting, username="sealtrail", password="pw-over-tls")
        assert answer.status == 250
        [taken] = mailbox.wait_for(lambda t: len(t) >= 1)
        assert taken.login == "sealtrail" and taken.rcpt_tos == ["oncall@example.com"]
        # A certificate of a CA the server does not trust: no mail, no login.
        with pytest.raises(ssl.SSLCertVerificationError):
            _send(mailbox, ssl.create_default_context(), username="sealtrail", password="x")
        assert mailbox.logins == [("sealtrail", True)]


def test_starttls_to_an_international_host_checks_the_certificate_by_its_a_label(
    pki: dict[str, Path],
) -> None:
    """The certificate names `localhost` (and 127.0.0.1): the host typed in
    full-width letters is verified as its A-label, `localhost`, whose
    addresses the egress policy judges."""
    trusting = ssl.create_default_context(cafile=str(pki["ca"]))
    with smtp_server(tls=(str(pki["crt"]), str(pki["key"]))) as mailbox:
        assert _send(mailbox, trusting, host=FULL_WIDTH_LOCALHOST).status == 250
        assert len(mailbox.wait_for(lambda t: len(t) >= 1)) == 1
        # The egress policy judges the addresses of the A-label: the loopback's.
        with pytest.raises(EgressDenied, match="resolves to an internal or denied address"):
            _send(mailbox, trusting, host=FULL_WIDTH_LOCALHOST, allowed="")
        assert mailbox.answered == 1


def test_starttls_asked_of_a_server_without_it_is_refused_not_sent_in_the_clear(
    mailbox: Mailbox,
) -> None:
    with pytest.raises(mail.MailSettingsRefused, match="no STARTTLS"):
        _send(mailbox, ssl.create_default_context(), security="starttls")
    assert mailbox.answered == 0


def test_a_server_slow_at_every_step_is_given_up_on_within_the_exchanges_deadline(
    mailbox: Mailbox,
) -> None:
    """Each SMTP step has its timeout; a server answering each just within
    it held the sink for them all (20 recipients: 20 RCPTs), past its lease,
    another process then sending the same events. The whole exchange has the
    deadline an HTTP sink's has (four timeouts), and no message is sent."""
    mailbox.rcpt_delay = 0.6
    recipients = [f"u{n}@example.com" for n in range(20)]  # 12 s of RCPTs
    with pytest.raises(TimeoutError, match="within 4 s"):
        _send(mailbox, ssl.create_default_context(), security="none", timeout=1.0,
              to_addresses=recipients)  # fmt: skip
    assert mailbox.answered == 0 and not mailbox.taken


def test_a_long_subject_is_one_line_without_controls_folded_within_limits() -> None:
    """The Subject of an event whose values carry controls, a direction
    override and a broadcast: one logical line, folded at spaces within 78
    characters a line, ASCII as the event's values are."""
    data = {
        "id": "01938c4e-0000-7000-8000-000000000001",
        "tenant_id": "acme",
        "seq": 7,
        "occurred_at": "2026-01-02T03:04:05.000000Z",
        "severity": "info",
        "action": "document.share",
        "outcome": "success",
        "actor": {"id": "admin@example.com\u202e\tx"},
        "resource": {"type": "document", "id": "word " * 20 + "@all"},
    }
    destination = {"from_address": "alerts@example.com", "to_addresses": ["a@example.com"]}
    written = mail.message(destination, data, json.dumps(data))
    head = written.split(b"\r\n\r\n", 1)[0].split(b"\r\n")
    assert max(len(line) for line in head) <= 78
    start = next(n for n, line in enumerate(head) if line.startswith(b"Subject:"))
    assert head[start + 1].startswith(b" ")  # folded: it went on
    subject = message_from_bytes(written, policy=default)["Subject"]
    assert subject.isascii() and "\t" not in subject and "\n" not in subject
    assert subject.startswith("[info] document.share by admin@example.com x on document/word ")
    assert " @all (success) at 2026-01-02T03:04:05.000000Z (tenant acme, seq 7)" in subject


def test_a_spike_on_a_user_agent_is_mailed_saying_its_count_and_baseline(
    client: AuditClient,
    sinks: Callable[..., forwarding_pb2.Sink],
    mailbox: Mailbox,
    tenant: str,
) -> None:
    """A spike rule (ADR 0132) whose filter names a user agent, routed to an
    email sink: one message, its Subject the rule's name with the count, the
    factor and the baseline's average in words, its body the same in the
    alert's details; the calls of another client in the window mail nothing."""
    sink = sinks(email_sink(mailbox, actions="security.alert"))
    rule = client.create_alert_rule(
        spike_rule(filter=build_filter(actions="user.login", user_agent="curl"), sink_ids=[sink.id])
    ).rule
    try:
        for window in range(-BASELINE, 1):
            start = SPIKE + timedelta(seconds=window * WINDOW)
            for n in range(2 if window else 10):
                for agent in ("curl/8.4.0", "Mozilla/5.0"):
                    client.record(
                        action="user.login", actor_id=f"u{n}", outcome="failure",
                        user_agent=agent, occurred_at=start + timedelta(seconds=n),
                    )  # fmt: skip
        [taken] = mailbox.wait_for(lambda t: len(t) >= 1)
        [alert] = client.query(build_filter(actions="security.alert"))
        wait_for_state(client, sink.id, lambda s: s.state.delivered_events == 1)
    finally:
        client.delete_alert_rule(rule.id)
    subject = str(taken.message["Subject"])
    window_start = SPIKE.strftime("%Y-%m-%dT%H:%M:%SZ")
    assert subject.startswith(
        f"[warning] Alert 'login spike': 10 events in 600 s from {window_start},"
        " 5x or more the average 2.0 of the 6 windows before"
    ), subject
    trigger = int(json.loads(json_format.MessageToJson(alert.details))["trigger_seq"])
    assert subject.endswith(f"(tenant {tenant}, seq {alert.seq}, fired on seq {trigger})")
    body = taken.message.get_body(("plain",)).get_content().replace("\r\n", "\n")
    [details] = [line for line in body.splitlines() if line.startswith("Details: ")]
    said = json.loads(details.removeprefix("Details: "))
    assert (said["count"], said["baseline_average"], said["factor"]) == (10, 2.0, 5.0)
    assert said["condition"] == "spike" and said["window_start"] == window_start
    assert len(mailbox.taken) == 1


def test_a_replay_that_would_mail_more_than_a_thousand_messages_is_refused(
    client: AuditClient,
    sinks: Callable[..., forwarding_pb2.Sink],
    mailbox: Mailbox,
) -> None:
    """An email sink mails each event: a replay of a range or window whose
    events its filter takes number more than 1,000 (a mail storm into a shared
    mailbox) is refused naming the selection, and nothing is mailed; one
    whose range is as long but whose events the filter mostly leaves out, or
    a short one, is taken and mailed."""
    start = datetime.now(UTC) - timedelta(minutes=1)
    record(client, 1001, "document.share")
    logins = record(client, 1000, "user.login")
    shares = record(client, 2, "document.share")
    sink = sinks(email_sink(mailbox))  # its cursor: the log's head
    head = sink.state.cursor_seq
    for selection, field in [
        ({"seq_range": (1, head)}, "seq_range"),
        ({"window": (start, datetime.now(UTC) + timedelta(minutes=1))}, "window"),
    ]:
        with pytest.raises(InvalidArgumentError) as refused:
            client.replay_sink(sink.id, **selection)
        assert list(dict(refused.value.field_violations)) == [field]
        assert "at most 1,000" in str(refused.value), refused.value
    assert client.list_dead_letters(sink.id) == [] and mailbox.taken == []
    taken = client.replay_sink(sink.id, seq_range=(logins[0], shares[-1]))
    assert (taken.seq_range.first_seq, taken.seq_range.last_seq) == (logins[0], shares[-1])
    mailed = mailbox.wait_for(lambda t: len(t) >= 2)
    wait_for_state(client, sink.id, lambda s: s.state.pending_replays == 0)
    assert sorted(mailed_seqs(mailed)) == shares


def test_an_email_sink_from_the_beginning_of_more_than_a_thousand_events_is_refused(
    client: AuditClient,
    sinks: Callable[..., forwarding_pb2.Sink],
    mailbox: Mailbox,
) -> None:
    """Created `from_beginning`, an email sink mails each event of the log
    its filter takes: more than 1,000 is refused as a replay of as many is,
    naming `from_beginning`, saying how many and what to do instead; one
    whose filter takes fewer of the log is created and mails them."""
    record(client, 1001, "document.share")
    shares = record(client, 2, "document.export")
    with pytest.raises(InvalidArgumentError) as refused:
        client.create_sink(email_sink(mailbox), from_beginning=True)
    [(field, description)] = refused.value.field_violations
    assert field == "from_beginning"
    assert description == (
        "would mail 1,003 events, at most 1,000: create without it, then replay a narrower range"
    )
    assert client.list_sinks() == [] and mailbox.taken == []
    sinks(email_sink(mailbox, actions="document.export"), from_beginning=True)
    mailed = mailbox.wait_for(lambda t: len(t) >= 2)
    assert sorted(mailed_seqs(mailed)) == shares
