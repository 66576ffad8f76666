"""Rerank within budget (issue #10, item 7), end to end with a real broker, Triton and the
embedded store: the indexer stores each passage's reranker token vectors, so a search reranking
the top 50 real-length passages at the DEFAULT top N and budget answers in time and not
degraded, and its order is the on-the-fly reranker's up to the int8 quantization of the stored
vectors (scores within 5e-3; pairs whose on-the-fly scores differ by more than 1e-2 keep their
order)."""

from __future__ import annotations

import grpc
import pytest

from mmsearch.producer import text_event
from mmsearch.stores.base import Query, collection_name
from mmsearch.v1 import common_pb2, reranker_pb2, reranker_pb2_grpc, searcher_pb2
from tests.conftest import DEV_TOKEN, BrokerHandle, TritonHandle
from tests.integration.test_indexer import publish, start_indexing
from tests.integration.test_passages import ENDINGS, document
from tests.integration.test_search import search

pytestmark = pytest.mark.integration

N_DOCS = 50
QUERY = "the security team signs the release file before the archive is updated"
AUTH = (("authorization", f"Bearer {DEV_TOKEN}"),)


def metric(registry: object, name: str) -> float:
    value = registry.get_sample_value(name)  # type: ignore[attr-defined]
    return float(value or 0.0)


async def test_rerank_of_50_real_length_passages_fits_the_default_budget(
    triton: TritonHandle, broker: BrokerHandle
) -> None:
    indexing = await start_indexing(triton, broker)
    try:
        texts = {
            f"doc-{i:02d}": document(130, ENDINGS[i % len(ENDINGS)], seed=100 + i) for i in range(N_DOCS)
        }
        produced = publish(
            indexing.bootstrap,
            indexing.topic,
            [text_event("dev", item_id, text, event_time=None) for item_id, text in texts.items()],
        )
        await indexing.wait_caught_up(produced)
        registry = indexing.service.registry
        assert metric(registry, "mmsearch_indexer_rerank_vector_bytes_total") > N_DOCS * 40_000

        request = searcher_pb2.SearchRequest(query=common_pb2.Content(text=QUERY), top_k=N_DOCS)
        request.rerank.enabled = True  # top_n and budget_ms: the server's defaults (50, 1000 ms)
        await search(indexing, request)  # warm-up (model info, first inference)
        stored_before = metric(registry, "mmsearch_reranker_stored_vector_candidates_total")
        fly_before = metric(registry, "mmsearch_reranker_on_the_fly_candidates_total")
        for _ in range(3):
            response = await search(indexing, request)
            assert not response.degraded, list(response.degraded_reasons)
            assert len(response.hits) == N_DOCS
            assert all(h.scores.HasField("rerank") for h in response.hits)
            assert response.timings.rerank_ms < 1000
        assert (
            metric(registry, "mmsearch_reranker_stored_vector_candidates_total") - stored_before == 3 * N_DOCS
        )
        assert metric(registry, "mmsearch_reranker_on_the_fly_candidates_total") == fly_before

        # Every passage carries its vectors: the head's (passage 0) and the further ones.
        store = await indexing.service.stores.get()  # type: ignore[union-attr]
        hits = await store.search(collection_name("minilm@1"), Query("dev", limit=N_DOCS, text=QUERY))
        refs = [(h.record.item_id, h.passage) for h in hits if h.passage is not None]
        assert len(refs) == N_DOCS and any(p.index > 0 for _, p in refs)
        assert all(await store.passage_tokens(collection_name("minilm@1"), "dev", refs))

        # The same 50 passages through the on-the-fly path.
        candidates = [
            reranker_pb2.RerankCandidate(id=h.item_id, text=texts[h.item_id][h.passage.start : h.passage.end])
            for h in response.hits
        ]
        async with grpc.aio.insecure_channel(indexing.service.addr) as channel:
            fly = await reranker_pb2_grpc.RerankerStub(channel).Rerank(
                reranker_pb2.RerankRequest(query=request.query, candidates=candidates),
                metadata=AUTH,
                timeout=120,
            )
        assert fly.stored_vectors_used == 0
        fly_scores = {r.id: r.score for r in fly.results}
        stored_scores = {h.item_id: h.scores.rerank for h in response.hits}
        assert max(abs(fly_scores[i] - stored_scores[i]) for i in fly_scores) < 5e-3
        order = [h.item_id for h in response.hits]
        for a in range(len(order)):
            for b in range(a + 1, len(order)):
                assert fly_scores[order[a]] >= fly_scores[order[b]] - 1e-2, (order[a], order[b])
    finally:
        await indexing.service.running.stop()
