"""The Embedder gRPC service: validates requests, resolves the space, serves
repeats from the cache, decodes media off the event loop, sends each modality
to its Triton encoder and returns unit vectors in request order."""

from __future__ import annotations

import asyncio
import functools
import hashlib
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import grpc
import numpy as np
import numpy.typing as npt

from mmsearch.clients.priority import Priority, priority_from_metadata
from mmsearch.clients.triton import TritonPool
from mmsearch.embedder.cache import CachedEmbedding, EmbeddingCache
from mmsearch.embedder.metrics import EmbedderMetrics
from mmsearch.embedder.spaces import Encoder, Space, SpaceRegistry, default_registry, registry_from_file
from mmsearch.kit import token_vectors
from mmsearch.kit.auth import ROLE_EMBED, current_principal
from mmsearch.kit.component import Component, Deps
from mmsearch.kit.config import Settings
from mmsearch.kit.errors import InvalidArgument, ResourceExhausted
from mmsearch.kit.media import (
    CLASSIFIER_SIDE,
    AudioLimits,
    ImageLimits,
    classifier_pixels,
    declared_size,
    decode_audio,
    decode_image,
    ocr_pixel_cost,
    ocr_pixels,
)
from mmsearch.v1 import common_pb2, embedder_pb2, embedder_pb2_grpc

SERVICE_NAME = embedder_pb2.DESCRIPTOR.services_by_name["Embedder"].full_name
MODALITY_NAMES = {
    "text": common_pb2.MODALITY_TEXT,
    "image": common_pb2.MODALITY_IMAGE,
    "audio": common_pb2.MODALITY_AUDIO,
    "vector": common_pb2.MODALITY_VECTOR,
}

Context = grpc.aio.ServicerContext[Any, Any]
# Text model config parameter: the reranker model/version its MAXSIM_TOKENS output serves.
MAXSIM_PARAMETER = "maxsim_tokens_for"


def remaining_s(context: Context) -> float | None:
    remaining = context.time_remaining()
    return None if remaining is None else float(remaining)


def _declared_mime(item: common_pb2.Content, kind: str) -> str:
    return str(getattr(item, kind).mime_type) if kind in ("image", "audio") else ""


def caller_priority(context: Context) -> Priority:
    """The caller's class from `x-mmsearch-priority` (bulk, else interactive)."""
    return priority_from_metadata(context.invocation_metadata())


@dataclass
class Pending:
    """An item that needs the model: its position, field path and content."""

    index: int
    field: str
    content: common_pb2.Content
    sha256: str
    cache_key: tuple[str, ...]


