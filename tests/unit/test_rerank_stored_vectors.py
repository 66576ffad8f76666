"""Stored late-interaction vectors without Triton: the blob codec (int8 / float16) and its
score error, Rerank scoring stored candidates with the model's formula (and the rest on the fly),
EncodeDocuments refusing a pairs-only model, and the indexer's best-effort TokenEncoder.
The real model and stack: tests/integration/test_rerank_model.py, test_rerank_stored.py."""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from mmsearch.clients.errors import DependencyDown
from mmsearch.clients.reranker import NoDocumentVectors
from mmsearch.clients.triton import InferResult, ModelInfo
from mmsearch.indexer.enrich import TokenEncoder
from mmsearch.kit import token_vectors as codec
from mmsearch.kit.errors import FailedPrecondition
from mmsearch.reranker.metrics import RerankerMetrics
from mmsearch.reranker.service import RerankerService
from mmsearch.stores.base import ItemRecord, Passage
from mmsearch.v1 import common_pb2, reranker_pb2
from tests.conftest import make_settings

MODEL = "minilm_maxsim_rerank"
DIM = 16
WEIGHT = 0.2


def unit_rows(rng: np.random.Generator, n: int) -> np.ndarray:
    rows = rng.normal(size=(n, DIM)).astype(np.float32)
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def fake_encode(text: str) -> codec.TokenVectors:
    """Deterministic 'token vectors' of a text: one unit row per word, pooled = their normalized mean."""
    words = text.split()
    rows = []
    for word in words:
        seed = int.from_bytes(hashlib.sha256(word.lower().encode()).digest()[:4], "little")
        rows.append(unit_rows(np.random.default_rng(seed), 1)[0])
    tokens = np.asarray(rows, dtype=np.float32).reshape(-1, DIM)
    pooled = tokens.mean(axis=0) if len(tokens) else np.zeros(DIM, np.float32)
    pooled = pooled / max(float(np.linalg.norm(pooled)), 1e-12)
    return codec.TokenVectors("", tokens, pooled.astype(np.float32))


def reference_score(query: str, document: str) -> float:
    q, d = fake_encode(query), fake_encode(document)
    return WEIGHT * float(q.pooled @ d.pooled) + (1 - WEIGHT) * codec.maxsim(q.tokens, d.tokens)


# ---------------------------------------------------------------- codec


@pytest.mark.parametrize("encoding", ["int8", "float16"])
def test_pack_unpack_round_trip_and_size(encoding: codec.Encoding) -> None:
    rng = np.random.default_rng(1)
    vectors = codec.TokenVectors("m/1", unit_rows(rng, 37), unit_rows(rng, 1)[0])
    blob = codec.pack(vectors, encoding)
    per_token = DIM + 2 if encoding == "int8" else 2 * DIM
    assert len(blob) == 14 + len(b"m/1") + 2 * DIM + 37 * per_token
    back = codec.unpack(blob)
    assert back.model == "m/1" and codec.model_of(blob) == "m/1"
    assert back.tokens.shape == (37, DIM)
    tolerance = 1 / 127 if encoding == "int8" else 1e-3
    assert np.abs(back.tokens - vectors.tokens).max() <= tolerance
    np.testing.assert_allclose(back.pooled, vectors.pooled, atol=1e-3)


@pytest.mark.parametrize("encoding", ["int8", "float16"])
def test_quantized_scores_stay_within_a_few_thousandths(encoding: codec.Encoding) -> None:
    rng = np.random.default_rng(2)
    query = codec.TokenVectors("", unit_rows(rng, 9), unit_rows(rng, 1)[0])
    docs = [
        codec.TokenVectors("m", unit_rows(rng, int(n)), unit_rows(rng, 1)[0])
        for n in rng.integers(1, 200, 50)
    ]
    exact = codec.late_interaction_scores(query, docs, WEIGHT)
    stored = codec.late_interaction_scores(
        query, [codec.unpack(codec.pack(d, encoding)) for d in docs], WEIGHT
    )
    assert np.abs(exact - stored).max() < (5e-3 if encoding == "int8" else 1e-3)


def test_no_tokens_and_bad_blobs() -> None:
    empty = codec.TokenVectors("m", np.zeros((0, DIM), np.float32), np.zeros(DIM, np.float32))
    back = codec.unpack(codec.pack(empty, "int8"))
    assert back.tokens.shape == (0, DIM) and codec.maxsim(back.tokens, back.tokens) == 0.0
    for bad in (b"", b"MMT1", b"XXXX" + bytes(40), codec.pack(empty, "float16")[:-1]):
        with pytest.raises(codec.BadTokens):
            codec.unpack(bad)
    assert codec.model_of(b"junk") is None


