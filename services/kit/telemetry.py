"""Prometheus metrics and OpenTelemetry tracing, set up once per process."""

from __future__ import annotations

import os

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from prometheus_client import Counter, Histogram

RPC_REQUESTS = Counter(
    "innominatus_rpc_requests_total",
    "RPCs handled, by service, method and gRPC status code.",
    ["service", "method", "code"],
)
RPC_ERRORS = Counter(
    "innominatus_rpc_errors_total",
    "RPCs that ended in an error, by service, method and error reason.",
    ["service", "method", "reason"],
)
RPC_LATENCY = Histogram(
    "innominatus_rpc_duration_seconds",
    "Time to handle an RPC, by service and method.",
    ["service", "method"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
POLICY_DECISIONS = Counter(
    "innominatus_policy_decisions_total",
    "Policy decisions on mutations, by permission and result (allow, deny, unavailable).",
    ["permission", "result"],
)

_provider: TracerProvider | None = None


def tracer_provider(service_name: str = "innominatus") -> TracerProvider:
    """The process's tracer provider; exporters are added by whoever needs them."""
    global _provider
    if _provider is None:
        current = trace.get_tracer_provider()
        if isinstance(current, TracerProvider):
            _provider = current
        else:
            _provider = TracerProvider(resource=Resource.create({"service.name": service_name}))
            _add_configured_exporter(_provider)
            trace.set_tracer_provider(_provider)
    return _provider


def _add_configured_exporter(provider: TracerProvider) -> None:
    """Ship spans over OTLP/HTTP when the standard OTEL_EXPORTER_OTLP_* variables ask for it."""
    if not (os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") or os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")):
        return
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))


def current_trace_id() -> str:
    span_context = trace.get_current_span().get_span_context()
    return format(span_context.trace_id, "032x") if span_context.is_valid else ""
