"""The Searcher: query by text, image, audio or vector in a space; typed
filters; hybrid BM25 + vector fused by RRF; optional rerank of the top N with
a budget (degraded, never failed, when the reranker is down or slow); stable
cursor pagination; only the caller's tenant's items, ever.

The tenant comes from the caller's identity (mmsearch/kit/auth.py), never
from the request. The embedder and the reranker are reached through their
typed clients (mmsearch/clients/); their failures, and the store's, become
statuses in one place (mmsearch/edge.py).
"""

from __future__ import annotations

import asyncio
import random
import secrets
import time
from dataclasses import dataclass, replace
from typing import Any

import grpc
import numpy as np
import structlog
from google.protobuf.timestamp_pb2 import Timestamp
from opentelemetry import trace

from mmsearch.clients.channel import service_channel
from mmsearch.clients.embedder import EmbedderClient
from mmsearch.clients.errors import DependencyError, InputRejected
from mmsearch.clients.reranker import RerankerClient
from mmsearch.clients.spaces import MODALITY_NAMES, SpaceInfo, SpaceResolver
from mmsearch.kit.audit import AuditSpec
from mmsearch.kit.auth import ROLE_SEARCH, current_principal
from mmsearch.kit.component import Component, Deps
from mmsearch.kit.config import Settings
from mmsearch.kit.errors import (
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    ResourceExhausted,
)
from mmsearch.kit.metrics import trace_exemplar
from mmsearch.searcher import retrieve
from mmsearch.searcher.cursor import Cursor, PageTokens, fingerprint
from mmsearch.searcher.metrics import SearcherMetrics
from mmsearch.stores.base import (
    MAX_CANDIDATES_PER_RANKING,
    VISUAL_KINDS,
    AttributeValue,
    ItemRecord,
    PassageMatch,
    PassageSearch,
    Query,
    StoreHit,
    StoreUnavailable,
    VectorStore,
    collection_name,
)
from mmsearch.stores.errors import StoreError
from mmsearch.stores.filters import parse_filter
from mmsearch.stores.provider import StoreProvider
from mmsearch.v1 import common_pb2, reranker_pb2, searcher_pb2, searcher_pb2_grpc

log = structlog.get_logger(__name__)
SERVICE = searcher_pb2.DESCRIPTOR.services_by_name["Searcher"]
Context = grpc.aio.ServicerContext[Any, Any]
# Item modalities a search may be restricted to and a hit may have: the encoders' modalities and
# documents (items whose passages are a PDF's children, mmsearch/indexer/document.py).
ITEM_MODALITY_NAMES = {**MODALITY_NAMES, common_pb2.MODALITY_DOCUMENT: "document"}
ITEM_MODALITY_VALUES = {name: value for value, name in ITEM_MODALITY_NAMES.items()}
# Longest snippet of a passage returned in a hit (the passage itself is up to ~1,500 characters).
SNIPPET_CHARS = 300


def _timestamp(value: Any) -> Timestamp:
    stamp = Timestamp()
    stamp.FromDatetime(value)
    return stamp


def _value(value: AttributeValue) -> common_pb2.Value:
    if isinstance(value, bool):
        return common_pb2.Value(bool_value=value)
    if isinstance(value, int):
        return common_pb2.Value(int_value=value)
    if isinstance(value, float):
        return common_pb2.Value(double_value=value)
    if isinstance(value, str):
        return common_pb2.Value(string_value=value)
    return common_pb2.Value(timestamp_value=_timestamp(value))


def passage_text(hit: StoreHit) -> str:
    """What the reranker reads of a hit: its best passage, else the item's text or snippet."""
    if hit.passage is not None:
        return hit.passage.text
    return hit.record.text or hit.record.snippet


def metadata_of(record: ItemRecord) -> common_pb2.ItemMetadata:
    metadata = common_pb2.ItemMetadata(
        tags=list(record.tags), source=record.source, source_uri=record.source_uri, title=record.title
    )
    if record.created_at is not None:
        metadata.created_at.CopyFrom(_timestamp(record.created_at))
    for name, value in record.attributes.items():
        metadata.attributes[name].CopyFrom(_value(value))
    return metadata


