"""Searcher metrics: per-stage latency, candidate counts, degraded answers and
live recall@k from sampled exact re-runs."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram

from mmsearch.kit.metrics import LATENCY_BUCKETS

RECALL_BUCKETS = (0.5, 0.7, 0.8, 0.9, 0.95, 0.98, 0.99, 1.0)
CANDIDATE_BUCKETS = (0, 1, 5, 10, 20, 50, 100, 200, 500, 1000)


class SearcherMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.stage_seconds = Histogram(
            "mmsearch_searcher_stage_seconds",
            "Latency per search stage (embed, ann, hybrid, rerank, total).",
            ("stage",),
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.candidates = Histogram(
            "mmsearch_searcher_candidates",
            "Candidates the store returned per query (after filters).",
            buckets=CANDIDATE_BUCKETS,
            registry=registry,
        )
        self.degraded = Counter(
            "mmsearch_searcher_degraded_total",
            "Answers served without a stage (e.g. rerank down or over budget).",
            ("stage",),
            registry=registry,
        )
        self.live_recall = Histogram(
            "mmsearch_searcher_live_recall",
            "recall@k of sampled live queries against an exact re-run.",
            buckets=RECALL_BUCKETS,
            registry=registry,
        )
