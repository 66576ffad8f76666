"""Typed configuration from the environment (prefix MMSEARCH_), validated at start.

Defaults are for local mode (everything on loopback, the development token
file). Kubernetes deployments override them through the chart's env values.
Unknown MMSEARCH_* variables are rejected so that a typo cannot silently fall
back to a default.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

ENV_PREFIX = "MMSEARCH_"
TOOL_PREFIXES = (ENV_PREFIX + "STACK_", ENV_PREFIX + "CLIENT_")
DEV_TOKENS_FILE = Path(__file__).with_name("dev_tokens.json")
DEV_PRODUCERS_FILE = Path(__file__).with_name("dev_producers.json")

Target = Literal["all", "embedder", "indexer", "searcher", "reranker", "gateway"]
TARGETS: tuple[Target, ...] = ("all", "embedder", "indexer", "searcher", "reranker", "gateway")
LOOPBACK = frozenset({"127.0.0.1", "::1", "localhost"})
# The development producer secret (mmsearch/kit/dev_producers.json, public in README.md).
DEV_PRODUCER_SECRET = "mmsearch-dev-producer-secret"


class ConfigError(ValueError):
    """The environment does not describe a valid configuration."""


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, frozen=True)

    # gRPC server
    grpc_host: str = "127.0.0.1"
    grpc_port: int = Field(50051, ge=0, le=65535)
    max_message_bytes: int = Field(16 * 1024 * 1024, ge=1024, le=256 * 1024 * 1024)
    # On SIGTERM: health turns NOT_SERVING, then after shutdown_delay_s the
    # server stops taking RPCs and gives in-flight ones shutdown_grace_s.
    shutdown_delay_s: float = Field(0.0, ge=0, le=60)
    shutdown_grace_s: float = Field(10.0, gt=0, le=300)
    # Close each client connection after this long (0: never), so clients that balance over
    # DNS (round robin over a headless Service) reconnect, resolve again and reach new replicas.
    grpc_max_connection_age_s: float = Field(0.0, ge=0, le=86_400)

    # Observability
    metrics_host: str = "127.0.0.1"
    metrics_port: int = Field(9464, ge=0, le=65535)
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    log_format: Literal["json", "console"] = "json"
    # OTLP gRPC endpoint for traces (e.g. http://otel-collector:4317); empty disables export.
    otlp_endpoint: str = ""
    service_name: str = "mmsearch"

    # Authentication: JSON file of sha256(token) -> tenant and roles.
    auth_tokens_file: Path = DEV_TOKENS_FILE
    # The bundled development tokens are public (README); they are refused on a
    # non-loopback address unless explicitly allowed.
    allow_dev_tokens: bool = False

    # Readiness: how often dependencies are probed for the health service.
    readiness_interval_s: float = Field(2.0, gt=0, le=60)

    # Triton (embedder, reranker)
    triton_url: str = "127.0.0.1:8001"
    # Upper bound for one Triton call; the caller's remaining deadline is used when shorter.
    triton_timeout_s: float = Field(10.0, gt=0, le=300)
    # Connections to Triton (round-robin) and retries of a request the server
    # could not take (down, restarting, version swap), within the deadline.
    triton_pool_size: int = Field(2, ge=1, le=64)
    triton_retries: int = Field(2, ge=0, le=10)
    # Inference requests one process keeps in flight per model and priority class
    # (interactive, bulk); more wait in the process, within their deadline, so a
    # bulk caller cannot fill Triton's queue without bound.
    triton_max_in_flight: int = Field(16, ge=1, le=1024)
    # Triton model names behind the default spaces.
    text_model: str = "minilm_l6_text"
    image_model: str = "efficientnet_lite0_conse"
    audio_model: str = "aisfx_audio"
    ocr_model: str = "ppocr_text"
    # JSON file defining the embedding spaces (replaces the default minilm@1 /
    # aisfx@1 and the model names above); see docs/production-models.md.
    spaces_file: Path | None = None

    # Indexer: Kafka content events into the store. An empty bootstrap turns the
    # consumer off (the IndexerAdmin service then reports NOT_SERVING).
    kafka_bootstrap: str = ""
    # Audit trail (mmsearch/kit/audit.py): a structured log line per audited RPC, and, when
    # set, the same entries to this Kafka topic (durable; on the broker of kafka_bootstrap).
    audit_log: bool = True
    audit_topic: str = Field("", max_length=249)
    content_topic: str = "content.v1"
    dlq_topic: str = "content.v1.dlq"
    # Largest dead-letter record (the DLQ topic's max.message.bytes; Kafka's default is
    # 1 MB): a larger original is left out of the letter (marked), so any event can be
    # dead-lettered and none can stop its partition.
    dlq_max_record_bytes: int = Field(1_000_000, ge=16_384, le=1_073_741_824)
    indexer_group: str = "mmsearch-indexer"
    # Producers allowed to publish content events, each with the tenants it may write to
    # (docs/security.md). The default is the development file: loopback only.
    producer_keys_file: Path = DEV_PRODUCERS_FILE
    # The enrichment stage (OCR text for images, off the path that makes them searchable):
    # its topic (empty: "<content_topic>.enrich") and batch size; its consumer group is
    # "<indexer_group>.enrich". ocr_inline=true reads the text in the live pipeline instead.
    enrich_topic: str = ""
    enrich_batch_size: int = Field(32, ge=1, le=10_000)
    # The stage does not fetch while the live consumer has lag, for at most this long in a row
    # (then one batch runs): OCR is ~95% of an image's cost and must not slow ingest.
    enrich_max_hold_s: float = Field(120.0, ge=0.0, le=3600.0)
    ocr_inline: bool = False
    indexer_batch_size: int = Field(256, ge=1, le=10_000)
    # Per-space retention (mmsearch/indexer/retention.py): a JSON object of space id or alias
    # -> maximum age in seconds, by the items' event time, e.g. {"default": 2592000}. Older
    # items are tombstoned (the indexer's delete path) every retention_interval_s, at most
    # retention_batch per store call. Empty: items are kept forever.
    retention_max_age_s: dict[str, float] = Field(default_factory=dict)
    retention_interval_s: float = Field(3600.0, ge=1.0, le=7 * 24 * 3600.0)
    retention_batch: int = Field(500, ge=1, le=10_000)
    # Consumer group session: a dead indexer's partitions move after this long.
    kafka_session_timeout_ms: int = Field(10_000, ge=1_000, le=300_000)
    # The embedder the indexer calls; empty: this process's own gRPC port.
    indexer_embedder_addr: str = ""
    # Store each passage's reranker token vectors (Reranker.EncodeDocuments) so a rerank
    # encodes only the query; the reranker it calls (empty: this process's own gRPC port).
    indexer_rerank_vectors: bool = True
    indexer_reranker_addr: str = ""
    # Bearer token the indexer and searcher present to the embedder and reranker.
    service_token: SecretStr = SecretStr("mmsearch-dev-token")
    # Ingest work is sized by cost, not item count: one Embed call carries at most
    # this many estimated tokens of text, or this many bytes of images/audio.
    indexer_embed_token_budget: int = Field(2048, ge=64, le=1_000_000)
    indexer_embed_media_budget_bytes: int = Field(8 * 1024 * 1024, ge=1024, le=1024 * 1024 * 1024)
    # An Embed call's deadline is derived from its work: base + per 1k tokens + per MB of media,
    # capped by indexer_embed_timeout_s, the generous bound one item gets before it is
    # dead-lettered (REASON_UNPROCESSABLE). A call past its deadline is split in halves.
    indexer_embed_base_timeout_s: float = Field(2.0, gt=0, le=600)
    indexer_embed_seconds_per_1k_tokens: float = Field(2.0, ge=0, le=600)
    indexer_embed_seconds_per_media_mb: float = Field(2.0, ge=0, le=600)
    indexer_embed_timeout_s: float = Field(60.0, gt=0, le=600)
    # Documents (PDF, mmsearch/indexer/document.py): checked before work (bytes, pages, each
    # embedded image's declared pixels), render size bounded by scale, and the parser process
    # bounded in time and address space; over any of them the event is dead-lettered.
    indexer_doc_max_bytes: int = Field(32 << 20, ge=1024, le=1 << 30)
    indexer_doc_max_pages: int = Field(300, ge=1, le=10_000)
    indexer_doc_max_render_pixels: int = Field(2_000_000, ge=10_000, le=50_000_000)
    indexer_doc_max_image_pixels: int = Field(40_000_000, ge=10_000, le=1_000_000_000)
    indexer_doc_timeout_s: float = Field(120.0, gt=0, le=3600)
    indexer_doc_memory_mb: int = Field(2048, ge=256, le=65_536)
    indexer_doc_max_children: int = Field(4096, ge=1, le=100_000)

    # Searcher: where its embedder and reranker are (empty: this process).
    searcher_embedder_addr: str = ""
    searcher_reranker_addr: str = ""
    # Upper bound for the searcher's calls to the embedder (query embedding, space
    # listing); the caller's remaining deadline is used when shorter.
    search_embed_timeout_s: float = Field(10.0, gt=0, le=300)
    # Candidates each ranking (vector, BM25) fetches before fusion when a request
    # does not set hybrid.candidates_per_ranking; 0: the page's own size.
    search_candidates_per_ranking: int = Field(0, ge=0, le=10_000)
    # Key of the HMAC that signs page tokens; every searcher replica behind one address
    # needs the same key. Empty: a random key per process (fine for --target all).
    search_page_token_key: SecretStr = SecretStr("")
    # Deepest result offset a page token may reach.
    search_max_offset: int = Field(10_000, ge=1, le=1_000_000)
    search_default_top_k: int = Field(10, ge=1, le=1000)
    search_max_top_k: int = Field(100, ge=1, le=10_000)
    # Reciprocal rank fusion constant when a request does not set hybrid.rrf_k.
    search_rrf_k: int = Field(60, ge=1, le=10_000)
    rerank_default_top_n: int = Field(50, ge=1, le=1000)
    rerank_max_top_n: int = Field(200, ge=1, le=10_000)
    # Time the reranker gets before search answers with the fused order (degraded).
    rerank_budget_ms: int = Field(1000, ge=1, le=60_000)
    # Fraction of live vector queries re-run as exact search for the live recall metric.
    search_recall_sample_rate: float = Field(0.01, ge=0, le=1)

    # Vector store: the embedded Qdrant Edge directory, or Weaviate / PostgreSQL when set.
    store_dir: Path = Path(".run/store")
    # Embedded store: start a background HNSW build (in a child process) once this many points
    # are unindexed (and at least 10% of the indexed ones); 0 = never (searches then scan them).
    store_build_unindexed_points: int = Field(20_000, ge=0, le=1_000_000_000)
    weaviate_url: str = ""
    weaviate_api_key: SecretStr = SecretStr("")
    # gRPC port of Weaviate; 0 = 50051 (443 for https).
    weaviate_grpc_port: int = Field(0, ge=0, le=65535)
    weaviate_replication_factor: int = Field(1, ge=1, le=15)
    # Shards per collection; only used when weaviate_multi_tenancy is off
    # (with multi-tenancy, each tenant is one shard).
    weaviate_shards: int = Field(1, ge=1, le=1024)
    weaviate_multi_tenancy: bool = True
    # PostgreSQL + pgvector: a libpq DSN (postgresql://user:password@host:port/db); when set,
    # every process of the deployment shares that database (the distributed mode that runs here).
    postgres_dsn: SecretStr = SecretStr("")
    # Connections each process keeps to PostgreSQL.
    postgres_pool_size: int = Field(8, ge=1, le=200)
    # pgvector HNSW: graph degree and build width (new collections), search width (per query).
    postgres_hnsw_m: int = Field(16, ge=2, le=100)
    postgres_hnsw_ef_construction: int = Field(100, ge=4, le=1000)
    postgres_hnsw_ef_search: int = Field(100, ge=1, le=1000)
    # A collection gets its HNSW index (built concurrently, in the background) once it holds this
    # many points; below, inserts are fast and searches exact. 0: from the first point.
    postgres_index_threshold: int = Field(10_000, ge=0, le=100_000_000)

    # Embedder limits
    embed_max_items: int = Field(256, ge=1, le=100_000)
    embed_max_text_bytes: int = Field(64 * 1024, ge=1, le=16 * 1024 * 1024)
    embed_max_image_bytes: int = Field(20 * 1024 * 1024, ge=1, le=1024 * 1024 * 1024)
    # Decompression-bomb guard: width x height over this is RESOURCE_EXHAUSTED.
    embed_max_image_pixels: int = Field(50_000_000, ge=1, le=1_000_000_000)
    # Longest side of an image, checked from its header before decoding.
    embed_max_image_side: int = Field(16_384, ge=16, le=1_000_000)
    embed_max_audio_bytes: int = Field(50 * 1024 * 1024, ge=1, le=1024 * 1024 * 1024)
    # Longest side of an image sent to OCR (larger images are downscaled).
    ocr_max_side: int = Field(4096, ge=32, le=16384)
    # Pixels one ExtractText request may make OCR work on, after downscaling, checked from
    # the images' headers before any is decoded (ten 7000 x 7000 pages are 168 MP).
    ocr_max_pixels_per_request: int = Field(64_000_000, ge=1_000_000, le=2_000_000_000)
    # glibc's mmap threshold, pinned at start (mmsearch/kit/memory.py): blocks from this
    # size up are returned to the OS when freed (a decoded page is, at once); 0 leaves
    # glibc's dynamic threshold, which keeps freed image buffers in the heap.
    malloc_mmap_threshold_bytes: int = Field(1024 * 1024, ge=0, le=32 * 1024 * 1024)
    # Embedding cache (content-hash keyed LRU); 0 disables it.
    embed_cache_mb: float = Field(64.0, ge=0, le=65536)

    # Reranker: the Triton model that scores (query, candidate) pairs (the only
    # model Rerank accepts), candidates per request (more is RESOURCE_EXHAUSTED;
    # each candidate's text is limited by embed_max_text_bytes), and the upper
    # bound for its Triton calls (the caller's remaining deadline when shorter).
    rerank_model: str = "minilm_maxsim_rerank"
    rerank_max_candidates: int = Field(200, ge=1, le=10_000)
    rerank_timeout_s: float = Field(30.0, gt=0, le=300)
    # How EncodeDocuments packs stored token vectors: int8 (one scale per token, ~half the
    # bytes) or float16 (docs/benchmarks.md "Rerank within budget" measures both).
    rerank_token_encoding: Literal["int8", "float16"] = "int8"

    # HTTP/JSON gateway and web console (mmsearch/gateway): its listen address, the gRPC
    # services it fronts (empty: this process), and its own bound on each upstream call.
    gateway_host: str = "127.0.0.1"
    gateway_port: int = Field(8080, ge=0, le=65535)
    gateway_upstream_addr: str = ""
    gateway_timeout_s: float = Field(30.0, gt=0, le=300)
    # Largest multipart upload (all parts) and largest JSON body; both are counted while
    # the body streams in, so a larger one is refused (413) before it is buffered.
    gateway_max_upload_bytes: int = Field(25 * 1024 * 1024, ge=1024, le=1024 * 1024 * 1024)
    gateway_max_json_bytes: int = Field(16 * 1024 * 1024, ge=1024, le=256 * 1024 * 1024)
    # Origins allowed to call the gateway from a browser (comma separated); empty: no
    # CORS headers at all, so only the console the gateway serves itself can call it.
    gateway_cors_origins: str = ""
    # The producer key the gateway signs uploaded content events with; it must be allowed
    # the callers' tenants in the indexer's MMSEARCH_PRODUCER_KEYS_FILE.
    gateway_producer_id: str = Field("dev", min_length=1, max_length=128)
    gateway_producer_secret: SecretStr = SecretStr(DEV_PRODUCER_SECRET)

    @property
    def enrichment_topic(self) -> str:
        """Where images go for their OCR text; empty when it is read inline."""
        return "" if self.ocr_inline else (self.enrich_topic or f"{self.content_topic}.enrich")

    @property
    def uses_dev_tokens(self) -> bool:
        return self.auth_tokens_file.resolve() == DEV_TOKENS_FILE.resolve()

    @property
    def uses_dev_producers(self) -> bool:
        return self.producer_keys_file.resolve() == DEV_PRODUCERS_FILE.resolve()

    @field_validator("retention_max_age_s", mode="before")
    @classmethod
    def _retention_from_json(cls, value: object) -> object:
        return json.loads(value) if isinstance(value, str) else value

    @field_validator("retention_max_age_s")
    @classmethod
    def _retention_positive(cls, value: dict[str, float]) -> dict[str, float]:
        for name, age in value.items():
            if not name or not 0 < age < float("inf"):
                raise ValueError(f"{name!r}: a space id or alias -> a positive number of seconds")
        return value

    @model_validator(mode="after")
    def _one_store(self) -> Settings:
        if self.weaviate_url and self.postgres_dsn.get_secret_value():
            raise ValueError(
                f"{ENV_PREFIX}WEAVIATE_URL and {ENV_PREFIX}POSTGRES_DSN are both set: choose one store"
            )
        dsn = self.postgres_dsn.get_secret_value()
        if dsn and not dsn.startswith(("postgresql://", "postgres://")) and "=" not in dsn:
            raise ValueError(f"{ENV_PREFIX}POSTGRES_DSN must be a postgresql:// URL or key=value DSN")
        return self

    @model_validator(mode="after")
    def _dev_tokens_only_on_loopback(self) -> Settings:
        loopback = self.grpc_host in LOOPBACK and self.gateway_host in LOOPBACK
        if self.uses_dev_producers and self.kafka_bootstrap and not loopback and not self.allow_dev_tokens:
            raise ValueError(
                f"the public development producer key cannot be used on {self.grpc_host}: set "
                f"{ENV_PREFIX}PRODUCER_KEYS_FILE (or {ENV_PREFIX}ALLOW_DEV_TOKENS=true for a test install)"
            )
        if self.uses_dev_tokens and not loopback and not self.allow_dev_tokens:
            raise ValueError(
                f"the public development tokens cannot be used on {self.grpc_host}/{self.gateway_host}: set "
                f"{ENV_PREFIX}AUTH_TOKENS_FILE (or {ENV_PREFIX}ALLOW_DEV_TOKENS=true for a throwaway install)"
            )
        if self.audit_topic and not self.kafka_bootstrap:
            raise ValueError(
                f"{ENV_PREFIX}AUDIT_TOPIC needs {ENV_PREFIX}KAFKA_BOOTSTRAP (the audit topic's broker)"
            )
        return self


def check_gateway_producer(settings: Settings) -> None:
    """The gateway publishes ingest events with its own producer key: never the public development
    secret on a non-loopback address. Checked when the gateway is served, not for other targets."""
    loopback = settings.grpc_host in LOOPBACK and settings.gateway_host in LOOPBACK
    dev_secret = settings.gateway_producer_secret.get_secret_value() == DEV_PRODUCER_SECRET
    if dev_secret and settings.kafka_bootstrap and not loopback and not settings.allow_dev_tokens:
        raise ConfigError(
            f"the public development producer secret cannot be used on a non-loopback address: set "
            f"{ENV_PREFIX}GATEWAY_PRODUCER_ID and _SECRET (or {ENV_PREFIX}ALLOW_DEV_TOKENS=true)"
        )


def load_settings(environ: Mapping[str, str] | None = None, **overrides: object) -> Settings:
    """Settings from `environ` (default: the process environment) plus explicit overrides.

    Raises ConfigError naming every bad or unknown variable.
    """
    env = dict(os.environ if environ is None else environ)
    known = {ENV_PREFIX + name.upper() for name in Settings.model_fields}
    unknown = sorted(k for k in env if k.startswith(ENV_PREFIX) and k not in known)
    # Variables read by the CLI and the local stack, not by the services.
    unknown = [k for k in unknown if not k.startswith(TOOL_PREFIXES)]
    if unknown:
        raise ConfigError(f"unknown configuration variables: {', '.join(unknown)}")
    values: dict[str, object] = {
        name: env[ENV_PREFIX + name.upper()]
        for name in Settings.model_fields
        if ENV_PREFIX + name.upper() in env
    }
    values.update(overrides)
    try:
        # Values are passed explicitly (not read again from os.environ) so that
        # `environ` is the single source.
        return Settings.model_validate(values)
    except ValidationError as exc:
        problems = "; ".join(
            f"{ENV_PREFIX}{'.'.join(str(p) for p in err['loc']).upper()}: {err['msg']}"
            if err["loc"]
            else err["msg"]
            for err in exc.errors()
        )
        raise ConfigError(f"invalid configuration: {problems}") from exc