@dataclass(frozen=True)
class Plan:
    space: SpaceInfo
    top_k: int
    offset: int
    fingerprint: str
    filter: common_pb2.Filter | None
    modalities: tuple[str, ...]
    hybrid_text: str | None
    rrf_k: int
    candidates_per_ranking: int
    rerank_n: int


class SearcherService(searcher_pb2_grpc.SearcherServicer):
    def __init__(
        self,
        settings: Settings,
        stores: StoreProvider,
        metrics: SearcherMetrics,
        tracer_provider: trace.TracerProvider | None = None,
    ) -> None:
        self._settings = settings
        self._stores = stores
        self._metrics = metrics
        # One span per search stage, under the RPC's server span (the stages' timings, as a trace).
        self._tracer = trace.get_tracer(__name__, tracer_provider=tracer_provider)
        self.embedder: EmbedderClient | None = None
        self.reranker: RerankerClient | None = None
        self._background: set[asyncio.Task[None]] = set()
        key = settings.search_page_token_key.get_secret_value().encode() or secrets.token_bytes(32)
        # The deepest page: a cursor's offset past it is refused, not searched.
        self._tokens = PageTokens(key, max_offset=settings.search_max_offset)

    def connect(self, embedder: grpc.aio.Channel, reranker: grpc.aio.Channel, token: str) -> None:
        self.embedder = EmbedderClient(
            embedder, token, self._settings.search_embed_timeout_s, owns_channel=False
        )
        self.reranker = RerankerClient(reranker, token)

    async def Search(
        self, request: searcher_pb2.SearchRequest, context: Context
    ) -> searcher_pb2.SearchResponse:
        started = time.perf_counter()
        principal = current_principal()
        if principal is None:  # the policy interceptor always sets it; defensive
            raise InvalidArgument("no caller identity")
        plan = await self._plan(request)
        response = searcher_pb2.SearchResponse(space=plan.space.id)
        timings = response.timings
        t0 = time.perf_counter()
        with self._tracer.start_as_current_span("search.embed"):
            vector, response.query_truncated = await self._query_vector(
                request.query, plan.space.id, plan.space.dimension, context
            )
        timings.embed_ms = (time.perf_counter() - t0) * 1000

        query = Query(
            tenant=principal.tenant,
            limit=max(plan.offset + plan.top_k + 1, plan.rerank_n if plan.offset < plan.rerank_n else 0),
            vector=vector,
            text=plan.hybrid_text,
            filter=plan.filter,
            modalities=plan.modalities,
            rrf_k=plan.rrf_k,
            candidates_per_ranking=plan.candidates_per_ranking,
        )
        store = await self._stores.get()
        collection = collection_name(plan.space.id)
        t0 = time.perf_counter()
        # Hybrid: ANN, BM25 and RRF fusion are one store query (prefetch + fusion), so one span.
        stage = "search.hybrid" if plan.hybrid_text else "search.ann"
        with self._tracer.start_as_current_span(stage) as span:
            hits = await store.search(collection, query) if await store.resolve(collection) else []
            span.set_attribute("search.candidates", len(hits))
        elapsed = time.perf_counter() - t0
        if plan.hybrid_text:
            timings.fusion_ms = elapsed * 1000  # vector + BM25 + RRF run together in the store
        else:
            timings.ann_ms = elapsed * 1000
        stage_metric = self._metrics.stage_seconds.labels("hybrid" if plan.hybrid_text else "ann")
        stage_metric.observe(elapsed, exemplar=trace_exemplar())
        self._metrics.candidates.observe(len(hits))

        rerank_scores: dict[int, float] = {}
        if plan.rerank_n and plan.offset < plan.rerank_n and hits:
            t0 = time.perf_counter()
            with self._tracer.start_as_current_span("search.rerank"):
                hits, rerank_scores = await self._rerank(
                    request,
                    hits[: plan.rerank_n],
                    hits[plan.rerank_n :],
                    response,
                    context,
                    store=store,
                    collection=collection,
                )
            timings.rerank_ms = (time.perf_counter() - t0) * 1000
            rerank_s = timings.rerank_ms / 1000
            self._metrics.stage_seconds.labels("rerank").observe(rerank_s, exemplar=trace_exemplar())

        end = plan.offset + plan.top_k
        for position, hit in enumerate(hits[plan.offset : end], start=plan.offset):
            hybrid = plan.hybrid_text is not None
            response.hits.append(self._hit(hit, plan.space.id, hybrid, rerank_scores.get(position)))
            if request.include_vectors and hit.record.vector is not None:
                response.hits[-1].vector.values.extend(hit.record.vector.tolist())
        if len(hits) > end:
            response.next_page_token = self._tokens.encode(Cursor(end, plan.space.id, plan.fingerprint))
        timings.total_ms = (time.perf_counter() - started) * 1000
        total_s = timings.total_ms / 1000
        self._metrics.stage_seconds.labels("total").observe(total_s, exemplar=trace_exemplar())
        sampled = random.random() < self._settings.search_recall_sample_rate
        if vector is not None and not plan.hybrid_text and not plan.offset and sampled:
            self._sample_recall(store, collection, query, [h.record.item_id for h in hits[: plan.top_k]])
        return response

    async def _plan(self, request: searcher_pb2.SearchRequest) -> Plan:
        """Validate the request (before any work) and settle every option."""
        settings = self._settings
        top_k = request.top_k or settings.search_default_top_k
        for name, value, limit in (
            ("top_k", top_k, settings.search_max_top_k),
            (
                "hybrid.candidates_per_ranking",
                request.hybrid.candidates_per_ranking,
                MAX_CANDIDATES_PER_RANKING,
            ),
        ):
            if value > limit:
                raise ResourceExhausted(f"{name} {value} is over the limit {limit}")
        if request.query.WhichOneof("kind") is None:
            raise InvalidArgument("query is required: text, image, audio or vector", field="query")
        assert self.embedder is not None
        space_name = request.space.name or "default"
        space = await SpaceResolver(self.embedder, await self._stores.get()).resolve(space_name)
        if space is None:
            raise NotFound(f"unknown space or alias {space_name!r}")
        print_ = fingerprint(request)
        offset = self._tokens.offset(request.page_token, space.id, print_)
        filter_tree = request.filter if request.filter.WhichOneof("expr") is not None else None
        if filter_tree is not None:
            parse_filter(filter_tree, {})  # INVALID_ARGUMENT naming the path
        modalities = []
        for i, modality in enumerate(request.modalities):
            if modality not in ITEM_MODALITY_NAMES:
                raise InvalidArgument(
                    "modalities may be TEXT, IMAGE, AUDIO or DOCUMENT", field=f"modalities[{i}]"
                )
            modalities.append(ITEM_MODALITY_NAMES[modality])
        hybrid_text: str | None = None
        if request.hybrid.enabled:
            hybrid_text = request.hybrid.text or (
                request.query.text if request.query.HasField("text") else ""
            )
            if not hybrid_text.strip():
                raise InvalidArgument("hybrid needs hybrid.text (or a text query)", field="hybrid.text")
        rerank_n = 0
        if request.rerank.enabled:
            rerank_n = min(request.rerank.top_n or settings.rerank_default_top_n, settings.rerank_max_top_n)
        return Plan(
            space=space,
            top_k=top_k,
            offset=offset,
            fingerprint=print_,
            filter=filter_tree,
            modalities=tuple(modalities),
            hybrid_text=hybrid_text,
            rrf_k=request.hybrid.rrf_k or settings.search_rrf_k,
            candidates_per_ranking=request.hybrid.candidates_per_ranking
            or settings.search_candidates_per_ranking,
            rerank_n=rerank_n,
        )

    async def _query_vector(
        self, content: common_pb2.Content, space_id: str, dimension: int, context: Context
    ) -> tuple[np.ndarray | None, bool]:
        if content.HasField("vector"):
            values = np.asarray(content.vector.values, dtype=np.float64)
            if values.shape[0] != dimension:
                raise FailedPrecondition(
                    f"query vector has {values.shape[0]} dimensions; space {space_id} has {dimension}"
                )
            norm = float(np.linalg.norm(values))
            if not np.all(np.isfinite(values)) or norm == 0:
                raise InvalidArgument("query vector must be finite and non-zero", field="query.vector")
            return (values / norm).astype(np.float32), False
        assert self.embedder is not None
        remaining = context.time_remaining()
        try:
            response = await self.embedder.embed(space_id, [content], timeout_s=remaining)
        except InputRejected as rejected:
            detail = rejected.detail.replace("items[0]", "query")
            raise (ResourceExhausted if rejected.kind == "over_limit" else InvalidArgument)(
                detail
            ) from rejected
        embedding = response.embeddings[0]
        return np.asarray(embedding.vector.values, dtype=np.float32), embedding.truncated

    async def _rerank(
        self,
        request: searcher_pb2.SearchRequest,
        window: list[StoreHit],
        rest: list[StoreHit],
        response: searcher_pb2.SearchResponse,
        context: Context,
        *,
        store: VectorStore | None = None,
        collection: str = "",
    ) -> tuple[list[StoreHit], dict[int, float]]:
        """Rerank the window within the budget; on any failure keep the fused
        order and say so (degraded, never failed). The candidates' stored token
        vectors (written by the indexer) go with them, so the reranker encodes only
        the query; a candidate without them is encoded on the fly."""
        assert self.reranker is not None
        if not request.query.HasField("text"):
            response.degraded = True
            response.degraded_reasons.append(
                "rerank: the reranker scores text queries only; fused order kept"
            )
            return window + rest, {}
        # The reranker reads text: only text items are rescored (an image's title or OCR
        # text says little about what it shows); other items keep their places.
        scorable = [
            (i, h) for i, h in enumerate(window) if h.record.modality == "text" and passage_text(h).strip()
        ]
        if not scorable:
            return window + rest, {}
        started = time.monotonic()
        budget_s = (request.rerank.budget_ms or self._settings.rerank_budget_ms) / 1000
        remaining = context.time_remaining()
        if remaining is not None:
            budget_s = min(budget_s, max(0.0, remaining - 0.05))
        stored = await self._stored_tokens(store, collection, scorable)
        budget_s = max(0.0, budget_s - (time.monotonic() - started))
        rerank_request = reranker_pb2.RerankRequest(
            query=request.query,
            candidates=[
                reranker_pb2.RerankCandidate(id=str(i), text=passage_text(h)[:4000], token_vectors=blob)
                for (i, h), blob in zip(scorable, stored, strict=True)
            ],
            model=request.rerank.model,
        )
        try:
            reranked = await self.reranker.rerank(rerank_request, timeout_s=budget_s)
        except DependencyError as err:
            response.degraded = True
            response.degraded_reasons.append(f"rerank: {err.detail}; fused order kept")
            self._metrics.degraded.labels("rerank").inc()
            return window + rest, {}
        order = [int(r.id) for r in reranked.results]
        scores = {int(r.id): r.score for r in reranked.results}
        # The rescored items fill the positions they held, in their new order.
        slots = sorted(scores)
        new_window = list(window)
        for slot, i in zip(slots, order, strict=True):
            new_window[slot] = window[i]
        return new_window + rest, {slot: scores[i] for slot, i in zip(slots, order, strict=True)}

    async def _stored_tokens(
        self, store: VectorStore | None, collection: str, scorable: list[tuple[int, StoreHit]]
    ) -> list[bytes]:
        """The candidates' stored token vectors (b"" each where none, or when the store fails:
        the reranker then encodes them on the fly)."""
        refs = [(h.record.item_id, h.passage) for _, h in scorable if h.passage is not None]
        if store is None or not refs:
            return [b""] * len(scorable)
        principal = current_principal()
        assert principal is not None
        try:
            blobs = iter(await store.passage_tokens(collection, principal.tenant, refs))
        except StoreError as exc:
            log.warning("rerank_tokens_unavailable", error=str(exc))
            return [b""] * len(scorable)
        return [next(blobs) if h.passage is not None else b"" for _, h in scorable]

    @staticmethod
    def _hit(hit: StoreHit, space: str, hybrid: bool, rerank: float | None) -> searcher_pb2.Hit:
        record = hit.record
        scores = searcher_pb2.StageScores()
        if hit.vector_score is not None:
            scores.vector = hit.vector_score
        if hit.vector_rank is not None:
            scores.vector_rank = hit.vector_rank
        if hit.bm25_score is not None:
            scores.bm25 = hit.bm25_score
        if hit.bm25_rank is not None:
            scores.bm25_rank = hit.bm25_rank
        if hybrid:
            scores.fused = hit.score
        if rerank is not None:
            scores.rerank = rerank
        preview = common_pb2.Preview(snippet=record.snippet, thumbnail_jpeg=record.thumbnail_jpeg)
        out = searcher_pb2.Hit(
            item_id=record.item_id,
            modality=ITEM_MODALITY_VALUES.get(record.modality, common_pb2.MODALITY_UNSPECIFIED),
            space=space,
            score=rerank if rerank is not None else hit.score,
            scores=scores,
            metadata=metadata_of(record),
            preview=preview,
            item_version=record.version,
        )
        if hit.passage is not None:
            # The snippet is the matching passage's start, with its offsets in the item's text.
            passage = hit.passage
            snippet = passage.text[:SNIPPET_CHARS]
            out.preview.snippet = snippet
            out.preview.snippet_start = passage.start
            out.preview.snippet_end = passage.start + len(snippet)
            out.passage.CopyFrom(
                searcher_pb2.PassageRef(
                    index=passage.index,
                    start=passage.start,
                    end=passage.end,
                    page=passage.page,
                    kind=retrieve.KIND_VALUES.get(passage.kind, searcher_pb2.EVIDENCE_KIND_TEXT),
                )
            )
        return out

    async def Retrieve(
        self, request: searcher_pb2.RetrieveRequest, context: Context
    ) -> searcher_pb2.RetrieveResponse:
        started = time.perf_counter()
        principal = current_principal()
        if principal is None:
            raise InvalidArgument("no caller identity")
        which = request.query.WhichOneof("kind")
        if which not in ("text", "image"):
            raise InvalidArgument("the question is text or an image", field="query")
        kinds = self._kinds(request)
        budget = self._budget(request)
        candidates = min(request.candidates or retrieve.DEFAULT_CANDIDATES, retrieve.MAX_CANDIDATES)
        filter_tree = request.filter if request.filter.WhichOneof("expr") is not None else None
        if filter_tree is not None:
            parse_filter(filter_tree, {})  # INVALID_ARGUMENT naming the path
        hybrid_text = request.query.text if request.hybrid and which == "text" else None
        assert self.embedder is not None
        space_name = request.space.name or "default"
        space = await SpaceResolver(self.embedder, await self._stores.get()).resolve(space_name)
        if space is None:
            raise NotFound(f"unknown space or alias {space_name!r}")
        response = searcher_pb2.RetrieveResponse(space=space.id)
        t0 = time.perf_counter()
        vector, _ = await self._query_vector(request.query, space.id, space.dimension, context)
        response.timings.embed_ms = (time.perf_counter() - t0) * 1000
        store = await self._stores.get()
        if not isinstance(store, PassageSearch):
            raise FailedPrecondition(
                "this store cannot rank a document's children (Retrieve needs Qdrant Edge)"
            )
        collection = collection_name(space.id)
        if not await store.resolve(collection):
            response.timings.total_ms = (time.perf_counter() - started) * 1000
            return response
        rrf_k = request.rrf_k or self._settings.search_rrf_k
        base = Query(tenant=principal.tenant, limit=candidates, filter=filter_tree, rrf_k=rrf_k)
        t0 = time.perf_counter()
        rankings = await self._rankings(
            store, collection, base, vector=vector, hybrid_text=hybrid_text, kinds=kinds
        )
        response.timings.ann_ms = (time.perf_counter() - t0) * 1000
        t0 = time.perf_counter()
        fused = retrieve.fuse(rankings, rrf_k)
        response.timings.fusion_ms = (time.perf_counter() - t0) * 1000
        if request.rerank.enabled and fused:
            t0 = time.perf_counter()
            await self._rerank_evidence(request, fused, response, context)
            response.timings.rerank_ms = (time.perf_counter() - t0) * 1000
        await self._load_images(store, collection, principal.tenant, fused[: 4 * budget.top_k + 16])
        selection = retrieve.select(fused, budget)
        response.omitted_for_budget, response.duplicates_removed = selection.omitted, selection.duplicates
        response.used_tokens, response.used_bytes = selection.tokens, selection.bytes
        self._group(response, selection.kept, budget)
        response.timings.total_ms = (time.perf_counter() - started) * 1000
        self._metrics.stage_seconds.labels("retrieve").observe(response.timings.total_ms / 1000)
        return response

    @staticmethod
    async def _rankings(
        store: PassageSearch,
        collection: str,
        base: Query,
        *,
        vector: np.ndarray | None,
        hybrid_text: str | None,
        kinds: list[str],
    ) -> dict[str, dict[str, list[PassageMatch]]]:
        """{"text": {text vector, text BM25}, "visual": {visual vector, visual BM25}}, the groups
        `retrieve.fuse` fuses (BM25 only with hybrid_text)."""
        visual = [k for k in kinds if k != "text"]
        rankings: dict[str, dict[str, list[PassageMatch]]] = {}
        for group, group_kinds in (("text", ["text"] if "text" in kinds else []), ("visual", visual)):
            if not group_kinds:
                continue
            lists = rankings[group] = {
                group: await store.search_passages(collection, replace(base, vector=vector), group_kinds)
            }
            if hybrid_text:
                lists[f"{group}_bm25"] = await store.search_passages(
                    collection, replace(base, text=hybrid_text), group_kinds
                )
        return rankings

    @staticmethod
    def _kinds(request: searcher_pb2.RetrieveRequest) -> list[str]:
        kinds: list[str] = []
        for i, kind in enumerate(request.kinds):
            if kind not in retrieve.KIND_NAMES:
                raise InvalidArgument("unknown evidence kind", field=f"kinds[{i}]")
            kinds.append(retrieve.KIND_NAMES[kind])
        return kinds or list(retrieve.KIND_NAMES.values())

    def _budget(self, request: searcher_pb2.RetrieveRequest) -> retrieve.Budget:
        if request.top_k > retrieve.MAX_TOP_K:
            raise ResourceExhausted(f"top_k {request.top_k} is over the limit {retrieve.MAX_TOP_K}")
        if request.max_bytes > retrieve.MAX_BYTES:
            raise ResourceExhausted(f"max_bytes {request.max_bytes} is over the limit {retrieve.MAX_BYTES}")
        if request.candidates > retrieve.MAX_CANDIDATES:
            raise ResourceExhausted(
                f"candidates {request.candidates} is over the limit {retrieve.MAX_CANDIDATES}"
            )
        return retrieve.Budget(
            top_k=request.top_k or retrieve.DEFAULT_TOP_K,
            max_tokens=request.max_tokens or retrieve.DEFAULT_MAX_TOKENS,
            max_bytes=request.max_bytes or retrieve.DEFAULT_MAX_BYTES,
            image_tokens=request.image_tokens or retrieve.DEFAULT_IMAGE_TOKENS,
            include_images=request.include_images,
        )

    async def _load_images(
        self, store: PassageSearch, collection: str, tenant: str, candidates: list[retrieve.Candidate]
    ) -> None:
        """The visual candidates' images (for dedupe by content, budgets and the response)."""
        visual = [c for c in candidates if c.match.passage.kind in VISUAL_KINDS]
        if not visual:
            return
        refs = [(c.match.record.item_id, c.match.passage) for c in visual]
        try:
            images = await store.passage_images(collection, tenant, refs)
        except StoreError as exc:
            log.warning("evidence_images_unavailable", error=str(exc))
            return
        for candidate, image in zip(visual, images, strict=True):
            candidate.image = image

    async def _rerank_evidence(
        self,
        request: searcher_pb2.RetrieveRequest,
        fused: list[retrieve.Candidate],
        response: searcher_pb2.RetrieveResponse,
        context: Context,
    ) -> None:
        """Rescore the text evidence among the top N; it takes the places text evidence held
        (visual evidence keeps its fused places). Degraded, never failed."""
        assert self.reranker is not None
        if not request.query.HasField("text"):
            response.degraded = True
            response.degraded_reasons.append(
                "rerank: the reranker scores text queries only; fused order kept"
            )
            return
        top_n = min(
            request.rerank.top_n or self._settings.rerank_default_top_n, self._settings.rerank_max_top_n
        )
        slots = [
            i
            for i, c in enumerate(fused[:top_n])
            if c.match.passage.kind == "text" and c.match.passage.text.strip()
        ]
        if not slots:
            return
        budget_s = (request.rerank.budget_ms or self._settings.rerank_budget_ms) / 1000
        remaining = context.time_remaining()
        if remaining is not None:
            budget_s = min(budget_s, max(0.0, remaining - 0.05))
        rerank_request = reranker_pb2.RerankRequest(
            query=request.query,
            candidates=[
                reranker_pb2.RerankCandidate(id=str(i), text=fused[i].match.passage.text[:4000])
                for i in slots
            ],
            model=request.rerank.model,
        )
        try:
            reranked = await self.reranker.rerank(rerank_request, timeout_s=budget_s)
        except DependencyError as err:
            response.degraded = True
            response.degraded_reasons.append(f"rerank: {err.detail}; fused order kept")
            self._metrics.degraded.labels("rerank").inc()
            return
        originals = {i: fused[i] for i in slots}
        for slot, result in zip(slots, reranked.results, strict=True):
            candidate = originals[int(result.id)]
            candidate.rerank = result.score
            fused[slot] = candidate

    @staticmethod
    def _group(
        response: searcher_pb2.RetrieveResponse, kept: list[retrieve.Candidate], budget: retrieve.Budget
    ) -> None:
        documents: dict[str, searcher_pb2.DocumentEvidence] = {}
        pages: dict[tuple[str, int], searcher_pb2.PageEvidence] = {}
        for rank, candidate in enumerate(kept, start=1):
            record, passage = candidate.match.record, candidate.match.passage
            document = documents.get(record.item_id)
            if document is None:
                document = response.documents.add(
                    item_id=record.item_id,
                    modality=ITEM_MODALITY_VALUES.get(record.modality, common_pb2.MODALITY_UNSPECIFIED),
                    metadata=metadata_of(record),
                    score=candidate.score,
                )
                documents[record.item_id] = document
            page = pages.get((record.item_id, passage.page))
            if page is None:
                page = document.pages.add(page=passage.page)
                pages[(record.item_id, passage.page)] = page
            tokens, _ = retrieve.cost(candidate, budget)
            evidence = page.evidence.add(
                kind=retrieve.KIND_VALUES.get(passage.kind, searcher_pb2.EVIDENCE_KIND_TEXT),
                text=passage.text,
                score=candidate.score,
                rank=rank,
                tokens=tokens,
            )
            citation = evidence.citation
            citation.item_id = record.item_id
            citation.title = record.title
            citation.source_uri = record.source_uri
            citation.page = passage.page
            citation.start, citation.end, citation.index = passage.start, passage.end, passage.index
            citation.item_version = record.version
            if passage.bbox is not None:
                x0, y0, x1, y1 = passage.bbox
                width, height = passage.page_size or (0.0, 0.0)
                citation.bbox.CopyFrom(
                    searcher_pb2.BoundingBox(x0=x0, y0=y0, x1=x1, y1=y1, page_width=width, page_height=height)
                )
            for name, rank_in in candidate.ranks.items():
                raw = candidate.scores[name]
                if name.endswith("bm25"):
                    evidence.scores.bm25, evidence.scores.bm25_rank = raw, rank_in
                else:  # "text" or "visual": a passage is in one of the two vector rankings
                    evidence.scores.vector, evidence.scores.vector_rank = raw, rank_in
            evidence.scores.fused = candidate.fused
            if candidate.rerank is not None:
                evidence.scores.rerank = candidate.rerank
            if passage.kind in VISUAL_KINDS:
                evidence.image_ref = retrieve.image_ref(candidate.match)
                if budget.include_images:
                    evidence.image_jpeg = candidate.image

    def _sample_recall(self, store: Any, collection: str, query: Query, approximate: list[str]) -> None:
        """Re-run a sampled live query as exact search; export recall@k."""

        async def measure() -> None:
            try:
                exact = await store.search(collection, Query(**{**query.__dict__, "exact": True}))
            except Exception as exc:  # a measurement must never hurt serving
                log.warning("recall_sample_failed", error=str(exc))
                return
            truth = {h.record.item_id for h in exact[: len(approximate)]}
            if truth:
                self._metrics.live_recall.observe(len(truth & set(approximate)) / len(truth))

        task = asyncio.get_running_loop().create_task(measure())
        self._background.add(task)
        task.add_done_callback(self._background.discard)


