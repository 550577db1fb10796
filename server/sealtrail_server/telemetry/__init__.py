"""OpenTelemetry tracing, request ids and correlated logs: the tracer provider
from OTEL_* variables (tracing), the interceptor that starts each call's span
and request id (interceptor), the per-call values (context) and the log line
formats (logs). docs/correlation.md says how to use them.

Each is imported from its module: the command line configures its logging
(logs) before any of its commands runs, `--help` included, and must not
import gRPC or OpenTelemetry's SDK with it (the interceptor, tracing)."""
