"""The policy interceptor on a real in-process gRPC server (no Triton: its URL
points at a closed port), so auth, status codes, health and metrics are checked
without model dependencies."""

from collections.abc import AsyncIterator

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from mmsearch.dev.processes import free_port
from mmsearch.v1 import common_pb2, embedder_pb2, embedder_pb2_grpc, searcher_pb2, searcher_pb2_grpc
from tests.conftest import DEV_TOKEN, READONLY_TOKEN, ServiceHandle, make_settings, start_service


def bearer(token: str) -> tuple[tuple[str, str]]:
    return (("authorization", f"Bearer {token}"),)


@pytest.fixture
async def no_triton_service() -> AsyncIterator[ServiceHandle]:
    handle = await start_service(make_settings(triton_url=f"127.0.0.1:{free_port()}", triton_timeout_s=2))
    yield handle
    await handle.running.stop()


async def test_status_codes_and_auth(no_triton_service: ServiceHandle) -> None:
    async with grpc.aio.insecure_channel(no_triton_service.addr) as channel:
        search = searcher_pb2_grpc.SearcherStub(channel)
        embed = embedder_pb2_grpc.EmbedderStub(channel)
        request = searcher_pb2.SearchRequest(query=common_pb2.Content(text="x"))

        with pytest.raises(grpc.aio.AioRpcError) as err:
            await search.Search(request)
        assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED

        with pytest.raises(grpc.aio.AioRpcError) as err:
            await search.Search(request, metadata=bearer("not-a-token"))
        assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED

        with pytest.raises(grpc.aio.AioRpcError) as err:
            await search.Search(request, metadata=bearer(DEV_TOKEN))
        # Authenticated: the text query needs the embedder, whose Triton is down.
        assert err.value.code() == grpc.StatusCode.UNAVAILABLE
        assert "embedder" in (err.value.details() or "")

        embed_request = embedder_pb2.EmbedRequest(items=[common_pb2.Content(text="hello")])
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await embed.Embed(embed_request, metadata=bearer(READONLY_TOKEN))
        assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED

        with pytest.raises(grpc.aio.AioRpcError) as err:
            await embed.Embed(embed_request, metadata=bearer(DEV_TOKEN), timeout=10)
        assert err.value.code() == grpc.StatusCode.UNAVAILABLE

        # Validation comes before the model call and names the field.
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await embed.Embed(
                embedder_pb2.EmbedRequest(
                    items=[common_pb2.Content(text="ok"), common_pb2.Content(text=" ")]
                ),
                metadata=bearer(DEV_TOKEN),
            )
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert (err.value.details() or "").startswith("items[1].text")

        spaces = await embed.ListSpaces(embedder_pb2.ListSpacesRequest(), metadata=bearer(DEV_TOKEN))
        assert [s.id for s in spaces.spaces] == ["minilm@1", "aisfx@1"]
        assert spaces.spaces[0].aliases == ["default", "image", "text"]

    def handled(code: str, method: str) -> float:
        value = no_triton_service.registry.get_sample_value(
            "grpc_server_handled_total",
            {
                "grpc_type": "unary",
                "grpc_service": method.split("/", maxsplit=1)[0],
                "grpc_method": method.split("/")[1],
                "grpc_code": code,
            },
        )
        return value or 0.0

    assert handled("UNAUTHENTICATED", "mmsearch.v1.Searcher/Search") == 2
    assert handled("UNAVAILABLE", "mmsearch.v1.Searcher/Search") == 1
    assert handled("PERMISSION_DENIED", "mmsearch.v1.Embedder/Embed") == 1
    # One direct Embed, one made by the searcher for its text query.
    assert handled("UNAVAILABLE", "mmsearch.v1.Embedder/Embed") == 2
    assert handled("INVALID_ARGUMENT", "mmsearch.v1.Embedder/Embed") == 1
    count = no_triton_service.registry.get_sample_value(
        "grpc_server_handling_seconds_count",
        {"grpc_type": "unary", "grpc_service": "mmsearch.v1.Embedder", "grpc_method": "Embed"},
    )
    assert count == 4


async def test_health_is_honest_without_dependencies(no_triton_service: ServiceHandle) -> None:
    async with grpc.aio.insecure_channel(no_triton_service.addr) as channel:
        health = health_pb2_grpc.HealthStub(channel)

        async def status(service: str) -> int:
            response = await health.Check(health_pb2.HealthCheckRequest(service=service))
            return int(response.status)

        not_serving = health_pb2.HealthCheckResponse.NOT_SERVING
        # Triton is unreachable and no Kafka is configured. The searcher only needs
        # its store to be ready (vector queries work without the embedder).
        assert await status("mmsearch.v1.Embedder") == not_serving
        assert await status("mmsearch.v1.IndexerAdmin") == not_serving
        assert await status("mmsearch.v1.Reranker") == not_serving
        assert await status("") == not_serving
    snapshot = no_triton_service.running.readiness.snapshot()
    assert "unreachable" in snapshot["mmsearch.v1.Embedder"][1]
    assert "unreachable" in snapshot["mmsearch.v1.Reranker"][1]
    assert "KAFKA_BOOTSTRAP" in snapshot["mmsearch.v1.IndexerAdmin"][1]
    assert snapshot["mmsearch.v1.Searcher"][1] == "ok"


async def test_oversized_requests_are_resource_exhausted() -> None:
    handle = await start_service(make_settings(triton_url=f"127.0.0.1:{free_port()}", max_message_bytes=4096))
    try:
        async with grpc.aio.insecure_channel(handle.addr) as channel:
            stub = embedder_pb2_grpc.EmbedderStub(channel)
            big = embedder_pb2.EmbedRequest(items=[common_pb2.Content(text="x" * 10_000)])
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await stub.Embed(big, metadata=bearer(DEV_TOKEN))
            assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    finally:
        await handle.running.stop()


@pytest.mark.parametrize("name", ["x" * 70_000, "é" * 20_000, "😀" * 9_000])
async def test_a_status_message_quoting_huge_input_stays_deliverable(
    no_triton_service: ServiceHandle, name: str
) -> None:
    """Before, an unknown space or job id of 70,000 characters was quoted whole in the
    status message: the client refused the trailer (over gRPC's 16 KiB metadata limit) and
    heard RESOURCE_EXHAUSTED instead of the real status. Found by tests/fuzz."""
    async with grpc.aio.insecure_channel(no_triton_service.addr) as channel:
        embed = embedder_pb2_grpc.EmbedderStub(channel)
        request = embedder_pb2.EmbedRequest(
            space=common_pb2.SpaceRef(name=name), items=[common_pb2.Content(text="hello")]
        )
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await embed.Embed(request, metadata=bearer(DEV_TOKEN), timeout=10)
    assert err.value.code() in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.INVALID_ARGUMENT), err.value
    details = err.value.details() or ""
    assert len(details.encode()) <= 1024 and details.endswith("more bytes)"), details[-80:]
