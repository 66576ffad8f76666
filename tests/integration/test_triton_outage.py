"""Triton killed under the service: Embed fails fast with UNAVAILABLE and health
turns NOT_SERVING; Triton restarted: the same service recovers by itself."""

import asyncio
import time

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from mmsearch.v1 import common_pb2, embedder_pb2, embedder_pb2_grpc
from tests.conftest import DEV_TOKEN, TritonHandle, make_settings, start_service

pytestmark = pytest.mark.integration
AUTH = (("authorization", f"Bearer {DEV_TOKEN}"),)
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


async def test_kill_and_restart_triton(private_triton: TritonHandle) -> None:
    service = await start_service(make_settings(triton_url=private_triton.grpc_url, readiness_interval_s=0.5))
    try:
        async with grpc.aio.insecure_channel(service.addr) as channel:
            embed = embedder_pb2_grpc.EmbedderStub(channel)
            health = health_pb2_grpc.HealthStub(channel)
            request = embedder_pb2.EmbedRequest(items=[common_pb2.Content(text="still here?")])

            async def status() -> int:
                response = await health.Check(health_pb2.HealthCheckRequest(service="mmsearch.v1.Embedder"))
                return int(response.status)

            async def wait_status(expected: int, timeout_s: float) -> float:
                start = time.monotonic()
                while time.monotonic() - start < timeout_s:
                    if await status() == expected:
                        return time.monotonic() - start
                    await asyncio.sleep(0.1)
                raise AssertionError(f"health did not become {expected} within {timeout_s}s")

            await embed.Embed(request, metadata=AUTH, timeout=10)
            assert await status() == SERVING

            private_triton.kill()
            # Cached content is still served; new content needs the model server.
            cached = await embed.Embed(request, metadata=AUTH, timeout=10)
            assert cached.embeddings[0].cached
            new = embedder_pb2.EmbedRequest(items=[common_pb2.Content(text="anyone there?")])
            start = time.monotonic()
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await embed.Embed(new, metadata=AUTH, timeout=10)
            elapsed = time.monotonic() - start
            assert err.value.code() == grpc.StatusCode.UNAVAILABLE
            assert elapsed < 2.0, (
                f"Embed took {elapsed:.2f}s to fail; it must fail fast, not wait for the deadline"
            )
            await wait_status(NOT_SERVING, 2.0)
            # Overall health follows the embedder.
            overall = await health.Check(health_pb2.HealthCheckRequest(service=""))
            assert overall.status == NOT_SERVING

            private_triton.restart()
            await wait_status(SERVING, 15.0)
            response = await embed.Embed(request, metadata=AUTH, timeout=10)
            assert len(response.embeddings[0].vector.values) == 384
    finally:
        await service.running.stop()
