"""The console answers only under its own names (ADR 0102): a request whose
`Host` is no loopback name with the console's port, no name the operator
listed and not the address the connection came to is 421, whatever its path,
before any call is made. A page of another name (DNS rebinding) could
otherwise make a browser reach a console that listens on loopback only."""

from __future__ import annotations

import json
import logging
import socket
from collections.abc import Iterator

import pytest

from sealtrail import AuditClient, build_filter
from tests.conftest import ServerThread, logged

LISTED = "Audit.Example.com., proxy.example.org:8443, [fd00::5], 192.0.2.77:80"


@pytest.fixture(scope="module")
def listed_console(migrated_database_url: str) -> Iterator[ServerThread]:
    with ServerThread(
        migrated_database_url,
        console_listen="127.0.0.1:0",
        console_allowed_hosts=LISTED,
        stream_heartbeat_seconds=0.2,
    ) as running:
        yield running


def send(
    port: int,
    lines: list[str],
    *,
    to: str = "127.0.0.1",
    method: str = "GET",
    path: str = "/",
    version: str = "HTTP/1.1",
    body: bytes = b"",
) -> tuple[int, dict[str, str], bytes]:
    """Status, headers (lower-case names) and body of one request sent as
    written: `lines` are its header lines, a Host among them or not."""
    head = [f"{method} {path} {version}", *lines, "Connection: close"]
    if body:
        head.append(f"Content-Length: {len(body)}")
    family = socket.AF_INET6 if ":" in to else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as connection:
        connection.settimeout(10)
        connection.connect((to, port))
        connection.sendall(("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body)
        answer = b""
        while True:
            chunk = connection.recv(65536)
            if not chunk:
                break
            answer += chunk
    raw_head, _, rest = answer.partition(b"\r\n\r\n")
    status_line, *header_lines = raw_head.decode("latin-1").split("\r\n")
    headers = {}
    for line in header_lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return int(status_line.split()[1]), headers, rest


def served(port: int, host: str, token: str, *, to: str = "127.0.0.1") -> list[int]:
    """The statuses of the page, a static file and a search under `host`."""
    auth = f"Authorization: Bearer {token}"
    return [
        send(port, [f"Host: {host}"], to=to)[0],
        send(port, [f"Host: {host}"], to=to, path="/static/console.js")[0],
        send(port, [f"Host: {host}", auth], to=to, path="/api/events")[0],
    ]


@pytest.mark.parametrize(
    "host",
    [
        "127.0.0.1:{port}",
        "localhost:{port}",
        "LOCALHOST:{port}",  # a name in any case
        "localhost.:{port}",  # the absolute form of the same name
        "127.8.9.10:{port}",  # all of 127.0.0.0/8 is loopback
        "[::1]:{port}",
        "[0:0:0:0:0:0:0:1]:{port}",  # the same address, written out
        # Listed (audit.example.com listed in another case, with a trailing dot):
        "audit.example.com",  # a name listed without a port: any port
        "AUDIT.example.COM:8080",
        "audit.example.com.",
        "proxy.example.org:8443",  # listed with its port: that port
        "[fd00::5]:1234",
        "[FD00:0::5]",
        "192.0.2.77",  # listed with port 80, the one a Host without one means
        "192.0.2.77:80",
    ],
)
def test_a_loopback_name_with_the_console_s_port_or_a_listed_one_is_served(
    listed_console: ServerThread, tenant: str, host: str
) -> None:
    port = listed_console.service.console_port
    reader = listed_console.token(tenant, "reader")
    assert served(port, host.format(port=port), reader) == [200, 200, 200]


@pytest.mark.parametrize(
    "host",
    [
        "evil.example:{port}",  # DNS rebinding: the attacker's name, the console's address
        "evil.example",
        "127.0.0.1",  # no port: 80, not the console's
        "127.0.0.1:1",  # another port
        "localhost:{other}",
        "[::1]",
        "::1:{port}",  # an IPv6 address without its brackets is no host
        "[::1:{port}",
        "[::2]:{port}",
        "10.0.0.1:{port}",
        "localhost.evil.example:{port}",
        "127.0.0.1.evil.example:{port}",
        "evil@127.0.0.1:{port}",
        "127.0.0.1:{port}@evil.example",
        "127.0.0.1:{port}/x",
        "localhost:{port}:{port}",
        "localhost:+{port}",
        "localhost..:{port}",
        "2130706433:{port}",  # 127.0.0.1 as a number: a name here, no browser sends it
        "proxy.example.org",  # listed with port 8443 only
        "proxy.example.org:443",
        "192.0.2.77:8080",  # listed with port 80 only
        "audit.example.com.evil.example",
        "sub.audit.example.com",
        # Sent as UTF-8: a no-break space (U+00A0) and an ideographic one (U+3000)
        # after the name, which no HTTP parser strips (Python's str.strip did).
        "localhost:{port}\xc2\xa0",
        "\xe3\x80\x80localhost:{port}",
    ],
)
def test_any_other_host_is_421_on_every_path_and_no_call_is_made(
    listed_console: ServerThread, tenant: str, host: str
) -> None:
    port = listed_console.service.console_port
    host = host.format(port=port, other=port + 1 if port < 65535 else 1)
    admin = listed_console.token(tenant, "admin")
    auth = f"Authorization: Bearer {admin}"
    change = b'{"role": "reader", "name": "via another name"}'
    requests = [
        ("GET", "/", [], b""),
        ("GET", "/static/console.js", [], b""),
        ("GET", "/static/nothing-here.js", [], b""),
        ("GET", "/no-such-path", [], b""),
        ("GET", "/api/signin", [auth], b""),
        ("GET", "/api/events", [auth], b""),
        ("GET", "/api/stream", [auth], b""),
        ("GET", "/api/export?format=csv", [auth], b""),
        ("POST", "/api/tokens", [auth, "Content-Type: application/json"], change),
        ("DELETE", "/api/events", [auth], b""),
    ]
    for method, path, lines, body in requests:
        status, headers, said = send(
            port, [f"Host: {host}", *lines], method=method, path=path, body=body
        )
        assert status == 421, (host, method, path, status, said)
        # With the headers every answer has, and without the name it was sent.
        assert "frame-ancestors 'none'" in headers["content-security-policy"], headers
        assert headers["cache-control"] == "no-store" and headers["x-content-type-options"]
        assert host.encode().lower() not in said.lower(), said
        assert "SEALTRAIL_CONSOLE_ALLOWED_HOSTS" in json.loads(said)["error"]
    with AuditClient(listed_console.target, token=admin) as client:
        # No search recorded (audit_log.queried), no token made, no export begun.
        assert list(client.query(build_filter(actions="audit_log.*"))) == []
        assert [t.name for t in client.list_tokens()] == [""]


def test_a_request_naming_no_host_is_served_in_http_1_0_only(
    listed_console: ServerThread, tenant: str
) -> None:
    """HTTP/1.0 needs no Host, and no browser sends a request without one; an
    HTTP/1.1 request must name its host (RFC 9112, 3.2), exactly once."""
    port = listed_console.service.console_port
    reader = f"Authorization: Bearer {listed_console.token(tenant, 'reader')}"
    assert send(port, [], version="HTTP/1.0")[0] == 200
    assert send(port, [reader], version="HTTP/1.0", path="/api/events")[0] == 200
    for lines in (
        [],
        ["Host: "],
        [f"Host: 127.0.0.1:{port}", f"Host: 127.0.0.1:{port}"],
        [f"Host: 127.0.0.1:{port}", "Host: evil.example"],
        ["Host: evil.example", f"Host: 127.0.0.1:{port}"],
    ):
        status, headers, said = send(port, [*lines, reader], path="/api/events")
        assert status == 400, (lines, status, said)
        # Two are refused by aiohttp's parser already, in its plain text.
        assert said == b"400: Bad Request" or "Host" in json.loads(said)["error"], (lines, said)
        assert headers["cache-control"] == "no-store"
    # An HTTP/1.0 request that names a host is held to it.
    assert send(port, ["Host: evil.example"], version="HTTP/1.0")[0] == 421


def test_the_first_refusal_is_logged_as_a_warning_the_others_at_debug(
    listed_console: ServerThread, caplog: pytest.LogCaptureFixture
) -> None:
    port = listed_console.service.console_port
    caplog.set_level(logging.DEBUG, logger="sealtrail_server.console")
    listed_console.service.console._refusals_logged = 0  # type: ignore[union-attr]
    for _ in range(3):
        assert send(port, ["Host: rebound." + "x" * 1000 + ".example"])[0] == 421
    said = [
        (r.levelname, r.getMessage())
        for r in logged(caplog, by="sealtrail_server.console")
        if "Host" in r.getMessage()
    ]
    assert [level for level, _ in said] == ["WARNING", "DEBUG", "DEBUG"], said
    assert "SEALTRAIL_CONSOLE_ALLOWED_HOSTS" in said[0][1] and "x" * 100 not in said[0][1]


@pytest.fixture(scope="module")
def wildcard_console(migrated_database_url: str) -> Iterator[ServerThread]:
    with ServerThread(migrated_database_url, console_listen="0.0.0.0:0") as running:
        yield running


def _own_address() -> str:
    """An address of this machine beyond loopback (none: the test is skipped)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("192.0.2.254", 9))  # no packet is sent
        except OSError:
            return ""
        address = str(probe.getsockname()[0])
    return "" if address.startswith("127.") or address == "0.0.0.0" else address


def test_beyond_loopback_the_address_the_connection_came_to_is_served(
    wildcard_console: ServerThread, tenant: str
) -> None:
    port = wildcard_console.service.console_port
    reader = wildcard_console.token(tenant, "reader")
    address = _own_address()
    if not address:
        pytest.skip("this machine has no address beyond loopback")
    assert served(port, f"{address}:{port}", reader, to=address) == [200, 200, 200]
    # Not a loopback name (the connection did not come to loopback), nor
    # another address, nor another port, nor a name.
    for host in ("localhost", "127.0.0.1", "10.9.8.7", "evil.example"):
        assert send(port, [f"Host: {host}:{port}"], to=address)[0] == 421, host
    assert send(port, [f"Host: {address}:{port + 1}"], to=address)[0] == 421
    # Come to loopback, loopback's names are the console's.
    assert served(port, f"localhost:{port}", reader) == [200, 200, 200]
    assert send(port, [f"Host: {address}:{port}"])[0] == 421


def _own_name() -> str:
    """This machine's name, if it resolves to an address of it (else "")."""
    name = socket.gethostname().lower()
    try:
        socket.getaddrinfo(name, None)
    except OSError:
        return ""
    return "" if name == "localhost" else name


def test_the_name_the_console_was_told_to_listen_on_is_its_own(
    migrated_database_url: str, tenant: str
) -> None:
    """SEALTRAIL_CONSOLE_LISTEN takes a name (`audit-host.corp:8080`): the
    browser then uses that name, which was refused 421 unless listed too."""
    name = _own_name()
    if not name:
        pytest.skip("this machine's name does not resolve")
    with ServerThread(migrated_database_url, console_listen=f"{name}:0") as running:
        port = running.service.console_port
        came_to = socket.getaddrinfo(name, port, type=socket.SOCK_STREAM)[0][4][0]
        reader = running.token(tenant, "reader")
        for host in (f"{name}:{port}", f"{name.upper()}.:{port}"):
            assert served(port, host, reader, to=came_to) == [200, 200, 200], host
        for host in (name, f"{name}:{port + 1}", f"x.{name}:{port}"):
            assert send(port, [f"Host: {host}"], to=came_to)[0] == 421, host
