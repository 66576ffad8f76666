"""Property tests on Rerank's input handling: whatever the request, the handler
answers with the candidates best first or a typed ServiceError, never a crash.
Triton is replaced by a fake scorer here; the real one is in
tests/integration/test_reranker.py."""

import asyncio
import time
from collections.abc import Sequence
from typing import Any

import grpc
import numpy as np
import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry

from mmsearch.clients.triton import InferResult
from mmsearch.kit.errors import ServiceError
from mmsearch.reranker.metrics import RerankerMetrics
from mmsearch.reranker.service import RerankerService
from mmsearch.v1 import common_pb2, reranker_pb2
from tests.conftest import make_settings

MODEL = "minilm_maxsim_rerank"


def fake_score(query: bytes, document: bytes) -> float:
    """Deterministic, with many ties (to check the order of equal scores)."""
    return float(len(set(query.split()) & set(document.split())) - (len(document) % 3) / 2)


class FakePool:
    """Stands in for TritonPool: scores every (QUERY, DOCUMENT) row."""

    def __init__(self) -> None:
        self.rows: list[tuple[bytes, bytes]] = []

    def deadline(self, remaining_s: float | None) -> float:
        return time.monotonic() + 10

    async def infer_batch(
        self, model: str, inputs: dict[str, Any], outputs: Sequence[str], deadline: float, modality: str
    ) -> InferResult:
        queries, documents = inputs["QUERY"], inputs["DOCUMENT"]
        assert queries.shape == documents.shape == (len(queries), 1)
        self.rows = [(q[0], d[0]) for q, d in zip(queries, documents, strict=True)]
        scores = np.array([[fake_score(q, d)] for q, d in self.rows], dtype=np.float32)
        return InferResult("7", {"SCORE": scores})


class FakeContext:
    def time_remaining(self) -> float | None:
        return None


def make_service(**overrides: object) -> tuple[RerankerService, FakePool]:
    pool = FakePool()
    values: dict[str, object] = {"embed_max_text_bytes": 200, "rerank_max_candidates": 10}
    values.update(overrides)
    return RerankerService(make_settings(**values), pool, RerankerMetrics(CollectorRegistry())), pool


def rerank(service: RerankerService, request: reranker_pb2.RerankRequest) -> reranker_pb2.RerankResponse:
    context: Any = FakeContext()
    return asyncio.run(service.Rerank(request, context))


words = st.sampled_from(["cat", "dog", "bread", "bake", "the", "ünï", "x" * 60])
# Mostly valid text (so most requests are answered), sometimes anything at all.
texts = st.one_of(
    st.lists(words, min_size=1, max_size=6).map(" ".join),
    st.lists(words, min_size=1, max_size=6).map(" ".join),
    st.text(max_size=250),
)
bad_queries: list[common_pb2.Content | None] = [
    common_pb2.Content(image=common_pb2.Media(data=b"\x89PNG")),
    common_pb2.Content(audio=common_pb2.Media(data=b"RIFF")),
    common_pb2.Content(vector=common_pb2.Vector(values=[1.0, 0.0])),
    common_pb2.Content(),
    None,
]
# (one_of flattens nested one_ofs, so the bad queries are one sampled_from branch.)
queries = st.one_of(st.builds(lambda t: common_pb2.Content(text=t), texts), st.sampled_from(bad_queries))
candidates = st.lists(
    st.builds(lambda i, t: reranker_pb2.RerankCandidate(id=i, text=t), st.text(max_size=8), texts),
    max_size=14,
)


