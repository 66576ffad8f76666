"""Reranker metrics. The Triton round-trip, batch-size and retry metrics have the
same shape as the embedder's (TritonPool records them) under reranker names, so
`--target all` can register both on one registry."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram

from services.kit.metrics import LATENCY_BUCKETS

CANDIDATE_BUCKETS = (1, 2, 5, 10, 20, 30, 50, 100, 200, 500, 1000)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


class RerankerMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.candidates = Histogram(
            "mmsearch_reranker_candidates",
            "Candidates per Rerank request (after validation).",
            buckets=CANDIDATE_BUCKETS,
            registry=registry,
        )
        # Recorded by TritonPool (same label sets as EmbedderMetrics).
        self.batch_items = Histogram(
            "mmsearch_reranker_batch_items",
            "(query, candidate) rows per request sent to the model server.",
            ("modality",),
            buckets=BATCH_BUCKETS,
            registry=registry,
        )
        self.triton_seconds = Histogram(
            "mmsearch_reranker_triton_seconds",
            "Round trip of one inference request to the model server (queue + compute + network).",
            ("model", "outcome"),
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.triton_retries = Counter(
            "mmsearch_reranker_triton_retries_total",
            "Inference requests retried after the model server was unavailable.",
            ("model",),
            registry=registry,
        )
