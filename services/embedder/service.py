"""The Embedder gRPC service: validates requests, resolves the space, sends
each modality to its Triton encoder and returns unit vectors in request order."""

from __future__ import annotations

import hashlib
from typing import Any

import grpc
import numpy as np
from opentelemetry.trace import TracerProvider

from mmsearch.v1 import common_pb2, embedder_pb2, embedder_pb2_grpc
from services.embedder.spaces import Space, SpaceRegistry, default_registry
from services.embedder.triton import TritonEncoders
from services.kit.auth import ROLE_EMBED
from services.kit.component import Component
from services.kit.config import Settings
from services.kit.errors import InvalidArgument, ResourceExhausted, Unimplemented

SERVICE_NAME = embedder_pb2.DESCRIPTOR.services_by_name["Embedder"].full_name
MODALITY_NAMES = {
    "text": common_pb2.MODALITY_TEXT,
    "image": common_pb2.MODALITY_IMAGE,
    "audio": common_pb2.MODALITY_AUDIO,
    "vector": common_pb2.MODALITY_VECTOR,
}

Context = grpc.aio.ServicerContext[Any, Any]


def remaining_s(context: Context) -> float | None:
    remaining = context.time_remaining()
    return None if remaining is None else float(remaining)


class EmbedderService(embedder_pb2_grpc.EmbedderServicer):
    def __init__(self, settings: Settings, encoders: TritonEncoders, registry: SpaceRegistry) -> None:
        self._settings = settings
        self._encoders = encoders
        self._registry = registry

    async def Embed(self, request: embedder_pb2.EmbedRequest, context: Context) -> embedder_pb2.EmbedResponse:
        space = self._registry.resolve(request.space.name, field_name="space.name")
        items = list(request.items)
        if not items:
            raise InvalidArgument("at least one item is required", field="items")
        if len(items) > self._settings.embed_max_items:
            raise ResourceExhausted(
                f"{len(items)} items in one request; the limit is {self._settings.embed_max_items}"
            )
        embeddings: list[embedder_pb2.Embedding | None] = [None] * len(items)
        text_positions: list[int] = []
        texts: list[str] = []
        for i, item in enumerate(items):
            kind = item.WhichOneof("kind")
            if kind is None:
                raise InvalidArgument(
                    "content is empty: set text, image, audio or vector", field=f"items[{i}]"
                )
            modality = MODALITY_NAMES[kind]
            if kind == "vector":
                embeddings[i] = self._vector_embedding(space, item.vector.values, f"items[{i}].vector")
                continue
            encoder = space.encoder_for(modality)
            if encoder is None:
                raise InvalidArgument(
                    f"space {space.id} has no encoder for {kind}", field=f"items[{i}].{kind}"
                )
            if kind != "text":
                raise Unimplemented(f"{kind} embedding is not built yet")
            text = item.text
            if not text.strip():
                raise InvalidArgument("text is empty", field=f"items[{i}].text")
            if len(text.encode("utf-8")) > self._settings.embed_max_text_bytes:
                raise ResourceExhausted(
                    f"items[{i}].text is over the {self._settings.embed_max_text_bytes}-byte limit"
                )
            text_positions.append(i)
            texts.append(text)

        if texts:
            model = space.encoder_for(common_pb2.MODALITY_TEXT)
            assert model is not None
            encoded = await self._encoders.encode_text(model.model, texts, remaining_s(context))
            for j, i in enumerate(text_positions):
                embeddings[i] = embedder_pb2.Embedding(
                    vector=common_pb2.Vector(values=encoded.vectors[j].tolist()),
                    modality=common_pb2.MODALITY_TEXT,
                    model=model.model,
                    model_version=encoded.model_version,
                    input_tokens=int(encoded.tokens[j]),
                    truncated=bool(encoded.truncated[j]),
                    content_sha256=hashlib.sha256(texts[j].encode("utf-8")).hexdigest(),
                )
        return embedder_pb2.EmbedResponse(space=space.id, embeddings=[e for e in embeddings if e is not None])

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
                    embedder_pb2.EncoderRef(modality=e.modality, model=e.model, model_version="1")
                    for e in s.encoders
                ],
                preprocessing_sha256=s.preprocessing_sha256,
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
        models = []
        for name, (modality, spaces) in sorted(by_model.items()):
            info = await self._encoders.model_info(name)
            models.append(
                embedder_pb2.Model(
                    name=name,
                    version=info.version,
                    modality=modality,
                    ready=info.ready,
                    max_batch_size=info.max_batch_size,
                    spaces=spaces,
                )
            )
        return embedder_pb2.ListModelsResponse(models=models)

    async def ExtractText(
        self, request: embedder_pb2.ExtractTextRequest, context: Context
    ) -> embedder_pb2.ExtractTextResponse:
        raise Unimplemented("ExtractText (OCR) is not built yet")


def build_embedder(settings: Settings, tracer_provider: TracerProvider | None = None) -> Component:
    encoders = TritonEncoders(settings.triton_url, settings.triton_timeout_s, tracer_provider)
    registry = default_registry(settings.text_model)
    service = EmbedderService(settings, encoders, registry)
    models = sorted({e.model for s in registry.spaces.values() for e in s.encoders})

    async def models_ready() -> str | None:
        for model in models:
            reason = await encoders.model_ready(model)
            if reason is not None:
                return reason
        return None

    def register(server: grpc.aio.Server) -> None:
        embedder_pb2_grpc.add_EmbedderServicer_to_server(service, server)

    methods = embedder_pb2.DESCRIPTOR.services_by_name["Embedder"].methods
    return Component(
        name="embedder",
        service_name=SERVICE_NAME,
        register=register,
        method_roles={f"/{SERVICE_NAME}/{m.name}": ROLE_EMBED for m in methods},
        checks=[models_ready],
        stop=encoders.close,
    )
