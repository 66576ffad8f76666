"""Traces: the server span of an RPC and the Triton client span under it share
one trace, and the trace context a client sends is continued."""

import grpc
import pytest
from opentelemetry import propagate, trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client.openmetrics import exposition as openmetrics

from mmsearch.v1 import common_pb2, embedder_pb2, embedder_pb2_grpc
from tests.conftest import DEV_TOKEN, TritonHandle, make_settings, start_service

pytestmark = pytest.mark.integration


async def test_embed_spans_continue_the_callers_trace(triton: TritonHandle) -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    service = await start_service(make_settings(triton_url=triton.grpc_url), "embedder", provider)
    try:
        caller = provider.get_tracer("test-client")
        with caller.start_as_current_span("client-call") as parent:
            carrier: dict[str, str] = {}
            propagate.inject(carrier)
            metadata = (("authorization", f"Bearer {DEV_TOKEN}"), *carrier.items())
            async with grpc.aio.insecure_channel(service.addr) as channel:
                stub = embedder_pb2_grpc.EmbedderStub(channel)
                await stub.Embed(
                    embedder_pb2.EmbedRequest(items=[common_pb2.Content(text="trace me")]), metadata=metadata
                )
        trace_id = parent.get_span_context().trace_id
    finally:
        await service.running.stop()

    spans = {span.name: span for span in exporter.get_finished_spans()}
    server = spans["/mmsearch.v1.Embedder/Embed"]
    infer = spans["triton.infer"]
    assert server.kind == trace.SpanKind.SERVER and infer.kind == trace.SpanKind.CLIENT
    assert server.context.trace_id == trace_id == infer.context.trace_id
    assert infer.parent is not None and infer.parent.span_id == server.context.span_id
    assert infer.attributes is not None and infer.attributes["triton.model"] == "minilm_l6_text"


async def test_latency_histograms_carry_the_trace_as_an_exemplar(triton: TritonHandle) -> None:
    """OpenMetrics exposition of the RPC latency histogram links the bucket to the trace."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    service = await start_service(make_settings(triton_url=triton.grpc_url), "embedder", provider)
    try:
        async with grpc.aio.insecure_channel(service.addr) as channel:
            stub = embedder_pb2_grpc.EmbedderStub(channel)
            await stub.Embed(
                embedder_pb2.EmbedRequest(items=[common_pb2.Content(text="an exemplar, please")]),
                metadata=(("authorization", f"Bearer {DEV_TOKEN}"),),
            )
    finally:
        await service.running.stop()
    server = next(s for s in exporter.get_finished_spans() if s.name == "/mmsearch.v1.Embedder/Embed")
    trace_id = format(server.context.trace_id, "032x")
    exposition = openmetrics.generate_latest(service.registry).decode()
    lines = [
        line
        for line in exposition.splitlines()
        if line.startswith("grpc_server_handling_seconds_bucket") and 'grpc_method="Embed"' in line
    ]
    assert any(f'# {{trace_id="{trace_id}"}}' in line for line in lines), lines
