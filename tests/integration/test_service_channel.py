"""Channels between the services balance per request: with a target that resolves to several
replicas (a headless Service in Kubernetes; two loopback servers here), calls alternate between
them instead of sticking to the first connection. And a server with a connection age closes
connections, so such callers resolve again (and find new replicas)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from mmsearch.clients.channel import service_channel
from mmsearch.dev.processes import free_port
from mmsearch.kit.health import LIVENESS_SERVICE
from mmsearch.v1 import embedder_pb2, embedder_pb2_grpc
from tests.conftest import make_settings, start_service

pytestmark = pytest.mark.integration


class CountingEmbedder(embedder_pb2_grpc.EmbedderServicer):
    def __init__(self) -> None:
        self.calls = 0

    async def ListSpaces(self, request: Any, context: Any) -> embedder_pb2.ListSpacesResponse:
        self.calls += 1
        return embedder_pb2.ListSpacesResponse(default_alias="default")


@pytest.fixture
async def replicas() -> AsyncIterator[list[tuple[CountingEmbedder, int]]]:
    servers, out = [], []
    for _ in range(2):
        server = grpc.aio.server()
        servicer = CountingEmbedder()
        embedder_pb2_grpc.add_EmbedderServicer_to_server(servicer, server)
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        servers.append(server)
        out.append((servicer, port))
    yield out
    for server in servers:
        await server.stop(None)


async def test_calls_alternate_between_the_replicas_a_target_resolves_to(
    replicas: list[tuple[CountingEmbedder, int]],
) -> None:
    target = "ipv4:" + ",".join(f"127.0.0.1:{port}" for _, port in replicas)
    channel = service_channel(target)
    try:
        stub = embedder_pb2_grpc.EmbedderStub(channel)
        # Until round robin has connected to both (each has answered once), then count.
        deadline = asyncio.get_running_loop().time() + 10
        while not all(servicer.calls for servicer, _ in replicas):
            assert asyncio.get_running_loop().time() < deadline, "one replica never got a call"
            await stub.ListSpaces(embedder_pb2.ListSpacesRequest(), timeout=5)
        for servicer, _ in replicas:
            servicer.calls = 0
        for _ in range(20):
            await stub.ListSpaces(embedder_pb2.ListSpacesRequest(), timeout=5)
    finally:
        await channel.close()
    counts = [servicer.calls for servicer, _ in replicas]
    assert sum(counts) == 20 and abs(counts[0] - counts[1]) <= 2, counts


async def test_a_server_with_a_connection_age_closes_idle_connections() -> None:
    handle = await start_service(
        make_settings(triton_url=f"127.0.0.1:{free_port()}", grpc_max_connection_age_s=1.0), "embedder"
    )
    try:
        async with grpc.aio.insecure_channel(handle.addr) as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            await stub.Check(health_pb2.HealthCheckRequest(service=LIVENESS_SERVICE), timeout=5)
            assert channel.get_state() == grpc.ChannelConnectivity.READY
            deadline = asyncio.get_running_loop().time() + 10
            while channel.get_state() == grpc.ChannelConnectivity.READY:
                assert asyncio.get_running_loop().time() < deadline, "the connection was never aged out"
                await asyncio.sleep(0.1)
            # The client reconnects (resolving again) on the next call.
            await stub.Check(health_pb2.HealthCheckRequest(service=LIVENESS_SERVICE), timeout=5)
    finally:
        await handle.running.stop()
