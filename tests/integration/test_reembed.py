"""Re-embedding into a new space version while searches run: the topic is
replayed into a shadow collection by a new consumer group, the aliases swap
when it has caught up, no search fails, and new events land in the new space."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import grpc
import pytest

from mmsearch.embedder.spaces import AUDIO_PREPROCESSING, IMAGE_PREPROCESSING, TEXT_PREPROCESSING
from mmsearch.producer import text_event
from mmsearch.stores.base import collection_name
from mmsearch.v1 import common_pb2, indexer_pb2, indexer_pb2_grpc, searcher_pb2, searcher_pb2_grpc
from tests.conftest import DEV_TOKEN, BrokerHandle, TritonHandle
from tests.integration.test_indexer import T0, publish, start_indexing

pytestmark = pytest.mark.integration
AUTH = (("authorization", f"Bearer {DEV_TOKEN}"),)


def spaces_file(path: Path) -> Path:
    def minilm(version: int, aliases: list[str]) -> dict[str, object]:
        suffix = "" if version == 1 else f";v{version}"
        return {
            "name": "minilm",
            "version": version,
            "dimension": 384,
            "aliases": aliases,
            "encoders": [
                {"modality": "text", "model": "minilm_l6_text", "preprocessing": TEXT_PREPROCESSING + suffix},
                {
                    "modality": "image",
                    "model": "efficientnet_lite0_conse",
                    "preprocessing": IMAGE_PREPROCESSING + suffix,
                },
            ],
        }

    audio = {
        "name": "aisfx",
        "version": 1,
        "dimension": 512,
        "aliases": ["audio"],
        "encoders": [{"modality": "audio", "model": "aisfx_audio", "preprocessing": AUDIO_PREPROCESSING}],
    }
    path.write_text(json.dumps({"spaces": [minilm(1, ["default", "text", "image"]), minilm(2, []), audio]}))
    return path


async def test_reembed_swaps_without_failing_a_search(
    triton: TritonHandle, broker: BrokerHandle, tmp_path: Path
) -> None:
    indexing = await start_indexing(triton, broker, spaces_file=spaces_file(tmp_path / "spaces.json"))
    try:
        events = [
            text_event("dev", f"doc-{i}", f"document number {i} about topic {i % 5}", event_time=T0)
            for i in range(60)
        ]
        produced = publish(indexing.bootstrap, indexing.topic, events)
        await indexing.wait_caught_up(produced)

        failures: list[str] = []
        spaces_seen: list[str] = []
        stop = asyncio.Event()

        async def keep_searching() -> None:
            async with grpc.aio.insecure_channel(indexing.service.addr) as channel:
                stub = searcher_pb2_grpc.SearcherStub(channel)
                while not stop.is_set():
                    request = searcher_pb2.SearchRequest(query=common_pb2.Content(text="topic 3"), top_k=5)
                    try:
                        response = await stub.Search(request, metadata=AUTH, timeout=10)
                        spaces_seen.append(response.space)
                        if len(response.hits) != 5:
                            failures.append(f"{len(response.hits)} hits from {response.space}")
                    except grpc.aio.AioRpcError as err:
                        failures.append(f"{err.code().name}: {err.details()}")
                    await asyncio.sleep(0.05)

        searcher = asyncio.create_task(keep_searching())
        async with grpc.aio.insecure_channel(indexing.service.addr) as channel:
            admin = indexer_pb2_grpc.IndexerAdminStub(channel)
            job = await admin.StartReembed(
                indexer_pb2.StartReembedRequest(source="default", target_space="minilm@2", auto_swap=True),
                metadata=AUTH,
                timeout=30,
            )
            assert job.state == indexer_pb2.ReembedJob.STATE_REPLAYING and job.source == "minilm@1"
            deadline = time.monotonic() + 180
            while time.monotonic() < deadline:
                job = await admin.GetReembed(
                    indexer_pb2.GetReembedRequest(job_id=job.job_id), metadata=AUTH, timeout=30
                )
                if job.HasField("finished_at"):
                    break
                await asyncio.sleep(0.5)
            assert job.state == indexer_pb2.ReembedJob.STATE_SWAPPED, job
            assert job.events_applied >= 60 and job.lag == 0
        await asyncio.sleep(1.0)
        stop.set()
        await searcher

        assert not failures, failures[:5]
        assert spaces_seen[0] == "minilm@1" and spaces_seen[-1] == "minilm@2"
        assert indexing.service.stores is not None
        store = await indexing.service.stores.get()
        assert await store.resolve("default") == collection_name("minilm@2")
        assert await store.count(collection_name("minilm@2"), "dev") == 60

        # New events follow the alias into the new space.
        later = [text_event("dev", f"new-{i}", f"a later document {i}", event_time=T0) for i in range(5)]
        produced += publish(indexing.bootstrap, indexing.topic, later)
        await indexing.wait_caught_up(produced)
        assert await store.count(collection_name("minilm@2"), "dev") == 65
    finally:
        await indexing.service.running.stop()