class EmbedderService(embedder_pb2_grpc.EmbedderServicer):
    def __init__(
        self,
        settings: Settings,
        pool: TritonPool,
        registry: SpaceRegistry,
        metrics: EmbedderMetrics,
        cache: EmbeddingCache,
    ) -> None:
        self._settings = settings
        self._pool = pool
        self._registry = registry
        self._metrics = metrics
        self._cache = cache
        self._image_limits = ImageLimits(
            settings.embed_max_image_bytes, settings.embed_max_image_pixels, settings.embed_max_image_side
        )

    async def Embed(self, request: embedder_pb2.EmbedRequest, context: Context) -> embedder_pb2.EmbedResponse:
        space = self._registry.resolve(request.space.name, field_name="space.name")
        items = list(request.items)
        if not items:
            raise InvalidArgument("at least one item is required", field="items")
        if len(items) > self._settings.embed_max_items:
            raise ResourceExhausted(
                f"{len(items)} items in one request; the limit is {self._settings.embed_max_items}"
            )
        deadline = self._pool.deadline(remaining_s(context))
        principal = current_principal()
        tenant = principal.tenant if principal is not None else ""
        priority = caller_priority(context)
        # Token vectors come only from the model: such texts skip the cache (it holds vectors only).
        want_tokens = request.include_token_vectors
        embeddings: list[embedder_pb2.Embedding | None] = [None] * len(items)
        pending: dict[str, list[Pending]] = {}
        for i, item in enumerate(items):
            kind = item.WhichOneof("kind")
            field = f"items[{i}].{kind}" if kind else f"items[{i}]"
            if kind is None:
                raise InvalidArgument("content is empty: set text, image, audio or vector", field=field)
            if kind == "vector":
                embeddings[i] = self._vector_embedding(space, item.vector.values, field)
                self._metrics.items.labels(kind, "vector").inc()
                continue
            encoder = space.encoder_for(MODALITY_NAMES[kind])
            if encoder is None:
                raise InvalidArgument(f"space {space.id} has no encoder for {kind}", field=field)
            data = self._content_bytes(item, kind, field)
            sha = hashlib.sha256(data).hexdigest()
            key = EmbeddingCache.key(tenant, space.id, encoder.modality, sha, _declared_mime(item, kind))
            hit = None
            if not (want_tokens and kind == "text"):
                hit = self._cache.get(key, self._pool.versions.get(encoder.model))
                self._metrics.cache_lookups.labels(kind, "hit" if hit else "miss").inc()
            if hit is not None:
                embeddings[i] = self._embedding(encoder, hit, sha, cached=True)
                self._metrics.items.labels(kind, "cache").inc()
            else:
                pending.setdefault(kind, []).append(Pending(i, field, item, sha, key))

        encode: dict[
            str, Callable[[Space, list[Pending], float, Priority], Awaitable[list[CachedEmbedding]]]
        ] = {
            "text": functools.partial(self._encode_text, want_tokens=want_tokens),
            "image": self._encode_images,
            "audio": self._encode_audio,
        }
        batches = await asyncio.gather(
            *(encode[kind](space, group, deadline, priority) for kind, group in pending.items())
        )
        for (group_kind, group), results in zip(pending.items(), batches, strict=True):
            group_encoder = space.encoder_for(MODALITY_NAMES[group_kind])
            assert group_encoder is not None
            for done, result in zip(group, results, strict=True):
                self._cache.put(done.cache_key, result)
                embeddings[done.index] = self._embedding(group_encoder, result, done.sha256, cached=False)
                self._metrics.items.labels(group_kind, "model").inc()
                if result.truncated:
                    self._metrics.truncated.labels(group_kind).inc()
        self._metrics.cache_entries.set(len(self._cache))
        self._metrics.cache_bytes.set(self._cache.bytes_used)
        return embedder_pb2.EmbedResponse(space=space.id, embeddings=[e for e in embeddings if e is not None])

    def _content_bytes(self, item: common_pb2.Content, kind: str, field: str) -> bytes:
        if kind == "text":
            if not item.text.strip():
                raise InvalidArgument("text is empty", field=field)
            data = item.text.encode("utf-8")
            if len(data) > self._settings.embed_max_text_bytes:
                raise ResourceExhausted(
                    f"{field} is over the {self._settings.embed_max_text_bytes}-byte text limit"
                )
            return data
        media: common_pb2.Media = getattr(item, kind)
        if not media.data:
            raise InvalidArgument(f"{kind} is empty", field=field)
        return media.data

    @staticmethod
    def _embedding(
        encoder: Encoder, result: CachedEmbedding, sha: str, *, cached: bool
    ) -> embedder_pb2.Embedding:
        return embedder_pb2.Embedding(
            vector=common_pb2.Vector(values=result.vector.tolist()),
            modality=encoder.modality,
            model=result.model,
            model_version=result.model_version,
            input_tokens=result.input_tokens,
            truncated=result.truncated,
            content_sha256=sha,
            cached=cached,
            token_vectors=result.token_vectors,
        )

    async def _encode_text(
        self, space: Space, group: list[Pending], deadline: float, priority: Priority, *, want_tokens: bool
    ) -> list[CachedEmbedding]:
        encoder = space.encoder_for(common_pb2.MODALITY_TEXT)
        assert encoder is not None
        # The reranker model/version the text model's token states serve, if it declares one.
        maxsim_for = ""
        if want_tokens:
            info = await self._pool.cached_info(encoder.model, deadline)
            maxsim_for = info.parameters.get(MAXSIM_PARAMETER, "").strip()
        outputs: tuple[str, ...] = (encoder.output, "TOKENS", "TRUNCATED")
        if maxsim_for:
            outputs += ("MAXSIM_TOKENS", "MAXSIM_COUNT")
        texts = np.array([[p.content.text.encode("utf-8")] for p in group], dtype=np.object_)
        result = await self._pool.infer_batch(
            encoder.model, {"TEXT": texts}, outputs, deadline, "text", priority=priority
        )
        vectors = result.outputs[encoder.output].astype(np.float32)
        tokens = result.outputs["TOKENS"].reshape(-1)
        truncated = result.outputs["TRUNCATED"].reshape(-1)
        blobs = [b""] * len(group)
        if maxsim_for:
            blobs = await asyncio.to_thread(
                pack_token_vectors,
                maxsim_for,
                vectors,
                result.outputs["MAXSIM_TOKENS"],
                result.outputs["MAXSIM_COUNT"].reshape(-1),
                self._settings.rerank_token_encoding,
            )
        return [
            CachedEmbedding(
                vectors[j], encoder.model, result.model_version, int(tokens[j]), bool(truncated[j]), blobs[j]
            )
            for j in range(len(group))
        ]

    async def _encode_images(
        self, space: Space, group: list[Pending], deadline: float, priority: Priority
    ) -> list[CachedEmbedding]:
        encoder = space.encoder_for(common_pb2.MODALITY_IMAGE)
        assert encoder is not None
        started = time.perf_counter()
        pixels = await asyncio.gather(*(asyncio.to_thread(self._image_pixels, p) for p in group))
        self._metrics.preprocess_seconds.labels("image").observe(time.perf_counter() - started)
        result = await self._pool.infer_batch(
            encoder.model,
            {"PIXELS": np.stack(pixels)},
            (encoder.output,),
            deadline,
            "image",
            priority=priority,
        )
        vectors = result.outputs[encoder.output].astype(np.float32)
        return [
            CachedEmbedding(vectors[j], encoder.model, result.model_version, 0, False)
            for j in range(len(group))
        ]

    def _image_pixels(self, item: Pending) -> npt.NDArray[np.uint8]:
        media = item.content.image
        image = decode_image(
            media.data, media.mime_type, self._image_limits, item.field, min_side=CLASSIFIER_SIDE
        )
        return classifier_pixels(image)

    async def _encode_audio(
        self, space: Space, group: list[Pending], deadline: float, priority: Priority
    ) -> list[CachedEmbedding]:
        encoder = space.encoder_for(common_pb2.MODALITY_AUDIO)
        assert encoder is not None
        info = await self._pool.cached_info(encoder.model, deadline)
        limits = AudioLimits(
            self._settings.embed_max_audio_bytes,
            max_seconds=float(info.parameters.get("max_seconds", "30")),
            sample_rate=int(info.parameters.get("sample_rate", "44100")),
        )
        started = time.perf_counter()
        decoded = await asyncio.gather(
            *(
                asyncio.to_thread(
                    decode_audio, p.content.audio.data, p.content.audio.mime_type, limits, p.field
                )
                for p in group
            )
        )
        self._metrics.preprocess_seconds.labels("audio").observe(time.perf_counter() - started)
        # Clips differ in length: one request each (Triton batches them as a ragged batch).
        results = await asyncio.gather(
            *(
                self._pool.infer_one(
                    encoder.model,
                    {"WAVEFORM": clip.samples[None, :]},
                    (encoder.output,),
                    deadline,
                    "audio",
                    priority=priority,
                )
                for clip in decoded
            )
        )
        return [
            CachedEmbedding(
                r.outputs[encoder.output][0].astype(np.float32),
                encoder.model,
                r.model_version,
                0,
                clip.truncated,
            )
            for r, clip in zip(results, decoded, strict=True)
        ]

    @staticmethod
    def _vector_embedding(space: Space, values: Any, field: str) -> embedder_pb2.Embedding:
        # float64 so that large finite float32 values do not overflow the norm.
        vector = np.asarray(values, dtype=np.float64)
        if vector.shape[0] != space.dimension:
            raise InvalidArgument(
                f"vector has {vector.shape[0]} dimensions; space {space.id} has {space.dimension}",
                field=field,
            )
        norm = float(np.linalg.norm(vector))
        if not np.all(np.isfinite(vector)) or norm == 0.0:
            raise InvalidArgument("vector must be finite and non-zero", field=field)
        return embedder_pb2.Embedding(
            vector=common_pb2.Vector(values=(vector / norm).astype(np.float32).tolist()),
            modality=common_pb2.MODALITY_VECTOR,
            content_sha256=hashlib.sha256(vector.astype(np.float32).tobytes()).hexdigest(),
        )

    async def ListSpaces(
        self, request: embedder_pb2.ListSpacesRequest, context: Context
    ) -> embedder_pb2.ListSpacesResponse:
        spaces = [
            embedder_pb2.Space(
                id=s.id,
                name=s.name,
                version=s.version,
                dimension=s.dimension,
                metric=s.metric,
                encoders=[
                    embedder_pb2.EncoderRef(
                        modality=e.modality, model=e.model, model_version=self._pool.versions.get(e.model, "")
                    )
                    for e in s.encoders
                ],
                preprocessing_sha256=s.preprocessing_sha256,
                chunking=s.chunking_message(),
                quantization=s.quantization_message(),
                aliases=self._registry.aliases_of(s.id),
            )
            for s in self._registry.spaces.values()
        ]
        return embedder_pb2.ListSpacesResponse(spaces=spaces, default_alias="default")

    async def ListModels(
        self, request: embedder_pb2.ListModelsRequest, context: Context
    ) -> embedder_pb2.ListModelsResponse:
        by_model: dict[str, tuple[common_pb2.Modality.ValueType, list[str]]] = {}
        for space in self._registry.spaces.values():
            for encoder in space.encoders:
                by_model.setdefault(encoder.model, (encoder.modality, []))[1].append(space.id)
        names = sorted(by_model)
        infos = await asyncio.gather(*(self._pool.model_info(name) for name in names))
        for info in infos:
            if info.version:
                self._pool.versions.setdefault(info.name, info.version)
        return embedder_pb2.ListModelsResponse(
            models=[
                embedder_pb2.Model(
                    name=info.name,
                    version=info.version,
                    modality=by_model[info.name][0],
                    ready=info.ready,
                    max_batch_size=info.max_batch_size,
                    spaces=by_model[info.name][1],
                )
                for info in infos
            ]
        )

    async def ExtractText(
        self, request: embedder_pb2.ExtractTextRequest, context: Context
    ) -> embedder_pb2.ExtractTextResponse:
        images = list(request.images)
        if not images:
            raise InvalidArgument("at least one image is required", field="images")
        if len(images) > self._settings.embed_max_items:
            raise ResourceExhausted(f"{len(images)} images; the limit is {self._settings.embed_max_items}")
        self._check_ocr_budget(images)
        deadline = self._pool.deadline(remaining_s(context))
        priority = caller_priority(context)
        model = self._settings.ocr_model
        info = await self._pool.cached_info(model, deadline)
        started = time.perf_counter()
        # One image decoded at a time: a page decodes to ~150 MB before it is downscaled.
        pixels = [
            await asyncio.to_thread(self._ocr_pixels, media, f"images[{i}]") for i, media in enumerate(images)
        ]
        self._metrics.preprocess_seconds.labels("ocr").observe(time.perf_counter() - started)
        outputs = ("TEXT", "LINES", "SCORES", "BOXES")
        results = await asyncio.gather(
            *(
                self._pool.infer_one(
                    model,
                    {"IMAGE": px[None] if info.max_batch_size > 0 else px},
                    outputs,
                    deadline,
                    "ocr",
                    priority=priority,
                )
                for px in pixels
            )
        )
        return embedder_pb2.ExtractTextResponse(results=[ocr_result(r.outputs) for r in results])

    def _check_ocr_budget(self, images: list[common_pb2.Media]) -> None:
        budget = self._settings.ocr_max_pixels_per_request
        sizes = [declared_size(media.data) for media in images]
        total = sum(ocr_pixel_cost(size, self._settings.ocr_max_side) for size in sizes if size is not None)
        if total > budget:
            raise ResourceExhausted(
                f"images: {total} pixels of OCR work after downscaling; the limit per request is {budget}"
            )

    def _ocr_pixels(self, media: common_pb2.Media, field: str) -> npt.NDArray[np.uint8]:
        side = self._settings.ocr_max_side
        image = decode_image(media.data, media.mime_type, self._image_limits, field, max_side=side)
        return ocr_pixels(image, side)