@settings(max_examples=400, deadline=None)
@given(
    query=queries,
    cands=candidates,
    top_n=st.integers(0, 20),
    model=st.sampled_from(["", MODEL, "", MODEL, "", "other_model", "MINILM_MAXSIM_RERANK"]),
    max_candidates=st.integers(1, 20),
)
def test_rerank_answers_or_raises_a_typed_error(
    query: common_pb2.Content | None,
    cands: list[reranker_pb2.RerankCandidate],
    top_n: int,
    model: str,
    max_candidates: int,
) -> None:
    service, pool = make_service(rerank_max_candidates=max_candidates)
    request = reranker_pb2.RerankRequest(query=query, candidates=cands, top_n=top_n, model=model)
    try:
        response = rerank(service, request)
    except ServiceError as exc:
        assert type(exc) is not ServiceError, "untyped error would surface as INTERNAL"
        event(type(exc).__name__)
        return
    event("answered")
    assert response.model == MODEL and response.model_version == "7"
    assert query is not None
    assert len(pool.rows) == len(cands)
    assert all(q == query.text.encode() for q, _ in pool.rows)
    assert len(response.results) == (min(top_n, len(cands)) if top_n else len(cands))
    indices = [r.index for r in response.results]
    assert len(set(indices)) == len(indices)
    for result in response.results:
        assert result.id == cands[result.index].id
        expected = np.float32(fake_score(query.text.encode(), cands[result.index].text.encode()))
        assert result.score == expected
    # Best first; equal scores in request order.
    keys = [(-r.score, r.index) for r in response.results]
    assert keys == sorted(keys)
    if top_n:
        everything = rerank(service, reranker_pb2.RerankRequest(query=query, candidates=cands))
        assert list(everything.results)[:top_n] == list(response.results)


def request_with(**fields: Any) -> reranker_pb2.RerankRequest:
    base: dict[str, Any] = {
        "query": common_pb2.Content(text="bake bread"),
        "candidates": [reranker_pb2.RerankCandidate(id="a", text="bread")],
    }
    base.update(fields)
    return reranker_pb2.RerankRequest(**base)


@pytest.mark.parametrize(
    ("request_", "code", "message"),
    [
        (request_with(query=None), grpc.StatusCode.INVALID_ARGUMENT, "query: a query is required"),
        (request_with(query=common_pb2.Content()), grpc.StatusCode.INVALID_ARGUMENT, "query: a query"),
        (
            request_with(query=common_pb2.Content(image=common_pb2.Media(data=b"x"))),
            grpc.StatusCode.INVALID_ARGUMENT,
            "query: the reranker model scores text only; the query is image",
        ),
        (
            request_with(query=common_pb2.Content(text=" \n")),
            grpc.StatusCode.INVALID_ARGUMENT,
            "query.text: text is empty",
        ),
        (request_with(candidates=[]), grpc.StatusCode.INVALID_ARGUMENT, "candidates: at least one"),
        (
            request_with(
                candidates=[
                    reranker_pb2.RerankCandidate(id="a", text="ok"),
                    reranker_pb2.RerankCandidate(id="b", text=""),
                ]
            ),
            grpc.StatusCode.INVALID_ARGUMENT,
            "candidates[1].text: text is empty",
        ),
        (
            request_with(candidates=[reranker_pb2.RerankCandidate(text="t")] * 11),
            grpc.StatusCode.RESOURCE_EXHAUSTED,
            "11 candidates in one request; the limit is 10",
        ),
        (
            request_with(candidates=[reranker_pb2.RerankCandidate(text="é" * 101)]),
            grpc.StatusCode.RESOURCE_EXHAUSTED,
            "candidates[0].text is over the 200-byte text limit",
        ),
        (request_with(model="nope"), grpc.StatusCode.NOT_FOUND, "model: unknown reranker model 'nope'"),
    ],
)
def test_bad_requests_get_their_status(
    request_: reranker_pb2.RerankRequest, code: grpc.StatusCode, message: str
) -> None:
    service, _ = make_service()
    with pytest.raises(ServiceError) as err:
        rerank(service, request_)
    assert err.value.code == code
    assert err.value.message.startswith(message), err.value.message


def test_ties_keep_request_order_and_top_n() -> None:
    service, _ = make_service()
    cands = [
        reranker_pb2.RerankCandidate(id=f"c{i}", text=t) for i, t in enumerate(["aaa", "bake bread", "bbb"])
    ]
    response = rerank(service, request_with(candidates=cands))
    assert [(r.id, r.index) for r in response.results] == [("c1", 1), ("c0", 0), ("c2", 2)]
    top = rerank(service, request_with(candidates=cands, top_n=2))
    assert [r.index for r in top.results] == [1, 0]
