"""Embedder metrics, per modality. Triton's own per-model queue and compute
times are on Triton's metrics port (nv_inference_queue_duration_us, ...)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from mmsearch.kit.metrics import LATENCY_BUCKETS


class EmbedderMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.items = Counter(
            "mmsearch_embedder_items_total",
            "Items embedded, by modality and where the vector came from (model, cache, vector).",
            ("modality", "source"),
            registry=registry,
        )
        self.cache_lookups = Counter(
            "mmsearch_embedder_cache_lookups_total",
            "Embedding cache lookups by result (hit, miss).",
            ("modality", "result"),
            registry=registry,
        )
        self.cache_entries = Gauge(
            "mmsearch_embedder_cache_entries", "Embeddings held in the cache.", registry=registry
        )
        self.cache_bytes = Gauge(
            "mmsearch_embedder_cache_bytes", "Approximate bytes held by the cache.", registry=registry
        )
        self.truncated = Counter(
            "mmsearch_embedder_truncated_total",
            "Items cut to the model's limit (text tokens, audio seconds).",
            ("modality",),
            registry=registry,
        )
        self.preprocess_seconds = Histogram(
            "mmsearch_embedder_preprocess_seconds",
            "Decoding and resizing / resampling time per request, by modality.",
            ("modality",),
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
