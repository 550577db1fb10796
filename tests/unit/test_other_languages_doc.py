"""docs/other-languages.md's Go and Node snippets name only what exists: CI
has no Go or Node toolchain to compile them, so every proto message, field,
enum value and RPC they use is checked against the generated Python
descriptors (the same protos the reader generates stubs from), and every
metadata header they send against the names the server reads. A field renamed
in proto/ breaks this test instead of a reader's build.

Its tables are checked against the Python client they say the snippets
follow: the on-behalf-of header's encoding, the action a route is named by,
and the fields the HTTP middlewares fill."""

from __future__ import annotations

import importlib
import pkgutil
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from google.protobuf import any_pb2, duration_pb2, struct_pb2, timestamp_pb2
from google.protobuf.descriptor import Descriptor, EnumDescriptor, FieldDescriptor, FileDescriptor
from google.protobuf.message import Message
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

import sealtrail.v1
from sealtrail._convert import with_defaults
from sealtrail._correlation import on_behalf_of_metadata
from sealtrail._middleware import STATE_CHANGING, AuditedRequest, Recorder, derived_action

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "other-languages.md"
SERVER = ROOT / "server" / "sealtrail_server"
# Messages a ts-proto snippet reads as plain JavaScript values (a Date, an
# object), whose own fields it never names.
PLAIN_IN_TYPESCRIPT = {"Timestamp", "Struct", "Value", "ListValue"}
# Go packages whose Get... functions are no proto getters.
GO_PACKAGES = {"otel"}


def _files() -> list[FileDescriptor]:
    modules = [
        importlib.import_module(f"sealtrail.v1.{info.name}")
        for info in pkgutil.iter_modules(sealtrail.v1.__path__)
        if info.name.endswith("_pb2")
    ]
    modules += [status_pb2, error_details_pb2, any_pb2, duration_pb2, struct_pb2, timestamp_pb2]
    return [module.DESCRIPTOR for module in modules]


FILES = _files()
MESSAGES: dict[str, Descriptor] = {
    name: message for file in FILES for name, message in file.message_types_by_name.items()
}
ENUMS: dict[str, EnumDescriptor] = {
    name: enum for file in FILES for name, enum in file.enum_types_by_name.items()
}
SERVICE = sealtrail.v1.audit_service_pb2.DESCRIPTOR.services_by_name["AuditLogService"]
RPCS = {method.name for method in SERVICE.methods}


def go_name(proto_name: str) -> str:
    """A field's name in protoc-gen-go's structs: `http_status_code` is HttpStatusCode."""
    return "".join(part[:1].upper() + part[1:] for part in proto_name.split("_"))


def lower_camel(name: str) -> str:
    return name[:1].lower() + name[1:]


GO_FIELDS = {go_name(f.name) for message in MESSAGES.values() for f in message.fields}


def code_blocks(text: str, language: str) -> list[str]:
    return re.findall(rf"^```{language}\n(.*?)^```", text, re.S | re.M)


def enclosed(text: str, start: int) -> str:
    """The text between the bracket at `start` and the one that closes it."""
    depth, quote = 0, ""
    for i in range(start, len(text)):
        c = text[i]
        if quote:
            if c == quote and text[i - 1] != "\\":
                quote = ""
        elif c in "\"'`":
            quote = c
        elif c in "([{":
            depth += 1
        elif c in ")]}":
            depth -= 1
            if depth == 0:
                return text[start + 1 : i]
    raise AssertionError(f"unclosed bracket: {text[start : start + 60]!r}")


def entries(body: str) -> Iterator[tuple[str, str]]:
    """The `key: value` (or shorthand `key`) entries of a literal's body, at its own level."""
    depth, quote, part = 0, "", ""
    for c in body + ",":
        if quote:
            quote = "" if c == quote else quote
        elif c in "\"'`":
            quote = c
        elif c in "([{":
            depth += 1
        elif c in ")]}":
            depth -= 1
        if c == "," and depth == 0 and not quote:
            item = re.sub(r"//[^\n]*", "", part).strip()
            part = ""
            if item and not item.startswith("..."):
                key, _, value = item.partition(":")
                yield key.strip(), value.strip()
            continue
        part += c


