"""Channels between the services (indexer and searcher to the embedder and reranker).

Every call carries the caller's W3C trace context (OpenTelemetry's client interceptor: a CLIENT
span, `traceparent` in the metadata), so a search and the Embed and Rerank it makes are one
trace, and so are an indexer batch and its Embed calls. Health checks are left out: readiness
probes every few seconds would otherwise start a root trace each.

Calls are balanced per request over every address the target resolves to (round robin): with
`dns:///<headless service>:port` each replica of the embedder gets its share, where a ClusterIP
address would pin the caller to one pod per connection. A single address behaves as before.
"""

from __future__ import annotations

from collections.abc import Sequence

import grpc
from opentelemetry.instrumentation.grpc import aio_client_interceptors, filters
from opentelemetry.trace import TracerProvider


def service_channel(
    addr: str, options: Sequence[tuple[str, int | str]] = (), tracer_provider: TracerProvider | None = None
) -> grpc.aio.Channel:
    interceptors = aio_client_interceptors(  # type: ignore[no-untyped-call]
        tracer_provider=tracer_provider, filter_=filters.negate(filters.health_check())
    )
    balanced = [*options, ("grpc.lb_policy_name", "round_robin")]
    return grpc.aio.insecure_channel(addr, options=balanced, interceptors=interceptors)
