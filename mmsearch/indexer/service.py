"""The indexer: a Kafka consumer of ContentEvents writing into the vector
store (mmsearch/indexer/consumer.py, pipeline.py), and its IndexerAdmin gRPC
service (status, alias swaps, dropping a space's collection).

The store is a module of the server (mmsearch/modules.py): the indexer uses it
and never closes it."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable
from dataclasses import replace
from typing import Any

import grpc

from mmsearch.clients.embedder import EmbedderClient
from mmsearch.clients.reranker import RerankerClient
from mmsearch.clients.spaces import SpaceInfo, SpaceResolver
from mmsearch.indexer.consumer import ConsumerConfig, IndexerConsumer
from mmsearch.indexer.document import DocumentLimits, DocumentPreparer
from mmsearch.indexer.embedding import WorkBudget
from mmsearch.indexer.enrich import OCR_MIN_CONFIDENCE, TokenEncoder
from mmsearch.indexer.metrics import IndexerMetrics
from mmsearch.indexer.ocr import OcrStage
from mmsearch.indexer.pdf import DocLimits
from mmsearch.indexer.pdfworker import WorkerLimits
from mmsearch.indexer.pipeline import Pipeline
from mmsearch.indexer.reembed import ReembedManager
from mmsearch.indexer.retention import Retention
from mmsearch.kit.audit import AuditSpec
from mmsearch.kit.auth import ROLE_INDEX_ADMIN, current_principal
from mmsearch.kit.component import Component, Deps
from mmsearch.kit.config import ConfigError, Settings
from mmsearch.kit.errors import FailedPrecondition, InvalidArgument, NotFound, ResourceExhausted
from mmsearch.kit.signing import ProducerKeys, ProducersFileError
from mmsearch.stores.base import collection_name
from mmsearch.stores.errors import StoreError
from mmsearch.stores.provider import StoreProvider
from mmsearch.v1 import indexer_pb2, indexer_pb2_grpc

SERVICE = indexer_pb2.DESCRIPTOR.services_by_name["IndexerAdmin"]
# Aliases a space can be live under even when no configured space declares them.
LIVE_ALIASES = ("default", "text", "image", "audio")
DEFAULT_LETTERS, MAX_LETTERS = 50, 1000
Context = grpc.aio.ServicerContext[Any, Any]


class IndexerAdminService(indexer_pb2_grpc.IndexerAdminServicer):
    def __init__(self, settings: Settings, stores: StoreProvider) -> None:
        self._settings = settings
        self._stores = stores
        self.consumer: IndexerConsumer | None = None
        # The enrichment stage's consumer (OCR text for images), on its own topic and group.
        self.enrichment: IndexerConsumer | None = None
        self.embedder: EmbedderClient | None = None
        self.reranker: RerankerClient | None = None
        self.reembed: ReembedManager | None = None

    async def GetStatus(
        self, request: indexer_pb2.GetStatusRequest, context: Context
    ) -> indexer_pb2.GetStatusResponse:
        response = indexer_pb2.GetStatusResponse(
            topic=self._settings.content_topic, consumer_group=self._settings.indexer_group
        )
        for consumer in self.consumers():
            state = consumer.state
            for topic, partition in sorted(set(state.highwater) | set(state.committed)):
                committed = state.committed.get((topic, partition), 0)
                highwater = state.highwater.get((topic, partition), committed)
                response.partitions.add(
                    topic=topic,
                    partition=partition,
                    committed_offset=committed,
                    highwater=highwater,
                    lag=max(0, highwater - committed),
                )
            for reason, count in state.dead_letters.items():
                response.dead_letters_by_reason[reason] += count
            if not response.paused:
                response.paused = state.paused
                response.pause_reason = state.pause_reason or (
                    state.last_error if not state.connected else ""
                )
        response.dependencies.extend(await self.dependencies())
        if all(d.ready for d in response.dependencies if d.name in ("embedder", "store")):
            await self._space_counts(response)
        return response

    async def ListDeadLetters(
        self, request: indexer_pb2.ListDeadLettersRequest, context: Context
    ) -> indexer_pb2.ListDeadLettersResponse:
        if request.limit > MAX_LETTERS:
            raise ResourceExhausted(f"limit {request.limit} is over {MAX_LETTERS}")
        limit = request.limit or DEFAULT_LETTERS
        tenant = current_principal().tenant  # only the caller's own letters
        letters = [
            letter
            for consumer in self.consumers()
            for letter in consumer.state.recent_letters.of_tenant(tenant, limit)
        ]
        letters.sort(key=lambda letter: letter.dead_lettered_at.ToNanoseconds(), reverse=True)
        return indexer_pb2.ListDeadLettersResponse(letters=letters[:limit])

    async def close_clients(self) -> None:
        for consumer in self.consumers():
            await consumer.close()
        if self.embedder is not None:
            await self.embedder.close()
        if self.reranker is not None:
            await self.reranker.close()

    def consumers(self) -> list[IndexerConsumer]:
        return [c for c in (self.consumer, self.enrichment) if c is not None]

    async def dependencies(self) -> list[indexer_pb2.DependencyStatus]:
        """Each dependency probed now; a failed probe is a status, never an error."""
        probes: list[tuple[str, Awaitable[str | None]]] = [
            ("broker", broker_not_ready(self._settings.kafka_bootstrap)),
            ("embedder", self.embedder.not_ready() if self.embedder else _fixed("not connected")),
            ("store", store_not_ready(self._stores)),
        ]
        found = await asyncio.gather(*(probe for _, probe in probes))
        return [
            indexer_pb2.DependencyStatus(name=name, ready=detail is None, detail=detail or "")
            for (name, _), detail in zip(probes, found, strict=True)
        ]

    async def _space_counts(self, response: indexer_pb2.GetStatusResponse) -> None:
        store = await self._stores.get()
        seen: set[str] = set()
        if self.embedder is None:
            return
        for name in ("default", "audio"):
            space = await self.embedder.resolve_space(name)
            if space is None or space.id in seen:
                continue
            seen.add(space.id)
            collection = collection_name(space.id)
            if await store.resolve(collection) is None:
                continue
            response.spaces.add(
                space=space.id, collection=collection, item_count=await store.count(collection)
            )

    async def SwapAlias(
        self, request: indexer_pb2.SwapAliasRequest, context: Context
    ) -> indexer_pb2.SwapAliasResponse:
        if not request.alias or "@" not in request.space:
            raise InvalidArgument("alias and space ('name@version') are required", field="space")
        store = await self._stores.get()
        target = collection_name(request.space)
        if await store.resolve(target) != target:
            raise NotFound(f"space {request.space} has no collection")
        previous = await store.resolve(request.alias)
        await store.set_alias(request.alias, target)
        return indexer_pb2.SwapAliasResponse(previous_space=previous or "")

    async def DropSpace(
        self, request: indexer_pb2.DropSpaceRequest, context: Context
    ) -> indexer_pb2.DropSpaceResponse:
        if "@" not in request.space:
            raise InvalidArgument("space must be 'name@version'", field="space")
        store = await self._stores.get()
        target = collection_name(request.space)
        if await store.resolve(target) != target:
            raise NotFound(f"space {request.space} has no collection")
        if self.embedder is None:
            raise FailedPrecondition("the indexer does not consume: it cannot tell which spaces are live")
        # Live: what any alias means now, through the store's aliases or, where the
        # store has none of that name, the embedder's registry (a fresh install).
        resolver = SpaceResolver(self.embedder, store)
        for alias in sorted(set(LIVE_ALIASES) | await self.embedder.aliases()):
            live = await resolver.resolve(alias)
            if live is not None and collection_name(live.id) == target:
                raise FailedPrecondition(f"alias {alias!r} still points at {request.space}; swap it first")
        await store.drop_collection(target)
        return indexer_pb2.DropSpaceResponse()

    async def StartReembed(
        self, request: indexer_pb2.StartReembedRequest, context: Context
    ) -> indexer_pb2.ReembedJob:
        if self.reembed is None:
            raise FailedPrecondition("the indexer does not consume (MMSEARCH_KAFKA_BOOTSTRAP is not set)")
        job = await self.reembed.start(request.source, request.target_space, request.auto_swap)
        return job.proto()

    async def GetReembed(
        self, request: indexer_pb2.GetReembedRequest, context: Context
    ) -> indexer_pb2.ReembedJob:
        job = self.reembed.jobs.get(request.job_id) if self.reembed is not None else None
        if job is None:
            raise NotFound(f"no re-embed job {request.job_id!r} (jobs live in the indexer process)")
        return job.proto()


async def _fixed(detail: str | None) -> str | None:
    return detail


async def broker_not_ready(bootstrap: str, timeout_s: float = 1.0) -> str | None:
    """None when any bootstrap broker accepts a TCP connection. kafka-python keeps
    polling quietly through an outage; this makes the outage visible."""
    if not bootstrap:
        return "MMSEARCH_KAFKA_BOOTSTRAP is not set"
    for address in bootstrap.split(","):
        host, _, port = address.strip().rpartition(":")
        try:
            _, writer = await asyncio.wait_for(asyncio.open_connection(host, int(port)), timeout_s)
        except (OSError, TimeoutError, ValueError):
            continue
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
        return None
    return f"no broker reachable at {bootstrap}"


async def store_not_ready(stores: StoreProvider) -> str | None:
    try:
        await (await stores.get()).resolve("default")
    except StoreError as exc:
        return f"store unavailable: {exc}"
    return None


def work_budget(settings: Settings) -> WorkBudget:
    return WorkBudget(
        tokens_per_call=settings.indexer_embed_token_budget,
        media_bytes_per_call=settings.indexer_embed_media_budget_bytes,
        items_per_call=settings.embed_max_items,
        base_timeout_s=settings.indexer_embed_base_timeout_s,
        seconds_per_1k_tokens=settings.indexer_embed_seconds_per_1k_tokens,
        seconds_per_media_mb=settings.indexer_embed_seconds_per_media_mb,
        max_timeout_s=settings.indexer_embed_timeout_s,
    )


def consumer_config(settings: Settings) -> ConsumerConfig:
    """The live consumer's configuration."""
    return ConsumerConfig(
        bootstrap=settings.kafka_bootstrap,
        topic=settings.content_topic,
        dlq_topic=settings.dlq_topic,
        dlq_max_record_bytes=settings.dlq_max_record_bytes,
        # A document event (the PDF plus at most ~1 MiB of metadata) goes to the enrichment topic whole.
        max_task_bytes=settings.indexer_doc_max_bytes + (1 << 20),
        group_id=settings.indexer_group,
        batch_size=settings.indexer_batch_size,
        session_timeout_ms=settings.kafka_session_timeout_ms,
        heartbeat_interval_ms=max(500, settings.kafka_session_timeout_ms // 6),
        enrich_topic=settings.enrichment_topic,
    )


def enrichment_config(settings: Settings, live: ConsumerConfig) -> ConsumerConfig:
    """The enrichment stage's consumer: its own topic and group, nothing further down."""
    return replace(
        live,
        topic=settings.enrichment_topic,
        group_id=f"{settings.indexer_group}.enrich",
        batch_size=settings.enrich_batch_size,
        enrich_topic="",
    )


def document_limits(settings: Settings) -> DocumentLimits:
    doc = DocLimits(
        max_bytes=settings.indexer_doc_max_bytes,
        max_pages=settings.indexer_doc_max_pages,
        max_render_pixels=settings.indexer_doc_max_render_pixels,
        max_image_pixels=settings.indexer_doc_max_image_pixels,
    )
    worker = WorkerLimits(doc, settings.indexer_doc_timeout_s, settings.indexer_doc_memory_mb << 20)
    return DocumentLimits(worker, settings.indexer_doc_max_children)


def load_producers(settings: Settings) -> ProducerKeys:
    """At build time: a bad keys file stops the start, like any bad setting."""
    try:
        return ProducerKeys.from_file(settings.producer_keys_file)
    except ProducersFileError as exc:
        raise ConfigError(str(exc)) from exc


def audit_specs(service: str) -> dict[str, AuditSpec]:
    """Every IndexerAdmin RPC is audited: the changes as admin, the status reads as read."""
    return {
        f"/{service}/GetStatus": AuditSpec("read"),
        f"/{service}/GetReembed": AuditSpec("read", target=lambda r: f"job={r.job_id}"),
        f"/{service}/StartReembed": AuditSpec(
            "admin",
            target=lambda r: f"source={r.source} target_space={r.target_space} auto_swap={r.auto_swap}",
        ),
        f"/{service}/SwapAlias": AuditSpec("admin", target=lambda r: f"alias={r.alias} space={r.space}"),
        f"/{service}/DropSpace": AuditSpec("admin", target=lambda r: f"space={r.space}"),
    }


def build_indexer(deps: Deps, stores: StoreProvider) -> Component:  # noqa: PLR0915 (one wiring)
    settings = deps.settings
    metrics = IndexerMetrics(deps.metrics)
    service = IndexerAdminService(settings, stores)
    tasks: list[asyncio.Task[None]] = []
    stopping = asyncio.Event()  # set at drain: background passes (retention) end
    producers = load_producers(settings)

    async def start(port: int) -> None:
        if not settings.kafka_bootstrap:
            return
        addr = settings.indexer_embedder_addr or f"127.0.0.1:{port}"
        service.embedder = EmbedderClient.connect(
            addr,
            settings.service_token.get_secret_value(),
            settings.indexer_embed_timeout_s,
            deps.tracer_provider,
        )
        store = await stores.get()
        embedder = service.embedder
        budget = work_budget(settings)
        tokens: TokenEncoder | None = None
        if settings.indexer_rerank_vectors:
            service.reranker = RerankerClient.connect(
                settings.indexer_reranker_addr or f"127.0.0.1:{port}",
                settings.service_token.get_secret_value(),
                deps.tracer_provider,
            )
            tokens = TokenEncoder(service.reranker, metrics)

        documents = DocumentPreparer(embedder, document_limits(settings), OCR_MIN_CONFIDENCE)

        def pipeline_for(redirect: tuple[str, SpaceInfo] | None = None, *, inline: bool = False) -> Pipeline:
            # The live pipeline leaves OCR and documents to the enrichment stage; a re-embed replay
            # (and the enrichment stage's own document pipeline) does them inline.
            inline = inline or redirect is not None or not settings.enrichment_topic
            resolver = SpaceResolver(embedder, store)
            return Pipeline(
                resolver,
                embedder,
                store,
                metrics,
                budget=budget,
                redirect=redirect,
                ocr_inline=inline,
                producers=producers,
                tokens=tokens,
                tracer_provider=deps.tracer_provider,
                documents=documents,
            )

        config = consumer_config(settings)
        service.consumer = IndexerConsumer(config, pipeline_for(), metrics, deps.tracer_provider)
        service.reembed = ReembedManager(
            replace(config, enrich_topic=""), embedder, store, metrics, pipeline_for
        )
        if settings.enrichment_topic:
            stage = OcrStage(embedder, store, metrics, documents=pipeline_for(inline=True))
            service.enrichment = IndexerConsumer(
                enrichment_config(settings, config),
                stage,
                metrics,
                deps.tracer_provider,
                hold=service.consumer.state.busy,
                max_hold_s=settings.enrich_max_hold_s,
            )
        loop = asyncio.get_running_loop()
        tasks.extend(loop.create_task(c.run(), name=f"indexer-{c.config.topic}") for c in service.consumers())
        if settings.retention_max_age_s:
            retention = Retention(
                store, SpaceResolver(embedder, store), settings.retention_max_age_s, metrics,
                batch=settings.retention_batch,
            )  # fmt: skip
            tasks.append(
                loop.create_task(retention.run(settings.retention_interval_s, stopping), name="retention")
            )

    async def drain() -> None:
        """Stop consuming; the batch in flight finishes (and commits) while the
        embedder in this process still serves, or is replayed after a restart."""
        stopping.set()
        if service.reembed is not None:
            await service.reembed.stop()
        for consumer in service.consumers():
            await consumer.stop()
        await asyncio.gather(*tasks)

    async def stop() -> None:
        for task in tasks:
            if not task.done():
                task.cancel()  # drain was cut short: nothing was committed, the batch is replayed
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        await service.close_clients()

    async def ready() -> str | None:
        if not settings.kafka_bootstrap:
            return "MMSEARCH_KAFKA_BOOTSTRAP is not set: the indexer does not consume"
        consumers = service.consumers()
        if not consumers or not all(c.state.connected for c in consumers):
            return f"not connected to Kafka at {settings.kafka_bootstrap}"
        return await broker_not_ready(settings.kafka_bootstrap)

    def register(server: grpc.aio.Server) -> None:
        indexer_pb2_grpc.add_IndexerAdminServicer_to_server(service, server)

    return Component(
        name="indexer",
        service_name=SERVICE.full_name,
        register=register,
        method_roles={f"/{SERVICE.full_name}/{m.name}": ROLE_INDEX_ADMIN for m in SERVICE.methods},
        audit=audit_specs(SERVICE.full_name),
        checks=[ready],
        start=start,
        drain=drain,
        stop=stop,
    )
