"""The Reranker gRPC service: validates the request, scores every (query,
candidate text) pair with the Triton reranker model (chunked to the model's
max_batch_size, chunks sent concurrently, within the caller's deadline) and
returns the candidates best first. The API is in protos/mmsearch/v1/reranker.proto.

Stored token vectors (late interaction): `EncodeDocuments` runs the model's encode
mode over documents at index time and returns each one's token vectors packed
(mmsearch/kit/token_vectors.py; int8 or float16, `MMSEARCH_RERANK_TOKEN_ENCODING`).
A `Rerank` candidate that carries such a blob, made by the model now serving, is
scored here with the model's own formula (cosine_weight * cosine + (1 - w) * MaxSim)
against the query's token vectors, encoded once; every other candidate (no blob,
another model or version, a cross-encoder) is scored by the model on the fly,
concurrently. Both paths give the same score up to the blob's quantization."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Sequence
from typing import Any, Protocol

import grpc
import numpy as np
import numpy.typing as npt

from mmsearch.clients.triton import Arrays, InferResult, ModelInfo, TritonPool
from mmsearch.kit import token_vectors as token_codec
from mmsearch.kit.auth import ROLE_RERANK
from mmsearch.kit.component import Component, Deps
from mmsearch.kit.config import Settings
from mmsearch.kit.errors import (
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    ResourceExhausted,
    ServiceError,
)
from mmsearch.reranker.metrics import RerankerMetrics
from mmsearch.v1 import reranker_pb2, reranker_pb2_grpc

SERVICE_NAME = reranker_pb2.DESCRIPTOR.services_by_name["Reranker"].full_name
# The model's tensor contract (model_repository/minilm_maxsim_rerank/README.md).
QUERY_INPUT = "QUERY"
DOCUMENT_INPUT = "DOCUMENT"
SCORE_OUTPUT = "SCORE"
# Encode mode (one of QUERY / DOCUMENT alone): the MaxSim token vectors and the pooled vector.
TOKENS_OUTPUT = "TOKENS"
TOKEN_COUNT_OUTPUT = "TOKEN_COUNT"
POOLED_OUTPUT = "POOLED"
ENCODE_OUTPUTS = (TOKENS_OUTPUT, TOKEN_COUNT_OUTPUT, POOLED_OUTPUT)
# A model config parameter: "true" when the model has the encode mode.
DOCUMENT_VECTORS_PARAMETER = "document_vectors"

Context = grpc.aio.ServicerContext[Any, Any]


class Scorer(Protocol):
    """What the service needs of TritonPool (a fake in the unit tests)."""

    def deadline(self, remaining_s: float | None) -> float: ...

    async def infer_batch(
        self, model: str, inputs: Arrays, outputs: Sequence[str], deadline: float, modality: str
    ) -> InferResult: ...

    async def infer_one(
        self, model: str, inputs: Arrays, outputs: Sequence[str], deadline: float, modality: str
    ) -> InferResult: ...

    async def cached_info(self, model: str, deadline: float) -> ModelInfo: ...


def remaining_s(context: Context) -> float | None:
    remaining = context.time_remaining()
    return None if remaining is None else float(remaining)


class RerankerService(reranker_pb2_grpc.RerankerServicer):
    def __init__(self, settings: Settings, pool: Scorer, metrics: RerankerMetrics) -> None:
        self._settings = settings
        self._pool = pool
        self._metrics = metrics
        self._models = frozenset({settings.rerank_model})

    async def Rerank(
        self, request: reranker_pb2.RerankRequest, context: Context
    ) -> reranker_pb2.RerankResponse:
        model = self._model(request.model)
        query = self._query_text(request)
        texts = self._candidate_texts(request)
        self._metrics.candidates.observe(len(texts))

        deadline = self._pool.deadline(remaining_s(context))
        rows = len(texts)
        stored, info = await self._stored_vectors(model, request, deadline)
        fly = [i for i in range(rows) if i not in stored]
        scores = [0.0] * rows
        version = ""

        encoded_query = query.encode("utf-8")

        async def on_the_fly() -> None:
            nonlocal version
            inputs: Arrays = {
                # Not np.full: it passes the fill through np.bytes_, which drops trailing NUL bytes.
                QUERY_INPUT: np.array([[encoded_query] for _ in fly], dtype=np.object_).reshape(len(fly), 1),
                DOCUMENT_INPUT: np.array([[texts[i].encode("utf-8")] for i in fly], dtype=np.object_).reshape(
                    len(fly), 1
                ),
            }
            result = await self._pool.infer_batch(model, inputs, (SCORE_OUTPUT,), deadline, "text")
            for i, value in zip(
                fly, self._scores(result.outputs[SCORE_OUTPUT], len(fly), model), strict=True
            ):
                scores[i] = value
            version = result.model_version

        async def from_stored() -> None:
            nonlocal version
            assert info is not None
            encoded, version = await self._encode(model, [query], QUERY_INPUT, deadline)
            weight = float(info.parameters.get("cosine_weight", "0.2"))
            indexes = sorted(stored)
            late = token_codec.late_interaction_scores(encoded[0], [stored[i] for i in indexes], weight)
            for i, value in zip(indexes, late, strict=True):
                scores[i] = float(value)

        await asyncio.gather(*([on_the_fly()] if fly else []), *([from_stored()] if stored else []))
        self._metrics.stored_vectors.inc(len(stored))
        self._metrics.on_the_fly.inc(len(fly))

        # Best first; equal scores keep request order. NaN (never expected) sorts last.
        order = sorted(range(rows), key=lambda i: (math.inf if math.isnan(scores[i]) else -scores[i], i))
        if request.top_n:
            order = order[: request.top_n]
        candidates = request.candidates
        return reranker_pb2.RerankResponse(
            results=[
                reranker_pb2.RerankResult(id=candidates[i].id, index=i, score=float(scores[i])) for i in order
            ],
            model=model,
            model_version=version,
            stored_vectors_used=len(stored),
        )

    async def EncodeDocuments(
        self, request: reranker_pb2.EncodeDocumentsRequest, context: Context
    ) -> reranker_pb2.EncodeDocumentsResponse:
        model = self._model(request.model)
        self._check_count(len(request.texts), "texts", "text")
        for i, text in enumerate(request.texts):
            if not text.strip():
                raise InvalidArgument("text is empty", field=f"texts[{i}]")
            self._check_size(text, f"texts[{i}]")
        deadline = self._pool.deadline(remaining_s(context))
        info = await self._pool.cached_info(model, deadline)
        if info.parameters.get(DOCUMENT_VECTORS_PARAMETER, "").lower() != "true":
            raise FailedPrecondition(
                f"reranker model {model} scores (query, document) pairs only; it has no document "
                "vectors to store (candidates are encoded at query time)"
            )
        encoded, version = await self._encode(model, list(request.texts), DOCUMENT_INPUT, deadline)
        encoding = self._settings.rerank_token_encoding
        blobs = [
            token_codec.pack(token_codec.TokenVectors(f"{model}/{version}", e.tokens, e.pooled), encoding)
            for e in encoded
        ]
        return reranker_pb2.EncodeDocumentsResponse(
            token_vectors=blobs, model=model, model_version=version, total_bytes=sum(len(b) for b in blobs)
        )

    def _model(self, requested: str) -> str:
        model = requested or self._settings.rerank_model
        if model not in self._models:
            raise NotFound(
                f"unknown reranker model {model!r}; available: {', '.join(sorted(self._models))}",
                field="model",
            )
        return model

    async def _stored_vectors(
        self, model: str, request: reranker_pb2.RerankRequest, deadline: float
    ) -> tuple[dict[int, token_codec.TokenVectors], ModelInfo | None]:
        """The candidates whose stored vectors this model, as served now, made (decoded)."""
        if not any(c.token_vectors for c in request.candidates):
            return {}, None
        info = await self._pool.cached_info(model, deadline)
        if info.parameters.get(DOCUMENT_VECTORS_PARAMETER, "").lower() != "true":
            return {}, info
        tag = f"{model}/{info.version}"
        stored: dict[int, token_codec.TokenVectors] = {}
        for i, candidate in enumerate(request.candidates):
            if candidate.token_vectors and token_codec.model_of(candidate.token_vectors) == tag:
                try:
                    stored[i] = token_codec.unpack(candidate.token_vectors)
                except token_codec.BadTokens:
                    continue  # scored on the fly
        return stored, info

    async def _encode(
        self, model: str, texts: list[str], input_name: str, deadline: float
    ) -> tuple[list[token_codec.TokenVectors], str]:
        """The model's encode mode over `texts`, in chunks of its max_batch_size sent concurrently
        (each chunk's TOKENS is padded to its own longest text, so chunks are not concatenated)."""
        info = await self._pool.cached_info(model, deadline)
        step = info.max_batch_size if info.max_batch_size > 0 else len(texts)
        chunks = [texts[i : i + step] for i in range(0, len(texts), step)]
        results = await asyncio.gather(
            *(
                self._pool.infer_one(
                    model,
                    {
                        input_name: np.array([[t.encode("utf-8")] for t in chunk], dtype=np.object_).reshape(
                            -1, 1
                        )
                    },
                    ENCODE_OUTPUTS,
                    deadline,
                    "text",
                )
                for chunk in chunks
            )
        )
        out: list[token_codec.TokenVectors] = []
        for chunk, result in zip(chunks, results, strict=True):
            tokens = np.asarray(result.outputs[TOKENS_OUTPUT])
            counts = np.asarray(result.outputs[TOKEN_COUNT_OUTPUT]).reshape(-1)
            pooled = np.asarray(result.outputs[POOLED_OUTPUT], dtype=np.float32)
            if tokens.ndim != 3 or len(tokens) != len(chunk) or len(counts) != len(chunk):
                raise ServiceError(
                    f"model {model} returned {tokens.shape} token vectors for {len(chunk)} texts"
                )
            for row in range(len(chunk)):
                n = int(counts[row])
                out.append(
                    token_codec.TokenVectors(
                        "", np.ascontiguousarray(tokens[row, :n], dtype=np.float32), pooled[row].reshape(-1)
                    )
                )
        return out, results[-1].model_version

    def _query_text(self, request: reranker_pb2.RerankRequest) -> str:
        kind = request.query.WhichOneof("kind") if request.HasField("query") else None
        if kind is None:
            raise InvalidArgument("a query is required", field="query")
        if kind != "text":
            raise InvalidArgument(
                f"the reranker model scores text only; the query is {kind} "
                "(send its text, caption or OCR text instead)",
                field="query",
            )
        text = request.query.text
        if not text.strip():
            raise InvalidArgument("text is empty", field="query.text")
        self._check_size(text, "query.text")
        return text

    def _check_count(self, count: int, field: str, noun: str) -> None:
        if count == 0:
            raise InvalidArgument(f"at least one {noun} is required", field=field)
        limit = self._settings.rerank_max_candidates
        if count > limit:
            raise ResourceExhausted(f"{count} {field} in one request; the limit is {limit}")

    def _candidate_texts(self, request: reranker_pb2.RerankRequest) -> list[str]:
        self._check_count(len(request.candidates), "candidates", "candidate")
        texts = []
        for i, candidate in enumerate(request.candidates):
            field = f"candidates[{i}].text"
            if not candidate.text.strip():
                raise InvalidArgument("text is empty", field=field)
            self._check_size(candidate.text, field)
            texts.append(candidate.text)
        return texts

    def _check_size(self, text: str, field: str) -> None:
        limit = self._settings.embed_max_text_bytes
        if len(text.encode("utf-8")) > limit:
            raise ResourceExhausted(f"{field} is over the {limit}-byte text limit")

    @staticmethod
    def _scores(output: npt.NDArray[np.generic], rows: int, model: str) -> list[float]:
        scores = np.asarray(output, dtype=np.float32).reshape(-1)
        if scores.shape[0] != rows:
            # Surfaces as INTERNAL; the details go to the log.
            raise ServiceError(f"model {model} returned {scores.shape[0]} scores for {rows} candidates")
        return [float(s) for s in scores]


def build_reranker(deps: Deps) -> Component:
    settings = deps.settings
    metrics = RerankerMetrics(deps.metrics)
    pool = TritonPool.for_service(deps, "reranker", settings.rerank_timeout_s)
    service = RerankerService(settings, pool, metrics)
    model = settings.rerank_model

    async def model_ready() -> str | None:
        return await pool.model_ready(model)

    def register(server: grpc.aio.Server) -> None:
        reranker_pb2_grpc.add_RerankerServicer_to_server(service, server)

    methods = reranker_pb2.DESCRIPTOR.services_by_name["Reranker"].methods
    return Component(
        name="reranker",
        service_name=SERVICE_NAME,
        register=register,
        method_roles={f"/{SERVICE_NAME}/{m.name}": ROLE_RERANK for m in methods},
        checks=[model_ready],
        stop=pool.close,
    )
