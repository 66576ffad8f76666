"""Prometheus metrics: one registry per process (passed around, not global),
RED metrics per RPC, and the /metrics HTTP endpoint."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from wsgiref.simple_server import WSGIServer

from opentelemetry import trace
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

# Buckets from 1 ms to 30 s: covers embedding batches and ANN lookups alike.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class RpcMetrics:
    """RED metrics per RPC, named as go-grpc-prometheus does so existing dashboards apply."""

    def __init__(self, registry: CollectorRegistry) -> None:
        labels = ("grpc_type", "grpc_service", "grpc_method")
        self.started = Counter(
            "grpc_server_started_total", "RPCs started on the server.", labels, registry=registry
        )
        self.handled = Counter(
            "grpc_server_handled_total",
            "RPCs completed on the server, by status code.",
            (*labels, "grpc_code"),
            registry=registry,
        )
        self.latency = Histogram(
            "grpc_server_handling_seconds",
            "Time to handle an RPC, from receipt to status.",
            labels,
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.in_flight = Gauge(
            "grpc_server_in_flight", "RPCs being handled now.", ("grpc_service",), registry=registry
        )


class DependencyMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.up = Gauge(
            "mmsearch_dependency_up",
            "1 when a service's dependency checks pass, else 0.",
            ("grpc_service",),
            registry=registry,
        )


@dataclass
class MetricsServer:
    server: WSGIServer
    thread: threading.Thread

    @property
    def port(self) -> int:
        return int(self.server.server_address[1])

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)


def start_metrics_server(registry: CollectorRegistry, host: str, port: int) -> MetricsServer:
    server, thread = start_http_server(port, addr=host, registry=registry)
    return MetricsServer(server, thread)


def trace_exemplar() -> dict[str, str] | None:
    """The current sampled span's trace id, as an exemplar for a histogram observation: a slow
    bucket on a dashboard then links to a trace of a request that landed in it. Exemplars are
    exposed in the OpenMetrics format only (Prometheus: --enable-feature=exemplar-storage)."""
    context = trace.get_current_span().get_span_context()
    if not context.is_valid or not context.trace_flags.sampled:
        return None
    return {"trace_id": format(context.trace_id, "032x")}


def split_method(full_method: str) -> tuple[str, str]:
    """'/pkg.Service/Method' -> ('pkg.Service', 'Method')."""
    service, _, method = full_method.lstrip("/").partition("/")
    return service, method
