"""Every RPC answers the status its proto promises when a dependency fails:
UNAVAILABLE for a down embedder, model server or store, DEADLINE_EXCEEDED when
the service's own deadline on a dependency passes. One mapping does this
(mmsearch/edge.py); these tests hold each RPC to it. No Triton is started: the
dependencies here are a closed port, a hanging fake embedder and a locked store.
"""

from __future__ import annotations

import asyncio
import io
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from PIL import Image

from mmsearch.dev.processes import free_port
from mmsearch.stores.qdrant_edge import QdrantEdgeStore
from mmsearch.v1 import (
    common_pb2,
    embedder_pb2,
    embedder_pb2_grpc,
    indexer_pb2,
    indexer_pb2_grpc,
    reranker_pb2,
    reranker_pb2_grpc,
    searcher_pb2,
    searcher_pb2_grpc,
)
from tests.conftest import DEV_TOKEN, make_settings, start_service

pytestmark = pytest.mark.integration
AUTH = (("authorization", f"Bearer {DEV_TOKEN}"),)
DIMENSION = 4


class HangingEmbedder(embedder_pb2_grpc.EmbedderServicer):
    """Lists one space at once; never answers Embed in time."""

    async def ListSpaces(self, request: Any, context: Any) -> embedder_pb2.ListSpacesResponse:
        space = embedder_pb2.Space(
            id="minilm@1",
            name="minilm",
            version=1,
            dimension=DIMENSION,
            encoders=[embedder_pb2.EncoderRef(modality=common_pb2.MODALITY_TEXT, model="m")],
            aliases=["default"],
        )
        return embedder_pb2.ListSpacesResponse(spaces=[space], default_alias="default")

    async def Embed(self, request: Any, context: Any) -> embedder_pb2.EmbedResponse:
        await asyncio.sleep(30)
        raise AssertionError("unreachable")


@pytest.fixture
async def hanging_embedder() -> AsyncIterator[str]:
    server = grpc.aio.server()
    embedder_pb2_grpc.add_EmbedderServicer_to_server(HangingEmbedder(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    yield f"127.0.0.1:{port}"
    await server.stop(0)


def png() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (64, 64), (200, 30, 30)).save(out, format="PNG")
    return out.getvalue()


def closed_port() -> str:
    return f"127.0.0.1:{free_port()}"


def text_search() -> searcher_pb2.SearchRequest:
    return searcher_pb2.SearchRequest(query=common_pb2.Content(text="a cat"))


async def call(addr: str, stub_class: Any, method: str, request: Any) -> grpc.StatusCode:
    async with grpc.aio.insecure_channel(addr) as channel:
        stub = stub_class(channel)
        try:
            await getattr(stub, method)(request, metadata=AUTH, timeout=20.0)
        except grpc.aio.AioRpcError as err:
            return err.code()
    return grpc.StatusCode.OK


async def test_search_with_the_embedder_down_is_unavailable() -> None:
    # Space resolution is the first call to the embedder: it used to surface as INTERNAL.
    handle = await start_service(make_settings(searcher_embedder_addr=closed_port()), "searcher")
    try:
        code = await call(handle.addr, searcher_pb2_grpc.SearcherStub, "Search", text_search())
        assert code == grpc.StatusCode.UNAVAILABLE
    finally:
        await handle.running.stop()


async def test_search_past_its_embed_timeout_is_deadline_exceeded(hanging_embedder: str) -> None:
    settings = make_settings(searcher_embedder_addr=hanging_embedder, search_embed_timeout_s=0.5)
    handle = await start_service(settings, "searcher")
    try:
        # The caller allows 20 s; the searcher's own bound on the embedder passes first.
        code = await call(handle.addr, searcher_pb2_grpc.SearcherStub, "Search", text_search())
        assert code == grpc.StatusCode.DEADLINE_EXCEEDED
    finally:
        await handle.running.stop()


async def test_search_and_status_with_the_store_down_are_unavailable(
    hanging_embedder: str, tmp_path: Path
) -> None:
    store_dir = tmp_path / "store"
    holder = QdrantEdgeStore(store_dir)  # another owner holds the embedded store's lock
    settings = make_settings(searcher_embedder_addr=hanging_embedder, store_dir=store_dir)
    handle = await start_service(settings, "all")
    try:
        code = await call(handle.addr, searcher_pb2_grpc.SearcherStub, "Search", text_search())
        assert code == grpc.StatusCode.UNAVAILABLE
        # GetStatus answers while a dependency is down, and says which.
        async with grpc.aio.insecure_channel(handle.addr) as channel:
            status = await indexer_pb2_grpc.IndexerAdminStub(channel).GetStatus(
                indexer_pb2.GetStatusRequest(), metadata=AUTH, timeout=20
            )
        store = next(d for d in status.dependencies if d.name == "store")
        assert not store.ready and "in use by another process" in store.detail
        swap = indexer_pb2.SwapAliasRequest(alias="default", space="minilm@2")
        code = await call(handle.addr, indexer_pb2_grpc.IndexerAdminStub, "SwapAlias", swap)
        assert code == grpc.StatusCode.UNAVAILABLE
    finally:
        await handle.running.stop()
        await holder.close()


async def test_embed_and_extract_text_with_the_model_server_down_are_unavailable() -> None:
    handle = await start_service(make_settings(triton_url=closed_port(), triton_timeout_s=2.0), "embedder")
    try:
        embed = embedder_pb2.EmbedRequest(items=[common_pb2.Content(text="a cat")])
        assert (
            await call(handle.addr, embedder_pb2_grpc.EmbedderStub, "Embed", embed)
            == grpc.StatusCode.UNAVAILABLE
        )
        extract = embedder_pb2.ExtractTextRequest(images=[common_pb2.Media(data=png())])
        code = await call(handle.addr, embedder_pb2_grpc.EmbedderStub, "ExtractText", extract)
        assert code == grpc.StatusCode.UNAVAILABLE
    finally:
        await handle.running.stop()


async def test_rerank_with_the_model_server_down_is_unavailable() -> None:
    handle = await start_service(make_settings(triton_url=closed_port(), rerank_timeout_s=2.0), "reranker")
    try:
        request = reranker_pb2.RerankRequest(
            query=common_pb2.Content(text="a cat"),
            candidates=[reranker_pb2.RerankCandidate(id="1", text="a cat sleeps")],
        )
        code = await call(handle.addr, reranker_pb2_grpc.RerankerStub, "Rerank", request)
        assert code == grpc.StatusCode.UNAVAILABLE
    finally:
        await handle.running.stop()
