"""Indexer metrics: consumer lag, events by outcome, batch sizes, freshness
(event time -> searchable) and store write latency."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from mmsearch.kit.metrics import LATENCY_BUCKETS
from mmsearch.v1 import events_pb2

FRESHNESS_BUCKETS = (0.05, 0.1, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0, 30.0, 60.0, 300.0, 1800.0)
BATCH_BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000)


class IndexerMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.retention_deleted = Counter(
            "mmsearch_retention_deleted_total",
            "Items tombstoned by per-space retention (older than the space's configured age).",
            ("space",),
            registry=registry,
        )
        self.retention_runs = Counter(
            "mmsearch_retention_runs_total", "Retention passes, by result (ok, failed).", ("result",),
            registry=registry,
        )  # fmt: skip
        self.events = Counter(
            "mmsearch_indexer_events_total",
            "Events handled, by outcome (indexed, deleted, duplicate, dlq) and DLQ reason.",
            ("outcome", "reason"),
            registry=registry,
        )
        # Every series exists from start-up at 0: a series born at 1 hides its first events from
        # rate() and increase(), so the first burst of dead letters of a reason would not alert.
        for outcome in ("indexed", "deleted", "duplicate"):
            self.events.labels(outcome, "")
        for reason in events_pb2.DeadLetter.Reason.keys():  # noqa: SIM118 (an enum wrapper, not a dict)
            if reason != "REASON_UNSPECIFIED":
                self.events.labels("dlq", reason)
        self.lag = Gauge(
            "mmsearch_indexer_consumer_lag",
            "Records between the committed offset and the partition's highwater.",
            ("topic", "partition"),
            registry=registry,
        )
        self.batch_records = Histogram(
            "mmsearch_indexer_batch_records",
            "Records per processed batch.",
            buckets=BATCH_BUCKETS,
            registry=registry,
        )
        self.freshness_seconds = Histogram(
            "mmsearch_indexer_freshness_seconds",
            "From an event's event_time to its write being durable in the store (searchable).",
            ("space",),
            buckets=FRESHNESS_BUCKETS,
            registry=registry,
        )
        self.ocr_freshness_seconds = Histogram(
            "mmsearch_indexer_ocr_freshness_seconds",
            "From an image event's event_time to its OCR text being searchable (the enrichment stage).",
            ("space",),
            buckets=FRESHNESS_BUCKETS,
            registry=registry,
        )
        self.store_write_seconds = Histogram(
            "mmsearch_indexer_store_write_seconds",
            "Store write latency per batch and space.",
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.paused = Gauge(
            "mmsearch_indexer_paused",
            "1 while consumption is paused because a dependency is down.",
            registry=registry,
        )
        self.retries = Counter(
            "mmsearch_indexer_batch_retries_total",
            "Batches retried after a dependency failure (nothing committed).",
            registry=registry,
        )
        self.embed_calls = Counter(
            "mmsearch_indexer_embed_calls_total",
            "Embed calls made by the indexer (work sized by cost, not item count).",
            registry=registry,
        )
        self.embed_splits = Counter(
            "mmsearch_indexer_embed_splits_total",
            "Embed calls past their deadline, split in halves and retried at once.",
            registry=registry,
        )
        self.rerank_vector_bytes = Counter(
            "mmsearch_indexer_rerank_vector_bytes_total",
            "Bytes of reranker token vectors stored with passages (late interaction).",
            registry=registry,
        )
        self.rerank_vectors = Counter(
            "mmsearch_indexer_rerank_vectors_total",
            "Passages given stored reranker token vectors, by source: the embedding pass itself "
            "(the text model makes them) or a separate reranker encode.",
            ["source"],
            registry=registry,
        )