# ---------------------------------------------------------------- the service


class FakePool:
    """TritonPool stand-in for the model: pair mode scores with the reference formula, encode
    mode returns the fake token vectors padded as the model does."""

    def __init__(self, document_vectors: bool = True, version: str = "1") -> None:
        self.parameters = {"cosine_weight": str(WEIGHT)}
        if document_vectors:
            self.parameters["document_vectors"] = "true"
        self.version = version
        self.scored_rows = 0
        self.encoded: list[str] = []

    def deadline(self, remaining_s: float | None) -> float:
        return time.monotonic() + 10

    async def cached_info(self, model: str, deadline: float) -> ModelInfo:
        return ModelInfo(model, self.version, 4, True, self.parameters)

    async def infer_batch(
        self, model: str, inputs: dict[str, Any], outputs: Sequence[str], deadline: float, modality: str
    ) -> InferResult:
        rows = [
            (q[0].decode(), d[0].decode()) for q, d in zip(inputs["QUERY"], inputs["DOCUMENT"], strict=True)
        ]
        self.scored_rows += len(rows)
        return InferResult(
            self.version, {"SCORE": np.array([[reference_score(q, d)] for q, d in rows], np.float32)}
        )

    async def infer_one(
        self, model: str, inputs: dict[str, Any], outputs: Sequence[str], deadline: float, modality: str
    ) -> InferResult:
        assert len(inputs) == 1 and len(inputs[next(iter(inputs))]) <= 4  # chunked to max_batch_size
        texts = [row[0].decode() for row in next(iter(inputs.values()))]
        self.encoded += texts
        encoded = [fake_encode(t) for t in texts]
        width = max(len(e.tokens) for e in encoded)
        tokens = np.zeros((len(texts), width, DIM), np.float16)
        for row, e in enumerate(encoded):
            tokens[row, : len(e.tokens)] = e.tokens
        counts = np.array([[len(e.tokens)] for e in encoded], np.int32)
        pooled = np.stack([e.pooled for e in encoded])
        return InferResult(self.version, {"TOKENS": tokens, "TOKEN_COUNT": counts, "POOLED": pooled})


class FakeContext:
    def time_remaining(self) -> float | None:
        return None


DOCS = [
    "bake the sourdough loaf at home",
    "interest rates rose at the central bank",
    "sourdough starter needs flour and water",
    "the orchestra played a symphony",
    "home made bread with a crisp crust",
    "a fractured ankle swells",
]
QUERY = "how to bake sourdough bread at home"


def service(pool: FakePool, **settings: object) -> RerankerService:
    return RerankerService(make_settings(**settings), pool, RerankerMetrics(CollectorRegistry()))  # type: ignore[arg-type]


def encode_docs(svc: RerankerService, texts: list[str]) -> reranker_pb2.EncodeDocumentsResponse:
    request = reranker_pb2.EncodeDocumentsRequest(texts=texts)
    return asyncio.run(svc.EncodeDocuments(request, FakeContext()))  # type: ignore[arg-type]


def rerank(svc: RerankerService, blobs: Sequence[bytes]) -> reranker_pb2.RerankResponse:
    request = reranker_pb2.RerankRequest(
        query=common_pb2.Content(text=QUERY),
        candidates=[
            reranker_pb2.RerankCandidate(id=f"c{i}", text=t, token_vectors=b)
            for i, (t, b) in enumerate(zip(DOCS, blobs, strict=True))
        ],
    )
    return asyncio.run(svc.Rerank(request, FakeContext()))  # type: ignore[arg-type]