@dataclass
class Check:
    """What the snippets named, and what of it the protos and server lack."""

    problems: list[str] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)

    def saw(self, kind: str) -> None:
        self.counts[kind] = self.counts.get(kind, 0) + 1

    def message(self, name: str, where: str) -> Descriptor | None:
        self.saw("message")
        if name not in MESSAGES:
            self.problems.append(f"{where}: no message {name}")
        return MESSAGES.get(name)

    def enum_value(self, enum: str, value: str, where: str) -> None:
        self.saw("enum value")
        if value not in ENUMS[enum].values_by_name:
            self.problems.append(f"{where}: enum {enum} has no value {value}")

    def rpc(self, name: str, where: str) -> None:
        self.saw("rpc")
        if name not in RPCS:
            self.problems.append(f"{where}: AuditLogService has no method {name}")

    def field_of(self, message: Descriptor, name: str, where: str) -> FieldDescriptor | None:
        """The field named `name` (Go or JSON casing, as `where` says) of `message`."""
        self.saw("field")
        for f in message.fields:
            if name in (go_name(f.name) if where.startswith("go") else f.json_name,):
                return f
        self.problems.append(f"{where}: message {message.name} has no field {name}")
        return None

    def ts_literal(self, message: Descriptor, body: str, where: str) -> None:
        for key, value in entries(body):
            f = self.field_of(message, key, where)
            inner = f.message_type if f is not None else None
            if inner is None or inner.name in PLAIN_IN_TYPESCRIPT:
                continue
            if value.startswith("{"):
                self.ts_literal(inner, enclosed(value, 0), where)


def check_go(text: str, check: Check) -> None:
    for code in code_blocks(text, "go"):
        for name in re.findall(r"\bsealtrailv1\.(\w+)", code):
            if (client := re.fullmatch(r"(?:New)?(\w+)Client", name)) is not None:
                check.saw("service")
                if client.group(1) != SERVICE.name:
                    check.problems.append(f"go: no service {client.group(1)}")
            elif (constant := re.fullmatch(r"([A-Z][A-Za-z]*)_([A-Z0-9_]+)", name)) is not None:
                if constant.group(1) in ENUMS:
                    check.enum_value(constant.group(1), constant.group(2), "go")
                else:
                    check.problems.append(f"go: no enum {constant.group(1)}")
            elif name not in ENUMS:  # an enum is a type too: []sealtrailv1.Outcome{...}
                check.message(name, "go")
        for found in re.finditer(r"\bsealtrailv1\.(\w+)\{", code):
            message = MESSAGES.get(found.group(1))
            if message is not None:
                for key, _ in entries(enclosed(code, found.end() - 1)):
                    check.field_of(message, key, "go literal")
        # Variables of a message type (`x := &sealtrailv1.M{`, a parameter
        # `x *sealtrailv1.M`): their getters and fields are the message's; any
        # other's, some message's.
        typed = dict(re.findall(r"\b(\w+) := &sealtrailv1\.(\w+)\{", code))
        typed.update(re.findall(r"\b(\w+) \*sealtrailv1\.(\w+)\b", code))
        for receiver, chain in re.findall(r"\b(\w+)((?:\.Get[A-Z]\w*\(\))+)", code):
            message = MESSAGES.get(typed.get(receiver, ""))
            for name in re.findall(r"Get(\w+)", chain):
                if message is not None:
                    f = check.field_of(message, name, "go getter")
                    message = f.message_type if f is not None else None
                elif receiver not in GO_PACKAGES:
                    check.saw("field")
                    if name not in GO_FIELDS:
                        check.problems.append(f"go: no field for the getter Get{name}")
                    break
        for receiver, name in re.findall(r"\b([a-z]\w*)\.([A-Z]\w*) = ", code):
            if (message := MESSAGES.get(typed.get(receiver, ""))) is not None:
                check.field_of(message, name, "go assignment")
            else:
                check.saw("field")
                if name not in GO_FIELDS:
                    check.problems.append(f"go: no field {name} to assign")
        for name in re.findall(r"\baudit\.([A-Z]\w*)\(", code):
            check.rpc(name, "go")


