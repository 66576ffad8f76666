"""Reranker metrics (the Triton client's own are mmsearch.clients.triton.TritonMetrics)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram

CANDIDATE_BUCKETS = (1, 2, 5, 10, 20, 30, 50, 100, 200, 500, 1000)


class RerankerMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.candidates = Histogram(
            "mmsearch_reranker_candidates",
            "Candidates per Rerank request (after validation).",
            buckets=CANDIDATE_BUCKETS,
            registry=registry,
        )
        self.stored_vectors = Counter(
            "mmsearch_reranker_stored_vector_candidates",
            "Candidates scored from their stored token vectors (late interaction).",
            registry=registry,
        )
        self.on_the_fly = Counter(
            "mmsearch_reranker_on_the_fly_candidates",
            "Candidates the model encoded at query time (no usable stored vectors).",
            registry=registry,
        )