@pytest.mark.parametrize("encoding", ["int8", "float16"])
def test_stored_candidates_score_like_the_model_and_only_the_query_is_encoded(encoding: str) -> None:
    pool = FakePool()
    svc = service(pool, rerank_token_encoding=encoding)
    encoded = encode_docs(svc, DOCS)
    assert len(encoded.token_vectors) == len(DOCS) and encoded.model_version == "1"
    assert encoded.total_bytes == sum(len(b) for b in encoded.token_vectors)
    assert all(codec.model_of(b) == f"{MODEL}/1" for b in encoded.token_vectors)

    fly = rerank(svc, [b""] * len(DOCS))
    assert fly.stored_vectors_used == 0 and pool.scored_rows == len(DOCS)
    pool.encoded.clear()
    stored = rerank(svc, encoded.token_vectors)
    assert stored.stored_vectors_used == len(DOCS)
    assert pool.scored_rows == len(DOCS) and pool.encoded == [QUERY]  # nothing scored on the fly
    assert [r.id for r in stored.results] == [r.id for r in fly.results]
    fly_scores = {r.id: r.score for r in fly.results}
    assert max(abs(r.score - fly_scores[r.id]) for r in stored.results) < 5e-3


def test_mixed_and_foreign_blobs_fall_back_to_on_the_fly() -> None:
    pool = FakePool()
    svc = service(pool)
    blobs = list(encode_docs(svc, DOCS).token_vectors)
    other = codec.pack(
        codec.TokenVectors("other_model/1", np.ones((1, DIM), np.float32), np.ones(DIM, np.float32)), "int8"
    )
    mixed = [blobs[0], b"", other, b"MMT1 broken", blobs[4], blobs[5]]
    before = pool.scored_rows
    response = rerank(svc, mixed)
    assert response.stored_vectors_used == 3
    assert pool.scored_rows - before == 3  # the empty, foreign and broken ones
    reference = {f"c{i}": reference_score(QUERY, d) for i, d in enumerate(DOCS)}
    assert max(abs(r.score - reference[r.id]) for r in response.results) < 5e-3
    # A new model version: every stored blob is stale, all scored on the fly.
    pool.version = "2"
    assert rerank(svc, blobs).stored_vectors_used == 0


def test_a_pairs_only_model_has_nothing_to_store() -> None:
    pool = FakePool(document_vectors=False)
    svc = service(pool)
    with pytest.raises(FailedPrecondition, match="pairs only"):
        encode_docs(svc, DOCS)
    blobs = list(encode_docs(service(FakePool()), DOCS).token_vectors)
    assert rerank(svc, blobs).stored_vectors_used == 0  # a cross-encoder ignores them


# ---------------------------------------------------------------- the indexer side


class FakeReranker:
    def __init__(self, error: Exception | None = None) -> None:
        self.error = error
        self.calls: list[list[str]] = []

    async def encode_documents(
        self, texts: list[str], timeout_s: float, model: str = ""
    ) -> reranker_pb2.EncodeDocumentsResponse:
        self.calls.append(list(texts))
        if self.error is not None:
            raise self.error
        blobs = [t.encode() for t in texts]
        return reranker_pb2.EncodeDocumentsResponse(token_vectors=blobs, total_bytes=sum(map(len, blobs)))


def doc_record(item_id: str, texts: list[str]) -> ItemRecord:
    from datetime import UTC, datetime

    return ItemRecord(
        tenant="t",
        item_id=item_id,
        modality="text",
        vector=None,
        version=1,
        event_time=datetime(2026, 1, 1, tzinfo=UTC),
        content_sha256="x",
        passages=tuple(Passage(0, len(t), t, np.ones(DIM, np.float32)) for t in texts),
    )


def test_token_encoder_attaches_blobs_in_chunks() -> None:
    fake = FakeReranker()
    encoder = TokenEncoder(fake)
    texts = [f"passage {i}" for i in range(70)]
    records = [doc_record("a", texts[:40]), doc_record("b", texts[40:])]
    out = asyncio.run(encoder.attach(records))
    assert [len(c) for c in fake.calls] == [32, 32, 6]
    assert [p.tokens for r in out for p in r.passages] == [t.encode() for t in texts]


def test_token_encoder_is_best_effort() -> None:
    down = FakeReranker(DependencyDown("reranker", "UNAVAILABLE"))
    encoder = TokenEncoder(down)
    out = asyncio.run(encoder.attach([doc_record("a", ["x", "y"])]))
    assert [p.tokens for p in out[0].passages] == [b"", b""]
    asyncio.run(encoder.attach([doc_record("b", ["z"])]))
    assert len(down.calls) == 1  # paused after a failure, not retried per batch

    cross = FakeReranker(NoDocumentVectors("reranker", "pairs only"))
    encoder = TokenEncoder(cross)
    asyncio.run(encoder.attach([doc_record("a", ["x"])]))
    assert encoder.disabled
    asyncio.run(encoder.attach([doc_record("b", ["z"])]))
    assert len(cross.calls) == 1