def check_typescript(text: str, check: Check) -> None:
    code = "\n".join(code_blocks(text, "ts"))
    for names, path in re.findall(r"import \{([^}]*)\} from \"\./gen/([\w/]+)\"", code):
        file = next((f for f in FILES if f.name == f"{path}.proto"), None)
        if file is None:
            check.problems.append(f"ts: no generated file {path}")
            continue
        for name in (n.strip().removeprefix("type ").strip() for n in names.split(",")):
            check.saw("import")
            service = re.fullmatch(r"(\w+?)(?:Client|Service)", name)
            known = (
                name in file.message_types_by_name
                or name in file.enum_types_by_name
                or (service is not None and service.group(1) in file.services_by_name)
                or name == "DeepPartial"
            )
            if not known:
                check.problems.append(f"ts: {path} generates no {name}")
    for found in re.finditer(r"\b(\w+)\.fromPartial\(\s*\{", code):
        message = check.message(found.group(1), "ts")
        if message is not None:
            check.ts_literal(message, enclosed(code, code.index("{", found.end() - 1)), "ts")
    # A function of the snippets whose first parameter is DeepPartial<Message>.
    for function, message_name in re.findall(r"function\*? (\w+)\(\w+: DeepPartial<(\w+)>", code):
        message = check.message(message_name, "ts")
        for found in re.finditer(rf"\b{function}\(\s*\{{", code):
            if message is not None:
                check.ts_literal(message, enclosed(code, found.end() - 1), "ts")
    for enum, value in re.findall(r"\b([A-Z]\w*)\.([A-Z][A-Z0-9_]+)\b", code):
        if enum in ENUMS:
            check.enum_value(enum, value, "ts")
    # Variables of a message type: `name: Message =`, `{ a, b }: Message =`, a
    # loop over a function returning AsyncGenerator<Message>.
    typed: dict[str, str] = dict(re.findall(r"\b(\w+): ([A-Z]\w*) =", code))
    for names, message_name in re.findall(r"\{([\w\s,]+)\}: ([A-Z]\w*) =", code):
        message = check.message(message_name, "ts")
        for name in names.split(","):
            f = check.field_of(message, name.strip(), "ts") if message is not None else None
            if f is not None and f.message_type is not None:
                typed[name.strip()] = f.message_type.name
    for function, message_name in re.findall(
        r"function\*? (\w+)\([^)]*\): AsyncGenerator<(\w+)>", code
    ):
        for variable in re.findall(rf"for await \(const (\w+) of {function}\(", code):
            typed[variable] = message_name
    for variable, message_name in typed.items():
        if message_name not in MESSAGES:
            continue
        for chain in re.findall(rf"\b{variable}((?:\??\.\w+)+)", code):
            message: Descriptor | None = MESSAGES[message_name]
            for name in re.findall(r"\w+", chain):
                if message is None or message.name in PLAIN_IN_TYPESCRIPT:
                    break
                f = check.field_of(message, name, "ts")
                message = f.message_type if f is not None else None
    for message_name, name in re.findall(r"\b(\w+)\.decode\([^()]*\)\.(\w+)", code):
        message = check.message(message_name, "ts")
        if message is not None:
            check.field_of(message, name, "ts")
    for name in re.findall(r"\baudit\.(\w+)\(", code):
        check.rpc(name[:1].upper() + name[1:], "ts")


def server_literals() -> set[str]:
    """Every double-quoted string of the server's source."""
    return {
        literal
        for path in SERVER.rglob("*.py")
        for literal in re.findall(r'"([^"\n]*)"', path.read_text(encoding="utf-8"))
    }


SERVER_LITERALS = server_literals()
SERVER_HEADERS = {name for name in SERVER_LITERALS if name.startswith("x-sealtrail-")}


def check_headers(text: str, check: Check) -> None:
    """The metadata the snippets send is what the server reads; the trailer
    they read is the one gRPC's rich status is sent in."""
    go = "\n".join(code_blocks(text, "go"))
    ts = "\n".join(code_blocks(text, "ts"))
    sent = [
        literal
        for line in go.splitlines()
        if "pairs" in line
        for literal in re.findall(r'"([a-z][a-z0-9-]*)"', line)
    ]
    sent += re.findall(r'\bmd\.(?:set|add)\("([^"]+)"', ts)
    for name in sent:
        check.saw("header")
        if name not in SERVER_LITERALS:
            check.problems.append(f"the server reads no metadata {name}")
    for name in set(re.findall(r"x-sealtrail-[a-z0-9-]*[a-z0-9]", text)):
        check.saw("header")
        if name not in SERVER_HEADERS:
            check.problems.append(f"the server has no header {name}")
    for name in re.findall(r'\.get\("(grpc-[a-z-]+)"\)', ts):
        check.saw("trailer")
        if name != rpc_status.GRPC_DETAILS_METADATA_KEY:
            check.problems.append(f"the rich status is not sent in {name}")


