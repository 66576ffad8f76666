"""OpenTelemetry tracing: a tracer provider per process, OTLP export when configured."""

from __future__ import annotations

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor


def setup_tracing(service_name: str, otlp_endpoint: str, *, set_global: bool = True) -> TracerProvider:
    """Create the tracer provider; spans are exported over OTLP/gRPC when an endpoint is set.

    Without an endpoint spans are still created, so trace ids reach the logs
    and propagate to downstream services.
    """
    provider = TracerProvider(resource=Resource.create({"service.name": service_name}))
    if otlp_endpoint:
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        insecure = otlp_endpoint.startswith("http://")
        provider.add_span_processor(
            BatchSpanProcessor(OTLPSpanExporter(endpoint=otlp_endpoint, insecure=insecure))
        )
    if set_global:
        # Instrumentations look the provider up globally; set it once per process.
        trace.set_tracer_provider(provider)
    return provider
