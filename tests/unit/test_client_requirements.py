"""The client and server distributions ask for the grpcio and protobuf the
generated modules need: each `*_pb2_grpc.py` refuses, at import, a grpcio older
than the grpcio-tools that generated it, and each `*_pb2.py` a protobuf runtime
older than its protoc. A requirement that admits an older one installs (pip is
content with the grpcio already there) and then `import sealtrail` fails with a
RuntimeError."""

from __future__ import annotations

import ast
import tomllib
from collections.abc import Callable
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[2]
CLIENT = ROOT / "clients" / "python"
GENERATED = CLIENT / "src" / "sealtrail" / "v1"
# The server imports the generated modules and the client's command line too, so
# its own requirements may not admit less than the client's.
DISTRIBUTIONS = [pytest.param(CLIENT, id="client"), pytest.param(ROOT, id="server")]


def lowest_admitted(distribution: str, project_dir: Path = CLIENT) -> Version:
    """The lowest version of `distribution` the requirement of the project in
    `project_dir` admits."""
    project = tomllib.loads((project_dir / "pyproject.toml").read_text("utf-8"))["project"]
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


@pytest.mark.parametrize("project_dir", DISTRIBUTIONS)
@pytest.mark.parametrize(
    ("distribution", "asked"),
    [("grpcio", grpc_generated_versions), ("protobuf", protobuf_runtime_versions)],
)
def test_each_distribution_requires_what_the_generated_modules_ask(
    distribution: str, asked: Callable[[], dict[str, Version]], project_dir: Path
) -> None:
    versions = asked()
    assert versions, f"no generated module names the {distribution} it needs"
    floor = lowest_admitted(distribution, project_dir)
    too_new = {name: str(v) for name, v in versions.items() if v > floor}
    where = project_dir.relative_to(ROOT).as_posix() or "the server"
    assert not too_new, f"{where} requires {distribution}>={floor}, but {too_new}"


# What the client's code uses that older releases of a dependency lack: the
# distribution, the first release that has it, and how the client's source
# shows the use.
USED_SINCE = [
    # ParamType generic over the value it converts: click 8.4. Before, subclassing
    # `click.ParamType[datetime]` raised TypeError ("type 'ParamType' is not
    # subscriptable") as the command line's module was imported.
    ("click", Version("8.4"), "click.ParamType["),
]


@pytest.mark.parametrize("project_dir", DISTRIBUTIONS)
@pytest.mark.parametrize(("distribution", "since", "use"), USED_SINCE)
def test_each_distribution_requires_the_releases_the_clients_code_uses(
    distribution: str, since: Version, use: str, project_dir: Path
) -> None:
    users = sorted(
        str(path.relative_to(CLIENT))
        for path in (CLIENT / "src").rglob("*.py")
        if use in path.read_text("utf-8")
    )
    assert users, f"nothing uses {use} now: drop it from USED_SINCE"
    floor = lowest_admitted(distribution, project_dir)
    where = project_dir.relative_to(ROOT).as_posix() or "the server"
    assert floor >= since, (
        f"{users} use {use}, of {distribution} {since}; {where} requires >={floor}"
    )
