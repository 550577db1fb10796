"""What tracing and metrics read alike of the standard OTEL_* variables
(https://opentelemetry.io/docs/specs/otel/configuration/sdk-environment-variables/):
which exporters a signal asks for, and which OTLP exporter its protocol names."""

from __future__ import annotations

from collections.abc import Mapping
from importlib.metadata import entry_points
from typing import Any, Literal

Signal = Literal["traces", "metrics"]


def exporter_names(env: Mapping[str, str], signal: Signal) -> list[str] | None:
    """The exporters OTEL_<SIGNAL>_EXPORTER names, each once ([] for `none`);
    `otlp` when it is unset and an OTLP endpoint is (OTEL_EXPORTER_OTLP_ENDPOINT
    or _<SIGNAL>_ENDPOINT); None when the signal is off (neither set, or
    OTEL_SDK_DISABLED true)."""
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return None
    upper = signal.upper()
    names = [n.strip().lower() for n in env.get(f"OTEL_{upper}_EXPORTER", "").split(",")]
    names = [n for n in names if n]
    if not names:
        endpoints = ("OTEL_EXPORTER_OTLP_ENDPOINT", f"OTEL_EXPORTER_OTLP_{upper}_ENDPOINT")
        return ["otlp"] if any(env.get(name, "").strip() for name in endpoints) else None
    return list(dict.fromkeys(n for n in names if n != "none"))


def exporter_plugin(
    env: Mapping[str, str], signal: Signal, name: str, error: type[ValueError]
) -> Any:
    """What the exporter `name` of the signal's entry points loads (`otlp`: by
    its protocol), to be called for the exporter; `error`, naming the
    variable, when none is installed by that name or it cannot be loaded."""
    if name == "otlp":
        name = otlp_entry_point(env, signal, error)
    group = f"opentelemetry_{signal}_exporter"
    variable = f"OTEL_{signal.upper()}_EXPORTER"
    found = entry_points(group=group, name=name)
    if not found:
        known = sorted({point.name for point in entry_points(group=group)} | {"otlp"})
        raise error(
            f"{variable} names {name!r}, which is not installed; known: {', '.join(known)}, none"
        )
    try:
        return next(iter(found)).load()
    except Exception as failure:  # a broken plugin
        raise error(f"{variable} names {name!r}, which cannot be loaded: {failure}") from failure


def otlp_entry_point(env: Mapping[str, str], signal: Signal, error: type[ValueError]) -> str:
    """The entry point of the OTLP exporter the protocol asks for
    (OTEL_EXPORTER_OTLP_<SIGNAL>_PROTOCOL, else _PROTOCOL; gRPC by default);
    `error`, naming the variable, for a protocol other than grpc or http/protobuf."""
    variables = (f"OTEL_EXPORTER_OTLP_{signal.upper()}_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL")
    variable = next((v for v in variables if env.get(v, "").strip()), None)
    protocol = env[variable].strip() if variable else "grpc"
    if protocol == "grpc":
        return "otlp_proto_grpc"
    if protocol == "http/protobuf":
        return "otlp_proto_http"
    raise error(f"{variable}={protocol!r} is not supported: use grpc or http/protobuf")
