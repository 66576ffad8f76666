"""Model lifecycle under load, against a real Triton of the test's own:
hot reload of a new model version loses no request, and a killed model
instance gives UNAVAILABLE within the deadline, never a hang."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import grpc
import pytest
import tritonclient.grpc.aio as triton_aio

from mmsearch.v1 import common_pb2, embedder_pb2, embedder_pb2_grpc
from tests.conftest import (
    DEV_TOKEN,
    MODEL_REPOSITORY,
    ServiceHandle,
    TritonHandle,
    make_settings,
    start_service,
    start_test_triton,
)

pytestmark = pytest.mark.integration
AUTH = (("authorization", f"Bearer {DEV_TOKEN}"),)
MODEL = "minilm_l6_text"


@pytest.fixture
def reload_triton(tmp_path: Path) -> Iterator[TritonHandle]:
    """Triton over a repository of its own holding the text model as version 1
    (files linked, so a version 2 can be added while it runs)."""
    repository = tmp_path / "repository"
    source = MODEL_REPOSITORY / MODEL
    (repository / MODEL / "1").mkdir(parents=True)
    (repository / MODEL / "config.pbtxt").symlink_to(source / "config.pbtxt")
    for file in (source / "1").iterdir():
        if file.is_file():
            (repository / MODEL / "1" / file.name).symlink_to(file)
    handle = start_test_triton(tmp_path, (MODEL,), repository)
    yield handle
    handle.stop()


@pytest.fixture
async def text_service(reload_triton: TritonHandle) -> AsyncIterator[ServiceHandle]:
    handle = await start_service(make_settings(triton_url=reload_triton.grpc_url, embed_cache_mb=0))
    yield handle
    await handle.running.stop()


async def load(addr: str, stop: asyncio.Event, outcomes: Counter[str], timeout_s: float, worker: int) -> None:
    """Send distinct texts (no cache hits) until told to stop; count outcomes."""
    async with grpc.aio.insecure_channel(addr) as channel:
        stub = embedder_pb2_grpc.EmbedderStub(channel)
        n = 0
        while not stop.is_set():
            n += 1
            items = [common_pb2.Content(text=f"worker {worker} request {n} item {k}") for k in range(4)]
            started = time.monotonic()
            try:
                response = await stub.Embed(
                    embedder_pb2.EmbedRequest(items=items), metadata=AUTH, timeout=timeout_s
                )
                outcomes[f"ok v{response.embeddings[0].model_version}"] += 1
            except grpc.aio.AioRpcError as err:
                outcomes[err.code().name] += 1
            # Never past the deadline (plus scheduling slack on 2 busy cores).
            outcomes["late"] += int(time.monotonic() - started > timeout_s + 1.0)


async def test_loading_version_2_under_load_loses_no_request(
    reload_triton: TritonHandle, text_service: ServiceHandle
) -> None:
    stop = asyncio.Event()
    outcomes: Counter[str] = Counter()
    workers = [asyncio.create_task(load(text_service.addr, stop, outcomes, 10.0, w)) for w in range(6)]
    await asyncio.sleep(2.0)

    version_2 = reload_triton.repository / MODEL / "2"
    version_2.mkdir()
    for file in (reload_triton.repository / MODEL / "1").iterdir():
        (version_2 / file.name).symlink_to(file.resolve())
    client = triton_aio.InferenceServerClient(reload_triton.grpc_url)
    try:
        await client.load_model(MODEL)  # returns once version 2 serves and 1 is unloaded
        assert await client.is_model_ready(MODEL, "2")
        assert not await client.is_model_ready(MODEL, "1")
    finally:
        await client.close()
    await asyncio.sleep(2.0)
    stop.set()
    await asyncio.gather(*workers)

    failed = {k: v for k, v in outcomes.items() if not k.startswith("ok") and v}
    assert not failed, outcomes
    assert outcomes["ok v1"] > 0 and outcomes["ok v2"] > 0, outcomes


def stub_pids(triton: TritonHandle) -> list[int]:
    """The Python-backend stub processes (model instances) of this Triton only."""
    out = subprocess.run(
        ["pgrep", "-P", str(triton.process.pid)], capture_output=True, text=True, check=False
    )
    return [int(pid) for pid in out.stdout.split()]


async def test_killed_model_instance_gives_unavailable_not_a_hang(
    reload_triton: TritonHandle, text_service: ServiceHandle
) -> None:
    pids = stub_pids(reload_triton)
    assert pids, "no python backend stub process found for the model"
    stop = asyncio.Event()
    outcomes: Counter[str] = Counter()
    workers = [asyncio.create_task(load(text_service.addr, stop, outcomes, 3.0, w)) for w in range(6)]
    await asyncio.sleep(1.0)
    for pid in pids:
        os.kill(pid, signal.SIGKILL)
    await asyncio.sleep(8.0)
    stop.set()
    await asyncio.gather(*workers)

    # Nothing outlives its deadline. A request already inside the instance when
    # it died may run out its deadline (Triton holds it); every later one is
    # told UNAVAILABLE (retryable) before its deadline.
    assert outcomes["late"] == 0, outcomes
    assert outcomes["DEADLINE_EXCEEDED"] <= len(workers), outcomes
    unexpected = {
        k: v
        for k, v in outcomes.items()
        if v and k not in ("ok v1", "UNAVAILABLE", "DEADLINE_EXCEEDED", "late")
    }
    assert not unexpected, outcomes
    assert outcomes["UNAVAILABLE"] >= len(workers), outcomes
