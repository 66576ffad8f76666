"""Traces follow a request across the services: `mmsearch serve` exports over OTLP to a
receiver in this test (a real OTLP/gRPC TraceService), and one search is one trace holding its
stages (embed, ANN/hybrid, rerank), the Embed and Rerank RPCs it makes (client and server spans,
through the W3C context the client interceptor sends) and their Triton calls; one indexer batch
is one trace holding its Embed calls and its store write."""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
import pytest
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.proto.trace.v1 import trace_pb2

from mmsearch.dev.harness import running_stack
from mmsearch.producer import ContentProducer, text_event
from mmsearch.v1 import common_pb2, searcher_pb2, searcher_pb2_grpc
from tests.conftest import DEV_TOKEN

pytestmark = pytest.mark.integration
AUTH = (("authorization", f"Bearer {DEV_TOKEN}"),)
SERVER, CLIENT = trace_pb2.Span.SPAN_KIND_SERVER, trace_pb2.Span.SPAN_KIND_CLIENT
DOCUMENTS = {
    "tracing": "Traces follow a request from the searcher to the embedder and on to Triton, so one "
    "slow search shows which stage took the time: the query embedding, the vector search or the rerank.",
    "lag": "Consumer lag is the work waiting on the content topic: the indexer scales on it, up to one "
    "replica per partition, because a consumer beyond the partition count would only idle.",
}


class Receiver(trace_service_pb2_grpc.TraceServiceServicer):
    def __init__(self) -> None:
        self.spans: list[trace_pb2.Span] = []

    def Export(self, request: Any, context: Any) -> trace_service_pb2.ExportTraceServiceResponse:
        for resource in request.resource_spans:
            for scope in resource.scope_spans:
                self.spans.extend(scope.spans)
        return trace_service_pb2.ExportTraceServiceResponse()


@pytest.fixture
def receiver() -> Iterator[tuple[Receiver, int]]:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    handler = Receiver()
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(handler, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield handler, port
    server.stop(grace=None)


def _traces(spans: list[trace_pb2.Span]) -> dict[bytes, list[trace_pb2.Span]]:
    by_trace: dict[bytes, list[trace_pb2.Span]] = defaultdict(list)
    for span in spans:
        by_trace[span.trace_id].append(span)
    return by_trace


def _one(spans: list[trace_pb2.Span], name: str, kind: int | None = None) -> trace_pb2.Span:
    found = [s for s in spans if s.name == name and (kind is None or s.kind == kind)]
    assert len(found) == 1, (name, [s.name for s in spans])
    return found[0]


def _child_of(child: trace_pb2.Span, parent: trace_pb2.Span) -> bool:
    return child.parent_span_id == parent.span_id


def test_a_search_and_an_indexer_batch_are_each_one_trace(
    tmp_path: Path, receiver: tuple[Receiver, int]
) -> None:
    handler, port = receiver
    env = {"MMSEARCH_OTLP_ENDPOINT": f"http://127.0.0.1:{port}", "OTEL_BSP_SCHEDULE_DELAY": "200"}
    with running_stack(tmp_path, env_overrides=env) as stack:
        producer = ContentProducer(stack.bootstrap)
        for name, text in DOCUMENTS.items():
            producer.publish(text_event("dev", name, text, title=name, version=1))
        producer.flush()
        with grpc.insecure_channel(stack.addr) as channel:
            searcher = searcher_pb2_grpc.SearcherStub(channel)
            deadline = time.monotonic() + 120
            query = common_pb2.Content(text="which stage made the search slow")
            while (
                len(searcher.Search(searcher_pb2.SearchRequest(query=query), metadata=AUTH, timeout=30).hits)
                < 2
            ):
                assert time.monotonic() < deadline, "documents not searchable"
                time.sleep(0.5)
            # A text not embedded before: the embedder's cache would answer it without Triton.
            searcher.Search(
                searcher_pb2.SearchRequest(
                    query=common_pb2.Content(text="why would a search be slow, and where"),
                    top_k=2,
                    hybrid=searcher_pb2.HybridOptions(enabled=True),
                    rerank=searcher_pb2.RerankOptions(enabled=True, top_n=2),
                ),
                metadata=AUTH,
                timeout=30,
            )
        time.sleep(1.5)  # the batch span processor exports every 200 ms
    traces = _traces(handler.spans)

    # The reranked search: one trace from the Search RPC down to Triton.
    (search,) = [t for t in traces.values() if any(s.name == "search.rerank" for s in t)]
    root = _one(search, "/mmsearch.v1.Searcher/Search", SERVER)
    assert not root.parent_span_id
    embed_stage = _one(search, "search.embed")
    embed_call = _one(search, "/mmsearch.v1.Embedder/Embed", CLIENT)
    embed_server = _one(search, "/mmsearch.v1.Embedder/Embed", SERVER)
    assert (
        _child_of(embed_stage, root)
        and _child_of(embed_call, embed_stage)
        and _child_of(embed_server, embed_call)
    )
    infers = [s for s in search if s.name == "triton.infer"]
    assert any(_child_of(i, embed_server) for i in infers), "the query's Triton call is in the search's trace"
    assert _child_of(_one(search, "search.hybrid"), root)
    rerank_stage = _one(search, "search.rerank")
    rerank_call = _one(search, "/mmsearch.v1.Reranker/Rerank", CLIENT)
    rerank_server = _one(search, "/mmsearch.v1.Reranker/Rerank", SERVER)
    assert _child_of(rerank_stage, root) and _child_of(rerank_call, rerank_stage)
    assert _child_of(rerank_server, rerank_call)
    assert any(_child_of(i, rerank_server) for i in infers)

    # The indexer's batch: its Embed calls and its store write are in its trace.
    batches = [t for t in traces.values() if any(s.name == "indexer.batch" for s in t)]
    assert batches
    batch_trace = next(t for t in batches if any(s.name == "indexer.store_write" for s in t))
    batch = _one(batch_trace, "indexer.batch")
    assert not batch.parent_span_id
    assert _child_of(_one(batch_trace, "indexer.store_write"), batch)
    embeds = [s for s in batch_trace if s.name == "/mmsearch.v1.Embedder/Embed" and s.kind == SERVER]
    assert embeds and all(any(s.span_id == e.parent_span_id for s in batch_trace) for e in embeds)
    # No Embed RPC is left a root trace of its own.
    roots = [s.name for t in traces.values() for s in t if not s.parent_span_id]
    assert "/mmsearch.v1.Embedder/Embed" not in roots, roots
