"""OpenTelemetry tracing, request ids and correlated logs: the tracer provider
from OTEL_* variables (tracing), the interceptor that starts each call's span
and request id (interceptor), the per-call values (context) and the log line
formats (logs). docs/correlation.md says how to use them."""

from .context import current_correlation, current_request_id, response_metadata
from .interceptor import TelemetryInterceptor
from .logs import configure_logging
from .tracing import TracingConfigError, tracer_provider_from_env

__all__ = [
    "TelemetryInterceptor",
    "TracingConfigError",
    "configure_logging",
    "current_correlation",
    "current_request_id",
    "response_metadata",
    "tracer_provider_from_env",
]
