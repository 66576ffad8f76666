"""The Reranker gRPC service: validates the request, scores every (query,
candidate text) pair with the Triton reranker model (chunked to the model's
max_batch_size, chunks sent concurrently, within the caller's deadline) and
returns the candidates best first. The API is in protos/mmsearch/v1/reranker.proto."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Protocol

import grpc
import numpy as np
import numpy.typing as npt

from mmsearch.clients.triton import Arrays, InferResult, TritonMetrics, TritonPool
from mmsearch.kit.auth import ROLE_RERANK
from mmsearch.kit.component import Component, Deps
from mmsearch.kit.config import Settings
from mmsearch.kit.errors import InvalidArgument, NotFound, ResourceExhausted, ServiceError
from mmsearch.reranker.metrics import RerankerMetrics
from mmsearch.v1 import reranker_pb2, reranker_pb2_grpc

SERVICE_NAME = reranker_pb2.DESCRIPTOR.services_by_name["Reranker"].full_name
# The model's tensor contract (model_repository/minilm_maxsim_rerank/README.md).
QUERY_INPUT = "QUERY"
DOCUMENT_INPUT = "DOCUMENT"
SCORE_OUTPUT = "SCORE"

Context = grpc.aio.ServicerContext[Any, Any]


class Scorer(Protocol):
    """What the service needs of TritonPool (a fake in the unit tests)."""

    def deadline(self, remaining_s: float | None) -> float: ...

    async def infer_batch(
        self, model: str, inputs: Arrays, outputs: Sequence[str], deadline: float, modality: str
    ) -> InferResult: ...


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
        model = request.model or self._settings.rerank_model
        if model not in self._models:
            raise NotFound(
                f"unknown reranker model {model!r}; available: {', '.join(sorted(self._models))}",
                field="model",
            )
        query = self._query_text(request)
        texts = self._candidate_texts(request)
        self._metrics.candidates.observe(len(texts))

        deadline = self._pool.deadline(remaining_s(context))
        rows = len(texts)
        inputs: Arrays = {
            # Not np.full: it passes the fill through np.bytes_, which drops trailing NUL bytes.
            QUERY_INPUT: np.array([[query.encode("utf-8")] for _ in range(rows)], dtype=np.object_).reshape(
                rows, 1
            ),
            DOCUMENT_INPUT: np.array([[t.encode("utf-8")] for t in texts], dtype=np.object_).reshape(rows, 1),
        }
        result = await self._pool.infer_batch(model, inputs, (SCORE_OUTPUT,), deadline, "text")
        scores = self._scores(result.outputs[SCORE_OUTPUT], rows, model)

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
            model_version=result.model_version,
        )

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

    def _candidate_texts(self, request: reranker_pb2.RerankRequest) -> list[str]:
        count = len(request.candidates)
        if count == 0:
            raise InvalidArgument("at least one candidate is required", field="candidates")
        limit = self._settings.rerank_max_candidates
        if count > limit:
            raise ResourceExhausted(f"{count} candidates in one request; the limit is {limit}")
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
    pool = TritonPool(
        settings.triton_url,
        settings.rerank_timeout_s,
        pool_size=settings.triton_pool_size,
        retries=settings.triton_retries,
        max_in_flight=settings.triton_max_in_flight,
        metrics=TritonMetrics(deps.metrics, "reranker"),
        tracer_provider=deps.tracer_provider,
    )
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
