"""The searcher's rerank step when the reranker is down: the fused order is
kept and the response says degraded, never an error."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

from prometheus_client import CollectorRegistry

from mmsearch.clients.errors import DependencyDown
from mmsearch.searcher.metrics import SearcherMetrics
from mmsearch.searcher.service import SearcherService
from mmsearch.stores.base import ItemRecord, StoreHit
from mmsearch.v1 import common_pb2, searcher_pb2
from tests.conftest import make_settings


class DownReranker:
    async def rerank(self, request: Any, timeout_s: float) -> Any:
        raise DependencyDown("reranker", "UNAVAILABLE: connection refused")


class Context:
    def time_remaining(self) -> float:
        return 10.0


def hit(item: str, modality: str, score: float) -> StoreHit:
    record = ItemRecord(
        "dev", item, modality, None, 1, datetime(2026, 1, 1, tzinfo=UTC), "", text=f"{item} text"
    )
    return StoreHit(record, score)


def test_reranker_down_keeps_the_fused_order_and_says_degraded() -> None:
    service = SearcherService(make_settings(), None, SearcherMetrics(CollectorRegistry()))  # type: ignore[arg-type]
    service.reranker = DownReranker()  # type: ignore[assignment]
    request = searcher_pb2.SearchRequest(
        query=common_pb2.Content(text="cats"), rerank=searcher_pb2.RerankOptions(enabled=True, top_n=3)
    )
    window = [hit("a", "text", 0.9), hit("b", "image", 0.8), hit("c", "text", 0.7)]
    response = searcher_pb2.SearchResponse()
    hits, scores = asyncio.run(service._rerank(request, window, [hit("d", "text", 0.1)], response, Context()))  # type: ignore[arg-type]
    assert [h.record.item_id for h in hits] == ["a", "b", "c", "d"] and scores == {}
    assert response.degraded and "UNAVAILABLE" in response.degraded_reasons[0]