def checked(text: str) -> Check:
    check = Check()
    check_go(text, check)
    check_typescript(text, check)
    check_headers(text, check)
    return check


def test_the_snippets_name_what_the_protos_and_the_server_have() -> None:
    check = checked(DOC.read_text(encoding="utf-8"))
    assert check.problems == []
    kinds = {"message", "field", "enum value", "rpc", "service", "import", "header", "trailer"}
    assert {kind for kind, count in check.counts.items() if count > 0} == kinds
    assert check.counts["field"] >= 40


@pytest.mark.parametrize(
    ("written", "misspelled"),
    [
        ("HttpStatusCode:", "HttpStatusCod:"),
        ("httpStatusCode:", "httpStatus:"),
        ("actor: { id: actor(req)", "actor: { ident: actor(req)"),
        ("GetNextPageToken()", "GetNextToken()"),
        ("request.PageToken = ", "request.Token = "),
        ("Outcome_OUTCOME_DENIED", "Outcome_OUTCOME_REFUSED"),
        ("Outcome.OUTCOME_DENIED", "Outcome.OUTCOME_REFUSED"),
        ("sealtrailv1.EventFilter{", "sealtrailv1.EventFilters{"),
        ("c.audit.Record(", "c.audit.Append("),
        ("audit.query(", "audit.search("),
        ("page.nextPageToken", "page.nextToken"),
        ("retryDelay?.nanos", "retryDelay?.nano"),
        ('"x-sealtrail-on-behalf-of"', '"x-sealtrail-on-behalf"'),
        ('"x-request-id", id', '"x-requestid", id'),
        ('.get("grpc-status-details-bin")', '.get("grpc-status-details")'),
        ('from "./gen/google/rpc/error_details"', 'from "./gen/google/rpc/errors"'),
    ],
)
def test_a_misspelled_name_is_found(written: str, misspelled: str) -> None:
    text = DOC.read_text(encoding="utf-8")
    assert written in text
    assert checked(text.replace(written, misspelled)).problems != []


def table(text: str, header: str) -> list[list[str]]:
    """The rows of the table whose header row starts with `header`, cells unquoted."""
    found = re.search(rf"^{re.escape(header)}.*\n\|[-|]+\|\n((?:\|.*\n)+)", text, re.M)
    assert found is not None, f"no table headed {header!r}"
    return [
        [cell.strip().strip("`") for cell in row.strip().strip("|").split("|")]
        for row in found.group(1).splitlines()
    ]


def test_the_on_behalf_of_values_are_the_python_clients() -> None:
    rows = table(DOC.read_text(encoding="utf-8"), "| person |")
    assert len(rows) >= 3
    for person, value in rows:
        assert on_behalf_of_metadata(person) == (("x-sealtrail-on-behalf-of", value),)


def _request(method: str, route: str) -> AuditedRequest:
    headers = {"user-agent": "curl/8.5"}
    return AuditedRequest(method, route, route, 201, headers, "203.0.113.7", {})


def test_the_actions_are_the_python_middlewares() -> None:
    rows = table(DOC.read_text(encoding="utf-8"), "| method |")
    assert len(rows) >= 5
    for method, route, action in rows:
        assert derived_action(_request(method, route)) == action


def _set_fields(message: Message, prefix: str = "") -> set[str]:
    paths = set()
    for f, value in message.ListFields():
        if f.message_type is not None and f.message_type.name not in PLAIN_IN_TYPESCRIPT:
            paths |= _set_fields(value, f"{prefix}{f.name}.")
        else:
            paths.add(f"{prefix}{f.name}")
    return paths


def test_the_middleware_event_is_the_python_middlewares() -> None:
    """The table of the event the sketches record lists the fields the Python
    middleware fills for a request with an actor, an address and a user agent."""
    recorder = Recorder(
        actor=lambda request: "u_42",
        action=None,
        resource=None,
        skip=None,
        methods=STATE_CHANGING,
        request_id_header="x-request-id",
        fail_closed=False,
    )
    event = recorder.event(
        _request("POST", "/v1/templates/{id}/publish"), duration_ms=12.5, cut=False
    )
    assert event is not None
    rows = table(DOC.read_text(encoding="utf-8"), "| field | what it holds |")
    assert {row[0] for row in rows} == _set_fields(with_defaults(event))