def _text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def pack_token_vectors(
    model: str,
    pooled: npt.NDArray[np.float32],
    tokens: npt.NDArray[Any],
    counts: npt.NDArray[Any],
    encoding: token_vectors.Encoding,
) -> list[bytes]:
    """One stored-vector blob per row, tagged with the reranker model/version they serve."""
    return [
        token_vectors.pack(
            token_vectors.TokenVectors(model, tokens[j, : int(counts[j])].astype(np.float32), pooled[j]),
            encoding,
        )
        for j in range(len(pooled))
    ]


def ocr_result(outputs: dict[str, npt.NDArray[Any]]) -> embedder_pb2.ExtractedText:
    """One image's OCR outputs (batch axis of 1 or none) as an ExtractedText."""
    lines = outputs["LINES"].reshape(-1)
    scores = outputs["SCORES"].reshape(-1)
    boxes = outputs["BOXES"].reshape(-1, 4)
    return embedder_pb2.ExtractedText(
        text=_text(outputs["TEXT"].reshape(-1)[0]),
        blocks=[
            embedder_pb2.TextBlock(text=_text(line), confidence=float(score), box=[int(v) for v in box])
            for line, score, box in zip(lines, scores, boxes, strict=True)
        ],
    )


def build_embedder(deps: Deps) -> Component:
    settings = deps.settings
    metrics = EmbedderMetrics(deps.metrics)
    pool = TritonPool.for_service(deps, "embedder", settings.triton_timeout_s)
    registry = (
        registry_from_file(settings.spaces_file)
        if settings.spaces_file is not None
        else default_registry(settings.text_model, settings.image_model, settings.audio_model)
    )
    cache = EmbeddingCache(int(settings.embed_cache_mb * 1024 * 1024))
    service = EmbedderService(settings, pool, registry, metrics, cache)
    models = sorted({e.model for s in registry.spaces.values() for e in s.encoders} | {settings.ocr_model})

    async def models_ready() -> str | None:
        reasons = await asyncio.gather(*(pool.model_ready(m) for m in models))
        return next((r for r in reasons if r is not None), None)

    def register(server: grpc.aio.Server) -> None:
        embedder_pb2_grpc.add_EmbedderServicer_to_server(service, server)

    methods = embedder_pb2.DESCRIPTOR.services_by_name["Embedder"].methods
    return Component(
        name="embedder",
        service_name=SERVICE_NAME,
        register=register,
        method_roles={f"/{SERVICE_NAME}/{m.name}": ROLE_EMBED for m in methods},
        checks=[models_ready],
        stop=pool.close,
    )
