"""`kill -9` of the indexer process at random points, five times during one
run: the store ends in exactly the state the events describe, nothing lost,
nothing applied twice (offsets are committed only after durable writes, and
replays change nothing)."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from mmsearch.clients.connect import health_status
from mmsearch.dev.broker import create_topics
from mmsearch.dev.mmsearch import start_mmsearch
from mmsearch.dev.processes import free_port, stop_pid
from mmsearch.producer import ContentProducer, delete_event, text_event
from mmsearch.stores.base import collection_name
from mmsearch.stores.qdrant_edge import QdrantEdgeStore
from mmsearch.v1 import events_pb2
from tests.conftest import BrokerHandle, TritonHandle

pytestmark = pytest.mark.integration
T0 = datetime(2026, 4, 1, tzinfo=UTC)
ITEMS = 600


def events_and_expected(
    rng: random.Random,
) -> tuple[list[events_pb2.ContentEvent], dict[str, tuple[bool, int]]]:
    """Events with updates, stale replays and deletes; the expected (deleted, version) per item."""
    events: list[events_pb2.ContentEvent] = []
    expected: dict[str, tuple[bool, int]] = {}
    for i in range(ITEMS):
        item = f"doc-{i}"
        versions = list(range(1, rng.randint(2, 4)))
        for v in versions:
            events.append(
                text_event(
                    "acme", item, f"item {i} revision {v} {rng.random():.6f}", version=v, event_time=T0
                )
            )
        expected[item] = (False, versions[-1])
        if rng.random() < 0.2:
            events.append(text_event("acme", item, f"stale replay of {i}", version=1, event_time=T0))
        if rng.random() < 0.1:
            events.append(delete_event("acme", item, version=10, event_time=T0 + timedelta(hours=1)))
            expected[item] = (True, 10)
    return events, expected


async def test_kill_minus_nine_five_times_keeps_the_exact_state(
    triton: TritonHandle, broker: BrokerHandle, tmp_path: Path
) -> None:
    rng = random.Random(1234)
    topic = f"content.crash.{uuid.uuid4().hex[:8]}"
    await asyncio.to_thread(create_topics, broker.bootstrap, [topic, f"{topic}.dlq", f"{topic}.enrich"])
    events, expected = events_and_expected(rng)
    with ContentProducer(broker.bootstrap, topic) as producer:
        for event in events:
            producer.publish(event)

    store_dir = tmp_path / "store"
    port = free_port()
    addr = f"127.0.0.1:{port}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("MMSEARCH_")}
    env.update(
        MMSEARCH_GRPC_PORT=str(port),
        MMSEARCH_METRICS_PORT=str(free_port()),
        MMSEARCH_TRITON_URL=triton.grpc_url,
        MMSEARCH_KAFKA_BOOTSTRAP=broker.bootstrap,
        MMSEARCH_CONTENT_TOPIC=topic,
        MMSEARCH_DLQ_TOPIC=f"{topic}.dlq",
        MMSEARCH_INDEXER_GROUP=f"indexer-{topic}",
        MMSEARCH_INDEXER_BATCH_SIZE="32",
        MMSEARCH_KAFKA_SESSION_TIMEOUT_MS="6000",
        MMSEARCH_STORE_DIR=str(store_dir),
        MMSEARCH_LOG_LEVEL="WARNING",
    )
    log = tmp_path / "indexer.log"
    kills = 0
    process = start_mmsearch("all", env, log, addr)
    try:
        while kills < 5:
            await asyncio.sleep(rng.uniform(0.5, 3.0))
            process.send_signal(signal.SIGKILL)
            process.wait(timeout=10)
            kills += 1
            process = start_mmsearch("all", env, log, addr)
        # Let the last incarnation finish: status lag 0 for all partitions.
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            status = await asyncio.to_thread(_status, addr)
            if status is not None and status.partitions and all(p.lag == 0 for p in status.partitions):
                committed = sum(p.committed_offset for p in status.partitions)
                if committed >= len(events):
                    break
            await asyncio.sleep(1.0)
        else:
            raise AssertionError(f"indexer did not finish: {await asyncio.to_thread(_status, addr)}")
    finally:
        if process.poll() is None:
            stop_pid(process.pid, timeout_s=20)
    assert health_status(addr, "", 0.5) != "SERVING"  # stopped

    store = await asyncio.to_thread(QdrantEdgeStore, store_dir)
    try:
        collection = collection_name("minilm@1")
        states = await store.states(collection, "acme", list(expected))
        assert len(states) == len(expected)
        wrong = {
            item: (states[item].deleted, states[item].version, want)
            for item, want in expected.items()
            if (states[item].deleted, states[item].version) != want
        }
        assert not wrong, f"{len(wrong)} items differ after {kills} kills: {list(wrong.items())[:5]}"
        assert await store.count(collection, "acme") == sum(
            1 for deleted, _ in expected.values() if not deleted
        )
    finally:
        await store.close()


def _status(addr: str):  # type: ignore[no-untyped-def]
    import grpc

    from mmsearch.clients.connect import DEV_TOKEN, auth_metadata
    from mmsearch.v1 import indexer_pb2, indexer_pb2_grpc

    try:
        with grpc.insecure_channel(addr) as channel:
            stub = indexer_pb2_grpc.IndexerAdminStub(channel)
            return stub.GetStatus(
                indexer_pb2.GetStatusRequest(), metadata=auth_metadata(DEV_TOKEN), timeout=10
            )
    except grpc.RpcError:
        return None
