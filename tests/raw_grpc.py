"""A gRPC call made by hand over a raw HTTP/2 connection, for headers no gRPC
client sends: grpcio refuses a metadata value that is not printable ASCII
before it leaves the process, but any HTTP/2 peer can send one, and the server
receives it. HPACK is written as literals (no table, no Huffman) and read back
as far as a gRPC server writes it; a Huffman-coded value is read as None."""

from __future__ import annotations

import socket
import struct
import time
from collections.abc import Sequence
from dataclasses import dataclass

_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
_DATA, _HEADERS, _RST_STREAM, _SETTINGS, _PING, _GOAWAY, _CONTINUATION = 0, 1, 3, 4, 6, 7, 9
_END_STREAM, _ACK, _END_HEADERS, _PADDED, _PRIORITY = 1, 1, 4, 8, 0x20

# RFC 7541, appendix A: the names of the static table's entries (their values
# are those of :method, :path, :scheme and :status, never met here otherwise).
_STATIC: tuple[tuple[str, str], ...] = (
    (":authority", ""), (":method", "GET"), (":method", "POST"), (":path", "/"),
    (":path", "/index.html"), (":scheme", "http"), (":scheme", "https"), (":status", "200"),
    (":status", "204"), (":status", "206"), (":status", "304"), (":status", "400"),
    (":status", "404"), (":status", "500"), ("accept-charset", ""),
    ("accept-encoding", "gzip, deflate"),
    *((name, "") for name in (
        "accept-language", "accept-ranges", "accept", "access-control-allow-origin", "age",
        "allow", "authorization", "cache-control", "content-disposition", "content-encoding",
        "content-language", "content-length", "content-location", "content-range",
        "content-type", "cookie", "date", "etag", "expect", "expires", "from", "host",
        "if-match", "if-modified-since", "if-none-match", "if-range", "if-unmodified-since",
        "last-modified", "link", "location", "max-forwards", "proxy-authenticate",
        "proxy-authorization", "range", "referer", "refresh", "retry-after", "server",
        "set-cookie", "strict-transport-security", "transfer-encoding", "user-agent", "vary",
        "via", "www-authenticate",
    )),
)  # fmt: skip


def _frame(kind: int, flags: int, stream: int, payload: bytes = b"") -> bytes:
    head = struct.pack(">I", len(payload))[1:] + bytes([kind, flags]) + struct.pack(">I", stream)
    return head + payload


def _integer(value: int, prefix: int, first: int = 0) -> bytes:
    limit = (1 << prefix) - 1
    if value < limit:
        return bytes([first | value])
    out = bytearray([first | limit])
    value -= limit
    while value >= 128:
        out.append(value % 128 + 128)
        value //= 128
    out.append(value)
    return bytes(out)


def _literal(name: bytes, value: bytes) -> bytes:
    """A literal header field without indexing, with a new name (RFC 7541 6.2.2)."""
    return b"\x00" + _integer(len(name), 7) + name + _integer(len(value), 7) + value


class _Reader:
    def __init__(self, block: bytes, table: list[tuple[str, str | None]]) -> None:
        self.block, self.at, self.table = block, 0, table

    def integer(self, prefix: int) -> int:
        value = self.block[self.at] & ((1 << prefix) - 1)
        self.at += 1
        if value < (1 << prefix) - 1:
            return value
        shift = 0
        while True:
            byte = self.block[self.at]
            self.at += 1
            value += (byte & 127) << shift
            shift += 7
            if not byte & 128:
                return value

    def string(self) -> str | None:
        huffman = self.block[self.at] & 128
        length = self.integer(7)
        raw = self.block[self.at : self.at + length]
        self.at += length
        return None if huffman else raw.decode("latin-1")

    def entry(self, index: int) -> tuple[str, str | None]:
        return _STATIC[index - 1] if index <= len(_STATIC) else self.table[index - len(_STATIC) - 1]

    def fields(self) -> list[tuple[str, str | None]]:
        out: list[tuple[str, str | None]] = []
        while self.at < len(self.block):
            byte = self.block[self.at]
            if byte & 128:
                out.append(self.entry(self.integer(7)))
            elif byte & 0x40 or not byte & 0x20:
                indexed = bool(byte & 0x40)
                index = self.integer(6 if indexed else 4)
                name = self.entry(index)[0] if index else self.string()
                value = self.string()
                field = (name or "", value)
                if indexed:
                    self.table.insert(0, field)
                out.append(field)
            else:
                self.integer(5)  # a dynamic table size update
        return out


@dataclass(frozen=True)
class Answer:
    """What the server answered: its headers and trailers, with the status
    (None if the stream was reset, or the connection closed, before one)."""

    fields: list[tuple[str, str | None]]
    status: int | None
    message: str | None


def call(
    port: int,
    path: str,
    headers: Sequence[tuple[bytes, bytes]],
    request: bytes = b"",
    *,
    timeout: float = 20.0,
) -> Answer:
    """One unary call of `path` on 127.0.0.1:`port` with `headers` as sent
    (after the pseudo-headers and content-type) and `request` as its message."""
    block = b"".join(
        _literal(name, value)
        for name, value in (
            (b":method", b"POST"), (b":scheme", b"http"), (b":path", path.encode()),
            (b":authority", b"127.0.0.1"), (b"content-type", b"application/grpc"),
            (b"te", b"trailers"), *headers,
        )
    )  # fmt: skip
    message = b"\x00" + struct.pack(">I", len(request)) + request
    deadline = time.monotonic() + timeout
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as connection:
        connection.sendall(
            _PREFACE
            + _frame(_SETTINGS, 0, 0)
            + _frame(_HEADERS, _END_HEADERS, 1, block)
            + _frame(_DATA, _END_STREAM, 1, message)
        )
        table: list[tuple[str, str | None]] = []
        fields: list[tuple[str, str | None]] = []
        buffer = b""
        while time.monotonic() < deadline:
            connection.settimeout(max(deadline - time.monotonic(), 0.01))
            data = connection.recv(65536)
            if not data:
                break
            buffer += data
            while len(buffer) >= 9 and len(buffer) >= 9 + int.from_bytes(buffer[:3], "big"):
                length = int.from_bytes(buffer[:3], "big")
                kind, flags = buffer[3], buffer[4]
                stream = int.from_bytes(buffer[5:9], "big") & 0x7FFFFFFF
                payload, buffer = buffer[9 : 9 + length], buffer[9 + length :]
                if kind == _SETTINGS and not flags & _ACK:
                    connection.sendall(_frame(_SETTINGS, _ACK, 0))
                elif kind == _PING and not flags & _ACK:
                    connection.sendall(_frame(_PING, _ACK, 0, payload))
                elif kind == _HEADERS and stream == 1:
                    if flags & _PADDED:
                        payload = payload[1 : len(payload) - payload[0]]
                    if flags & _PRIORITY:
                        payload = payload[5:]
                    fields += _Reader(payload, table).fields()
                    if flags & _END_STREAM:
                        return _answer(fields)
                elif (kind == _RST_STREAM and stream == 1) or kind == _GOAWAY:
                    return _answer(fields)
    return _answer(fields)


def _answer(fields: list[tuple[str, str | None]]) -> Answer:
    found = dict(fields)
    status = found.get("grpc-status")
    return Answer(fields, int(status) if status is not None else None, found.get("grpc-message"))
