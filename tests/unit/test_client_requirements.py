"""The client distribution asks for the grpcio and protobuf its generated modules
need: each `*_pb2_grpc.py` refuses, at import, a grpcio older than the grpcio-tools
that generated it, and each `*_pb2.py` a protobuf runtime older than its protoc. A
requirement that admits an older one installs (pip is content with the grpcio
already there) and then `import sealtrail` fails with a RuntimeError."""

from __future__ import annotations

import ast
import tomllib
from collections.abc import Callable
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.version import Version

CLIENT = Path(__file__).resolve().parents[2] / "clients" / "python"
GENERATED = CLIENT / "src" / "sealtrail" / "v1"


def lowest_admitted(distribution: str) -> Version:
    """The lowest version of `distribution` the client's requirement admits."""
    project = tomllib.loads((CLIENT / "pyproject.toml").read_text("utf-8"))["project"]
    (requirement,) = (
        parsed
        for parsed in map(Requirement, project["dependencies"])
        if parsed.name == distribution
    )
    floors = [
        Version(spec.version)
        for spec in requirement.specifier
        if spec.operator in {">=", "==", "~=", "==="}
    ]
    assert floors, f"{requirement} admits any version"
    return max(floors)


def grpc_generated_versions() -> dict[str, Version]:
    """What each generated service module asks of grpcio, by file name."""
    found: dict[str, Version] = {}
    for module in sorted(GENERATED.glob("*_pb2_grpc.py")):
        for node in ast.parse(module.read_text("utf-8")).body:
            if (
                isinstance(node, ast.Assign)
                and [getattr(target, "id", None) for target in node.targets]
                == ["GRPC_GENERATED_VERSION"]
                and isinstance(node.value, ast.Constant)
            ):
                found[module.name] = Version(str(node.value.value))
    return found


def protobuf_runtime_versions() -> dict[str, Version]:
    """What each generated message module asks of the protobuf runtime."""
    found: dict[str, Version] = {}
    for module in sorted(GENERATED.glob("*_pb2.py")):
        for node in ast.walk(ast.parse(module.read_text("utf-8"))):
            if (
                isinstance(node, ast.Call)
                and getattr(node.func, "attr", None) == "ValidateProtobufRuntimeVersion"
            ):
                parts = [arg.value for arg in node.args[1:4] if isinstance(arg, ast.Constant)]
                found[module.name] = Version(".".join(map(str, parts)))
    return found


@pytest.mark.parametrize(
    ("distribution", "asked"),
    [("grpcio", grpc_generated_versions), ("protobuf", protobuf_runtime_versions)],
)
def test_the_client_requires_what_its_generated_modules_ask(
    distribution: str, asked: Callable[[], dict[str, Version]]
) -> None:
    versions = asked()
    assert versions, f"no generated module names the {distribution} it needs"
    floor = lowest_admitted(distribution)
    too_new = {name: str(v) for name, v in versions.items() if v > floor}
    assert not too_new, f"clients/python requires {distribution}>={floor}, but {too_new}"


# What the client's code uses that older releases of a dependency lack: the
# distribution, the first release that has it, and how the client's source
# shows the use.
USED_SINCE = [
    # ParamType generic over the value it converts: click 8.4. Before, subclassing
    # `click.ParamType[datetime]` raised TypeError ("type 'ParamType' is not
    # subscriptable") as the command line's module was imported.
    ("click", Version("8.4"), "click.ParamType["),
]


@pytest.mark.parametrize(("distribution", "since", "use"), USED_SINCE)
def test_the_client_requires_the_releases_its_code_uses(
    distribution: str, since: Version, use: str
) -> None:
    users = sorted(
        str(path.relative_to(CLIENT))
        for path in (CLIENT / "src").rglob("*.py")
        if use in path.read_text("utf-8")
    )
    assert users, f"nothing uses {use} now: drop it from USED_SINCE"
    floor = lowest_admitted(distribution)
    assert floor >= since, f"{users} use {use}, of {distribution} {since}; required: >={floor}"