def build_searcher(deps: Deps, stores: StoreProvider) -> Component:
    settings = deps.settings
    service = SearcherService(settings, stores, SearcherMetrics(deps.metrics), deps.tracer_provider)
    channels: list[grpc.aio.Channel] = []

    async def start(port: int) -> None:
        options = [("grpc.max_send_message_length", 64 << 20)]
        embedder_addr = settings.searcher_embedder_addr or f"127.0.0.1:{port}"
        reranker_addr = settings.searcher_reranker_addr or f"127.0.0.1:{port}"
        channels.append(service_channel(embedder_addr, options, deps.tracer_provider))
        channels.append(
            channels[0]
            if reranker_addr == embedder_addr
            else service_channel(reranker_addr, (), deps.tracer_provider)
        )
        service.connect(channels[0], channels[1], settings.service_token.get_secret_value())

    async def stop() -> None:
        for channel in set(channels):
            await channel.close()

    async def ready() -> str | None:
        try:
            # A round trip, not only the first open: a networked store (PostgreSQL, Weaviate)
            # can go away after the searcher started.
            await (await stores.get()).resolve("default")
        except StoreUnavailable as exc:
            return f"store unavailable: {exc}"
        # A searcher whose embedder is down can only answer vector queries: not ready.
        return await service.embedder.not_ready() if service.embedder is not None else None

    def register(server: grpc.aio.Server) -> None:
        searcher_pb2_grpc.add_SearcherServicer_to_server(service, server)

    return Component(
        name="searcher",
        service_name=SERVICE.full_name,
        register=register,
        method_roles={f"/{SERVICE.full_name}/{m.name}": ROLE_SEARCH for m in SERVICE.methods},
        # Data access: which space, what kind of query, how many hits (never the query itself).
        audit={
            f"/{SERVICE.full_name}/Search": AuditSpec(
                "read",
                target=lambda r: (
                    f"space={r.space.name or 'default'} query={r.query.WhichOneof('kind') or 'none'}"
                ),
                count=lambda r: len(r.hits),
            )
        },
        checks=[ready],
        start=start,
        stop=stop,
    )
