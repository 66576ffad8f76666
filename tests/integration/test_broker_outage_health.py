"""A broker outage shows: IndexerAdmin health turns NOT_SERVING and GetStatus
names the broker, then both recover when it is back."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import grpc
import pytest

from mmsearch.clients.connect import health_status
from mmsearch.dev.broker import start_broker
from mmsearch.dev.harness import start_broker_server
from mmsearch.v1 import indexer_pb2, indexer_pb2_grpc
from tests.conftest import TritonHandle, make_settings, start_service
from tests.integration.test_indexer import AUTH

pytestmark = pytest.mark.integration
INDEXER = "mmsearch.v1.IndexerAdmin"


async def wait_for(addr: str, want: str, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while (got := await asyncio.to_thread(health_status, addr, INDEXER)) != want:
        assert time.monotonic() < deadline, f"IndexerAdmin health stayed {got}, wanted {want}"
        await asyncio.sleep(0.25)


async def broker_dependency(addr: str) -> indexer_pb2.DependencyStatus:
    async with grpc.aio.insecure_channel(addr) as channel:
        status = await indexer_pb2_grpc.IndexerAdminStub(channel).GetStatus(
            indexer_pb2.GetStatusRequest(), metadata=AUTH, timeout=20
        )
    return next(d for d in status.dependencies if d.name == "broker")


async def test_a_broker_outage_shows_in_health_and_status(triton: TritonHandle, tmp_path: Path) -> None:
    broker = await asyncio.to_thread(start_broker_server, tmp_path)
    settings = make_settings(
        triton_url=triton.grpc_url, kafka_bootstrap=broker.bootstrap, kafka_session_timeout_ms=6000
    )
    handle = await start_service(settings)
    try:
        await wait_for(handle.addr, "SERVING")
        assert (await broker_dependency(handle.addr)).ready
        broker.stop()
        await wait_for(handle.addr, "NOT_SERVING")
        dependency = await broker_dependency(handle.addr)
        assert not dependency.ready and broker.bootstrap in dependency.detail
        # Back on the same port: health recovers without a restart of mmsearch.
        process = await asyncio.to_thread(start_broker, broker.port, tmp_path / "broker2.log")
        try:
            await wait_for(handle.addr, "SERVING", timeout_s=60)
        finally:
            process.terminate()
            process.wait(timeout=10)
    finally:
        await handle.running.stop()
        broker.stop()
