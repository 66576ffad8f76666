"""Reranker.Rerank end to end: the gRPC service (`--target reranker`) against a
real tritonserver serving minilm_maxsim_rerank."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from mmsearch.v1 import common_pb2, reranker_pb2, reranker_pb2_grpc
from tests.conftest import (
    DEV_TOKEN,
    ServiceHandle,
    TritonHandle,
    make_settings,
    start_service,
    start_test_triton,
)

pytestmark = pytest.mark.integration

MODEL = "minilm_maxsim_rerank"
AUTH = (("authorization", f"Bearer {DEV_TOKEN}"),)
QUERY = "how do I bake sourdough bread at home"
CANDIDATES = [
    ("bank", "The central bank raised interest rates by a quarter point on Tuesday."),
    ("ankle", "A fractured ankle causes swelling, bruising and pain when putting weight on the foot."),
    (
        "recipe",
        "Mix the starter, flour and water, let the dough rise overnight, then bake the loaf at 230 C.",
    ),
    ("music", "The orchestra performed Beethoven's ninth symphony to a sold-out hall."),
]


def request(**fields: object) -> reranker_pb2.RerankRequest:
    base: dict[str, object] = {
        "query": common_pb2.Content(text=QUERY),
        "candidates": [reranker_pb2.RerankCandidate(id=i, text=t) for i, t in CANDIDATES],
    }
    base.update(fields)
    return reranker_pb2.RerankRequest(**base)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def rerank_triton(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TritonHandle]:
    handle = start_test_triton(tmp_path_factory.mktemp("rerank_triton"), (MODEL,))
    yield handle
    handle.stop()


@pytest.fixture(scope="module")
async def reranker(rerank_triton: TritonHandle) -> AsyncIterator[ServiceHandle]:
    handle = await start_service(make_settings(triton_url=rerank_triton.grpc_url), target="reranker")
    yield handle
    await handle.running.stop()


@pytest.fixture
async def stub(reranker: ServiceHandle) -> AsyncIterator[reranker_pb2_grpc.RerankerStub]:
    async with grpc.aio.insecure_channel(reranker.addr) as channel:
        yield reranker_pb2_grpc.RerankerStub(channel)


async def test_relevant_candidate_ranks_first(stub: reranker_pb2_grpc.RerankerStub) -> None:
    response = await stub.Rerank(request(), metadata=AUTH, timeout=30)
    assert response.model == MODEL and response.model_version == "1"
    assert response.results[0].id == "recipe"
    by_id = {r.id: r for r in response.results}
    assert by_id["recipe"].score > max(by_id[i].score for i in ("bank", "ankle", "music")) + 0.1
    # Ids and request positions are echoed; best first.
    assert {(r.id, r.index) for r in response.results} == {(c[0], i) for i, c in enumerate(CANDIDATES)}
    scores = [r.score for r in response.results]
    assert scores == sorted(scores, reverse=True)
    assert all(-1.0 <= s <= 1.0 for s in scores)


async def test_top_n_and_chunking(stub: reranker_pb2_grpc.RerankerStub) -> None:
    top = await stub.Rerank(request(top_n=2), metadata=AUTH, timeout=30)
    full = await stub.Rerank(request(), metadata=AUTH, timeout=30)
    assert list(top.results) == list(full.results)[:2]
    # More rows than the model's max_batch_size (64): split and reassembled in order.
    many = [
        reranker_pb2.RerankCandidate(id=f"n{i}", text=f"note number {i} about the weather") for i in range(70)
    ]
    many.insert(37, reranker_pb2.RerankCandidate(id="recipe", text=CANDIDATES[2][1]))
    response = await stub.Rerank(request(candidates=many, top_n=3), metadata=AUTH, timeout=60)
    assert len(response.results) == 3
    assert (response.results[0].id, response.results[0].index) == ("recipe", 37)


@pytest.mark.parametrize(
    ("bad", "code", "field"),
    [
        (request(query=None), grpc.StatusCode.INVALID_ARGUMENT, "query"),
        (
            request(query=common_pb2.Content(image=common_pb2.Media(data=b"\x89PNG"))),
            grpc.StatusCode.INVALID_ARGUMENT,
            "query",
        ),
        (request(candidates=[]), grpc.StatusCode.INVALID_ARGUMENT, "candidates"),
        (
            request(
                candidates=[reranker_pb2.RerankCandidate(id="a", text="x"), reranker_pb2.RerankCandidate()]
            ),
            grpc.StatusCode.INVALID_ARGUMENT,
            "candidates[1].text",
        ),
        (
            request(candidates=[reranker_pb2.RerankCandidate(text="x")] * 201),
            grpc.StatusCode.RESOURCE_EXHAUSTED,
            "201 candidates",
        ),
        (
            request(candidates=[reranker_pb2.RerankCandidate(text="x" * (64 * 1024 + 1))]),
            grpc.StatusCode.RESOURCE_EXHAUSTED,
            "candidates[0].text",
        ),
        (request(model="cross_encoder_xl"), grpc.StatusCode.NOT_FOUND, "model"),
    ],
)
async def test_bad_requests(
    stub: reranker_pb2_grpc.RerankerStub, bad: reranker_pb2.RerankRequest, code: grpc.StatusCode, field: str
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.Rerank(bad, metadata=AUTH, timeout=10)
    assert err.value.code() == code
    assert (err.value.details() or "").startswith(field), err.value.details()


async def test_needs_the_rerank_role(stub: reranker_pb2_grpc.RerankerStub) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.Rerank(request(), timeout=10)
    assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_health_serving(reranker: ServiceHandle) -> None:
    async with grpc.aio.insecure_channel(reranker.addr) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        for name in ("mmsearch.v1.Reranker", ""):
            response = await health.Check(health_pb2.HealthCheckRequest(service=name))
            assert response.status == health_pb2.HealthCheckResponse.SERVING, name


async def test_triton_killed_gives_unavailable_fast(tmp_path: Path) -> None:
    """A Triton of this test's own (the module's one stays up for the other tests)."""
    triton = start_test_triton(tmp_path, (MODEL,))
    service = await start_service(make_settings(triton_url=triton.grpc_url), target="reranker")
    try:
        async with grpc.aio.insecure_channel(service.addr) as channel:
            stub = reranker_pb2_grpc.RerankerStub(channel)
            health = health_pb2_grpc.HealthStub(channel)
            await stub.Rerank(request(), metadata=AUTH, timeout=30)
            triton.kill()
            start = time.monotonic()
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await stub.Rerank(request(), metadata=AUTH, timeout=20)
            elapsed = time.monotonic() - start
            assert err.value.code() == grpc.StatusCode.UNAVAILABLE, err.value.details()
            assert elapsed < 2.0, f"Rerank took {elapsed:.2f}s to fail; it must fail fast"
            # A short caller deadline still gets UNAVAILABLE (the pool keeps a reserve), not a hang.
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await stub.Rerank(request(), metadata=AUTH, timeout=0.5)
            assert err.value.code() == grpc.StatusCode.UNAVAILABLE, err.value.details()
            # Health follows the probes (two failed in a row, re-probed every 0.5 s), not the RPC.
            deadline = time.monotonic() + 10
            while True:
                status = await health.Check(health_pb2.HealthCheckRequest(service="mmsearch.v1.Reranker"))
                if status.status == health_pb2.HealthCheckResponse.NOT_SERVING:
                    break
                assert time.monotonic() < deadline, "Reranker health stayed SERVING with Triton dead"
                await asyncio.sleep(0.1)
    finally:
        await service.running.stop()
        triton.stop()
