"""Reranker metrics (the Triton client's own are mmsearch.clients.triton.TritonMetrics)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Histogram

CANDIDATE_BUCKETS = (1, 2, 5, 10, 20, 30, 50, 100, 200, 500, 1000)


class RerankerMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.candidates = Histogram(
            "mmsearch_reranker_candidates",
            "Candidates per Rerank request (after validation).",
            buckets=CANDIDATE_BUCKETS,
            registry=registry,
        )
