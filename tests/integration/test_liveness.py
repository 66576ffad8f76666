"""The liveness health name the chart's liveness probes use: SERVING while the
process answers, even when its dependencies are down (readiness says that), and
not SERVING once it shuts down. No Triton is started: the embedder points at a
closed port, which is the point."""

from __future__ import annotations

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from mmsearch.dev.processes import free_port
from mmsearch.embedder.service import SERVICE_NAME
from mmsearch.kit.health import LIVENESS_SERVICE
from tests.conftest import make_settings, start_service

pytestmark = pytest.mark.integration


async def _status(addr: str, service: str) -> int:
    async with grpc.aio.insecure_channel(addr) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        response = await stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
        return int(response.status)


async def test_liveness_serving_while_dependency_down_then_not_after_shutdown() -> None:
    handle = await start_service(make_settings(triton_url=f"127.0.0.1:{free_port()}"), "embedder")
    addr = handle.addr
    try:
        assert await _status(addr, SERVICE_NAME) == health_pb2.HealthCheckResponse.NOT_SERVING
        assert await _status(addr, "") == health_pb2.HealthCheckResponse.NOT_SERVING
        assert await _status(addr, LIVENESS_SERVICE) == health_pb2.HealthCheckResponse.SERVING
        await handle.running.readiness.shutdown()
        assert await _status(addr, LIVENESS_SERVICE) == health_pb2.HealthCheckResponse.NOT_SERVING
    finally:
        await handle.running.stop()
