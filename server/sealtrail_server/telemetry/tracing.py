"""The tracer provider, configured only by the standard OTEL_* environment
variables (https://opentelemetry.io/docs/specs/otel/configuration/sdk-environment-variables/).

Tracing is on when OTEL_TRACES_EXPORTER names an exporter, or when an OTLP
endpoint is set (OTEL_EXPORTER_OTLP_ENDPOINT or _TRACES_ENDPOINT), which then
implies `otlp`; and off when OTEL_SDK_DISABLED is true or neither is set:
unlike the SDK's own default, a server nobody asked to export does not try
to reach a collector, and creates no spans at all. OTEL_TRACES_EXPORTER=none
records spans (for log correlation and sampling) without exporting them.

`otlp` speaks gRPC unless OTEL_EXPORTER_OTLP_TRACES_PROTOCOL (or
OTEL_EXPORTER_OTLP_PROTOCOL) is `http/protobuf`; any other name is looked up
among the installed `opentelemetry_traces_exporter` entry points (`console`,
`zipkin`, ...). The sampler is the one OTEL_TRACES_SAMPLER names (default
parent-based always-on), at the rate OTEL_TRACES_SAMPLER_ARG gives; a name the
SDK does not know, or a rate that is none, stops the start, where the SDK
warned and sampled every trace (the operator asked for fewer to spare the
collector). The batch processor (OTEL_BSP_*), the resource (OTEL_SERVICE_NAME,
OTEL_RESOURCE_ATTRIBUTES; service.name defaults to `sealtrail`) and each
exporter's endpoint, headers, TLS and timeout are read by the SDK itself."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Final

from opentelemetry.sdk.resources import SERVICE_NAME, SERVICE_VERSION, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter
from opentelemetry.sdk.trace.sampling import (
    ALWAYS_OFF,
    ALWAYS_ON,
    DEFAULT_OFF,
    DEFAULT_ON,
    ParentBasedTraceIdRatio,
    Sampler,
    TraceIdRatioBased,
)

from .otel_env import exporter_names as signal_exporters
from .otel_env import exporter_plugin

DEFAULT_SERVICE_NAME: Final = "sealtrail"


class TracingConfigError(ValueError):
    """The OTEL_* variables ask for something that cannot be set up."""


# BatchSpanProcessor's arguments, by the names its errors give them, and the
# variables it reads them from.
_BSP_VARIABLES: Final = {
    "max_queue_size": "OTEL_BSP_MAX_QUEUE_SIZE",
    "schedule_delay_millis": "OTEL_BSP_SCHEDULE_DELAY",
    "max_export_batch_size": "OTEL_BSP_MAX_EXPORT_BATCH_SIZE",
}


# The samplers OTEL_TRACES_SAMPLER may name (those the SDK knows), each a
# sampler or, given the rate OTEL_TRACES_SAMPLER_ARG gives, what makes one.
_SAMPLERS: Final[dict[str, Sampler | Callable[[float], Sampler]]] = {
    "always_on": ALWAYS_ON,
    "always_off": ALWAYS_OFF,
    "parentbased_always_on": DEFAULT_ON,
    "parentbased_always_off": DEFAULT_OFF,
    "traceidratio": TraceIdRatioBased,
    "parentbased_traceidratio": ParentBasedTraceIdRatio,
}


def exporter_names(env: Mapping[str, str]) -> list[str] | None:
    """The exporters the environment asks for ([] for `none`), or None when
    tracing is off."""
    return signal_exporters(env, "traces")


def tracer_provider_from_env(env: Mapping[str, str], *, version: str = "") -> TracerProvider | None:
    """A tracer provider exporting as the environment says, or None when
    tracing is off. Raises TracingConfigError for an unknown exporter or
    protocol, before anything is started."""
    names = exporter_names(env)
    if names is None:
        return None
    sampler = _sampler(env)
    exporters = [_exporter(name, env) for name in names]
    provider = TracerProvider(sampler=sampler, resource=service_resource(version))
    try:
        for exporter in exporters:
            provider.add_span_processor(BatchSpanProcessor(exporter))
    except ValueError as error:  # what it read of OTEL_BSP_* itself
        provider.shutdown()  # the processors already started, and their exporters
        argument = str(error).split(" ", 1)[0]
        variable = _BSP_VARIABLES.get(argument, "OTEL_BSP_*")
        raise TracingConfigError(f"{variable}: {error}") from None
    return provider


def service_resource(version: str = "") -> Resource:
    """What spans and metrics say of this process: OTEL_SERVICE_NAME and
    OTEL_RESOURCE_ATTRIBUTES, else service.name `sealtrail`; and the version,
    unless they give one."""
    resource = Resource.create()
    defaults: dict[str, str] = {}
    if str(resource.attributes.get(SERVICE_NAME, "")).startswith("unknown_service"):
        defaults[SERVICE_NAME] = DEFAULT_SERVICE_NAME
    if version and SERVICE_VERSION not in resource.attributes:
        defaults[SERVICE_VERSION] = version
    return resource.merge(Resource(defaults)) if defaults else resource


def _sampler(env: Mapping[str, str]) -> Sampler:
    """The sampler OTEL_TRACES_SAMPLER names, at OTEL_TRACES_SAMPLER_ARG's rate
    (1.0 when unset); TracingConfigError for a name or rate it cannot be."""
    name = env.get("OTEL_TRACES_SAMPLER", "").strip().lower() or "parentbased_always_on"
    made = _SAMPLERS.get(name)
    if made is None:
        raise TracingConfigError(
            f"OTEL_TRACES_SAMPLER names {name!r}, which is not a sampler of the SDK;"
            f" known: {', '.join(_SAMPLERS)}"
        )
    if isinstance(made, Sampler):
        return made
    argument = env.get("OTEL_TRACES_SAMPLER_ARG", "").strip()
    try:
        rate = float(argument) if argument else 1.0
    except ValueError:
        rate = math.nan
    if not 0.0 <= rate <= 1.0:  # nan included
        raise TracingConfigError(
            f"OTEL_TRACES_SAMPLER_ARG={argument!r} is no sampling rate: use a number from 0 to 1"
            " (0.1 samples a tenth of the traces)"
        )
    return made(rate)


def _exporter(name: str, env: Mapping[str, str]) -> SpanExporter:
    exporter_class = exporter_plugin(env, "traces", name, TracingConfigError)
    try:
        exporter: SpanExporter = exporter_class()
    except Exception as error:  # settings its constructor refuses
        raise TracingConfigError(
            f"OTEL_TRACES_EXPORTER names {name!r}, which cannot be started: {error}"
        ) from error
    return exporter
